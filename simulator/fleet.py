"""A simulated run: a city, its cars (scenario players and quiet background traffic), every
tracker's messages merged in arrival order, and the run's ground truth.

`build_run(spec)` is pure and seeded: every random draw comes from a `random.Random` derived
from `spec.seed` and what it is for (the city, car n, tracker id), so one car's draws do not
shift when another car is added. The documents of a run (`fences_doc`, `loans_doc`,
`reading_lines`, `truth_doc`) are plain values; `simulator.writer` puts them in files.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import orjson
import shapely

from simulator.car import Car, CarSetup, ScenarioKind
from simulator.city import City, build_city, fence_features, path_line
from simulator.junk import Junk, inject_junk
from simulator.scenarios import BUILDERS, quiet
from simulator.trackers import TrackerMessage, merge, messages
from simulator.truth import CarTruth, Expectation, GroundTruth, InputCounts, Role

DEFAULT_START_MS = 1_795_910_400_000  # 2026-11-29T00:00:00Z, 08:00 in Shanghai
CROSSING_MARGIN_M = 60.0  # a track this close to a fence boundary may cross it (25 m + GPS)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What to simulate: scenario cars (one each), background cars, how long, which seed.

    `owntracks` of the `quiet` background cars report through OwnTracks; `junk` lists the
    malformed input to inject (the ground truth counts its rejects by reason).
    """

    name: str
    seed: str
    scenarios: tuple[ScenarioKind, ...]
    quiet: int = 2
    owntracks: int = 1
    duration_s: int = 7200
    start_ms: int = DEFAULT_START_MS
    junk: tuple[Junk, ...] = ()


@dataclass(frozen=True, slots=True)
class Run:
    """A built run: the city, the cars, the messages in arrival order, the ground truth."""

    spec: RunSpec
    city: City
    cars: tuple[Car, ...]
    messages: tuple[TrackerMessage, ...]
    truth: GroundTruth


def _rng(spec: RunSpec, what: str) -> random.Random:
    return random.Random(f"{spec.seed}:{what}")


def build_run(spec: RunSpec) -> Run:
    """Simulate a run."""
    slots = len(spec.scenarios) + spec.quiet
    city = build_city(_rng(spec, "city"), slots)
    t0, t1 = spec.start_ms, spec.start_ms + spec.duration_s * 1000
    vins: set[str] = set()
    cars: list[Car] = []
    for k in range(slots):
        setup = CarSetup(city, k + 1, city.zones[k], t0, t1, vins)
        rng = _rng(spec, f"car:{k + 1}")
        if k < len(spec.scenarios):
            cars.append(BUILDERS[spec.scenarios[k]](setup, rng))
        else:
            owntracks = k >= slots - spec.owntracks
            cars.append(quiet(setup, rng, owntracks=owntracks))
    streams = [
        messages(tracker, city.frame, _rng(spec, f"tracker:{tracker.device_id}"))
        for car in cars
        for tracker in car.trackers
    ]
    merged = list(merge(streams))
    if spec.junk:
        merged = inject_junk(merged, cars, _rng(spec, "junk"), spec.junk)
    truth = GroundTruth(
        name=spec.name,
        seed=spec.seed,
        start_ms=t0,
        end_ms=t1,
        cars=tuple(car_truth(car) for car in cars),
        required=tuple(e for car in cars for e in car.required),
        allowed=tuple(e for car in cars if car.role is Role.SCENARIO for e in crossings(city, car)),
        counts=count_input(merged),
    )
    return Run(spec, city, tuple(cars), tuple(merged), truth)


def car_truth(car: Car) -> CarTruth:
    return CarTruth(
        car.car_id,
        car.role,
        car.scenario.value if car.scenario else None,
        car.vehicle.vin,
        tuple(loan.loan_id for loan in car.loans),
        tuple(t.device_id for t in car.trackers),
        (car.zone.fence_id,),
    )


def crossings(city: City, car: Car) -> list[Expectation]:
    """Enter/exit of every fence a tracker's true track comes near the boundary of."""
    loan_of = {d: loan.loan_id for loan in car.loans for d in loan.device_ids}
    boundaries = shapely.boundary([area.shape for area in city.areas])
    out: list[Expectation] = []
    for tracker in car.trackers:
        line = path_line(tracker.track.points())
        near = shapely.dwithin(line, boundaries, CROSSING_MARGIN_M)  # one call, every area
        out.extend(
            Expectation(
                type_,
                area.fence_id,
                tracker.device_id,
                loan_of.get(tracker.device_id),
                why="the track passes this boundary",
            )
            for area, close in zip(city.areas, near.tolist(), strict=True)
            if close
            for type_ in ("geofence.enter", "geofence.exit")
        )
    return out


class Carried(Protocol):
    """What `count_input` reads of a message: whose it is, its readings and its rejects."""

    @property
    def device_id(self) -> str | None:
        """The device the message is from (None for junk)."""

    @property
    def readings(self) -> tuple[tuple[str, int, int | None], ...]:
        """Its valid readings as (stream, ts_ms, seq)."""

    @property
    def rejects(self) -> tuple[str, ...]:
        """The reasons its bad parts must be refused with."""


class InputCounter:
    """Counts what a replay of a message stream must count (DESIGN §2), message by message.

    Per device, in arrival order: a reading already seen (same stream and ts) is a duplicate;
    one not newer than the last of its stream is late; a `seq` jump is missing readings.
    """

    def __init__(self) -> None:
        self.readings: Counter[str] = Counter()
        self.rejects: Counter[str] = Counter()
        self.duplicates = self.late = self.missing = 0
        self._seen: set[tuple[str | None, str, int]] = set()
        self._last: dict[tuple[str | None, str], int] = {}
        self._last_seq: dict[str | None, int] = {}

    def add(self, m: Carried) -> None:
        """Count one message."""
        self.rejects.update(m.rejects)
        for stream, ts, seq in m.readings:
            key = (m.device_id, stream, ts)
            if key in self._seen:
                self.duplicates += 1
                continue
            self._seen.add(key)
            self.readings[stream] += 1
            if ts <= self._last.get((m.device_id, stream), -1):
                self.late += 1
                continue
            self._last[m.device_id, stream] = ts
            if seq is not None:
                previous = self._last_seq.get(m.device_id)
                if previous is not None and seq > previous + 1:
                    self.missing += seq - previous - 1
                self._last_seq[m.device_id] = seq

    def counts(self) -> InputCounts:
        """The counts so far."""
        return InputCounts(
            dict(self.readings), self.duplicates, self.late, self.missing, dict(self.rejects)
        )


def count_input(msgs: Iterable[Carried]) -> InputCounts:
    """What a replay of `msgs` must count (see `InputCounter`)."""
    counter = InputCounter()
    for m in msgs:
        counter.add(m)
    return counter.counts()


def fences_doc(run: Run) -> dict[str, object]:
    """`fences.geojson`: a FeatureCollection whose features carry ids."""
    return {"type": "FeatureCollection", "features": fence_features(run.city)}


def loans_doc(run: Run) -> list[dict[str, object]]:
    """`loans.json`: every car's loans, in car order."""
    return [loan.to_json() for car in run.cars for loan in car.loans]


def reading_lines(run: Run) -> Iterator[bytes]:
    """`readings.jsonl`: one `{"topic", "payload"}` line per message, in arrival order."""
    for m in run.messages:
        yield orjson.dumps(m.line()) + b"\n"


def truth_doc(run: Run) -> dict[str, object]:
    """`ground_truth.json`."""
    return run.truth.to_json()
