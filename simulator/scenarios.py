"""Scenarios: what one pledged car does, which trackers ride in it, and what must be alerted.

Each builder scripts a car's day (parked at home, errands inside its zone, the trip that makes
the scenario) and returns a `Car` with its loans, trackers and the alerts it guarantees
(`required`, with counts and event-time windows). Crossings of fences a car merely drives
past are not listed here: `fleet` allows them from the geometry of the tracks.

Every car starts parked at a kerbside spot well inside its home zone. Windows are derived
from the script's phase times and the trackers' cadences (`MOVING_GAP_MS`, `STILL_GAP_MS`).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import shapely
from shapely import Point as ShapelyPoint
from shapely import Polygon

from simulator.city import Area, City, Place, clear_of, interior, site_place, street_spot
from simulator.frame import destination
from simulator.motion import Move, Stay, Track, TrackBuilder
from simulator.trackers import (
    DeadZone,
    Event,
    Resend,
    Shock,
    Silence,
    StatusChange,
    Stream,
    Tracker,
    TrackerModel,
    TsFormat,
    WildFix,
)
from simulator.truth import Expectation, Role
from simulator.vehicles import Vehicle, make_vehicle

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


class ScenarioKind(StrEnum):
    """The scripted stories a car can play."""

    STAYS_HOME = "stays_home"
    LEAVES_ZONE = "leaves_zone"
    PAWNSHOP_DWELL = "pawnshop_dwell"
    TOWED = "towed"
    TRACKER_REMOVED = "tracker_removed"
    VIN_SWAP = "vin_swap"
    SPOOFED_JUMP = "spoofed_jump"
    POWER_CUT = "power_cut"
    GOES_SILENT = "goes_silent"
    SILENT_OUTSIDE = "silent_outside"
    IMPOUNDED = "impounded"
    DOUBLE_PLEDGE = "double_pledge"
    FLATBED_TOW = "flatbed_tow"
    BRIEF_VISIT = "brief_visit"
    QUICK_EXIT = "quick_exit"


@dataclass(frozen=True, slots=True)
class LoanSpec:
    """A loan as `PUT /v1/loans/{loan_id}` takes it (DESIGN §3), plus its id."""

    loan_id: str
    vin: str
    device_ids: tuple[str, ...]
    zone_ids: tuple[str, ...]
    principal: int
    vehicle: Vehicle
    mileage_km: float

    def to_json(self) -> dict[str, object]:
        """The loan as a `loans.json` element."""
        return {
            "loan_id": self.loan_id,
            "vin": self.vin,
            "device_ids": list(self.device_ids),
            "zone_ids": list(self.zone_ids),
            "status": "active",
            "principal": self.principal,
            "vehicle": {
                "make": self.vehicle.make,
                "model": self.vehicle.model,
                "year": self.vehicle.year,
                "mileage_km": self.mileage_km,
                "value": self.vehicle.value,
            },
        }


@dataclass(frozen=True, slots=True)
class Car:
    """A car in a run: its loans, trackers, and the alerts it guarantees."""

    car_id: str
    role: Role
    scenario: ScenarioKind | None
    vehicle: Vehicle
    zone: Area
    loans: tuple[LoanSpec, ...]
    trackers: tuple[Tracker, ...]
    required: tuple[Expectation, ...] = ()


class DoesNotFit(RuntimeError):  # noqa: N818  # reads as the condition it is
    """A scenario's story (and the alerts it guarantees) does not fit in the run's span."""


@dataclass(frozen=True, slots=True)
class CarSetup:
    """What a builder gets: the city, the car's number (1-based) and home zone, the run's span,
    and the VINs already taken in the run (shared, grows as cars are built).

    A fleet (`simulator.live`) also sets: `id_prefix` (ids that stay unique in a fleet of any
    size), `vehicle` (drawn when the fleet is planned), `pace` (the factor on a story's
    idle times, below 1 to fit a span shorter than two hours; the times the rules need are
    kept), `offline_ms` (the silence, in event time, that the engine reports offline) and
    `lead_s` (to start the story later in a run longer than it).
    """

    city: City
    car_no: int
    zone: Area
    t0_ms: int
    t1_ms: int
    vins: set[str]
    id_prefix: str | None = None
    vehicle: Vehicle | None = None
    pace: float = 1.0
    offline_ms: int = 1_800_000
    lead_s: float = 0.0  # parked this long before the story starts

    @property
    def car_id(self) -> str:
        """`car-07` (a fleet's: `sim-car00007`)."""
        if self.id_prefix is not None:
            return f"{self.id_prefix}-car{self.car_no:05d}"
        return f"car-{self.car_no:02d}"

    @property
    def device_id(self) -> str:
        """The car's (first) hard-wired tracker: `trk-007` (a fleet's: `sim-00007`)."""
        if self.id_prefix is not None:
            return f"{self.id_prefix}-{self.car_no:05d}"
        return f"trk-{self.car_no:03d}"

    @property
    def loan_id(self) -> str:
        """The car's (first) loan: `L-1007` (a fleet's: `sim-L00007`)."""
        if self.id_prefix is not None:
            return f"{self.id_prefix}-L{self.car_no:05d}"
        return f"L-{1000 + self.car_no}"

    @property
    def second_loan_id(self) -> str:
        """Another lender's loan on the same car: `L-2007` (a fleet's: `sim-L00007-2`)."""
        if self.id_prefix is not None:
            return f"{self.loan_id}-2"
        return f"L-{2000 + self.car_no}"

    def idle_s(self, rng: random.Random, lo_s: float, hi_s: float, floor_s: float = 0.0) -> float:
        """An idle time drawn from `lo_s`..`hi_s` at the setup's pace, at least `floor_s`."""
        return max(rng.uniform(lo_s, hi_s) * self.pace, floor_s)


def make_loan(
    rng: random.Random,
    vehicle: Vehicle,
    loan_id: str,
    device_ids: tuple[str, ...],
    zone: Area,
) -> LoanSpec:
    """A loan on `vehicle` of 50-70 % of its value, permitted in `zone`."""
    return LoanSpec(
        loan_id,
        vehicle.vin,
        device_ids,
        (zone.fence_id,),
        int(round(vehicle.value * rng.uniform(0.5, 0.7), -3)),
        vehicle,
        round(vehicle.odometer_km - rng.uniform(500.0, 5000.0), 0),
    )


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
        self.fits()
        self.tb.park_until(self.setup.t1_ms)

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


def _since_ms(move: Move, hits: np.ndarray) -> int:
    """The earliest a fix can see `hits` hold: the second before its first sample (fixes
    fall between samples)."""
    return max(move.t0_ms, _first_ms(move, hits) - 1000)


def _settled_ms(move: Move, hits: np.ndarray) -> int:
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
    return _since_ms(move, d >= NEAR_BAND_M), _settled_ms(move, d >= CLEAR_OF_BOUNDARY_M)


def apart_window(move: Move, point: tuple[float, float], metres: float) -> tuple[int, int]:
    """When a fix on `move` is first `metres` from `point`, give or take GPS error."""
    us = np.fromiter((s.u for s in move.samples), dtype=np.float64)
    vs = np.fromiter((s.v for s in move.samples), dtype=np.float64)
    d = np.hypot(us - point[0], vs - point[1])
    return _since_ms(move, d >= metres - 30.0), _settled_ms(move, d >= metres + 30.0)


def _ms(rng: random.Random, lo_s: float, hi_s: float, pace: float = 1.0) -> int:
    return round(rng.uniform(lo_s, hi_s) * pace * 1000)


def _until_end(p: Script) -> Stay:
    """Park until the end of the run (DoesNotFit if the story already ran past it)."""
    p.fits()
    return p.tb.park_until(p.setup.t1_ms)


def stays_home(setup: CarSetup, rng: random.Random) -> Car:
    """Errands inside the zone all day, a tunnel on the way: no alert at all."""
    p = Script(setup, rng)
    p.park(300, 900)
    p.errand((1200, 2400))
    p.errand((600, 1500))
    p.go_home()
    _until_end(p)
    track = p.tb.build()
    tracker = p.wired(track, p.dead_zone(track))
    return p.car(ScenarioKind.STAYS_HOME, (tracker,), (p.loan((tracker.device_id,)),), ())


def leaves_zone(setup: CarSetup, rng: random.Random) -> Car:
    """A 30-45 min trip to another district, then home: zone.left, then zone.returned.

    The car leaves its zone in a tunnel: the exit arrives late, in a catch-up array.
    """
    p = Script(setup, rng)
    p.park(300, 900)
    out = p.drive_across(lambda: p.outside_spot("mall", 800, 4_000, 400), outward=True)
    p.park(1800, 2700, OUTSIDE_FLOOR_S)
    back = p.drive_across(lambda: p.home, outward=False)
    _until_end(p)
    tracker = p.wired(p.tb.build(), p.tunnel_at_exit(out))
    required = (*p.left_zone(out, "a trip to another district"), *p.came_back(back))
    return p.car(ScenarioKind.LEAVES_ZONE, (tracker,), (p.loan((tracker.device_id,)),), required)


def pawnshop_dwell(setup: CarSetup, rng: random.Random) -> Car:
    """The car sits 25-35 min at a pawnshop outside its zone (one car, many pledges)."""
    p = Script(setup, rng)
    site = p.nearest_site("pawnshop")
    dwell_ms = dwell_s(site) * 1000
    p.park(300, 900)
    there = p.drive_across(lambda: site_place(p.city, site), outward=True)
    p.park(1500, 2100, dwell_ms / 1000 + OUTSIDE_FLOOR_S)
    back = p.drive_across(lambda: p.home, outward=False)
    _until_end(p)
    tracker = p.wired(p.tb.build())
    fid = site.fence_id
    enter_lo, enter_hi = crossing_window(there, site.shape, outward=False)
    exit_lo, exit_hi = crossing_window(back, site.shape, outward=True)
    required = (
        *p.left_zone(there, "drove to a pawnshop"),
        p.expect("geofence.enter", enter_lo, enter_hi, fence_id=fid, why="pawnshop"),
        p.expect(
            "pledge.risk_site_dwell",
            enter_lo + dwell_ms,
            enter_hi + dwell_ms,
            fence_id=fid,
            count=1,
            why=f"inside a pawnshop for its dwell of {dwell_ms // 1000} s",
        ),
        p.expect("geofence.exit", exit_lo, exit_hi, fence_id=fid, why="left the pawnshop"),
        *p.came_back(back),
    )
    return p.car(ScenarioKind.PAWNSHOP_DWELL, (tracker,), (p.loan((tracker.device_id,)),), required)


def towed(setup: CarSetup, rng: random.Random) -> Car:
    """Parked in its zone; a tow truck lifts it (a shock) and hauls it out of the zone."""
    p = Script(setup, rng)
    p.park(300, 600)
    p.errand((1500, 2400), PARKED_FLOOR_S)
    hook = p.tb.t_ms - _ms(rng, 60, 150)
    tow = p.drive_across(
        lambda: p.outside_spot("yard", 1_000, 4_000, 400),
        outward=True,
        ignition=False,
        speed_kmh=(20.0, 40.0),
    )
    _until_end(p)
    g = round(rng.uniform(2.6, 3.4), 2)
    # the shock is sent twice (a redelivery): still one shock and one tow alert
    tracker = p.wired(p.tb.build(), (Shock(hook, g), Resend(hook, Stream.VIB)))
    required = (
        p.expect("shock", hook, hook, count=1, why=f"{g} g while parked"),
        p.expect("tow.suspected", hook, hook, count=1, why="a shock while parked"),
        *p.left_zone(tow, "towed away"),
    )
    return p.car(ScenarioKind.TOWED, (tracker,), (p.loan((tracker.device_id,)),), required)


def flatbed_tow(setup: CarSetup, rng: random.Random) -> Car:
    """Parked in its zone; loaded onto a flatbed without a jolt, it moves with the engine off."""
    p = Script(setup, rng)
    p.park(300, 600)
    p.errand((1500, 2400), PARKED_FLOOR_S)
    tow = p.drive_across(
        lambda: p.outside_spot("yard", 1_000, 4_000, 400),
        outward=True,
        ignition=False,
        speed_kmh=(20.0, 40.0),
    )
    _until_end(p)
    tracker = p.wired(p.tb.build())
    # the first fix reading over 10 km/h or over 200 m from the parking spot, GPS error aside
    speed = np.array([s.speed_mps * 3.6 for s in tow.samples])
    start = tow.samples[0]
    moved = np.array([math.dist((s.u, s.v), (start.u, start.v)) for s in tow.samples])
    lo = _since_ms(tow, (speed > 7.0) | (moved > 170.0))
    hi = _settled_ms(tow, (speed > 13.0) | (moved > 230.0))
    required = (
        p.expect(
            "tow.suspected",
            lo,
            hi,
            count=1,
            why="moving over 10 km/h with the ignition off",
        ),
        *p.left_zone(tow, "towed away"),
    )
    return p.car(ScenarioKind.FLATBED_TOW, (tracker,), (p.loan((tracker.device_id,)),), required)


def brief_visit(setup: CarSetup, rng: random.Random) -> Car:
    """A 10-20 min stop at a lender's lot, well under its 30 min dwell: no dwell alert."""
    p = Script(setup, rng)
    site = p.nearest_site(rng.choice(("lender", "used_car_market")))
    assert dwell_s(site) >= 1800
    p.park(300, 900)
    there = p.drive_across(lambda: site_place(p.city, site), outward=True)
    p.park(600, 1200, PARKED_FLOOR_S)
    back = p.drive_across(lambda: p.home, outward=False)
    _until_end(p)
    tracker = p.wired(p.tb.build())
    fid = site.fence_id
    enter = crossing_window(there, site.shape, outward=False)
    leave = crossing_window(back, site.shape, outward=True)
    required = (
        *p.left_zone(there, f"a visit to a {site.category}"),
        p.expect("geofence.enter", *enter, fence_id=fid, count=1, why=f"a {site.category}"),
        p.expect("geofence.exit", *leave, fence_id=fid, count=1, why="left before its dwell"),
        *p.came_back(back),
    )
    return p.car(ScenarioKind.BRIEF_VISIT, (tracker,), (p.loan((tracker.device_id,)),), required)


def quick_exit(setup: CarSetup, rng: random.Random) -> Car:
    """A 1-2 min stop just outside the zone (engine running): exit and enter, no zone.left."""
    p = Script(setup, rng)
    p.park(300, 900)
    mark = p.tb.mark()
    for _ in range(30):
        p.tb.restore(mark)
        out = p.drive_across(lambda: p.outside_spot("kiosk", 120, 300, 120), outward=True)
        p.tb.park(rng.uniform(45, 90), ignition=True)
        back = p.drive_across(lambda: p.home, outward=False)
        exit_lo, _ = crossing_window(out, p.zone.shape, outward=True)
        _, enter_hi = crossing_window(back, p.zone.shape, outward=False)
        if enter_hi - exit_lo < GRACE_MS - 60_000:  # back well within the grace
            break
    else:
        msg = f"no kiosk near {p.zone.fence_id} is close enough for a quick exit"
        raise RuntimeError(msg)
    p.errands_until_end()
    tracker = p.wired(p.tb.build())
    zone = p.zone.fence_id
    required = (
        p.expect(
            "geofence.exit",
            *crossing_window(out, p.zone.shape, outward=True),
            fence_id=zone,
            count=1,
            why="stepped out of the zone",
        ),
        p.expect(
            "geofence.enter",
            *crossing_window(back, p.zone.shape, outward=False),
            fence_id=zone,
            count=1,
            why="back within the grace: no zone.left",
        ),
    )
    return p.car(ScenarioKind.QUICK_EXIT, (tracker,), (p.loan((tracker.device_id,)),), required)


def tracker_removed(setup: CarSetup, rng: random.Random) -> Car:
    """Two trackers; the hidden one is pulled out and left at the kerb, the car drives off."""
    p = Script(setup, rng)
    p.park(300, 600)
    p.errand((900, 1500), PARKED_FLOOR_S)
    parked = p.tb.phases[-1]
    assert isinstance(parked, Stay)
    removed = parked.t0_ms + _ms(rng, 300, 600, setup.pace)
    go = p.drive_across(lambda: p.outside_spot("away", 2_000, 5_000, 400), outward=True)
    _until_end(p)
    car_track = p.tb.build()
    drop = (
        parked.point[0] + rng.uniform(-15, 15),
        parked.point[1] + rng.uniform(-15, 15),
    )
    left = Stay(removed, setup.t1_ms, drop, None, parked.odo_m, parked.angle_deg)
    hidden = Tracker(
        f"{setup.device_id}b",
        TrackerModel.BATTERY,
        car_track.until(removed).then(Track((left,))),
    )
    main = p.wired(car_track)
    loan = p.loan((main.device_id, hidden.device_id))
    apart_lo, apart_hi = apart_window(go, drop, SEPARATION_M)
    required = (
        Expectation(
            "pledge.tracker_separation",
            loan_id=loan.loan_id,
            count=1,
            ts_min_ms=apart_lo,
            # two comparisons over 500 m: a fix of either tracker, then one more
            ts_max_ms=apart_hi + MOVING_GAP_MS,
            why="the hidden tracker stayed behind as the car drove away",
        ),
        *p.left_zone(go, "drove away without its hidden tracker"),
    )
    return p.car(ScenarioKind.TRACKER_REMOVED, (main, hidden), (loan,), required)


def vin_swap(setup: CarSetup, rng: random.Random) -> Car:
    """The OBD tracker is unplugged and plugged into another car, whose VIN it then reports."""
    p = Script(setup, rng)
    p.park(300, 600)
    p.errand((1500, 2400), PARKED_FLOOR_S)
    parked = p.tb.phases[-1]
    unplug = parked.t0_ms + _ms(rng, 300, 600, setup.pace)
    plug = unplug + _ms(rng, 600, 1200, setup.pace)
    car_a = p.tb.build()
    other = make_vehicle(rng, setup.vins)
    b = TrackBuilder(
        p.city,
        rng,
        p.inside_spot("other car", away_from=p.tb.place),
        unplug,
        other.odometer_km * 1000,
    )
    b.park_until(plug)
    p.tb = b
    # the other car drives off as the tracker comes to: a first fix of a parked car 300 m
    # from where the tracker last stood would be a tow
    p.errand((600.0, 2400.0))
    p.errands_until_end()
    track = car_a.until(unplug).then(p.tb.build())
    events: tuple[Event, ...] = (
        Silence(unplug, plug),
        StatusChange(plug, vin=other.vin),
        Resend(plug, Stream.STATUS),
    )
    tracker = p.wired(track, events)
    required = (
        p.expect(
            "pledge.vin_conflict",
            plug,
            plug,
            count=1,
            why=f"reports VIN {other.vin} of another car, in every heartbeat",
        ),
    )
    return p.car(ScenarioKind.VIN_SWAP, (tracker,), (p.loan((tracker.device_id,)),), required)


def spoofed_jump(setup: CarSetup, rng: random.Random) -> Car:
    """Mid-drive, one fix lands hundreds of kilometres away; the next ones are normal."""
    p = Script(setup, rng)
    p.park(300, 600)
    drive = p.errand((900, 1800))
    while drive.t1_ms - drive.t0_ms < 180_000:
        drive = p.errand((600, 1200))
    p.errands_until_end()
    at = drive.t0_ms + round((drive.t1_ms - drive.t0_ms) * rng.uniform(0.3, 0.7))
    lat, lon = p.city.frame.to_latlon(*p.home.point)
    far = destination(lat, lon, rng.uniform(0, 360), rng.uniform(200_000, 600_000))
    tracker = p.wired(p.tb.build(), (WildFix(at, round(far[0], 6), round(far[1], 6)),))
    required = (
        p.expect("gps.impossible_travel", at, at, count=1, why="one fix hundreds of km away"),
    )
    return p.car(ScenarioKind.SPOOFED_JUMP, (tracker,), (p.loan((tracker.device_id,)),), required)


def power_cut(setup: CarSetup, rng: random.Random) -> Car:
    """Parked at home, the tracker's case is opened, then its power wire is cut."""
    p = Script(setup, rng)
    p.park(300, 600)
    p.errand((600, 900))
    parked = _until_end(p)
    opened = parked.t0_ms + _ms(rng, 600, 1200, setup.pace)
    cut = opened + _ms(rng, 30, 120)
    if cut >= parked.t1_ms - 600_000:
        msg = "the power cut would come less than 10 min before the end of the run"
        raise DoesNotFit(msg)
    events = (StatusChange(opened, tamper=True), StatusChange(cut, ext_power=False))
    tracker = p.wired(p.tb.build(), events)
    required = (
        p.expect("tamper", opened, opened, count=1, why="the case was opened"),
        p.expect("power.disconnected", cut, cut, count=1, why="the power wire was cut"),
    )
    return p.car(ScenarioKind.POWER_CUT, (tracker,), (p.loan((tracker.device_id,)),), required)


def goes_silent(setup: CarSetup, rng: random.Random) -> Car:
    """Parked at home, the tracker says nothing for 45-55 min, then reports again."""
    p = Script(setup, rng)
    p.park(300, 600)
    p.errand((600, 900))
    parked = _until_end(p)
    start = parked.t0_ms + _ms(rng, 300, 600, setup.pace)
    # silent well past the offline limit (the replay's, and a live engine's, if longer)
    longest = max(OFFLINE_MS, setup.offline_ms) + SILENCE_PAD_MS
    end = start + max(_ms(rng, 2700, 3300, setup.pace), longest)
    if end >= setup.t1_ms - 600_000:
        msg = "the silence would end less than 10 min before the end of the run"
        raise DoesNotFit(msg)
    tracker = p.wired(p.tb.build(), (Silence(start, end),))
    required = (
        p.expect(
            "device.offline",
            start - STILL_GAP_MS + OFFLINE_MS,
            start + OFFLINE_MS,
            count=1,
            why="no reading for 30 min of replay time",
        ),
        p.expect("device.online", end, end + STILL_GAP_MS, count=1, why="reporting again"),
    )
    return p.car(ScenarioKind.GOES_SILENT, (tracker,), (p.loan((tracker.device_id,)),), required)


def silent_outside(setup: CarSetup, rng: random.Random) -> Car:
    """The car pulls up just outside its zone and the tracker goes dark for good.

    Its zone grace runs out while it says nothing: `zone.left` must still come (DESIGN §4).
    """
    p = Script(setup, rng)
    p.park(300, 900)
    out = p.drive_across(lambda: p.outside_spot("garage", 250, 700, 250), outward=True)
    _until_end(p)
    start = out.t1_ms + _ms(rng, 20, 60)
    tracker = p.wired(p.tb.build(), (Silence(start, setup.t1_ms + 1),))
    required = (
        *p.left_zone(out, "parked just outside the zone, then silent"),
        p.expect(
            "device.offline",
            start - STILL_GAP_MS + OFFLINE_MS,
            start + OFFLINE_MS,
            count=1,
            why="silent for good",
        ),
    )
    return p.car(ScenarioKind.SILENT_OUTSIDE, (tracker,), (p.loan((tracker.device_id,)),), required)


def impounded(setup: CarSetup, rng: random.Random) -> Car:
    """The car is driven into an impound lot: an alert at once (dwell 0)."""
    p = Script(setup, rng)
    site = p.nearest_site("impound")
    p.park(300, 900)
    there = p.drive_across(lambda: site_place(p.city, site), outward=True)
    _until_end(p)
    tracker = p.wired(p.tb.build())
    fid = site.fence_id
    enter_lo, enter_hi = crossing_window(there, site.shape, outward=False)
    dwell_ms = dwell_s(site) * 1000
    required = (
        *p.left_zone(there, "driven to an impound lot"),
        p.expect("geofence.enter", enter_lo, enter_hi, fence_id=fid, why="impound lot"),
        p.expect(
            "pledge.risk_site_dwell",
            enter_lo + dwell_ms,
            enter_hi + dwell_ms,
            fence_id=fid,
            count=1,
            why="an impound lot alerts at once",
        ),
    )
    return p.car(ScenarioKind.IMPOUNDED, (tracker,), (p.loan((tracker.device_id,)),), required)


def double_pledge(setup: CarSetup, rng: random.Random) -> Car:
    """Two lenders hold active loans on the same car, each with its own tracker in it."""
    p = Script(setup, rng)
    p.park(300, 900)
    p.errands_until_end()
    track = p.tb.build()
    first = p.wired(track)
    second = p.wired(track, device_id=f"{setup.device_id}x", ts_format=TsFormat.ISO_CST)
    loans = (
        p.loan((first.device_id,)),
        p.loan((second.device_id,), loan_id=setup.second_loan_id),
    )
    required = (
        Expectation(
            "pledge.vin_conflict",
            vin=p.vehicle.vin,
            count=1,
            ts_min_ms=setup.t0_ms,
            ts_max_ms=setup.t0_ms + 25_000,
            why="one VIN on two active loans, raised at the first reading",
        ),
    )
    return p.car(ScenarioKind.DOUBLE_PLEDGE, (first, second), loans, required)


def quiet(setup: CarSetup, rng: random.Random, *, owntracks: bool) -> Car:
    """Background traffic: errands inside the zone, a real fleet's glitches, no alert."""
    p = Script(setup, rng)
    p.park(60, 1800)
    p.errands_until_end(min_left_s=1200)
    track = p.tb.build()
    tracker: Tracker
    if owntracks:
        tracker = Tracker(f"fleet:car{setup.car_no:02d}", TrackerModel.OWNTRACKS, track)
    else:
        tracker = Tracker(
            setup.device_id,
            TrackerModel.WIRED,
            track,
            TsFormat.ISO_CST,
            p.vehicle.vin,
            p.dead_zone(track),
            glitches=True,
        )
    loan = p.loan((tracker.device_id,))
    return p.car(None, (tracker,), (loan,), (), role=Role.QUIET)


def dwell_s(site: Area) -> int:
    """A risk site's dwell by DESIGN §4: its own `dwell_s`, else its category's default."""
    if site.dwell_s is not None:
        return site.dwell_s
    return DWELL_DEFAULTS_S.get(site.category or "", DWELL_OTHER_S)


BUILDERS: dict[ScenarioKind, Callable[[CarSetup, random.Random], Car]] = {
    ScenarioKind.STAYS_HOME: stays_home,
    ScenarioKind.LEAVES_ZONE: leaves_zone,
    ScenarioKind.PAWNSHOP_DWELL: pawnshop_dwell,
    ScenarioKind.TOWED: towed,
    ScenarioKind.TRACKER_REMOVED: tracker_removed,
    ScenarioKind.VIN_SWAP: vin_swap,
    ScenarioKind.SPOOFED_JUMP: spoofed_jump,
    ScenarioKind.POWER_CUT: power_cut,
    ScenarioKind.GOES_SILENT: goes_silent,
    ScenarioKind.SILENT_OUTSIDE: silent_outside,
    ScenarioKind.IMPOUNDED: impounded,
    ScenarioKind.DOUBLE_PLEDGE: double_pledge,
    ScenarioKind.FLATBED_TOW: flatbed_tow,
    ScenarioKind.BRIEF_VISIT: brief_visit,
    ScenarioKind.QUICK_EXIT: quick_exit,
}
