"""The noise of a real fleet's quiet cars: underground garages, shared malls, multipath, bumps.

A perfectly quiet commuter raises no alert at all; a real one now and then does, and a lending
model must still score the risky cars above it. `add_noise(plan)` gives the commuters (and only
them: the risky cars and the quiet plan stay as they were, its draws come from `{seed}:noise`)
what a real fleet's quiet cars have:

- underground garages: about 1 in 8 commuters (of those with a workplace) parks at work in a
  garage where the tracker has no signal. On about half its workdays no reading comes for
  2-4 hours while the car is parked there: nothing is buffered, the tracker simply resumes.
  That is long enough for `device.offline` (1800 s) and then `device.online`;
- malls: 3-4 shopping malls and supermarkets per district, clear of the risk sites and the
  unmarked lots. Four commuters in five shop at one or two of them about once or twice a week,
  mostly at weekends or after work, parked (ignition off) 15-60 min and now and then longer:
  several loans parked 30 min or more within 150 m, the false positive a risk-site discovery
  (DESIGN §8) has to live with;
- GPS multipath: 1 in 20 commuters gets one or two fixes at night, parked at home, 80-170 m
  off with hdop 5-10: short of the 200 m a tow needs, clear of every risk site;
- road bumps: 1 in 4 commuters has a tracker that reports vibration (`vib`, 0.3-1.5 g, below
  the 2.5 g of a shock) on about one drive in eight.

Commuters never leave their district. A small fleet gets at least one commuter of each share,
so that every noise plays. `signal_gaps` finds a garage's planned days in the lived track.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import date
from zoneinfo import ZoneInfo

from shapely import Point as ShapelyPoint

from simulator.life_places import MALL_SPREAD_M, Mall, lot_entrance, mall_blocks, stall
from simulator.life_plan import (
    Behaviour,
    CarNoise,
    CarPlan,
    Glitch,
    LifePlan,
    LifeSpec,
    Noise,
    SignalGap,
    Visit,
    local_date,
    local_dates,
    local_ms,
    nights,
)
from simulator.motion import Stay, Track

GARAGE_SHARE = 1 / 8
MULTIPATH_SHARE = 1 / 20
BUMPS_SHARE = 1 / 4
MALL_SHOPPERS = 0.8  # the share of commuters that shop at the malls
MALLS_PER_DISTRICT = (3, 4)
MALL_KINDS = ("Mall", "Supermarket", "Plaza", "Hypermarket")
MALL_STAY_MIN = (13.0, 60.0, 15.0)  # most stays: low, high, mode (minutes), so 4 in 10 >= 30
MALL_LONG_MIN = (60.0, 100.0)  # one stay in ten: the weekly shop
MALL_LONG_P = 0.1
DRIVE_M_PER_MIN = 500.0  # a visit allows for the drive at 30 km/h by the grid, warm-up and all
MALL_LAST_H = 21.0  # the drive home from a mall leaves by then: home before the night
GARAGE_DAY_P = 0.5
GAP_MIN_MS = 3_600_000  # a gap that the car's departure would cut shorter is left out
GAP_LEAVE_MS = 10 * 60_000  # the signal is back this long before the car drives out
BUMP_CHANCE = (0.08, 0.2)
MULTIPATH_M = (80.0, 170.0)
MULTIPATH_HDOP = (5.0, 10.0)
MULTIPATH_SITE_CLEAR_M = 60.0


def _share(quiet: int, share: float, pool: int) -> int:
    """How many of `pool` cars get a noise that `share` of the `quiet` cars have (one at least)."""
    return min(pool, max(1, round(quiet * share))) if quiet else 0


def add_noise(plan: LifePlan) -> LifePlan:
    """The plan with its commuters' noise, if `plan.spec.noise` (pure and seeded)."""
    spec = plan.spec
    if not spec.noise:
        return plan
    rng = random.Random(f"{spec.seed}:noise")
    malls = _malls(plan, rng)
    quiet = [c.car_no for c in plan.cars if c.behaviour is Behaviour.COMMUTER]
    workers = [c.car_no for c in plan.cars if c.behaviour is Behaviour.COMMUTER and c.work]
    garage = set(rng.sample(workers, _share(len(quiet), GARAGE_SHARE, len(workers))))
    multipath = set(rng.sample(quiet, _share(len(quiet), MULTIPATH_SHARE, len(quiet))))
    bumps = set(rng.sample(quiet, _share(len(quiet), BUMPS_SHARE, len(quiet))))
    cars = []
    for car in plan.cars:
        if car.behaviour is not Behaviour.COMMUTER:
            cars.append(car)
            continue

        def rng_of(noise: Noise, n: int = car.car_no) -> random.Random:
            return random.Random(f"{spec.seed}:noise:{noise.value}:{n}")

        tz = ZoneInfo(car.tz)
        near = [m for m in malls if m.zone_index == car.zone_index]
        visits, shops = _mall_visits(spec, car, near, rng_of(Noise.MALL), tz)
        noise = CarNoise(
            garage=_garage_days(spec, rng_of(Noise.GARAGE), tz) if car.car_no in garage else (),
            glitches=(
                _glitches(plan, car, rng_of(Noise.MULTIPATH), tz) if car.car_no in multipath else ()
            ),
            bump_chance=(
                round(rng_of(Noise.BUMPS).uniform(*BUMP_CHANCE), 3) if car.car_no in bumps else 0.0
            ),
            malls=shops,
        )
        cars.append(replace(car, visits=car.visits + visits, noise=noise))
    return replace(plan, cars=tuple(cars), malls=tuple(malls))


def _malls(plan: LifePlan, rng: random.Random) -> list[Mall]:
    """3-4 malls per district, clear of the risk sites and the unmarked lots."""
    city = plan.city
    away = [s.center for s in city.sites] + [lot.center for lot in plan.lots]
    malls: list[Mall] = []
    for z, zone in enumerate(city.zones):
        count = rng.randint(*MALLS_PER_DISTRICT)
        district = zone.name.removesuffix(" permitted area")
        for center in mall_blocks(city, plan.inner[z], rng, count, away):
            mall_id = f"mall-{len(malls) + 1:02d}"
            name = f"{district} {rng.choice(MALL_KINDS)} {len(malls) + 1}"
            entrance = lot_entrance(city, mall_id, center)  # its stalls: "{mall_id} stall"
            malls.append(Mall(mall_id, name, z, center, entrance))
    return malls


def _open_days(spec: LifeSpec, tz: ZoneInfo, lo_h: float, hi_h: float) -> list[date]:
    """The local dates whose hours `lo_h`..`hi_h` lie wholly inside the run."""
    return [
        d
        for d in local_dates(tz, spec.start_ms, spec.end_ms)
        if local_ms(tz, d, lo_h) >= spec.start_ms and local_ms(tz, d, hi_h) <= spec.end_ms
    ]


def _weekend_first(rng: random.Random, days: list[date], count: int) -> list[date]:
    """`count` of `days`, a weekend day three times as likely as a weekday."""
    left, out = list(days), []
    for _ in range(min(count, len(left))):
        pick = rng.choices(left, [3.0 if d.weekday() >= 5 else 1.0 for d in left])[0]
        left.remove(pick)
        out.append(pick)
    return sorted(out)


def _mall_visits(
    spec: LifeSpec, car: CarPlan, malls: list[Mall], rng: random.Random, tz: ZoneInfo
) -> tuple[tuple[Visit, ...], tuple[str, ...]]:
    """A shopper's mall errands, once or twice a week, and the malls it uses."""
    if not malls or rng.random() >= MALL_SHOPPERS:
        return (), ()
    by_distance = sorted(malls, key=lambda m: math.dist(m.center, car.home.point))
    shops = [by_distance[0]]
    if len(by_distance) > 1 and rng.random() < 0.5:
        shops.append(rng.choice(by_distance[1:]))
    per_week = rng.choice((1, 2))
    days = _open_days(spec, tz, 9.5, 21.5)
    visits = []
    for k in range(0, len(days), 7):
        week = days[k : k + 7]
        count = math.floor(per_week * len(week) / 7 + rng.random())
        for day in _weekend_first(rng, week, count):
            evening = car.work is not None and day.weekday() < 5  # after work
            start = local_ms(tz, day, rng.uniform(18.6, 19.8) if evening else rng.uniform(10, 18.5))
            mall = rng.choice(shops)
            long = rng.random() < MALL_LONG_P
            stay_min = rng.uniform(*MALL_LONG_MIN) if long else rng.triangular(*MALL_STAY_MIN)
            origin = car.work if evening and car.work is not None else car.home
            drive_min = 1.5 + _grid_m(origin.point, mall.center) / DRIVE_M_PER_MIN
            end = min(
                start + round((drive_min + stay_min) * 60) * 1000, local_ms(tz, day, MALL_LAST_H)
            )
            visits.append(Visit(Noise.MALL, start, end, stall(rng, mall.entrance, MALL_SPREAD_M)))
    return tuple(visits), tuple(m.mall_id for m in shops)


def _grid_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """The street distance between two points of the grid, about."""
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


def _garage_days(spec: LifeSpec, rng: random.Random, tz: ZoneInfo) -> tuple[SignalGap, ...]:
    """About half the workdays (one at least), each with a 2-4 h gap 0.5-2.5 h after parking."""
    workdays = [d for d in _open_days(spec, tz, 7.0, 19.0) if d.weekday() < 5]
    days = [d for d in workdays if rng.random() < GARAGE_DAY_P]
    if not days and workdays:
        days = [rng.choice(workdays)]
    return tuple(
        SignalGap(
            d, round(rng.uniform(0.5, 2.5) * 3600) * 1000, round(rng.uniform(2, 4) * 3600) * 1000
        )
        for d in days
    )


def _glitches(plan: LifePlan, car: CarPlan, rng: random.Random, tz: ZoneInfo) -> tuple[Glitch, ...]:
    """One or two multipath fixes on nights at home, never near a risk site or the zone's edge."""
    spec = plan.spec
    its_nights = nights(tz, spec.start_ms, spec.end_ms)
    inner = plan.inner[car.zone_index]
    out = []
    for night in sorted(rng.sample(its_nights, min(len(its_nights), rng.choice((1, 2))))):
        at = local_ms(tz, night, rng.uniform(23.0, 28.5))  # 23:00 to 04:30
        hdop = round(rng.uniform(*MULTIPATH_HDOP), 1)
        for _ in range(20):
            r, a = rng.uniform(*MULTIPATH_M), rng.uniform(0.0, 2 * math.pi)
            du, dv = r * math.cos(a), r * math.sin(a)
            p = ShapelyPoint(car.home.point[0] + du, car.home.point[1] + dv)
            clear = all(s.shape.distance(p) >= MULTIPATH_SITE_CLEAR_M for s in plan.city.sites)
            if clear and inner.contains(p):
                out.append(Glitch(at, round(du, 1), round(dv, 1), hdop))
                break
    return tuple(out)


def signal_gaps(car: CarPlan, track: Track) -> tuple[tuple[int, int], ...]:
    """The spans (epoch ms, end exclusive) in which a garage car's trackers are silent: its
    planned gaps, in the longest stay parked at work of each planned day, cut short
    `GAP_LEAVE_MS` before the car leaves (left out if that leaves less than an hour)."""
    if car.noise is None or not car.noise.garage or car.work is None:
        return ()
    tz = ZoneInfo(car.tz)
    at_work: dict[date, Stay] = {}
    for phase in track.phases:
        if isinstance(phase, Stay) and phase.ignition is False and phase.point == car.work.point:
            day = local_date(phase.t0_ms, tz)
            known = at_work.get(day)
            if known is None or phase.t1_ms - phase.t0_ms > known.t1_ms - known.t0_ms:
                at_work[day] = phase
    gaps = []
    for gap in car.noise.garage:
        stay = at_work.get(gap.day)
        if stay is None:
            continue
        start = stay.t0_ms + gap.offset_ms
        end = min(start + gap.length_ms, stay.t1_ms - GAP_LEAVE_MS)
        if end - start >= GAP_MIN_MS:
            gaps.append((start, end))
    return tuple(gaps)
