"""A live fleet: N virtual trackers planned against the wall clock.

`plan_fleet(spec)` is pure and seeded: it lays out a city (about a hundred cars per home
zone), picks which cars play which scenario (by the spec's mix; the rest are quiet
commuters, `simulator.commuter`), and chooses the speed factor k (event seconds per wall
second). The run's event-time span is k times its wall duration, placed so that the stream
ENDS at the run's last wall second: a message is due when the wall clock, run k times
faster, reaches its arrival time, so published timestamps trail the wall clock and catch up
at the end, never ahead of it (the engine rejects readings from the future, and runs
`device.offline` on the wall clock: `FleetPlan.engine_config` scales it by k).

Scenario stories were written for two hours; a shorter span plays them at a faster pace
(idle times shrink, the times the rules need do not), a longer one starts them at random
times. A scenario whose alerts cannot land inside the run is not played: its car drives
quietly instead and `FleetPlan.skipped()` says why.

Cars are generated car by car (`FleetPlan.prepare`, with progress) and merged by arrival
time with a heap; `schedule()` yields the messages in publish order, each with the wall
second it is due, and lets go of each one once yielded. `simulator.mqtt_publisher.publish`
paces them over a pool of paho connections; `simulator.writer.write_jsonl` writes the same
stream as `pledgewatch replay` input.

With a `jt808_share`, the trackers `simulator.jt808_choice` picks are JT/T 808 terminals:
renamed `jt808-…` when the fleet is planned (cars, loans, truth), their messages drawn as
under their first ids, then turned into what the terminal sends (`simulator.jt808_reports`):
a scheduled message with a `msg_id` goes over the terminal's TCP connection, not MQTT.
"""

from __future__ import annotations

import heapq
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from simulator.car import Car, CarSetup, DoesNotFit, LoanSpec, ScenarioKind, make_loan
from simulator.city import City, build_city, fence_features
from simulator.commuter import Device, commuter, draw_device
from simulator.fleet import car_truth, crossings
from simulator.fleet_spec import FleetError, FleetSpec, fleet_cars, validate_spec
from simulator.jt808_choice import (
    Candidate,
    choose_terminals,
    rename_car,
    rename_loan,
    terminal_ids,
)
from simulator.jt808_reports import terminal_messages
from simulator.scenarios import BUILDERS
from simulator.script import GRACE_MS, OFFLINE_MS, STILL_GAP_MS
from simulator.trackers import Silence, messages
from simulator.truth import CarTruth, Expectation, GroundTruth, InputCounts, Role
from simulator.vehicles import SimulatedVehicle, make_vehicle

CARS_PER_ZONE = 100  # a lender's cars share a district's permitted area
STORY_S = 7_200  # the scenario stories are written for two hours
OFFLINE_FLOOR_S = 30  # a scaled offline_s stays above a publisher's hiccup
MAX_SPAN_S = 30 * 86_400
PILOT_CARS = 150  # commuters built to measure the fleet's natural rate
TIMER_TYPES = frozenset({"zone.left", "pledge.risk_site_dwell"})
_JT808_TOPIC = "jt808"  # the topic of a JT/T 808 message: sent over TCP, never published


class Scheduled(NamedTuple):
    """One MQTT publish of the plan: when (wall seconds after the start), where, what; or,
    with a `msg_id`, a JT/T 808 message body its device's terminal sends."""

    due_s: float
    topic: str
    payload: bytes
    device_id: str | None
    readings: tuple[tuple[str, int], ...]
    msg_id: int = 0


class _Out(NamedTuple):
    """A message as generated: its arrival (event) time, topic, wire bytes and readings."""

    ts_ms: int
    topic: str
    body: bytes
    device_id: str | None
    readings: tuple[tuple[str, int, int | None], ...]
    rejects: tuple[str, ...] = ()
    msg_id: int = 0  # a JT/T 808 message id: `body` is its body, `topic` says which


@dataclass(frozen=True, slots=True)
class _Slot:
    """A car of the fleet before it is built."""

    car_no: int
    kind: ScenarioKind | None
    zone_index: int
    vehicle: SimulatedVehicle


@dataclass(slots=True)
class _Quiet:
    """What a commuter needs that is drawn when the fleet is planned."""

    device: Device
    loan: LoanSpec
    setup: CarSetup = field(repr=False)


def _rng(seed: str, what: str) -> random.Random:
    return random.Random(f"{seed}:{what}")


class FleetPlan:
    """A planned fleet run: its documents, ground truth and lazily generated schedule."""

    def __init__(
        self,
        spec: FleetSpec,
        *,
        speed: float,
        start_wall_ms: int,
        end_ms: int,
        city: City,
        slots: list[_Slot],
    ) -> None:
        self.spec = spec
        self.speed = speed  # the speed actually used: event ms per wall ms
        self.start_wall_ms = start_wall_ms
        self.end_ms = end_ms  # the stream's last event time: the run's last wall ms
        self.wall_s = (end_ms - start_wall_ms) / 1000
        self.t0_ms = end_ms - round(self.wall_s * speed) * 1000
        self.city = city
        self.slots = slots
        self.offline_s = 1800 if speed <= 1.0 else max(OFFLINE_FLOOR_S, round(1800 / speed))
        self.scenario_cars: dict[int, Car] = {}
        self.quiet: dict[int, _Quiet] = {}
        self.skip_reasons: list[str] = []
        self.terminals: dict[str, str] = {}  # device id -> JT/T 808 terminal number
        self.first_ids: dict[str, str] = {}  # a terminal's device id -> the id it was planned as
        self._prepared: list[list[_Out] | None] | None = None

    @property
    def span_s(self) -> float:
        """The event time the run covers, seconds."""
        return (self.end_ms - self.t0_ms) / 1000

    def fences_doc(self) -> dict[str, object]:
        """GeoJSON FeatureCollection for `POST /v1/fences:import`."""
        return {"type": "FeatureCollection", "features": fence_features(self.city)}

    def loans_doc(self) -> list[dict[str, object]]:
        """The loans, each for `PUT /v1/loans/{loan_id}` (with its `loan_id`), in car order."""
        out: list[dict[str, object]] = []
        for slot in self.slots:
            car = self.scenario_cars.get(slot.car_no)
            loans = car.loans if car is not None else (self.quiet[slot.car_no].loan,)
            out.extend(loan.to_json() for loan in loans)
        return out

    def replay_truth(self, counts: InputCounts | None = None) -> GroundTruth:
        """What `pledgewatch replay` (default rules, time by the largest event time seen)
        raises on this stream; `counts` from `write_jsonl`, else empty."""
        cars = [self.scenario_cars[s.car_no] for s in self.slots if s.car_no in self.scenario_cars]
        return GroundTruth(
            name=f"fleet-{self.spec.devices}",
            seed=self.spec.seed,
            start_ms=self.t0_ms,
            end_ms=self.end_ms,
            cars=tuple(self._car_truths()),
            required=tuple(e for car in cars for e in car.required),
            allowed=tuple(e for car in cars for e in crossings(self.city, car)),
            counts=counts or InputCounts(),
        )

    def truth(self, lag_s: float = 30.0) -> GroundTruth:
        """What a live engine with `engine_config()` raises on this stream when it is
        published on schedule: event-time windows as in `replay_truth`, but `device.offline`
        (and the `device.online` after it) on the wall clock, late by up to `lag_s`.

        Input counts are left empty: they are known once the stream is generated
        (`write_jsonl` writes them).
        """
        base = self.replay_truth()
        silences = self._silences()
        required = tuple(
            self._live_window(e, silences.get(e.device_id, ()), lag_s) for e in base.required
        )
        return replace(base, required=required)

    def engine_config(self) -> dict[str, object]:
        """`Config` overrides an engine needs to judge this run: `offline_s` scaled by k,
        so a tracker silent for 30 min of event time is offline (see `truth`)."""
        return {"offline_s": self.offline_s}

    def skipped(self) -> list[str]:
        """Scenario cars not played, each with why (their alerts cannot land in the run)."""
        return list(self.skip_reasons)

    def kinds(self) -> dict[str, int]:
        """Cars per scenario actually played, plus `quiet`."""
        out: dict[str, int] = {}
        for car in self.scenario_cars.values():
            assert car.scenario is not None
            out[car.scenario.value] = out.get(car.scenario.value, 0) + 1
        out["quiet"] = len(self.quiet)
        return dict(sorted(out.items()))

    def wall_ms(self, event_ms: int) -> float:
        """The wall time (epoch ms) a message arriving at `event_ms` is due, on schedule."""
        return self.start_wall_ms + (event_ms - self.t0_ms) / self.speed

    def prepare(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Generate every car's messages now (`schedule` otherwise does it first)."""
        if self._prepared is not None:
            return
        total = len(self.slots)
        lists: list[list[_Out] | None] = []
        for k, slot in enumerate(self.slots):
            lists.append(self._car_messages(slot))
            if progress is not None and ((k + 1) % 250 == 0 or k + 1 == total):
                progress(k + 1, total)
        self._prepared = lists

    def schedule(self) -> Iterator[Scheduled]:
        """Every message in publish order, each yielded once (a second call generates anew)."""
        k_ms = self.speed * 1000.0
        t0 = self.t0_ms
        for out in self.generated():
            yield Scheduled(
                # the last message is due at the run's end, not a rounding error after it
                min((out.ts_ms - t0) / k_ms, self.wall_s),
                out.topic,
                out.body,
                out.device_id,
                tuple((stream, ts) for stream, ts, _ in out.readings),
                out.msg_id,
            )

    def generated(self) -> Iterator[_Out]:
        """The generated messages merged by arrival, ties in car order; each let go once out."""
        self.prepare()
        lists, self._prepared = self._prepared, None
        assert lists is not None
        heap = [(msgs[0].ts_ms, i, 0) for i, msgs in enumerate(lists) if msgs]
        heapq.heapify(heap)
        while heap:
            _, i, j = heap[0]
            msgs = lists[i]
            assert msgs is not None
            out = msgs[j]
            if j + 1 < len(msgs):
                heapq.heapreplace(heap, (msgs[j + 1].ts_ms, i, j + 1))
            else:
                heapq.heappop(heap)
                lists[i] = None
            yield out

    def car(self, car_no: int) -> Car:
        """Car number `car_no` (1-based) with its trackers' true tracks (a quiet one is built
        anew on each call)."""
        car = self.scenario_cars.get(car_no)
        if car is not None:
            return car
        q = self.quiet[car_no]
        return commuter(q.setup, _rng(self.spec.seed, f"car:{car_no}"), q.device, q.loan)

    def _car_messages(self, slot: _Slot) -> list[_Out]:
        car = self.car(slot.car_no)
        frame = self.city.frame
        streams: list[list[_Out]] = []
        for t in car.trackers:
            rng = _rng(self.spec.seed, f"tracker:{self.first_ids.get(t.device_id, t.device_id)}")
            sent = messages(t, frame, rng)
            if t.device_id in self.terminals:
                streams.append(
                    [
                        _Out(o.ts_ms, _JT808_TOPIC, o.body, t.device_id, o.readings, (), o.msg_id)
                        for o in terminal_messages(t, frame, sent)
                    ]
                )
                continue
            # orjson's bytes keep its 4 KiB buffer: a copy of the exact size is 30 times smaller
            streams.append(
                [
                    _Out(
                        m.ts_ms,
                        sys.intern(m.topic),
                        memoryview(m.body()).tobytes(),
                        m.device_id,
                        m.readings,
                        m.rejects,
                    )
                    for m in sent
                ]
            )
        return [
            out
            for out in heapq.merge(*streams, key=lambda o: o.ts_ms)
            if out.ts_ms <= self.end_ms  # held up in the network past the end of the run
        ]

    def _car_truths(self) -> Iterator[CarTruth]:
        for slot in self.slots:
            car = self.scenario_cars.get(slot.car_no)
            if car is None:
                q = self.quiet[slot.car_no]
                car = Car(
                    q.setup.car_id,
                    Role.QUIET,
                    None,
                    slot.vehicle,
                    self.city.zones[slot.zone_index],
                    (q.loan,),
                    (),
                )
                yield replace(car_truth(car), device_ids=(q.device.device_id,))
            else:
                yield car_truth(car)

    def _silences(self) -> dict[str | None, tuple[Silence, ...]]:
        return {
            t.device_id: tuple(e for e in t.events if isinstance(e, Silence))
            for car in self.scenario_cars.values()
            for t in car.trackers
        }

    def _live_window(
        self, exp: Expectation, silences: tuple[Silence, ...], lag_s: float
    ) -> Expectation:
        """`exp` with a `device.offline`/`device.online` window on the wall clock."""
        if exp.type not in {"device.offline", "device.online"} or exp.ts_max_ms is None:
            return exp
        lo, hi = exp.ts_min_ms or exp.ts_max_ms, exp.ts_max_ms
        if exp.type == "device.offline":
            start = hi - OFFLINE_MS  # the silence began then (scenarios.goes_silent)
            off_lo = self.wall_ms(start - STILL_GAP_MS) + self.offline_s * 1000
            off_hi = self.wall_ms(start) + (self.offline_s + lag_s) * 1000
            return replace(exp, ts_min_ms=math.floor(off_lo), ts_max_ms=math.ceil(off_hi))
        # online: stamped with the first reading after the silence, or the offline alert's
        # time if that is later
        silence = max(
            (s for s in silences if s.end_ms <= lo + STILL_GAP_MS),
            key=lambda s: s.end_ms,
            default=None,
        )
        if silence is None:
            return exp
        off_lo = self.wall_ms(silence.start_ms - STILL_GAP_MS) + self.offline_s * 1000
        off_hi = self.wall_ms(silence.start_ms) + (self.offline_s + lag_s) * 1000
        return replace(
            exp, ts_min_ms=math.floor(max(lo, off_lo)), ts_max_ms=math.ceil(max(hi, off_hi))
        )

    def lands_s(self, car: Car, exp: Expectation) -> float:
        """When, in wall seconds after the start, a live engine raises `exp` at the latest
        if the stream is on schedule: on the reading that triggers it; a timer (zone grace,
        dwell) on the next reading after it, or for a silent device `zone_grace_s` of wall
        time after its last arrival; `device.offline` `offline_s` after the last arrival."""
        assert exp.ts_max_ms is not None
        silences = [e for t in car.trackers for e in t.events if isinstance(e, Silence)]
        at = exp.ts_max_ms
        if exp.type == "device.offline":
            start = next((s.start_ms for s in silences if s.start_ms <= at), at - OFFLINE_MS)
            return (self.wall_ms(start) - self.start_wall_ms) / 1000 + self.offline_s
        if exp.type in TIMER_TYPES:
            silent = next((s for s in silences if s.start_ms <= at < s.end_ms), None)
            if silent is not None:
                since = (self.wall_ms(silent.start_ms) - self.start_wall_ms) / 1000
                return since + GRACE_MS / 1000
            at += STILL_GAP_MS
        if exp.type == "device.online":
            at += STILL_GAP_MS
        return (self.wall_ms(at) - self.start_wall_ms) / 1000


def _natural_rate(spec: FleetSpec, city: City, end_ms: int, span_ms: int) -> float:
    """Messages per tracker per event second of quiet commuters over the span (a pilot)."""
    t0 = end_ms - span_ms
    count = 0
    for k in range(PILOT_CARS):
        rng = _rng(spec.seed, f"pilot:{k}")
        setup = _setup(spec, city, 10**6 + k, k % len(city.zones), t0, end_ms, 1.0, set(), None)
        vehicle = make_vehicle(rng, setup.vins)
        setup = replace(setup, vehicle=vehicle)
        device = draw_device(rng, setup)
        loan = make_loan(rng, vehicle, setup.loan_id, (device.device_id,), setup.zone)
        car = commuter(setup, rng, device, loan)
        for t in car.trackers:
            count += sum(m.ts_ms <= end_ms for m in messages(t, city.frame, rng))
    return count / PILOT_CARS / (span_ms / 1000)


def _setup(
    spec: FleetSpec,
    city: City,
    car_no: int,
    zone_index: int,
    t0_ms: int,
    t1_ms: int,
    offline_event_ms: float,
    vins: set[str],
    vehicle: SimulatedVehicle | None,
) -> CarSetup:
    return CarSetup(
        city,
        car_no,
        city.zones[zone_index],
        t0_ms,
        t1_ms,
        vins,
        id_prefix=spec.id_prefix,
        vehicle=vehicle,
        offline_ms=round(offline_event_ms),
    )


def plan_fleet(spec: FleetSpec, progress: Callable[[str], None] | None = None) -> FleetPlan:
    """Plan a fleet run (pure and seeded; `start_wall_ms` 0 reads the clock once).

    Builds the city, every car's vehicle and loan, and the scenario cars (their stories
    decide the ground truth); quiet cars are built by `prepare`/`schedule`. `progress`
    gets a line now and then (planning 10,000 trackers takes seconds).
    """
    validate_spec(spec)
    say = progress or (lambda _line: None)
    # whole seconds: OwnTracks stamps are whole seconds, and the event clock is the wall
    # clock moved by a whole number of them
    start = (spec.start_wall_ms or int(time.time() * 1000)) // 1000 * 1000
    end = start + round(spec.duration_s) * 1000
    wall_ms = end - start
    cars, counts = fleet_cars(spec.devices, spec.mix)
    zones = max(1, math.ceil(cars / CARS_PER_ZONE))
    city = build_city(_rng(spec.seed, "city"), zones, engine_circles=True)
    speed = spec.speed or 1.0
    if spec.rate is not None:
        speed = _speed_for_rate(spec, city, end, wall_ms, say)
    span_ms = math.ceil(speed * wall_ms / 1000) * 1000
    if span_ms > MAX_SPAN_S * 1000:
        msg = (
            f"{speed:g}x for {spec.duration_s:g} s is {span_ms / 86_400_000:.0f} days of "
            f"event time (at most {MAX_SPAN_S // 86_400}): lower the rate or the duration"
        )
        raise FleetError(msg)
    kinds: list[ScenarioKind | None] = [k for k, n in counts.items() for _ in range(n)]
    kinds += [None] * (cars - len(kinds))
    _rng(spec.seed, "slots").shuffle(kinds)
    vins: set[str] = set()
    slots = [
        _Slot(n + 1, kind, n % zones, make_vehicle(_rng(spec.seed, f"vehicle:{n + 1}"), vins))
        for n, kind in enumerate(kinds)
    ]
    plan = FleetPlan(
        spec,
        speed=span_ms / wall_ms,
        start_wall_ms=start,
        end_ms=end,
        city=city,
        slots=slots,
    )
    say(
        f"planning {cars:,} cars ({spec.devices:,} trackers) in {zones} zones, "
        f"speed {plan.speed:.3g}x: {plan.span_s / 60:.1f} min of event time in "
        f"{plan.wall_s:.0f} s"
    )
    offline_event_ms = plan.offline_s * 1000 * plan.speed
    t0 = plan.t0_ms
    played = 0
    for slot in slots:
        setup = _setup(
            spec, city, slot.car_no, slot.zone_index, t0, end, offline_event_ms, vins, slot.vehicle
        )
        if slot.kind is not None:
            car, why = _play(plan, slot.kind, setup)
            if car is not None:
                plan.scenario_cars[slot.car_no] = car
                played += 1
                if played % 100 == 0:
                    say(f"  {played:,} scenario cars built")
                continue
            plan.skip_reasons.append(f"{setup.car_id} {slot.kind.value}: {why}")
        rng = _rng(spec.seed, f"quiet:{slot.car_no}")
        device = draw_device(rng, setup)
        loan = make_loan(rng, slot.vehicle, setup.loan_id, (device.device_id,), setup.zone)
        plan.quiet[slot.car_no] = _Quiet(device, loan, setup)
    if spec.jt808_share > 0:
        _speak_jt808(plan)
    return plan


def _speak_jt808(plan: FleetPlan) -> None:
    """Make the trackers `choose_terminals` picks JT/T 808 terminals, renamed everywhere."""
    candidates: list[Candidate] = []
    for slot in plan.slots:
        car = plan.scenario_cars.get(slot.car_no)
        if car is not None:
            candidates += [Candidate(t.device_id, t.model, car.scenario) for t in car.trackers]
        else:
            device = plan.quiet[slot.car_no].device
            candidates.append(Candidate(device.device_id, device.model, None))
    spec = plan.spec
    numbers = choose_terminals(candidates, spec.jt808_share, spec.seed, spec.id_prefix)
    ids = terminal_ids(numbers)
    for car_no, car in plan.scenario_cars.items():
        plan.scenario_cars[car_no] = rename_car(car, ids)
    for q in plan.quiet.values():
        if q.device.device_id in ids:
            q.device = replace(q.device, device_id=ids[q.device.device_id])
            q.loan = rename_loan(q.loan, ids)
    plan.terminals = {ids[old]: number for old, number in numbers.items()}
    plan.first_ids = {new: old for old, new in ids.items()}


def _play(plan: FleetPlan, kind: ScenarioKind, setup: CarSetup) -> tuple[Car | None, str]:
    """The scenario car, or None and why it cannot be played in this run."""
    span_s = plan.span_s
    pace = min(1.0, span_s / STORY_S)
    rng = _rng(plan.spec.seed, f"car:{setup.car_no}")
    lead = rng.uniform(0.0, span_s - STORY_S) if span_s > STORY_S else 0.0
    why = ""
    for attempt, tempo in enumerate((pace, pace / 2)):
        try:
            car = BUILDERS[kind](
                replace(setup, pace=tempo, lead_s=lead),
                _rng(plan.spec.seed, f"car:{setup.car_no}:{attempt}"),
            )
        except DoesNotFit as exc:
            why = str(exc)
            continue
        except RuntimeError as exc:  # the city has no place for the story
            return None, str(exc)
        why = _misfit(plan, car)
        if not why:
            return car, ""
    return None, why


def _misfit(plan: FleetPlan, car: Car) -> str:
    """Why the car's guaranteed alerts cannot be judged in this run (empty if they can)."""
    if any(t.track.t1_ms >= plan.end_ms + 1000 for t in car.trackers):  # a stay's rounding
        return "its story runs past the end of the run"
    for exp in car.required:
        if exp.ts_max_ms is None:
            continue
        if exp.ts_max_ms > plan.end_ms:
            return f"its {exp.type} would come after the end of the run"
        lands = plan.lands_s(car, exp)
        if lands > plan.wall_s:
            return (
                f"its {exp.type} would reach a live engine {lands - plan.wall_s:.0f} s after "
                f"the run ends ({plan.wall_s:g} s at {plan.speed:.3g}x)"
            )
    return ""


def _speed_for_rate(
    spec: FleetSpec, city: City, end_ms: int, wall_ms: int, say: Callable[[str], None]
) -> float:
    """The speed at which the fleet publishes `spec.rate` messages/s (pilot runs)."""
    assert spec.rate is not None
    speed = 1.0
    for _ in range(4):
        span_ms = math.ceil(speed * wall_ms / 1000) * 1000
        natural = _natural_rate(spec, city, end_ms, span_ms) * spec.devices
        if natural <= 0:
            msg = "the fleet sends nothing over this span: give a speed instead of a rate"
            raise FleetError(msg)
        wanted = spec.rate / natural
        say(
            f"natural rate over {span_ms / 60_000:.1f} min of event time: "
            f"{natural:,.1f} msg/s; speed for {spec.rate:,.0f} msg/s: {wanted:.3g}x"
        )
        if abs(wanted - speed) <= 0.03 * speed:
            break
        speed = wanted
    if speed < 1.0:
        msg = (
            f"{spec.devices:,} trackers send about {natural:,.1f} msg/s at speed 1 "
            f"and the stream cannot run slower than the wall clock: ask for at least that "
            f"rate, or fewer trackers"
        )
        raise FleetError(msg)
    return speed
