"""Scenarios: what one pledged car does, which trackers ride in it, and what must be alerted.

Each builder scripts a car's day (`simulator.script`: parked at home, errands inside its
zone, the trip that makes the scenario) and returns a `Car` with its loans, trackers and the
alerts it guarantees (`required`, with counts and event-time windows). Crossings of fences a
car merely drives past are not listed here: `fleet` allows them from the geometry of the
tracks. `BUILDERS` maps every `ScenarioKind` to its builder.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np

from devices.readings import Stream
from simulator.car import Car, CarSetup, DoesNotFit, ScenarioKind
from simulator.city import site_place
from simulator.frame import destination
from simulator.motion import Stay, Track, TrackBuilder
from simulator.script import (
    GRACE_MS,
    MOVING_GAP_MS,
    OFFLINE_MS,
    OUTSIDE_FLOOR_S,
    PARKED_FLOOR_S,
    SEPARATION_M,
    SILENCE_PAD_MS,
    STILL_GAP_MS,
    Script,
    apart_window,
    crossing_window,
    draw_ms,
    dwell_s,
    settled_ms,
    since_ms,
)
from simulator.trackers import (
    Event,
    Resend,
    Shock,
    Silence,
    StatusChange,
    Tracker,
    TrackerModel,
    TsFormat,
    WildFix,
)
from simulator.truth import Expectation, Role
from simulator.vehicles import make_vehicle


def stays_home(setup: CarSetup, rng: random.Random) -> Car:
    """Errands inside the zone all day, a tunnel on the way: no alert at all."""
    p = Script(setup, rng)
    p.park(300, 900)
    p.errand((1200, 2400))
    p.errand((600, 1500))
    p.go_home()
    p.park_until_end()
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
    p.park_until_end()
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
    p.park_until_end()
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
    hook = p.tb.t_ms - draw_ms(rng, 60, 150)
    tow = p.drive_across(
        lambda: p.outside_spot("yard", 1_000, 4_000, 400),
        outward=True,
        ignition=False,
        speed_kmh=(20.0, 40.0),
    )
    p.park_until_end()
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
    p.park_until_end()
    tracker = p.wired(p.tb.build())
    # the first fix reading over 10 km/h or over 200 m from the parking spot, GPS error aside
    speed = np.array([s.speed_mps * 3.6 for s in tow.samples])
    start = tow.samples[0]
    moved = np.array([math.dist((s.u, s.v), (start.u, start.v)) for s in tow.samples])
    lo = since_ms(tow, (speed > 7.0) | (moved > 170.0))
    hi = settled_ms(tow, (speed > 13.0) | (moved > 230.0))
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
    p.park_until_end()
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
    removed = parked.t0_ms + draw_ms(rng, 300, 600, setup.pace)
    go = p.drive_across(lambda: p.outside_spot("away", 2_000, 5_000, 400), outward=True)
    p.park_until_end()
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
    unplug = parked.t0_ms + draw_ms(rng, 300, 600, setup.pace)
    plug = unplug + draw_ms(rng, 600, 1200, setup.pace)
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
    parked = p.park_until_end()
    opened = parked.t0_ms + draw_ms(rng, 600, 1200, setup.pace)
    cut = opened + draw_ms(rng, 30, 120)
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
    parked = p.park_until_end()
    start = parked.t0_ms + draw_ms(rng, 300, 600, setup.pace)
    # silent well past the offline limit (the replay's, and a live engine's, if longer)
    longest = max(OFFLINE_MS, setup.offline_ms) + SILENCE_PAD_MS
    end = start + max(draw_ms(rng, 2700, 3300, setup.pace), longest)
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
    p.park_until_end()
    start = out.t1_ms + draw_ms(rng, 20, 60)
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
    p.park_until_end()
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
