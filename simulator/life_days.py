"""A planned car's days, lived: its true track over the run, built leg by leg.

Each local day (in the borrower's `tz`, DST included) is a list of `Leg`s: leave for a place
at a time. A commuter drives to work on weekdays (07:00-08:15, home again 17:05-18:30, now
and then by way of a shop, sometimes an errand in the evening), runs one to three errands on
other days, and is home by 21:45: a quiet car is parked at home every night (22:00-06:00).
A car's planned visits (`CarPlan.visits`: a risky car's lot, pawnshop or other district, a
quiet car's mall errands from `simulator.life_noise`) replace the routine around them; a
drifting car goes "home" to its other place on its drift nights; a towed car is hauled off at
night (ignition off, 20-40 km/h) and stays where it was left; a ride-hailing car drives
between its ranks from dawn to late evening, every day, until it has made its day's 420-500 km.

Drives run on `simulator.motion` (street routes, kinematic model, inside the district's
interior unless the car leaves it on purpose). The same trip is made again and again in a
two-week life: each (from, to) pair keeps two drives, replayed at the new time, so a fleet
costs in proportion to its places, not to its days.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from shapely import Polygon

from simulator.city import City, Place
from simulator.life_plan import Behaviour, CarPlan, Visit, local_date, local_dates, local_ms
from simulator.motion import Move, Track, TrackBuilder

ROUTINE = "routine"
TOW = "tow"
RIDE_SPEED_KMH = (35.0, 80.0)  # ring roads and expressways between the ranks
TOW_SPEED_KMH = (20.0, 40.0)
DRIVE_VARIANTS = 2
HOME_BY_H = 21.25  # the last trip home leaves by then: parked before 22:00


@dataclass(frozen=True, slots=True)
class Leg:
    """Leave for `place` at `depart_ms` (later if the car is still on its way)."""

    depart_ms: int
    place: Place
    kind: str = ROUTINE  # ROUTINE, TOW, or the Behaviour of a planned visit
    outside: bool = False  # the drive may leave the district


@dataclass(frozen=True, slots=True)
class Stop:
    """Where a planned visit really took the car: arrived, and left again (or the run ended)."""

    kind: str
    place: Place
    arrive_ms: int
    leave_ms: int


@dataclass(frozen=True, slots=True)
class Life:
    """A car's true track over the run, its planned stops as lived, and the tow if any."""

    track: Track
    stops: tuple[Stop, ...]
    tow: Move | None
    km_per_day: float


class _Driver:
    """A `TrackBuilder` that replays drives it has made before (same places, new time)."""

    def __init__(
        self, city: City, rng: random.Random, place: Place, t_ms: int, odo_m: float, inner: Polygon
    ) -> None:
        self.tb = TrackBuilder(city, rng, place, t_ms, odo_m)
        self.rng = rng
        self.inner = inner
        self.cache: dict[tuple[Place, Place, bool, bool, tuple[float, float], int], Move] = {}

    def go(
        self,
        to: Place,
        *,
        outside: bool = False,
        ignition: bool = True,
        speed_kmh: tuple[float, float] = (25.0, 60.0),
    ) -> Move:
        """Drive (or be towed) to `to`, on streets inside the district unless `outside`."""
        tb = self.tb
        key = (tb.place, to, outside, ignition, speed_kmh, self.rng.randrange(DRIVE_VARIANTS))
        done = self.cache.get(key)
        if done is None:
            region = None if outside else self.inner
            try:
                move = tb.plan(to, region, ignition=ignition, speed_kmh=speed_kmh)
            except RuntimeError:  # no route inside the interior: take any street
                move = tb.plan(to, None, ignition=ignition, speed_kmh=speed_kmh)
            self.cache[key] = move
        else:
            span = done.t1_ms - done.t0_ms
            move = Move(tb.t_ms, tb.t_ms + span, done.samples, done.ignition, tb.odo_m)
        return tb.commit(move, to)

    def trip(self, to: Place, *, outside: bool = False) -> Move:
        """An ignition cycle: warm up, drive, park and switch off."""
        self.tb.park(self.rng.uniform(15, 90), ignition=True)
        move = self.go(to, outside=outside)
        self.tb.park(self.rng.uniform(5, 40), ignition=True)
        return move


def _routine(rng: random.Random, car: CarPlan, tz: ZoneInfo, day: date) -> list[Leg]:
    """A quiet day: the commute on weekdays, errands otherwise; home before the night."""

    def at(lo_h: float, hi_h: float) -> int:
        return local_ms(tz, day, rng.uniform(lo_h, hi_h))

    def hours(lo_h: float, hi_h: float) -> int:
        return round(rng.uniform(lo_h, hi_h) * 3600) * 1000

    home = car.night_place(day)
    last_home = local_ms(tz, day, HOME_BY_H)
    legs: list[Leg] = []
    if car.work is not None and day.weekday() < 5:
        legs.append(Leg(at(7.0, 8.25), car.work))
        if rng.random() < 0.2:
            lunch = at(11.8, 12.3)
            legs += [Leg(lunch, rng.choice(car.errands)), Leg(lunch + hours(0.5, 0.8), car.work)]
        leave = at(17.1, 18.5)
        if rng.random() < 0.3:
            legs += [Leg(leave, rng.choice(car.errands)), Leg(leave + hours(0.3, 0.7), home)]
        else:
            legs.append(Leg(leave, home))
        if rng.random() < 0.3:
            evening = at(19.2, 20.0)
            back = min(evening + hours(0.6, 1.2), last_home)
            legs += [Leg(evening, rng.choice(car.errands)), Leg(back, home)]
        return legs
    windows = ((9.5, 11.5), (13.0, 15.5), (17.0, 19.5))
    for lo, hi in sorted(rng.sample(windows, rng.randint(1, 3))):
        go = at(lo, hi)
        back = min(go + hours(0.6, 1.5), last_home)
        legs += [Leg(go, rng.choice(car.errands)), Leg(back, home)]
    return legs


def _overlay(legs: list[Leg], visit: Visit, before: Place) -> list[Leg]:
    """The day's legs with `visit` in place of the routine around it; the car heads back to
    where the routine would have it (`before`: where it was when the day began)."""
    lo, hi = visit.start_ms - 45 * 60_000, visit.end_ms + 15 * 60_000
    back = before
    for leg in legs:
        if leg.depart_ms <= hi:
            back = leg.place
    kept = [leg for leg in legs if not lo <= leg.depart_ms <= hi]
    kept += [
        Leg(visit.start_ms, visit.place, visit.kind.value, visit.outside),
        Leg(visit.end_ms, back, ROUTINE, visit.outside),
    ]
    return sorted(kept, key=lambda leg: leg.depart_ms)


def _ride_day(d: _Driver, rng: random.Random, car: CarPlan, tz: ZoneInfo, day: date) -> None:
    """A ride-hailing shift: rank to rank until the day's distance is made, then home."""
    tb = d.tb
    start = local_ms(tz, day, rng.uniform(5.8, 6.6))
    stop_at = local_ms(tz, day, 23.0)
    breaks = [
        (local_ms(tz, day, rng.uniform(11.8, 12.6)), rng.uniform(30, 45) * 60),
        (local_ms(tz, day, rng.uniform(17.8, 18.6)), rng.uniform(25, 35) * 60),
    ]
    target_m = rng.uniform(420_000, 500_000)
    if start > tb.t_ms:
        tb.park_until(start)
    odo0 = tb.odo_m
    while tb.t_ms < stop_at and tb.odo_m - odo0 < target_m:
        if breaks and tb.t_ms >= breaks[0][0]:
            tb.park(breaks.pop(0)[1])  # a meal, engine off
            continue
        options = [p for p in rng.sample(car.hotspots, 3) if p != tb.place]
        nxt = max(
            options,
            key=lambda p: abs(p.point[0] - tb.place.point[0]) + abs(p.point[1] - tb.place.point[1]),
        )
        tb.park(rng.uniform(20, 100), ignition=True)  # picking up a passenger
        d.go(nxt, speed_kmh=RIDE_SPEED_KMH)
    tb.park(rng.uniform(30, 120), ignition=True)
    d.go(car.night_place(day), speed_kmh=RIDE_SPEED_KMH)
    tb.park(rng.uniform(5, 30), ignition=True)


def _legs(rng: random.Random, car: CarPlan, tz: ZoneInfo, day: date) -> list[Leg]:
    """The day's legs: the routine, with the planned visits and the tow laid over it."""
    legs = _routine(rng, car, tz, day)
    before = car.night_place(day - timedelta(days=1))
    for visit in car.visits:
        if local_date(visit.start_ms, tz) == day:
            legs = _overlay(legs, visit, before)
    if car.tow_ms is not None and car.yard is not None and local_date(car.tow_ms, tz) == day:
        legs = [leg for leg in legs if leg.depart_ms < car.tow_ms]
        legs.append(Leg(car.tow_ms, car.yard, TOW))
    return legs


def live(car: CarPlan, city: City, inner: Polygon, seed: str, t0_ms: int, t1_ms: int) -> Life:
    """The car's true track over [t0_ms, t1_ms] and its planned stops as lived (pure)."""
    rng = random.Random(f"{seed}:life:{car.car_no}")
    tz = ZoneInfo(car.tz)
    first = local_date(t0_ms, tz) - timedelta(days=1)
    d = _Driver(
        city, rng, car.home, local_ms(tz, first, 0.0), car.vehicle.odometer_km * 1000, inner
    )
    tb = d.tb
    stops: list[Stop] = []
    open_stop: tuple[str, Place, int] | None = None
    tow: Move | None = None
    for day in [first, *local_dates(tz, t0_ms, t1_ms)]:
        if tow is not None or tb.t_ms >= t1_ms:
            break
        if car.behaviour is Behaviour.HIGH_MILEAGE:
            _ride_day(d, rng, car, tz, day)
            continue
        for leg in _legs(rng, car, tz, day):
            if leg.depart_ms >= t1_ms:
                break
            if leg.place == tb.place:
                continue
            if leg.depart_ms > tb.t_ms:
                tb.park_until(leg.depart_ms)
            if open_stop is not None:
                stops.append(Stop(open_stop[0], open_stop[1], open_stop[2], tb.t_ms))
                open_stop = None
            if leg.kind == TOW:
                tow = d.go(leg.place, ignition=False, speed_kmh=TOW_SPEED_KMH)
                break
            move = d.trip(leg.place, outside=leg.outside)
            if leg.kind != ROUTINE:
                open_stop = (leg.kind, leg.place, move.t1_ms)
    if tb.t_ms < t1_ms:
        tb.park_until(t1_ms)
    if open_stop is not None:
        stops.append(Stop(open_stop[0], open_stop[1], open_stop[2], t1_ms))
    track = tb.build().window(t0_ms, t1_ms)
    driven_m = sum(
        p.samples[-1].dist_m - p.samples[0].dist_m for p in track.phases if isinstance(p, Move)
    )
    days = (t1_ms - t0_ms) / 86_400_000
    stops = [s for s in stops if s.leave_ms > t0_ms and s.arrive_ms < t1_ms]
    return Life(track, tuple(stops), tow, round(driven_m / 1000 / days, 1))
