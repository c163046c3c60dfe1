"""`python -m simulator lives`: a lending fleet's lives over days, as a labelled replay dataset.

    python -m simulator lives --loans 200 --days 14 --seed 7 --out DIR

Plans the fleet (`simulator.life_plan`) with its quiet cars' noise (`simulator.life_noise`;
`--no-noise` leaves the commuters perfectly quiet), lives every car's days
(`simulator.life_days`), samples its trackers (`simulator.life_trackers`) and writes, in DIR:

- `readings.jsonl`: replay lines (DESIGN §7), each with `received_at`, in arrival order
  across the fleet;
- `fences.geojson`: the districts' permitted areas and the marked risk sites;
- `loans.json`: one loan per car, with `home`, `work` (for cars with a workplace), `tz` and
  `vehicle.valued_at`;
- `truth.json`: per loan its behaviour (`commuter` or the risk it plays), where it really
  sleeps, the lot it visits, what it did when, and the `noise` it got (`Noise` values, with
  their events); the unmarked lots and the malls, with their visits.

Replay it with `pledgewatch replay DIR/readings.jsonl --fences DIR/fences.geojson --loans
DIR/loans.json`. The same options write the same bytes.
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from simulator.life_days import TOW, Stop, live
from simulator.life_noise import add_noise, signal_gaps
from simulator.life_plan import (
    DEFAULT_START_MS,
    Behaviour,
    CarPlan,
    LifeError,
    LifePlan,
    LifeSpec,
    Noise,
    fences_doc,
    latlon,
    loan_doc,
    pawnshop_of,
    plan_lives,
)
from simulator.life_trackers import Line, NoiseEvent, Unit, unit_lines
from simulator.motion import Move
from simulator.simulate import parse_start
from simulator.truth import iso_utc
from simulator.writer import write_json

PROGRESS_EVERY = 25


@dataclass(frozen=True, slots=True)
class LivedCar:
    """What a car did (its track let go once sampled) and its trackers' lines, by arrival."""

    car: CarPlan
    stops: tuple[Stop, ...]
    tow: Move | None
    km_per_day: float
    lines: list[Line]
    readings: Counter[str]
    gaps: tuple[tuple[int, int], ...] = ()  # its trackers heard nothing (underground garage)
    noise: tuple[NoiseEvent, ...] = ()  # its noisy readings (multipath fixes, bumps)

    def noise_kinds(self) -> list[str]:
        """The noise it really got, as `Noise` values."""
        kinds = {kind.value for _, kind, _ in self.noise}
        if self.gaps:
            kinds.add(Noise.GARAGE.value)
        if any(s.kind == Noise.MALL.value for s in self.stops):
            kinds.add(Noise.MALL.value)
        return sorted(kinds)


def plan_fleet(spec: LifeSpec) -> LifePlan:
    """The fleet's plan with its quiet cars' noise, if `spec.noise` (pure and seeded)."""
    return add_noise(plan_lives(spec))


def live_car(plan: LifePlan, car: CarPlan) -> LivedCar:
    """Live one car's days and sample its trackers (pure)."""
    spec = plan.spec
    inner = plan.inner[car.zone_index]
    life = live(car, plan.city, inner, spec.seed, spec.start_ms, spec.end_ms)
    gaps = signal_gaps(car, life.track)  # every unit in the car is in the garage
    noise = car.noise
    glitches, bump_chance = (noise.glitches, noise.bump_chance) if noise else ((), 0.0)
    units = [
        Unit(car.device_ids[0], car.vehicle.vin, car.status_changes, gaps, glitches, bump_chance)
    ]
    units += [Unit(d, silent=gaps) for d in car.device_ids[1:]]
    per_unit: list[list[Line]] = []
    readings: Counter[str] = Counter()
    events: list[NoiseEvent] = []
    for unit in units:
        lines, counts, noisy = unit_lines(unit, life.track, plan.city.frame, spec.seed)
        per_unit.append(lines)
        readings.update(counts)
        events += noisy
    merged = list(heapq.merge(*per_unit, key=lambda line: line[0]))
    return LivedCar(
        car, life.stops, life.tow, life.km_per_day, merged, readings, gaps, tuple(events)
    )


def live_fleet(plan: LifePlan, progress: TextIO | None = None) -> list[LivedCar]:
    """Every car of the plan, lived, in car order."""
    out = []
    for k, car in enumerate(plan.cars, 1):
        out.append(live_car(plan, car))
        if progress is not None and (k % PROGRESS_EVERY == 0 or k == len(plan.cars)):
            print(f"  lived {k}/{len(plan.cars)} cars", file=progress, flush=True)
    return out


def reading_lines(cars: Sequence[LivedCar]) -> Iterator[bytes]:
    """The fleet's lines by arrival time (ties in car order)."""
    for _, line in heapq.merge(*(c.lines for c in cars), key=lambda line: line[0]):
        yield line


def _stop_doc(
    plan: LifePlan, kind: str, point: tuple[float, float], a: int, b: int
) -> dict[str, object]:
    return {"kind": kind, **latlon(plan, point), "arrive": iso_utc(a), "leave": iso_utc(b)}


def mall_of(stop: Stop) -> str | None:
    """The mall where a stop was made, if it was one (its stall is named after the mall)."""
    if stop.kind != Noise.MALL.value:
        return None
    return stop.place.name.removesuffix(" stall")


def _noise_docs(plan: LifePlan, lived: LivedCar) -> list[dict[str, object]]:
    """The noise events of a car: its silent spans, then its noisy readings."""
    docs: list[dict[str, object]] = []
    if lived.gaps and lived.car.work is not None:
        where = latlon(plan, lived.car.work.point)
        for a, b in lived.gaps:
            docs.append(
                {"kind": Noise.GARAGE.value, **where, "start": iso_utc(a), "end": iso_utc(b)}
            )
    for t, kind, numbers in lived.noise:
        docs.append({"kind": kind.value, "at": iso_utc(t), **numbers})
    return docs


def _car_truth(plan: LifePlan, lived: LivedCar) -> dict[str, object]:
    car = lived.car
    lots = {lot.lot_id: lot for lot in plan.lots}
    lot = lots.get(car.lot_id) if car.lot_id else None
    events: list[dict[str, object]] = []
    for s in lived.stops:
        events.append(_stop_doc(plan, s.kind, s.place.point, s.arrive_ms, s.leave_ms))
        if car.behaviour is Behaviour.PAWNSHOP and s.kind == Behaviour.PAWNSHOP.value:
            events[-1]["fence_id"] = pawnshop_of(plan.city, car.zone_index).fence_id
        if (mall_id := mall_of(s)) is not None:
            events[-1]["mall_id"] = mall_id
    if lived.tow is not None:
        first, last = lived.tow.samples[0], lived.tow.samples[-1]
        events.append(
            {
                "kind": TOW,
                "start": iso_utc(lived.tow.t0_ms),
                "end": iso_utc(lived.tow.t1_ms),
                "from": latlon(plan, (first.u, first.v)),
                "to": latlon(plan, (last.u, last.v)),
                "km": round(last.dist_m / 1000, 2),
            }
        )
    for change in car.status_changes:
        kind = "tamper" if change.tamper else "power_cut"
        events.append({"kind": kind, "at": iso_utc(change.at_ms)})
    events += _noise_docs(plan, lived)
    declared_m = math.dist(car.declared_home, car.home.point)
    doc: dict[str, object] = {
        "loan_id": car.loan_id,
        "risky": car.behaviour is not Behaviour.COMMUTER,
        "behaviour": car.behaviour.value,
        "true_home": latlon(plan, car.home.point),
        "unmarked_lot": latlon(plan, lot.center) if lot is not None else None,
        "device_ids": list(car.device_ids),
        "tz": car.tz,
        "zone_id": plan.city.zones[car.zone_index].fence_id,
        "declared_home_off_m": round(declared_m),
        "km_per_day": lived.km_per_day,
        "noise": lived.noise_kinds(),
        "events": events,
    }
    if car.drift is not None:
        doc["night_place"] = latlon(plan, car.drift.point)
        doc["nights_away"] = sorted(d.isoformat() for d in car.drift_dates)
    return doc


def truth_doc(plan: LifePlan, cars: Sequence[LivedCar]) -> dict[str, object]:
    """`truth.json`: every loan's label and deeds, and the unmarked lots with their visits."""
    visits: dict[str, list[dict[str, object]]] = {lot.lot_id: [] for lot in plan.lots}
    for lived in cars:
        for stop in lived.stops:
            if stop.kind == Behaviour.UNMARKED_LOT.value and lived.car.lot_id is not None:
                visits[lived.car.lot_id].append(
                    {
                        "loan_id": lived.car.loan_id,
                        **latlon(plan, stop.place.point),
                        "arrive": iso_utc(stop.arrive_ms),
                        "leave": iso_utc(stop.leave_ms),
                    }
                )
    lots = [
        {
            "lot_id": lot.lot_id,
            **latlon(plan, lot.center),
            "zone_id": plan.city.zones[lot.zone_index].fence_id,
            "loan_ids": sorted({str(v["loan_id"]) for v in visits[lot.lot_id]}),
            "visits": sorted(visits[lot.lot_id], key=lambda v: str(v["arrive"])),
        }
        for lot in plan.lots
    ]
    spec = plan.spec
    return {
        "seed": spec.seed,
        "start": iso_utc(spec.start_ms),
        "end": iso_utc(spec.end_ms),
        "days": spec.days,
        "noise": spec.noise,
        "loans": [_car_truth(plan, lived) for lived in cars],
        "unmarked_lots": lots,
        "malls": _malls_doc(plan, cars),
    }


def _malls_doc(plan: LifePlan, cars: Sequence[LivedCar]) -> list[dict[str, object]]:
    """The malls (no fences: the risk-site discovery's false positives) with their visits."""
    visits: dict[str, list[dict[str, object]]] = {m.mall_id: [] for m in plan.malls}
    for lived in cars:
        for stop in lived.stops:
            if (mall_id := mall_of(stop)) is not None:
                visits[mall_id].append(
                    {
                        "loan_id": lived.car.loan_id,
                        **latlon(plan, stop.place.point),
                        "arrive": iso_utc(stop.arrive_ms),
                        "leave": iso_utc(stop.leave_ms),
                    }
                )
    return [
        {
            "mall_id": m.mall_id,
            "name": m.name,
            **latlon(plan, m.center),
            "zone_id": plan.city.zones[m.zone_index].fence_id,
            "loan_ids": sorted({str(v["loan_id"]) for v in visits[m.mall_id]}),
            "visits": sorted(visits[m.mall_id], key=lambda v: str(v["arrive"])),
        }
        for m in plan.malls
    ]


def write_lives(plan: LifePlan, cars: Sequence[LivedCar], out_dir: Path) -> list[Path]:
    """Write the dataset's four files; the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    readings = out_dir / "readings.jsonl"
    with readings.open("wb") as f:
        f.writelines(reading_lines(cars))
    return [
        readings,
        write_json(out_dir / "fences.geojson", fences_doc(plan)),
        write_json(out_dir / "loans.json", [loan_doc(plan, c) for c in plan.cars]),
        write_json(out_dir / "truth.json", truth_doc(plan, cars)),
    ]


def main(argv: Sequence[str] | None = None, err: TextIO = sys.stderr) -> int:
    """Entry point of `python -m simulator lives`."""
    parser = argparse.ArgumentParser(
        prog="python -m simulator lives",
        description="a lending fleet's multi-day lives as a replay dataset with truth labels",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--loans", type=int, default=200, help="loans, one car each")
    parser.add_argument("--days", type=int, default=14, help="days of event time (1-60)")
    parser.add_argument("--seed", default="1", help="any string; same seed, same files")
    parser.add_argument(
        "--start",
        type=parse_start,
        default=DEFAULT_START_MS,
        help="epoch ms or ISO-8601 with an offset (default 2026-03-02T00:00Z)",
    )
    parser.add_argument("--risky", type=float, default=0.35, help="share of risky cars (0-1)")
    parser.add_argument(
        "--no-noise",
        dest="noise",
        action="store_false",
        help="perfectly quiet commuters: no garages, malls, multipath fixes or bumps",
    )
    args = parser.parse_args(argv)
    spec = LifeSpec(args.loans, args.days, str(args.seed), args.start, args.risky, args.noise)
    started = time.perf_counter()
    try:
        plan = plan_fleet(spec)
    except LifeError as exc:
        parser.error(str(exc))
    kinds = Counter(c.behaviour.value for c in plan.cars)
    print(
        f"planned {len(plan.cars)} loans in {len(plan.city.zones)} districts, "
        f"{spec.days} days from {iso_utc(spec.start_ms)}, {len(plan.lots)} unmarked lots",
        file=err,
    )
    cars = live_fleet(plan, err)
    paths = write_lives(plan, cars, args.out)
    readings: Counter[str] = Counter()
    for lived in cars:
        readings.update(lived.readings)
    lines = sum(len(c.lines) for c in cars)
    size_mb = paths[0].stat().st_size / 1e6
    print(
        "cars per behaviour: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())), file=err
    )
    if spec.noise:
        print(_noise_summary(plan, cars), file=err)
    per_stream = ", ".join(f"{k} {n:,}" for k, n in sorted(readings.items()))
    print(
        f"readings written: {lines:,} lines ({per_stream}), {size_mb:.1f} MB, "
        f"in {time.perf_counter() - started:.1f} s",
        file=err,
    )
    for path in paths:
        print(path)
    return 0


def _noise_summary(plan: LifePlan, cars: Sequence[LivedCar]) -> str:
    """One line: how many quiet cars got which noise, and how much of it."""
    got = Counter(k for c in cars for k in c.noise_kinds())
    gaps = sum(len(c.gaps) for c in cars)
    mall_stops = [s for c in cars for s in c.stops if s.kind == Noise.MALL.value]
    long_stays = sum(s.leave_ms - s.arrive_ms >= 30 * 60_000 for s in mall_stops)
    events = Counter(kind for c in cars for _, kind, _ in c.noise)
    return (
        f"noise: {len(plan.malls)} malls; cars with {Noise.GARAGE} {got[Noise.GARAGE]} "
        f"({gaps} silent spans), {Noise.MALL} {got[Noise.MALL]} ({len(mall_stops)} visits, "
        f"{long_stays} of 30 min or more), {Noise.MULTIPATH} {got[Noise.MULTIPATH]} "
        f"({events[Noise.MULTIPATH]} fixes), {Noise.BUMPS} {got[Noise.BUMPS]} "
        f"({events[Noise.BUMPS]} vib readings)"
    )
