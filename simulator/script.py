"""Scripting a car's day: the moves every scenario shares, and the windows its alerts land in.

`Script` parks, runs errands and drives across the home zone's boundary on a
`TrackBuilder`; `crossing_window` and `apart_window` turn a drive into the event-time
window a tracker must report it in, from the trackers' cadences (`MOVING_GAP_MS`,
`STILL_GAP_MS`) and the rules' hysteresis. Every car starts parked at a kerbside spot well
inside its home zone.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import numpy as np
import shapely
from shapely import Point as ShapelyPoint
from shapely import Polygon

from simulator.car import Car, CarSetup, DoesNotFit, LoanSpec, ScenarioKind, make_loan
from simulator.city import Area, Place, clear_of, interior, street_spot
from simulator.motion import Move, Stay, Track, TrackBuilder
from simulator.trackers import DeadZone, Event, Tracker, TrackerModel, TsFormat
from simulator.truth import Expectation, Role
from simulator.vehicles import make_vehicle

GRACE_MS = 300_000  # DESIGN §4 zone_grace_s
OFFLINE_MS = 1_800_000  # DESIGN §4 offline_s
SEPARATION_M = 500.0  # DESIGN §4 tracker separation
DWELL_DEFAULTS_S = {  # DESIGN §4 risk-site dwell by category; others 900 s
    "impound": 0,
    "border": 0,
    "pawnshop": 600,
    "auction": 900,
    "lender": 1800,
    "used_car_market": 1800,
}
DWELL_OTHER_S = 900
CLEAR_OF_BOUNDARY_M = 40.0  # hysteresis (25 m) plus GPS error
NEAR_BAND_M = 10.0  # hysteresis (25 m) minus GPS error
MOVING_GAP_MS = 32_000  # longest gap between fixes reaching the core while moving: 15 s,
# jitter, and one fix lost or late on the way (glitches never hit two fixes in a row)
STILL_GAP_MS = 125_000  # ... while standing still
OUTSIDE_FLOOR_S = GRACE_MS / 1000 + 240  # parked outside long enough for zone.left to fire
PARKED_FLOOR_S = 300.0  # parked long enough for the tracker to report it parked
SILENCE_PAD_MS = 400_000  # a silence lasts this much longer than the offline limit


class Script:
    """Common moves of every script, sharing the car's builder and home."""

    def __init__(self, setup: CarSetup, rng: random.Random) -> None:
        self.setup = setup
        self.rng = rng
        self.city = setup.city
        self.zone = setup.zone
        self.inner = interior(setup.zone)
        self.vehicle = setup.vehicle or make_vehicle(rng, setup.vins)
        self.home = self.inside_spot("home")
        self.tb = TrackBuilder(
            self.city, rng, self.home, setup.t0_ms, self.vehicle.odometer_km * 1000
        )
        if setup.lead_s > 0:
            self.tb.park(setup.lead_s)

    def inside_spot(self, name: str, away_from: Place | None = None) -> Place:
        """A kerbside spot well inside the zone, far from `away_from` (900 m if the zone allows)."""
        for apart_m in (900.0, 600.0, 300.0):

            def ok(p: tuple[float, float], apart_m: float = apart_m) -> bool:
                if not self.inner.contains(ShapelyPoint(*p)):
                    return False
                return away_from is None or math.dist(p, away_from.point) > apart_m

            try:
                return street_spot(self.city, self.rng, name, ok, box=self.inner.bounds)
            except RuntimeError:
                continue
        msg = f"zone {self.zone.fence_id} is too small for errands"
        raise RuntimeError(msg)

    def outside_spot(self, name: str, lo_m: float, hi_m: float, clearance_m: float) -> Place:
        """A kerbside spot `lo_m`..`hi_m` outside the zone, `clearance_m` clear of every fence."""
        zone = self.zone.shape

        def ok(p: tuple[float, float]) -> bool:
            d = zone.distance(ShapelyPoint(*p))
            return lo_m <= d <= hi_m and clear_of(self.city, p, clearance_m)

        u0, v0, u1, v1 = zone.bounds
        box = (u0 - hi_m, v0 - hi_m, u1 + hi_m, v1 + hi_m)
        return street_spot(self.city, self.rng, name, ok, corners_too=False, box=box)

    def nearest_site(self, category: str) -> Area:
        """The risk site of `category` nearest to home."""
        home = ShapelyPoint(*self.home.point)
        sites = [s for s in self.city.sites if s.category == category]
        if not sites:
            msg = f"the city has no {category} site"
            raise RuntimeError(msg)
        return min(sites, key=lambda s: s.shape.distance(home))

    def park(self, lo_s: float, hi_s: float, floor_s: float = 0.0) -> Stay:
        """Park for `lo_s`..`hi_s` at the setup's pace (at least `floor_s`)."""
        return self.tb.park(self.setup.idle_s(self.rng, lo_s, hi_s, floor_s))

    def errand(self, park_s: tuple[float, float], floor_s: float = 0.0) -> Move:
        """Drive to another spot inside the zone and park there for a while."""
        spot = self.inside_spot("errand", away_from=self.tb.place)
        move = self.tb.drive_to(spot, self.inner)
        self.fits()
        self.park(*park_s, floor_s)
        return move

    def fits(self) -> None:
        """DoesNotFit if the story already runs past the end of the run (a stay may: it is
        cut short at the end)."""
        last = self.tb.phases[-1]
        end = last.t1_ms if isinstance(last, Move) else last.t0_ms + 1
        if end > self.setup.t1_ms:
            span_min = (self.setup.t1_ms - self.setup.t0_ms) / 60_000
            msg = f"the story runs past the end of the run ({span_min:.0f} min of event time)"
            raise DoesNotFit(msg)

    def go_home(self) -> Move:
        """Drive back home on streets inside the zone."""
        return self.tb.drive_to(self.home, self.inner)

    def errands_until_end(self, min_left_s: float = 1500.0) -> None:
        """Errands in the zone while there is time, then park until the end of the run."""
        while self.setup.t1_ms - self.tb.t_ms > min_left_s * self.setup.pace * 1000:
            self.errand((600.0, 2400.0))
        self.park_until_end()

    def park_until_end(self) -> Stay:
        """Park until the end of the run (DoesNotFit if the story already ran past it)."""
        self.fits()
        return self.tb.park_until(self.setup.t1_ms)

    def loan(self, device_ids: tuple[str, ...], loan_id: str | None = None) -> LoanSpec:
        """A loan on this car, permitted in its home zone."""
        return make_loan(
            self.rng, self.vehicle, loan_id or self.setup.loan_id, device_ids, self.zone
        )

    def wired(
        self,
        track: Track,
        events: tuple[Event, ...] = (),
        device_id: str | None = None,
        ts_format: TsFormat = TsFormat.EPOCH_MS,
    ) -> Tracker:
        """A hard-wired tracker reading this car's VIN, with a real fleet's glitches."""
        return Tracker(
            device_id or self.setup.device_id,
            TrackerModel.WIRED,
            track,
            ts_format,
            self.vehicle.vin,
            events,
            glitches=True,
        )

    def car(
        self,
        kind: ScenarioKind | None,
        trackers: tuple[Tracker, ...],
        loans: tuple[LoanSpec, ...],
        required: tuple[Expectation, ...],
        role: Role = Role.SCENARIO,
    ) -> Car:
        """The finished car."""
        return Car(
            self.setup.car_id, role, kind, self.vehicle, self.zone, loans, trackers, required
        )

    def expect(
        self,
        type_: str,
        lo_ms: int,
        hi_ms: int,
        *,
        fence_id: str | None = None,
        count: int | None = None,
        why: str = "",
    ) -> Expectation:
        """A required alert about this car's (first) tracker."""
        return Expectation(
            type_,
            fence_id,
            self.setup.device_id,
            self.setup.loan_id,
            None,
            count,
            lo_ms,
            hi_ms,
            why,
        )

    def _sides(self, move: Move) -> list[bool]:
        """Inside (True) or outside the zone along a drive, by every sample where a fix could
        count as past the 25 m hysteresis band (GPS error aside); repeats collapsed."""
        us = np.fromiter((s.u for s in move.samples), dtype=np.float64)
        vs = np.fromiter((s.v for s in move.samples), dtype=np.float64)
        shape = self.zone.shape
        inside = shapely.contains_xy(shape, us, vs)
        clear = shapely.distance(shape.boundary, shapely.points(us, vs)) > NEAR_BAND_M
        return [bool(k) for k, _ in itertools.groupby(inside[clear])]

    def drive_across(
        self,
        choose: Callable[[], Place],
        *,
        outward: bool,
        ignition: bool | None = True,
        speed_kmh: tuple[float, float] = (25.0, 60.0),
    ) -> Move:
        """Drive out of the zone (or back in) crossing its boundary once: a route that weaves
        out and in again would make its own zone alerts, so another is chosen."""
        want = [True, False] if outward else [False, True]
        for _ in range(30):
            place = choose()
            move = self.tb.plan(place, ignition=ignition, speed_kmh=speed_kmh)
            if self._sides(move) == want:
                return self.tb.commit(move, place)
        msg = f"no route {'out of' if outward else 'into'} {self.zone.fence_id} crosses it once"
        raise RuntimeError(msg)

    def left_zone(self, move: Move, why: str) -> tuple[Expectation, ...]:
        """The exit and `zone.left` of a trip that leaves the zone for more than the grace."""
        zone = self.zone.fence_id
        lo, hi = crossing_window(move, self.zone.shape, outward=True)
        return (
            self.expect("geofence.exit", lo, hi, fence_id=zone, why=why),
            self.expect(
                "zone.left",
                lo + GRACE_MS,
                hi + GRACE_MS,
                fence_id=zone,
                count=1,
                why=f"{why}, outside for more than {GRACE_MS // 1000} s",
            ),
        )

    def came_back(self, move: Move) -> tuple[Expectation, ...]:
        """The enter and `zone.returned` of the trip home."""
        zone = self.zone.fence_id
        lo, hi = crossing_window(move, self.zone.shape, outward=False)
        return (
            self.expect("geofence.enter", lo, hi, fence_id=zone, why="home"),
            self.expect(
                "zone.returned",
                lo,
                hi,
                fence_id=zone,
                count=1,
                why="back inside the zone after zone.left",
            ),
        )

    def tunnel_at_exit(self, move: Move) -> tuple[Event, ...]:
        """A coverage gap around the moment `move` leaves the zone: the exit is reported late,
        in a catch-up array."""
        inside = self.zone.shape
        for k, sample in enumerate(move.samples):
            if not inside.contains(ShapelyPoint(sample.u, sample.v)):
                crossed = move.t0_ms + 1000 * k
                start = max(move.t0_ms + 20_000, crossed - self.rng.randrange(20_000, 60_000))
                return (DeadZone(start, crossed + self.rng.randrange(60_000, 100_000)),)
        return ()

    def dead_zone(self, track: Track) -> tuple[Event, ...]:
        """A coverage gap (a tunnel) of 40-120 s in the longest drive, if it lasts 2 min."""
        moves = [p for p in track.phases if isinstance(p, Move)]
        if not moves:
            return ()
        longest = max(moves, key=lambda p: p.t1_ms - p.t0_ms)
        span = longest.t1_ms - longest.t0_ms
        if span < 120_000:
            return ()
        start = longest.t0_ms + round(span * self.rng.uniform(0.2, 0.4))
        return (DeadZone(start, start + round(min(120_000, span * self.rng.uniform(0.3, 0.5)))),)


def _signed_distances(move: Move, shape: Polygon) -> np.ndarray:
    """Per sample of a drive: metres outside `shape` (negative: inside)."""
    us = np.fromiter((s.u for s in move.samples), dtype=np.float64)
    vs = np.fromiter((s.v for s in move.samples), dtype=np.float64)
    dist = shapely.distance(shape.boundary, shapely.points(us, vs))
    result: np.ndarray = np.where(shapely.contains_xy(shape, us, vs), -dist, dist)
    return result


def _first_ms(move: Move, hits: np.ndarray) -> int:
    """Time of the first sample where `hits` holds (the drive's end if none)."""
    k = int(np.argmax(hits)) if bool(hits.any()) else len(move.samples) - 1
    return move.t0_ms + 1000 * k


def since_ms(move: Move, hits: np.ndarray) -> int:
    """The earliest a fix can see `hits` hold: the second before its first sample (fixes
    fall between samples)."""
    return max(move.t0_ms, _first_ms(move, hits) - 1000)


def settled_ms(move: Move, hits: np.ndarray) -> int:
    """The latest a fix must see `hits` hold: the end of the first stretch of
    `MOVING_GAP_MS` throughout which it holds (a fix falls in any such stretch). After the
    drive the car stands at its last sample."""
    gap_s = MOVING_GAP_MS // 1000
    padded = np.concatenate([hits, np.repeat(hits[-1:], gap_s)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, gap_s + 1)
    settled: np.ndarray = np.asarray(windows.all(axis=1))
    return _first_ms(move, settled) + MOVING_GAP_MS


def crossing_window(move: Move, shape: Polygon, *, outward: bool) -> tuple[int, int]:
    """When a tracker must report crossing `shape`'s boundary on `move` (crossing once).

    The crossing fix is the first one measured more than the 25 m hysteresis past the
    boundary: no earlier than the truth is `NEAR_BAND_M` past it (GPS error is well under
    15 m), no later than a fix while the truth stays `CLEAR_OF_BOUNDARY_M` past it.
    """
    sign = 1.0 if outward else -1.0
    d = _signed_distances(move, shape) * sign
    return since_ms(move, d >= NEAR_BAND_M), settled_ms(move, d >= CLEAR_OF_BOUNDARY_M)


def apart_window(move: Move, point: tuple[float, float], metres: float) -> tuple[int, int]:
    """When a fix on `move` is first `metres` from `point`, give or take GPS error."""
    us = np.fromiter((s.u for s in move.samples), dtype=np.float64)
    vs = np.fromiter((s.v for s in move.samples), dtype=np.float64)
    d = np.hypot(us - point[0], vs - point[1])
    return since_ms(move, d >= metres - 30.0), settled_ms(move, d >= metres + 30.0)


def draw_ms(rng: random.Random, lo_s: float, hi_s: float, pace: float = 1.0) -> int:
    """A time drawn from `lo_s`..`hi_s` seconds at `pace`, in milliseconds."""
    return round(rng.uniform(lo_s, hi_s) * pace * 1000)


def dwell_s(site: Area) -> int:
    """A risk site's dwell by DESIGN §4: its own `dwell_s`, else its category's default."""
    if site.dwell_s is not None:
        return site.dwell_s
    return DWELL_DEFAULTS_S.get(site.category or "", DWELL_OTHER_S)
