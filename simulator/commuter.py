"""The quiet cars of a fleet: commuters living their days inside their home zone.

A commuter has a home and, seven in ten, a workplace, both kerbside spots well inside its
zone. Its days follow the local clock (China Standard Time): night parking at home, the
morning commute (07:00-09:30), sometimes a lunch errand, the drive home (17:00-19:30, now
and then by way of a shop), sometimes an evening errand; a car without a workplace runs one
to three errands a day. Every drive is an ignition cycle: the engine idles before the car
pulls away and after it stops, then is switched off.

Only the part of its life inside the run's span is built: the trips that overlap it (a
drive under way when the run starts is built whole and cut), so a car costs in proportion
to what it does during the run, not to how long its day is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from simulator.car import Car, CarSetup, LoanSpec
from simulator.city import Place
from simulator.motion import TrackBuilder
from simulator.script import Script
from simulator.trackers import Tracker, TrackerModel, TsFormat
from simulator.truth import Role

DAY_MS = 86_400_000
LOCAL_OFFSET_MS = 8 * 3_600_000  # China Standard Time
LOOKBACK_MS = 3_600_000  # a trip this long before the run may still be under way
_H = 3_600.0


class Stop(StrEnum):
    """Where a trip goes."""

    HOME = "home"
    WORK = "work"
    ERRAND = "errand"


@dataclass(frozen=True, slots=True)
class Trip:
    """Leave for `stop` at `depart_ms` (the car leaves later if it is still on its way)."""

    depart_ms: int
    stop: Stop


@dataclass(frozen=True, slots=True)
class Device:
    """A fleet tracker's make and settings, drawn when the fleet is planned."""

    device_id: str
    model: TrackerModel
    ts_format: TsFormat
    still_ms: int


def draw_device(rng: random.Random, setup: CarSetup) -> Device:
    """A commuter's tracker: mostly hard-wired units, some hidden battery units, a few phones.

    Parked, a unit reports every 2, 5 or 10 minutes (power saving), well inside `offline_s`.
    """
    roll = rng.random()
    still_ms = rng.choice((120_000, 300_000, 600_000))
    ts_format = TsFormat.EPOCH_MS if rng.random() < 0.6 else TsFormat.ISO_CST
    if roll < 0.08:
        prefix = setup.id_prefix or "fleet"
        device_id = f"{prefix}:car{setup.car_no:05d}"
        return Device(device_id, TrackerModel.OWNTRACKS, TsFormat.EPOCH_MS, still_ms)
    model = TrackerModel.BATTERY if roll < 0.2 else TrackerModel.WIRED
    return Device(setup.device_id, model, ts_format, still_ms)


def _day_trips(rng: random.Random, midnight_ms: int, works: bool) -> list[Trip]:
    """One day's trips (local midnight at `midnight_ms`), in order of departure."""

    def at(hour_lo: float, hour_hi: float) -> int:
        return midnight_ms + round(rng.uniform(hour_lo, hour_hi) * _H) * 1000

    trips: list[Trip] = []
    if works:
        trips.append(Trip(at(7.0, 9.5), Stop.WORK))
        if rng.random() < 0.25:
            lunch = at(11.75, 12.5)
            trips += [Trip(lunch, Stop.ERRAND), Trip(lunch + _ms(rng, 0.5, 1.0), Stop.WORK)]
        leave = at(17.0, 19.5)
        if rng.random() < 0.3:
            trips += [Trip(leave, Stop.ERRAND), Trip(leave + _ms(rng, 0.25, 0.75), Stop.HOME)]
        else:
            trips.append(Trip(leave, Stop.HOME))
        if rng.random() < 0.35:
            evening = at(19.75, 21.0)
            trips += [Trip(evening, Stop.ERRAND), Trip(evening + _ms(rng, 0.7, 2.0), Stop.HOME)]
    else:
        for _ in range(rng.randint(1, 3)):
            go = at(9.0, 20.0)
            trips += [Trip(go, Stop.ERRAND), Trip(go + _ms(rng, 0.3, 2.0), Stop.HOME)]
    return sorted(trips, key=lambda t: t.depart_ms)


def _ms(rng: random.Random, hours_lo: float, hours_hi: float) -> int:
    return round(rng.uniform(hours_lo, hours_hi) * _H) * 1000


def trips_between(seed: str, works: bool, t0_ms: int, t1_ms: int) -> list[Trip]:
    """Every trip of the days around [`t0_ms`, `t1_ms`], each day drawn from its own seed."""
    first = (t0_ms - LOOKBACK_MS + LOCAL_OFFSET_MS) // DAY_MS - 1
    last = (t1_ms + LOCAL_OFFSET_MS) // DAY_MS
    trips: list[Trip] = []
    for day in range(first, last + 1):
        midnight = day * DAY_MS - LOCAL_OFFSET_MS
        trips += _day_trips(random.Random(f"{seed}:day:{day}"), midnight, works)
    return trips


def commuter(setup: CarSetup, rng: random.Random, device: Device, loan: LoanSpec) -> Car:
    """A quiet car of a fleet: its commute and errands inside its zone during the run."""
    p = Script(setup, rng)  # draws the home
    works = rng.random() < 0.7
    work = p.inside_spot("work", away_from=p.home) if works else None
    day_seed = f"{rng.getrandbits(64):x}"
    t0, t1 = setup.t0_ms, setup.t1_ms
    trips = trips_between(day_seed, works, t0, t1)
    places = {Stop.HOME: p.home}
    if work is not None:
        places[Stop.WORK] = work
    # the trips from the last one that may still be under way when the run starts
    k = next((i for i, t in enumerate(trips) if t.depart_ms >= t0 - LOOKBACK_MS), len(trips))
    here: Place = p.home
    if k > 0:
        before = trips[k - 1].stop
        here = places.get(before) or p.inside_spot("errand", away_from=p.home)
    start = min(t0, trips[k].depart_ms) if k < len(trips) else t0
    p.tb = TrackBuilder(setup.city, rng, here, start, p.tb.odo_m)
    for trip in trips[k:]:
        if trip.depart_ms >= t1 or p.tb.t_ms >= t1:
            break
        if trip.depart_ms > p.tb.t_ms:
            p.tb.park_until(trip.depart_ms)
        if trip.stop is Stop.ERRAND:
            to = p.inside_spot("errand", away_from=p.tb.place)
        else:
            to = places[trip.stop]
        if to is p.tb.place:
            continue
        p.tb.park(rng.uniform(15, 90), ignition=True)  # warming up, buckling up
        p.tb.drive_to(to, p.inner)
        p.tb.park(rng.uniform(5, 40), ignition=True)  # parking, then the engine off
    if p.tb.t_ms < t1:
        p.tb.park_until(t1)
    track = p.tb.build().window(t0, t1)
    tracker = Tracker(
        device.device_id,
        device.model,
        track,
        device.ts_format,
        p.vehicle.vin if device.model is TrackerModel.WIRED else None,
        p.dead_zone(track) if device.model is not TrackerModel.OWNTRACKS else (),
        glitches=device.model is TrackerModel.WIRED,
        still_ms=device.still_ms,
    )
    return p.car(None, (tracker,), (loan,), (), role=Role.QUIET)
