"""What a car really does: parked spells and drives along street routes, second by second.

A `Track` is the ground truth a tracker samples (with its own noise, cadence and faults):
a gapless sequence of `Stay` and `Move` phases. Times are epoch milliseconds; a `Move`
holds one `DriveSample` per second. Drives follow a kinematic model: accelerate at 1-1.8 m/s²,
cruise at 25-60 km/h (varying per block), brake in time (2 m/s²) for turns (down to
5 m/s at a right angle) and for red lights at some intersections (8-45 s), and stop at the
destination.
"""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from shapely import Polygon

from simulator.city import City, Path, Place, route
from simulator.frame import Point

_DT_TICKS = 2  # simulation ticks per second
_BRAKE_MPS2 = 2.0
_TURN_MIN_DEG = 20.0


class DriveSample(NamedTuple):
    """The car at one whole second of a drive. `angle_deg` is its direction in the grid frame
    (counter-clockwise from the u axis); `dist_m` is how far it has driven since the drive began.

    A named tuple: a fleet makes one per second of every drive.
    """

    u: float
    v: float
    speed_mps: float
    angle_deg: float
    dist_m: float


@dataclass(frozen=True, slots=True)
class Stay:
    """Standing still at `point` from `t0_ms` to `t1_ms`; `odo_m` is the odometer, metres."""

    t0_ms: int
    t1_ms: int
    point: Point
    ignition: bool | None  # False: parked; None: a tracker that cannot tell (or left behind)
    odo_m: float
    angle_deg: float = 0.0


@dataclass(frozen=True, slots=True)
class Move:
    """Driving (ignition True) or being towed (ignition False); one sample per second.

    Invariant: `t1_ms == t0_ms + 1000 * (len(samples) - 1)`; `odo_m` is the odometer at `t0_ms`.
    """

    t0_ms: int
    t1_ms: int
    samples: tuple[DriveSample, ...]
    ignition: bool | None
    odo_m: float


Phase = Stay | Move


@dataclass(frozen=True, slots=True)
class State:
    """The true state of a car (or a tracker) at an instant."""

    point: Point
    speed_kmh: float
    angle_deg: float
    ignition: bool | None
    moving: bool
    odo_m: float


@dataclass(frozen=True, slots=True)
class Track:
    """A gapless sequence of phases: each phase starts when the previous one ends."""

    phases: tuple[Phase, ...]
    starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Index the phase starts (`phase_at` is called for every reading)."""
        object.__setattr__(self, "starts", tuple(p.t0_ms for p in self.phases))

    @property
    def t0_ms(self) -> int:
        """When the track starts."""
        return self.phases[0].t0_ms

    @property
    def t1_ms(self) -> int:
        """When the track ends."""
        return self.phases[-1].t1_ms

    def phase_at(self, t_ms: int) -> Phase:
        """The phase in force at `t_ms` (the later one at a boundary)."""
        return self.phases[max(0, bisect_right(self.starts, t_ms) - 1)]

    def state_at(self, t_ms: int) -> State:
        """Where the car is and what it does at `t_ms` (linear between whole seconds)."""
        phase = self.phase_at(t_ms)
        if isinstance(phase, Stay):
            return State(
                phase.point, 0.0, phase.angle_deg, phase.ignition, moving=False, odo_m=phase.odo_m
            )
        offset_s = min(max(t_ms - phase.t0_ms, 0), phase.t1_ms - phase.t0_ms) / 1000.0
        k = min(int(offset_s), len(phase.samples) - 1)
        a = phase.samples[k]
        b = phase.samples[min(k + 1, len(phase.samples) - 1)]
        f = offset_s - k
        point = (a.u + (b.u - a.u) * f, a.v + (b.v - a.v) * f)
        speed = a.speed_mps + (b.speed_mps - a.speed_mps) * f
        dist = a.dist_m + (b.dist_m - a.dist_m) * f
        return State(
            point, speed * 3.6, a.angle_deg, phase.ignition, moving=True, odo_m=phase.odo_m + dist
        )

    def window(self, t0_ms: int, t1_ms: int) -> Track:
        """The part of the track between `t0_ms` and `t1_ms`; a drive cut at either end keeps
        its whole seconds inside (so the part may start up to a second late)."""
        kept: list[Phase] = []
        for phase in self.phases:
            if phase.t1_ms <= t0_ms or phase.t0_ms >= t1_ms:
                continue
            if isinstance(phase, Stay):
                kept.append(
                    replace(phase, t0_ms=max(phase.t0_ms, t0_ms), t1_ms=min(phase.t1_ms, t1_ms))
                )
                continue
            first = max(0, -((phase.t0_ms - t0_ms) // 1000))  # ceil((t0 - start) / 1 s)
            last = min(len(phase.samples) - 1, (t1_ms - phase.t0_ms) // 1000)
            if last > first:
                kept.append(
                    Move(
                        phase.t0_ms + 1000 * first,
                        phase.t0_ms + 1000 * last,
                        phase.samples[first : last + 1],
                        phase.ignition,
                        phase.odo_m,  # samples keep their distance from the drive's start
                    )
                )
        if not kept:
            msg = f"the track has nothing between {t0_ms} and {t1_ms}"
            raise ValueError(msg)
        return Track(tuple(kept))

    def until(self, t_ms: int) -> Track:
        """The track cut at `t_ms`, which must fall in a `Stay`."""
        kept: list[Phase] = []
        for phase in self.phases:
            if phase.t0_ms >= t_ms:
                break
            if phase.t1_ms > t_ms:
                if not isinstance(phase, Stay):
                    msg = f"can only cut a track while it stands still, not at {t_ms}"
                    raise ValueError(msg)
                phase = replace(phase, t1_ms=t_ms)  # noqa: PLW2901  # the last, shortened
            kept.append(phase)
        return Track(tuple(kept))

    def then(self, later: Track) -> Track:
        """This track followed by `later`, which must start where this one ends (in time)."""
        if later.t0_ms != self.t1_ms:
            msg = f"tracks do not join: {self.t1_ms} then {later.t0_ms}"
            raise ValueError(msg)
        return Track(self.phases + later.phases)

    def points(self) -> list[Point]:
        """Every position the track passes, for geometry checks."""
        out: list[Point] = []
        for phase in self.phases:
            if isinstance(phase, Stay):
                out.append(phase.point)
            else:
                out.extend((s.u, s.v) for s in phase.samples)
        return out


def _turn_deg(a: float, b: float) -> float:
    return abs((b - a + 180.0) % 360.0 - 180.0)


def drive(
    path: Path,
    t0_ms: int,
    rng: random.Random,
    odo_m: float,
    *,
    ignition: bool | None = True,
    speed_kmh: tuple[float, float] = (25.0, 60.0),
    red_light_p: float = 0.3,
) -> Move:
    """Drive `path` from standstill to standstill, starting at `t0_ms`."""
    pts = path.points
    seg_len = [math.dist(a, b) for a, b in itertools.pairwise(pts)]
    seg_angle = [
        math.degrees(math.atan2(b[1] - a[1], b[0] - a[0])) for a, b in itertools.pairwise(pts)
    ]
    cum = [0.0]
    for length in seg_len:
        cum.append(cum[-1] + length)
    total = cum[-1]
    cruise = [rng.uniform(*speed_kmh) / 3.6 for _ in seg_len]
    # (position along the path, speed limit there, seconds to wait there)
    limits: list[tuple[float, float, float]] = []
    for k in range(1, len(pts) - 1):
        turn = _turn_deg(seg_angle[k - 1], seg_angle[k])
        v_max = math.inf if turn < _TURN_MIN_DEG else max(2.0, 14.0 - 9.0 * turn / 90.0)
        v_max = min(v_max, cruise[k])  # slow down in time for a slower block too
        wait = rng.uniform(8.0, 45.0) if path.junction[k] and rng.random() < red_light_p else 0.0
        if wait > 0:
            limits.append((cum[k], 0.0, wait))
        elif v_max < math.inf:
            limits.append((cum[k], v_max, 0.0))
    limits.append((total, 0.0, 0.0))
    accel = rng.uniform(1.0, 1.8)
    dt = 1.0 / _DT_TICKS

    last_seg = len(seg_len) - 1

    def at(s: float, speed: float) -> DriveSample:
        k = bisect_right(cum, s) - 1
        k = 0 if k < 0 else min(k, last_seg)
        f = (s - cum[k]) / seg_len[k] if seg_len[k] > 0 else 0.0
        a, b = pts[k], pts[k + 1]
        return DriveSample(
            a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, speed, seg_angle[k], s
        )

    # The loop runs twice per simulated second of every drive of a fleet: min(), max() and
    # a search for the next stop are spelled out (same arithmetic, same results).
    next_stop = [0] * len(limits)
    upcoming = len(limits) - 1  # the destination: a stop
    for i in range(len(limits) - 1, -1, -1):
        if limits[i][1] == 0.0:
            upcoming = i
        next_stop[i] = upcoming
    brake2 = 2 * _BRAKE_MPS2
    sqrt = math.sqrt
    samples = [at(0.0, 0.0)]
    s, v, tick, li = 0.0, 0.0, 0, 0
    while True:
        k = bisect_right(cum, s) - 1
        k = 0 if k < 0 else min(k, last_seg)
        allowed = cruise[k]
        vdt = v * dt
        for s_c, v_c, _ in limits[li : li + 4]:
            gap = s_c - s - vdt
            limit = sqrt(v_c * v_c + brake2 * (gap if gap > 0.0 else 0.0))  # noqa: FURB136
            if limit < allowed:  # noqa: PLR1730  # see above: no min() call
                allowed = limit
        v_new = v + accel * dt
        if allowed < v_new:  # noqa: PLR1730
            v_new = allowed
        ds = (v + v_new) / 2 * dt
        stop = next_stop[li]
        s_stop, _, wait = limits[stop]
        tick += 1
        if s + ds >= s_stop - 0.3:
            s, v = s_stop, 0.0
            if tick % _DT_TICKS == 0:
                samples.append(at(s, 0.0))
            if stop == len(limits) - 1:
                if tick % _DT_TICKS:
                    samples.append(at(s, 0.0))
                break
            for _ in range(math.ceil(wait) * _DT_TICKS):
                tick += 1
                if tick % _DT_TICKS == 0:
                    samples.append(at(s, 0.0))
            li = stop + 1
            continue
        s, v = s + ds, v_new
        while li < len(limits) and limits[li][1] > 0.0 and limits[li][0] <= s:
            li += 1
        if tick % _DT_TICKS == 0:
            samples.append(at(s, v))
    return Move(t0_ms, t0_ms + 1000 * (len(samples) - 1), tuple(samples), ignition, odo_m)


@dataclass(frozen=True, slots=True)
class BuilderMark:
    """A `TrackBuilder`'s state at one moment."""

    phases: tuple[Phase, ...]
    t_ms: int
    odo_m: float
    angle_deg: float
    place: Place


class TrackBuilder:
    """Builds a car's track leg by leg: park, drive somewhere, park again."""

    def __init__(
        self, city: City, rng: random.Random, place: Place, t0_ms: int, odo_m: float
    ) -> None:
        self.city = city
        self.rng = rng
        self.place = place
        self.t_ms = t0_ms
        self.odo_m = odo_m
        self.angle_deg = rng.choice((0.0, 90.0, 180.0, -90.0))
        self.phases: list[Phase] = []

    def park(self, seconds: float, ignition: bool | None = False) -> Stay:
        """Stand still (engine off) for `seconds`; a stay right after a stay lengthens it."""
        t1_ms = self.t_ms + round(seconds) * 1000
        last = self.phases[-1] if self.phases else None
        if isinstance(last, Stay) and last.ignition == ignition:
            stay = replace(last, t1_ms=t1_ms)
            self.phases[-1] = stay
        else:
            stay = Stay(self.t_ms, t1_ms, self.place.point, ignition, self.odo_m, self.angle_deg)
            self.phases.append(stay)
        self.t_ms = stay.t1_ms
        return stay

    def park_until(self, t_ms: int) -> Stay:
        """Stand still (engine off) until `t_ms`; a stay already past it is cut short there."""
        last = self.phases[-1] if self.phases else None
        if self.t_ms > t_ms and isinstance(last, Stay) and last.t0_ms < t_ms:
            stay = replace(last, t1_ms=t_ms)
            self.phases[-1] = stay
            self.t_ms = t_ms
            return stay
        return self.park(max(0, t_ms - self.t_ms) / 1000.0)

    def drive_to(
        self,
        place: Place,
        region: Polygon | None = None,
        *,
        ignition: bool | None = True,
        speed_kmh: tuple[float, float] = (25.0, 60.0),
    ) -> Move:
        """Drive (or be towed, `ignition=False`) to `place`, on streets inside `region` if given."""
        return self.commit(self.plan(place, region, ignition=ignition, speed_kmh=speed_kmh), place)

    def plan(
        self,
        place: Place,
        region: Polygon | None = None,
        *,
        ignition: bool | None = True,
        speed_kmh: tuple[float, float] = (25.0, 60.0),
    ) -> Move:
        """The drive `drive_to` would make, without making it (see `commit`)."""
        path = route(self.city, self.place, place, self.rng, region)
        return drive(path, self.t_ms, self.rng, self.odo_m, ignition=ignition, speed_kmh=speed_kmh)

    def commit(self, move: Move, place: Place) -> Move:
        """Make a planned drive to `place`."""
        if move.t0_ms != self.t_ms:
            msg = f"a drive planned for {move.t0_ms} cannot start at {self.t_ms}"
            raise ValueError(msg)
        self.phases.append(move)
        self.t_ms = move.t1_ms
        self.odo_m += move.samples[-1].dist_m
        self.angle_deg = move.samples[-1].angle_deg
        self.place = place
        return move

    def build(self) -> Track:
        """The track so far."""
        return Track(tuple(self.phases))

    def mark(self) -> BuilderMark:
        """Where the builder stands, to `restore` if a plan does not work out."""
        return BuilderMark(tuple(self.phases), self.t_ms, self.odo_m, self.angle_deg, self.place)

    def restore(self, mark: BuilderMark) -> None:
        """Go back to a `mark`, forgetting every leg since."""
        self.phases = list(mark.phases)
        self.t_ms, self.odo_m, self.angle_deg, self.place = (
            mark.t_ms,
            mark.odo_m,
            mark.angle_deg,
            mark.place,
        )
