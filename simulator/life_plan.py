"""A lending fleet's lives, planned: who lives where, works where, and which risk each car plays.

`plan_lives(spec)` is pure and seeded. It lays out the simulated city (`simulator.city`), gives
each district a large permitted area (a zone fence covering the district, about 5 km across)
and a pawnshop inside it, and plans every loan's car: its borrower's time zone, its true home
(and the one declared to the lender), its workplace (seven in ten), its favourite errand spots,
and, for roughly a third of the cars, one risky behaviour (`Behaviour`) with its dates: nights
away, visits to an unmarked lot, a pawnshop or another district, a tow, a tamper, a
ride-hailing life. That is the perfectly quiet fleet: `simulator.life_noise.add_noise` then
gives its quiet cars the noise a real fleet has (`Noise`, `CarNoise`: an underground garage,
mall errands, multipath fixes, road bumps). `simulator.life_days` turns a `CarPlan` into a
second-by-second track.

Spots where cars park for long are kept apart (`simulator.life_places`): no three loans park
near one another except at the planted unmarked lots. Local times follow each loan's `tz`
with `zoneinfo`, DST included; the run starts by default on 2026-03-02, so the US
(2026-03-08) and EU (2026-03-29) changes fall inside a long enough run.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from shapely import Polygon

from simulator.city import Area, City, Place, build_city, fence_features, site_place
from simulator.frame import Point
from simulator.life_places import (
    Layout,
    Mall,
    away_from,
    district,
    jitter,
    lot_entrance,
    pawnshop,
    stall,
)
from simulator.trackers import StatusChange
from simulator.vehicles import SimulatedVehicle, make_vehicle

DEFAULT_START_MS = 1_772_409_600_000  # 2026-03-02T00:00:00Z
VALUED_AT = "2025-11-01"
CARS_PER_ZONE = 25
TIME_ZONES: tuple[tuple[str, float], ...] = (
    ("Asia/Shanghai", 0.7),
    ("Europe/Berlin", 0.15),
    ("America/New_York", 0.15),
)


class Behaviour(StrEnum):
    """What a car does over the run: a quiet commute, or one labelled risk."""

    COMMUTER = "commuter"
    SLEEPS_AWAY = "sleeps_away"
    NIGHT_DRIFT = "night_drift"
    UNMARKED_LOT = "unmarked_lot"
    PAWNSHOP = "pawnshop"
    LEAVES_ZONE = "leaves_zone"
    TOW = "tow"
    TAMPER = "tamper"
    HIGH_MILEAGE = "high_mileage"


RISKY_WEIGHTS: dict[Behaviour, float] = {
    Behaviour.SLEEPS_AWAY: 1.2,
    Behaviour.NIGHT_DRIFT: 1.0,
    Behaviour.UNMARKED_LOT: 1.6,
    Behaviour.PAWNSHOP: 1.0,
    Behaviour.LEAVES_ZONE: 1.0,
    Behaviour.TOW: 0.7,
    Behaviour.TAMPER: 0.8,
    Behaviour.HIGH_MILEAGE: 0.7,
}
LOT_MIN_LOANS = 4


class Noise(StrEnum):
    """What a quiet car does or reports that a perfectly quiet one would not (truth `noise`)."""

    GARAGE = "underground_garage"  # its workplace garage swallows the signal for hours
    MALL = "mall"  # errands at the district's shared malls and supermarkets
    MULTIPATH = "gps_multipath"  # a fix 80-170 m off, hdop 5-10, while parked at home
    BUMPS = "road_bumps"  # vibration readings of 0.3-1.5 g from road bumps while driving


@dataclass(frozen=True, slots=True)
class SignalGap:
    """A workday in the underground garage: no reading from `offset_ms` after the car parked
    at work, for `length_ms` (cut short before it drives out)."""

    day: date
    offset_ms: int
    length_ms: int


@dataclass(frozen=True, slots=True)
class Glitch:
    """A multipath fix: the first parked fix at or after `at_ms` is off by (`du`, `dv`) grid
    metres from where the car stands, with `hdop`."""

    at_ms: int
    du: float
    dv: float
    hdop: float


@dataclass(frozen=True, slots=True)
class CarNoise:
    """A quiet car's planned noise (its mall errands are `CarPlan.visits` of kind `Noise.MALL`)."""

    garage: tuple[SignalGap, ...] = ()
    glitches: tuple[Glitch, ...] = ()
    bump_chance: float = 0.0  # the chance that a drive has a bump its tracker reports
    malls: tuple[str, ...] = ()  # the malls it shops at


class LifeError(ValueError):
    """A fleet that cannot be planned as asked; the message says what to change."""


@dataclass(frozen=True, slots=True)
class LifeSpec:
    """What to simulate: `loans` cars for `days` days from `start_ms`; `risky_share` is risky."""

    loans: int
    days: int = 14
    seed: str = "1"
    start_ms: int = DEFAULT_START_MS
    risky_share: float = 0.35
    noise: bool = True  # quiet cars get a real fleet's noise (`simulator.life_noise`)

    @property
    def end_ms(self) -> int:
        """When the run ends (epoch ms)."""
        return self.start_ms + self.days * 86_400_000


@dataclass(frozen=True, slots=True)
class Visit:
    """A planned stop off the routine: leave for `place` at `start_ms`, head back at `end_ms`."""

    kind: Behaviour | Noise
    start_ms: int
    end_ms: int
    place: Place
    outside: bool = False  # the drive leaves the permitted area


@dataclass(frozen=True, slots=True)
class CarPlan:
    """One loan's car and borrower, planned. Points are in the city's grid metres."""

    car_no: int
    loan_id: str
    device_ids: tuple[str, ...]
    behaviour: Behaviour
    tz: str
    zone_index: int
    vehicle: SimulatedVehicle
    principal: int
    mileage_km: float
    home: Place  # where the car really sleeps (before any drift)
    declared_home: Point
    work: Place | None
    declared_work: Point | None
    errands: tuple[Place, ...]
    visits: tuple[Visit, ...] = ()
    drift: Place | None = None  # night_drift: where it sleeps on `drift_dates`
    drift_dates: frozenset[date] = frozenset()
    tow_ms: int | None = None
    yard: Place | None = None
    status_changes: tuple[StatusChange, ...] = ()
    hotspots: tuple[Place, ...] = ()
    lot_id: str | None = None
    noise: CarNoise | None = None

    def night_place(self, day: date) -> Place:
        """Where the car spends the night that starts on the evening of local `day`."""
        if self.drift is not None and day in self.drift_dates:
            return self.drift
        return self.home


@dataclass(frozen=True, slots=True)
class Lot:
    """An unmarked lot (not a fence) where several loans' cars park for hours."""

    lot_id: str
    zone_index: int
    center: Point
    loan_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LifePlan:
    """The planned fleet: the city with its permitted areas and risk sites, cars and lots."""

    spec: LifeSpec
    city: City
    cars: tuple[CarPlan, ...]
    lots: tuple[Lot, ...]
    inner: tuple[Polygon, ...] = field(repr=False, compare=False)  # per zone: where cars keep
    malls: tuple[Mall, ...] = ()


def local_ms(tz: ZoneInfo, day: date, hours: float) -> int:
    """Epoch ms of local wall time `hours` after midnight of `day` in `tz` (DST included)."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
    return round((midnight + timedelta(seconds=round(hours * 3600))).timestamp()) * 1000


def local_date(ts_ms: int, tz: ZoneInfo) -> date:
    """The local date in `tz` at `ts_ms`."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).astimezone(tz).date()


def local_dates(tz: ZoneInfo, t0_ms: int, t1_ms: int) -> list[date]:
    """Every local date the span [t0_ms, t1_ms] touches, in order."""
    first, last = local_date(t0_ms, tz), local_date(t1_ms, tz)
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def nights(tz: ZoneInfo, t0_ms: int, t1_ms: int) -> list[date]:
    """The local dates whose night (22:00 to 06:00 next morning) lies wholly inside the span."""
    return [
        d
        for d in local_dates(tz, t0_ms, t1_ms)
        if local_ms(tz, d, 22.0) >= t0_ms and local_ms(tz, d + timedelta(days=1), 6.0) <= t1_ms
    ]


def _days_with(tz: ZoneInfo, spec: LifeSpec, lo_h: float, hi_h: float) -> list[date]:
    """The local dates whose hours `lo_h`..`hi_h` lie wholly inside the run."""
    return [
        d
        for d in local_dates(tz, spec.start_ms, spec.end_ms)
        if local_ms(tz, d, lo_h) >= spec.start_ms and local_ms(tz, d, hi_h) <= spec.end_ms
    ]


def _apportion(weights: dict[Behaviour, float], total: int) -> dict[Behaviour, int]:
    """`total` split by weight, largest remainder first."""
    if total <= 0 or not weights:
        return {}
    whole = sum(weights.values())
    exact = {b: w * total / whole for b, w in weights.items()}
    counts = {b: math.floor(x) for b, x in exact.items()}
    order = sorted(exact, key=lambda b: (counts[b] - exact[b], list(Behaviour).index(b)))
    for b in order[: total - sum(counts.values())]:
        counts[b] += 1
    return counts


def behaviour_counts(loans: int, risky_share: float) -> dict[Behaviour, int]:
    """Cars per risky behaviour: every behaviour once (a lot takes four loans) as soon as the
    risky cars are enough (11), the rest by weight."""
    risky = min(loans, round(loans * risky_share))
    base: dict[Behaviour, int] = {}
    if risky >= len(RISKY_WEIGHTS) - 1 + LOT_MIN_LOANS:
        base = dict.fromkeys(RISKY_WEIGHTS, 1)
        base[Behaviour.UNMARKED_LOT] = LOT_MIN_LOANS
    elif risky >= LOT_MIN_LOANS + 2:
        base = {Behaviour.UNMARKED_LOT: LOT_MIN_LOANS}
    weights = dict(RISKY_WEIGHTS)
    if not base:
        weights.pop(Behaviour.UNMARKED_LOT)
    extra = _apportion(weights, risky - sum(base.values()))
    counts = {b: base.get(b, 0) + extra.get(b, 0) for b in RISKY_WEIGHTS}
    return {b: n for b, n in counts.items() if n > 0}


def validate(spec: LifeSpec) -> None:
    """LifeError naming every problem of `spec`."""
    problems = []
    if spec.loans < 1:
        problems.append(f"loans must be at least 1, got {spec.loans}")
    if not 1 <= spec.days <= 60:
        problems.append(f"days must be 1 to 60, got {spec.days}")
    if not (math.isfinite(spec.risky_share) and 0.0 <= spec.risky_share <= 1.0):
        problems.append(f"the risky share must be 0 to 1, got {spec.risky_share}")
    if problems:
        raise LifeError("; ".join(problems))


def _pick_days(rng: random.Random, days: list[date], count: int) -> list[date]:
    return sorted(rng.sample(days, min(count, len(days))))


def _assign(
    spec: LifeSpec, rng: random.Random, zones: int
) -> tuple[dict[int, Behaviour], list[tuple[int, list[int]]]]:
    """Behaviour per car number, and the lots' (zone, visitors): a lot's visitors share a zone."""
    counts = behaviour_counts(spec.loans, spec.risky_share)
    behaviour = dict.fromkeys(range(1, spec.loans + 1), Behaviour.COMMUTER)
    free = set(behaviour)
    lot_cars = counts.pop(Behaviour.UNMARKED_LOT, 0)
    n_lots = max(1, lot_cars // 5) if lot_cars else 0
    sizes = [lot_cars // n_lots + (k < lot_cars % n_lots) for k in range(n_lots)]
    groups: list[tuple[int, list[int]]] = []
    for size in sizes:
        zone = max(range(zones), key=lambda z: (sum((n - 1) % zones == z for n in free), -z))
        pool = sorted(n for n in free if (n - 1) % zones == zone)
        visitors = sorted(rng.sample(pool, min(size, len(pool))))
        for n in visitors:
            behaviour[n] = Behaviour.UNMARKED_LOT
            free.discard(n)
        groups.append((zone, visitors))
    rest = [b for b, c in counts.items() for _ in range(c)]
    pool = sorted(free)
    rng.shuffle(pool)
    for n, b in zip(pool, rest, strict=False):
        behaviour[n] = b
    return behaviour, groups


def _time_zones(rng: random.Random, behaviour: dict[int, Behaviour]) -> dict[int, str]:
    """A zone per borrower (mostly Shanghai); every zone has a quiet commuter if three do."""
    names = [name for name, _ in TIME_ZONES]
    tz = {n: rng.choices(names, [w for _, w in TIME_ZONES])[0] for n in behaviour}
    quiet = [n for n, b in behaviour.items() if b is Behaviour.COMMUTER]
    if len(quiet) >= len(names):
        for name in names:
            if not any(tz[n] == name for n in quiet):
                shared = Counter(tz[n] for n in quiet)
                tz[next(n for n in reversed(quiet) if shared[tz[n]] > 1)] = name
    return tz


def plan_lives(spec: LifeSpec) -> LifePlan:
    """Plan the quiet fleet (pure and seeded: the same spec gives the same plan); its noise,
    if `spec.noise`, comes from `simulator.life_noise.add_noise`."""
    validate(spec)
    rng = random.Random(f"{spec.seed}:lives")
    zones = max(2, math.ceil(spec.loans / CARS_PER_ZONE))
    base = build_city(random.Random(f"{spec.seed}:city"), zones, engine_circles=True)
    city = replace(base, zones=tuple(district(z) for z in base.zones))
    layout = Layout(city, rng)
    shops = []
    for k, zone in enumerate(city.zones):
        short = zone.fence_id.removeprefix("zone-")
        name = f"{short.replace('-', ' ').title()} Pawn House"
        center = layout.block(k, name, ())
        shops.append(pawnshop(f"pawnshop-{short}", name, center, round(rng.uniform(60, 90), 1)))
    city = replace(city, sites=city.sites + tuple(shops))
    layout.city = city
    behaviour, groups = _assign(spec, rng, zones)
    lots: list[Lot] = []
    lot_of: dict[int, tuple[Lot, int, int]] = {}
    for k, (zone_index, visitors) in enumerate(groups):
        away = [s.center for s in shops] + [lot.center for lot in lots]
        lot_id = f"lot-{k + 1:02d}"
        center = layout.block(zone_index, lot_id, away)
        lot = Lot(lot_id, zone_index, center, tuple(_loan_id(n) for n in visitors))
        lots.append(lot)
        for rank, n in enumerate(visitors):
            lot_of[n] = (lot, rank, len(visitors))
    tzs = _time_zones(rng, behaviour)
    n_second = round(spec.loans / 10)
    second = set(rng.sample(range(1, spec.loans + 1), n_second)) if n_second else set()
    vins: set[str] = set()
    cars = []
    for n in range(1, spec.loans + 1):
        car = _plan_car(spec, layout, n, behaviour[n], tzs[n], n in second, vins)
        if n in lot_of:
            car = _with_lot_visits(spec, layout, car, *lot_of[n])
        cars.append(car)
    return LifePlan(spec, city, tuple(cars), tuple(lots), layout.inner)


def _loan_id(n: int) -> str:
    return f"L-{n:05d}"


def _plan_car(
    spec: LifeSpec,
    layout: Layout,
    n: int,
    behaviour: Behaviour,
    tz_name: str,
    second: bool,
    vins: set[str],
) -> CarPlan:
    rng = layout.rng
    loan_id = _loan_id(n)
    zone = (n - 1) % len(layout.city.zones)
    vehicle = make_vehicle(rng, vins)
    device = f"trk-{n:05d}"
    devices = (device, f"{device}-b") if second else (device,)
    # a car that sleeps (or is towed) kilometres from home lives off the district's centre
    far = behaviour in {Behaviour.SLEEPS_AWAY, Behaviour.NIGHT_DRIFT, Behaviour.TOW}
    centre = layout.city.zones[zone].center
    home = layout.spot("home", loan_id, zone, away_from(centre, 1_600.0) if far else _anywhere)
    declared_home = jitter(rng, home.point, 5.0, 40.0)
    if behaviour is Behaviour.SLEEPS_AWAY:
        declared_home = layout.spot(
            "declared home", loan_id, zone, away_from(home.point, 3_300.0), register=False
        ).point
    works = behaviour is not Behaviour.HIGH_MILEAGE and rng.random() < 0.7
    work = layout.spot("work", loan_id, zone, away_from(home.point, 1_200.0)) if works else None
    errands = tuple(
        layout.spot(f"errand {k}", loan_id, zone, away_from(home.point, 500.0))
        for k in range(rng.randint(2, 3))
    )
    car = CarPlan(
        car_no=n,
        loan_id=loan_id,
        device_ids=devices,
        behaviour=behaviour,
        tz=tz_name,
        zone_index=zone,
        vehicle=vehicle,
        principal=int(round(vehicle.value * rng.uniform(0.5, 0.7), -3)),
        mileage_km=round(vehicle.odometer_km - rng.uniform(500.0, 5000.0), 0),
        home=home,
        declared_home=declared_home,
        work=work,
        declared_work=jitter(rng, work.point, 5.0, 40.0) if work is not None else None,
        errands=errands,
    )
    return _with_risk(spec, layout, car)


def _with_risk(spec: LifeSpec, layout: Layout, car: CarPlan) -> CarPlan:
    """The car with what its risky behaviour needs: places, dates, status changes."""
    rng, behaviour, zone = layout.rng, car.behaviour, car.zone_index
    loan_id, home = car.loan_id, car.home
    tz = ZoneInfo(car.tz)
    t0, t1 = spec.start_ms, spec.end_ms
    nts = nights(tz, t0, t1)
    middle = nts[len(nts) // 2] + timedelta(days=1) if nts else None
    days = _days_with(tz, spec, 9.0, 20.0)
    many = 2 if len(days) >= 7 else 1
    if behaviour is Behaviour.NIGHT_DRIFT:
        drift = layout.spot("night place", loan_id, zone, away_from(home.point, 2_500.0))
        later = nts[math.ceil(len(nts) / 2) :]
        if len(later) >= 4:
            later.remove(rng.choice(later))  # one night back home
        return replace(car, drift=drift, drift_dates=frozenset(later))
    if behaviour is Behaviour.PAWNSHOP:
        shop = site_place(layout.city, pawnshop_of(layout.city, zone))
        visits = []
        for day in _pick_days(rng, days, many):
            start = local_ms(tz, day, rng.uniform(10.0, 14.5))
            visits.append(Visit(behaviour, start, start + _hours(rng, 1.6, 3.0), shop))
        return replace(car, visits=tuple(visits))
    if behaviour is Behaviour.LEAVES_ZONE:
        away = layout.outside_spot(loan_id, zone)
        visits = []
        for day in _pick_days(rng, days, many):
            start = local_ms(tz, day, rng.uniform(9.0, 12.5))
            end = min(start + _hours(rng, 3.0, 6.0), local_ms(tz, day, 19.5))
            visits.append(Visit(behaviour, start, end, away, outside=True))
        return replace(car, visits=tuple(visits))
    if behaviour is Behaviour.TOW:
        yard = layout.spot("yard", loan_id, zone, away_from(home.point, 2_500.0))
        at = local_ms(tz, middle, rng.uniform(1.0, 4.0)) if middle else (t0 + t1) // 2
        return replace(car, tow_ms=at, yard=yard)
    if behaviour is Behaviour.TAMPER:
        at = local_ms(tz, middle, rng.uniform(0.5, 4.5)) if middle else (t0 + t1) // 2
        how = rng.choice(("tamper", "power", "both"))
        changes = []
        if how != "power":
            changes.append(StatusChange(at, tamper=True))
        if how != "tamper":
            cut = at + (rng.randrange(30_000, 180_000) if how == "both" else 0)
            changes.append(StatusChange(cut, ext_power=False))
        return replace(car, status_changes=tuple(changes))
    if behaviour is Behaviour.HIGH_MILEAGE:
        spots = tuple(layout.spot(f"rank {k}", loan_id, zone) for k in range(8))
        return replace(car, hotspots=spots)
    return car


def pawnshop_of(city: City, zone_index: int) -> Area:
    """The marked pawnshop inside a district."""
    fence_id = "pawnshop-" + city.zones[zone_index].fence_id.removeprefix("zone-")
    return next(s for s in city.sites if s.fence_id == fence_id)


def _anywhere(_: Point) -> bool:
    return True


def _hours(rng: random.Random, lo: float, hi: float) -> int:
    return round(rng.uniform(lo, hi) * 3600) * 1000


def _with_lot_visits(
    spec: LifeSpec, layout: Layout, car: CarPlan, lot: Lot, rank: int, size: int
) -> CarPlan:
    """The lot's visitors come on days spread over the run, one after another by rank."""
    rng = layout.rng
    tz = ZoneInfo(car.tz)
    days = _days_with(tz, spec, 9.0, 20.0)
    if not days:
        return replace(car, lot_id=lot.lot_id)
    first = min(len(days) - 1, math.floor((rank + rng.random()) * len(days) / size))
    chosen = [days[first]]
    if len(days) >= 4 and rng.random() < 0.4:
        chosen.append(rng.choice([d for d in days if d != days[first]]))
    entrance = lot_entrance(layout.city, lot.lot_id, lot.center)
    visits = []
    for day in sorted(chosen):
        start = local_ms(tz, day, rng.uniform(10.0, 15.0))
        end = start + _hours(rng, 1.4, 3.0)
        visits.append(Visit(Behaviour.UNMARKED_LOT, start, end, stall(rng, entrance)))
    return replace(car, visits=tuple(visits), lot_id=lot.lot_id)


def latlon(plan: LifePlan, p: Point) -> dict[str, float]:
    """A grid point as `{"lat", "lon"}` (6 decimals, about 10 cm)."""
    lat, lon = plan.city.frame.to_latlon(*p)
    return {"lat": round(lat, 6), "lon": round(lon, 6)}


def fences_doc(plan: LifePlan) -> dict[str, object]:
    """The permitted areas and the marked risk sites as a GeoJSON FeatureCollection."""
    return {"type": "FeatureCollection", "features": fence_features(plan.city)}


def loan_doc(plan: LifePlan, car: CarPlan) -> dict[str, object]:
    """The loan as a `loans.json` element (DESIGN §3, with `home`, `work`, `tz`, `valued_at`)."""
    v = car.vehicle
    doc: dict[str, object] = {
        "loan_id": car.loan_id,
        "vin": v.vin,
        "device_ids": list(car.device_ids),
        "zone_ids": [plan.city.zones[car.zone_index].fence_id],
        "status": "active",
        "principal": car.principal,
        "vehicle": {
            "make": v.make,
            "model": v.model,
            "year": v.year,
            "mileage_km": car.mileage_km,
            "value": v.value,
            "valued_at": VALUED_AT,
        },
        "home": latlon(plan, car.declared_home),
    }
    if car.declared_work is not None:
        doc["work"] = latlon(plan, car.declared_work)
    doc["tz"] = car.tz
    return doc
