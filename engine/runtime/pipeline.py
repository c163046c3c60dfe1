"""Keyed dispatch of readings to the pure core, with timers and counters; no I/O.

A `Pipeline` owns the per-device and per-loan states, a heap of device wake-ups on the
runtime clock, and the fence index snapshot. Runtimes (replay, the live engine) feed it
batches of decoded readings with the runtime clock and collect the alerts it raises.

The batch step (`process`, on by default): a vectorized plan per batch
(`engine.runtime.quiet_plan`) finds the fixes that change nothing but a car's position and
clocks (`engine.core.quiet`); they are applied in bulk per device, every other reading goes
to `step` as in the fold, in the same order, with the same timers, tap and counters. The
fold alone runs with `fast=False` (or `PLEDGEWATCH_FAST_PATH=0`); both give the same alerts,
ids, states and counters (tests/test_fast_path_properties.py).

Memory stays bounded under any stream of device ids: a device on no active loan is
forgotten `evict_after_s` after its last reading (`engine.core.device.evict_at`), by the
same timer heap, so the cost is one heap entry per device; the ids forgotten since the
last checkpoint are handed to the runtime (`take_evicted`) so that the store drops them too.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from alerts.model import Alert
from devices.columns import ReadingBatch, columns_of
from devices.readings import GpsFix, Reading, Stream
from engine.core.config import Config
from engine.core.context import Context, Outcome
from engine.core.device import Step, evict_at, new_state, step, tick, wake_at
from engine.core.loan import put_conflicts, step_loan
from engine.core.quiet import QuietTerms, settle_quiet
from engine.core.state import (
    DeviceState,
    LoanState,
    Position,
    device_from_json,
    device_to_json,
    loan_from_json,
    loan_to_json,
)
from engine.runtime.loan_book import LoanBook
from engine.runtime.quiet_plan import QuietPlan, Start, inside_positions, plan_quiet
from geofence.index import FenceHit, FenceIndex
from lending.model import Loan

PIPELINE_SNAPSHOT_VERSION = 1
_DUPLICATE, _LATE, _CLOCK_SKEW = Outcome.DUPLICATE, Outcome.LATE, Outcome.CLOCK_SKEW
FAST_MIN_READINGS = 8
"""Smaller batches are folded reading by reading: planning them costs more than it saves."""
FAST_ANY_READINGS = 128
"""Below this, a batch takes the batch step only if its devices have two readings each on
average: with one reading per device (live single messages) the plan's fixed cost outweighs
what it saves until a batch is this large (1.4-1.6x the fold's CPU at 8-12 readings, even at
128; `Pipeline.uses_batch_step`)."""


def fast_path_default() -> bool:
    """Whether pipelines take the batch step: yes, unless `PLEDGEWATCH_FAST_PATH=0`."""
    return os.environ.get("PLEDGEWATCH_FAST_PATH", "1") != "0"


@dataclass(slots=True)
class Counters:
    """What went through: the numbers behind `/metrics` and the replay summary."""

    readings: Counter[str] = field(default_factory=Counter)  # accepted (late included), by stream
    rejected: Counter[str] = field(default_factory=Counter)  # by reason
    duplicates: Counter[str] = field(default_factory=Counter)  # by stream
    late: Counter[str] = field(default_factory=Counter)  # by stream
    clock_skew: Counter[str] = field(default_factory=Counter)  # held back, by stream
    missing: int = 0  # gaps in devices' `seq`
    alerts: Counter[str] = field(default_factory=Counter)  # by type
    evicted: int = 0  # devices forgotten (on no active loan, silent for `evict_after_s`)

    def copy(self) -> Counters:
        """A copy that later counting does not change (what a runtime publishes)."""
        return Counters(
            Counter(self.readings),
            Counter(self.rejected),
            Counter(self.duplicates),
            Counter(self.late),
            Counter(self.clock_skew),
            self.missing,
            Counter(self.alerts),
            self.evicted,
        )

    def as_json(self) -> dict[str, object]:
        """The counters as a JSON object."""
        return {
            "readings": _plain(self.readings),
            "rejected": _plain(self.rejected),
            "duplicates": _plain(self.duplicates),
            "late": _plain(self.late),
            "clock_skew": _plain(self.clock_skew),
            "readings_missing": self.missing,
            "alerts": _plain(self.alerts),
            "devices_evicted": self.evicted,
        }


@dataclass(frozen=True, slots=True)
class TapGroup:
    """An accepted reading in the tap (`at`), the `alerts` right after it that it raised,
    and the fix that moved the car (None if it did not): the per-loan stage's input."""

    at: int
    alerts: int
    moved: Position | None


def _plain(counter: Counter[str]) -> dict[str, int]:
    """Counter keys may be StrEnum members (cheaper in the hot path): make them plain str."""
    return {str(k): v for k, v in counter.items()}


class Pipeline:
    """The core applied to a whole fleet, reading by reading in arrival order (the batch
    step gives the same results)."""

    def __init__(
        self,
        index: FenceIndex,
        config: Config | None = None,
        defer_loans: bool = False,
        fast: bool | None = None,
        loans: LoanBook | None = None,
    ) -> None:
        self.config = config or Config()
        self.fast = fast_path_default() if fast is None else fast  # the batch step
        self.fast_min = FAST_MIN_READINGS
        self.fast_any = FAST_ANY_READINGS
        self.starts: dict[str, Start] = {}  # what the batch step's plan took from each state
        self.quiet_readings = 0  # readings the batch step applied in bulk (not a metric)
        self.dropped: list[int] = []  # positions of the duplicates in the last `process`
        # The distributed runtime steps loans after a repartition by loan (engine.distributed):
        # then the per-loan stage is not run here; `groups` says, for each accepted reading in
        # `tap`, where it is, how many alerts follow it, and the fix that moved the car.
        self.defer_loans = defer_loans
        self.groups: list[TapGroup] = []
        self.index = index
        # the loans, possibly shared with other pipelines (a worker's stages share one book)
        self.book = LoanBook() if loans is None else loans
        self.loans: dict[str, Loan] = self.book.loans
        self.ctx = Context(self.config, index.by_id, self.book.by_device)
        self.devices: dict[str, DeviceState] = {}
        self.loan_states: dict[str, LoanState] = {}
        self.counters = Counters()
        self._scheduled: dict[str, int] = {}  # device -> its live heap entry
        self.dirty: set[str] = set()  # devices changed since the last checkpoint
        self.dirty_loans: set[str] = set()  # loans changed since the last checkpoint
        self.evicted: set[str] = set()  # devices forgotten since the last checkpoint
        self._heap: list[tuple[int, str]] = []
        # What the consumers are fed (`engine.runtime.consumers`), in the order it happened:
        # each accepted reading, then the alerts it raised; timer and loan alerts as they
        # fire. None when no consumer listens (it costs nothing then).
        self.tap: list[Reading | Alert] | None = None

    def set_fences(self, index: FenceIndex) -> None:
        """Swap in a new fence snapshot; it applies from the next reading on."""
        self.index = index
        self.ctx = Context(self.config, index.by_id, self.ctx.loans_by_device)
        self.starts.clear()

    def put_loan(self, loan: Loan, ts_ms: int, now_ms: int, check_vin: bool = True) -> list[Alert]:
        """Add or replace a loan; returns the VIN conflicts of `put_conflicts` if `check_vin`."""
        alerts: list[Alert] = []
        if check_vin:  # False when the caller judged the VIN already (the API, at PUT time)
            alerts = put_conflicts(self.book.same_vin(loan), [loan], ts_ms, now_ms)
        self.loan_changed(self.book.put(loan))
        return self._count(alerts)

    def loan_changed(self, device_ids: Iterable[str]) -> None:
        """The book changed these trackers' loans: on or off an active loan, their offline
        and eviction timers change; the batch step's cached terms are stale."""
        self.starts.clear()
        for device_id in device_ids:
            state = self.devices.get(device_id)
            if state is not None:
                wake = wake_at(state, self.ctx)
                if wake is not None:
                    self._schedule(device_id, wake)

    def hits_for(self, readings: Sequence[Reading]) -> list[tuple[FenceHit, ...]]:
        """Fence hits of every gps fix in `readings`, in order, by one vectorized lookup."""
        fixes = [r for r in readings if isinstance(r, GpsFix)]
        if not fixes:
            return []
        lats = np.fromiter((f.lat for f in fixes), dtype=np.float64, count=len(fixes))
        lons = np.fromiter((f.lon for f in fixes), dtype=np.float64, count=len(fixes))
        return self.index.hits(lats, lons, self.config.hysteresis_m)

    def process(
        self,
        readings: Sequence[Reading],
        clocks: Sequence[int],
        accepted: list[Reading] | None = None,
    ) -> list[Alert]:
        """Step each reading at its runtime clock, firing the timers due before it.

        Readings that were not duplicates are appended to `accepted` when given (the
        telemetry a runtime stores); `dropped` says which were (their positions).
        """
        self.dropped = []
        if self.uses_batch_step(readings):
            return self._process_batch(readings, clocks, accepted)
        hits = iter(self.hits_for(readings))
        alerts: list[Alert] = []
        for i, (reading, now_ms) in enumerate(zip(readings, clocks, strict=True)):
            alerts.extend(self.advance(now_ms))
            fix_hits = next(hits) if isinstance(reading, GpsFix) else ()
            if self._step(reading, now_ms, fix_hits, alerts):
                if accepted is not None:
                    accepted.append(reading)
            else:
                self.dropped.append(i)
        return alerts

    def uses_batch_step(self, readings: Sequence[Reading]) -> bool:
        """Whether `process` takes the batch step for `readings`: with the fast path on, a
        batch of `fast_any` readings or more, or of `fast_min` or more whose devices have
        two readings each on average (runs of a device's fixes are what it applies in bulk).
        Either way the alerts, ids and states are the fold's."""
        n = len(readings)
        if not self.fast or n < self.fast_min:
            return False
        if n >= self.fast_any:
            return True
        device_ids = (
            readings.columns.device_ids
            if isinstance(readings, ReadingBatch)
            else [r.device_id for r in readings]
        )
        return 2 * len(set(device_ids)) <= n

    def _process_batch(
        self, readings: Sequence[Reading], clocks: Sequence[int], accepted: list[Reading] | None
    ) -> list[Alert]:
        """`process` as a batch step: quiet fixes are held per device and applied in bulk
        (`_settle`) before anything else touches the device; the rest go to `step`."""
        if len(clocks) != len(readings):
            msg = f"{len(readings)} readings but {len(clocks)} clocks"
            raise ValueError(msg)
        ctx = self.ctx
        cols = columns_of(readings)  # a `ReadingBatch`'s own: its fixes are built when asked
        plan = plan_quiet(cols, self.devices, ctx, self.index, self.starts)
        run = _Run(readings, clocks, plan)
        terms, candidate, ignition, later = plan.terms, plan.candidate, plan.ignition, plan.later
        device_ids, ts_ms = cols.device_ids, cols.ts_list
        held = run.held
        heap = self._heap
        tap = self.tap
        alerts: list[Alert] = []
        for i in range(len(device_ids)):
            now_ms = clocks[i]
            if heap and heap[0][0] <= now_ms:
                alerts.extend(self._advance(now_ms, run))
            device_id = device_ids[i]
            if candidate[i]:
                q = terms[device_id]
                if q is None and device_id in later:  # went to `step` before: its terms now
                    k, taken = later.pop(device_id)
                    state = self.devices.get(device_id)
                    q = terms[device_id] = plan.terms_after(k, state, taken, ctx)
                ig = ignition[i]
                if (
                    q is not None
                    and q.bound_ms < ts_ms[i] < q.due_ms
                    and (ig is None or ig is q.ignition)
                    and (q.parked is None or plan.tow_within(i, q, readings, ctx))
                ):
                    quiet = held.get(device_id)
                    if quiet is None:
                        held[device_id] = [i]
                    else:
                        quiet.append(i)
                    if tap is not None:
                        if self.defer_loans:
                            moved = Position(ts_ms[i], cols.lat_list[i], cols.lon_list[i])
                            self.groups.append(TapGroup(len(tap), 0, moved))
                        tap.append(readings[i])
                    if accepted is not None:
                        accepted.append(readings[i])
                    continue
            reading = readings[i]
            if device_id in held:
                self._settle(device_id, run)
            result = self._fold(reading, now_ms, plan.hits(i), alerts)
            if result is None:
                self.dropped.append(i)
            elif accepted is not None:
                accepted.append(reading)
            if plan.more[i]:  # its terms are worked out if a later candidate needs them
                taken = None if result is None else result.moved
                if taken is None and plan.point[i] >= 0:
                    plan.broken.add(device_id)  # a fix not taken: see `terms_after`
                terms[device_id] = None
                later[device_id] = (i, taken)
        for device_id in list(held):
            self._settle(device_id, run)
        if run.settled:
            self.counters.readings[Stream.GPS] += run.settled
            self.counters.missing += run.missing
            self.quiet_readings += run.settled
        return alerts

    def _settle(self, device_id: str, run: _Run) -> None:
        """Apply the quiet fixes held for a device, in one go (counted at the batch's end)."""
        held = run.held.pop(device_id)
        cols = run.plan.columns
        old = self.devices[device_id]
        k = held[-1]
        last = Position(cols.ts_list[k], cols.lat_list[k], cols.lon_list[k])
        if len(held) == 1:
            seq = cols.seq[k]
            clock = run.clocks[k]
            state, missing = settle_quiet(old, (last.ts_ms,), last, (seq,), clock, self.ctx)
        else:
            ts_ms = [cols.ts_list[i] for i in held]
            seqs = [cols.seq[i] for i in held]
            clock = max([run.clocks[i] for i in held])
            state, missing = settle_quiet(old, ts_ms, last, seqs, clock, self.ctx)
        self.devices[device_id] = state
        self.dirty.add(device_id)
        run.settled += len(held)
        run.missing += missing
        # What the plan needs of the new state next batch: the same terms from its last fix
        # on (the plan's terms are always those of the state the fixes were held under).
        q: QuietTerms = run.plan.terms[device_id]  # type: ignore[assignment]  # held under it
        start = self.starts.get(device_id)
        inside = start.inside if start is not None and start.state is old else None
        if inside is None:
            inside = inside_positions(state, self.index)
        terms = QuietTerms(last, last.ts_ms, q.due_ms, q.ignition, q.parked)
        self.starts[device_id] = Start(state, terms, inside)

    def advance(self, now_ms: int) -> list[Alert]:
        """Fire every device timer due at or before `now_ms` on the runtime clock, and
        forget the devices whose eviction is due (`take_evicted` hands them out)."""
        return self._advance(now_ms, None)

    def _advance(self, now_ms: int, run: _Run | None) -> list[Alert]:
        alerts: list[Alert] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            due, device_id = heapq.heappop(heap)
            if self._scheduled.get(device_id) != due:
                continue  # superseded by an earlier wake-up
            del self._scheduled[device_id]
            if run is not None and device_id in run.held:  # its quiet fixes came first
                self._settle(device_id, run)
            state = self.devices[device_id]
            wake = wake_at(state, self.ctx)
            if wake is None:
                continue
            if wake != due:  # the device reported since: take its turn at the new time
                self._schedule(device_id, wake)
                continue
            if run is not None and device_id in run.plan.terms:
                run.plan.terms[device_id] = None  # ticked: its next reading goes to `step`
                run.plan.later.pop(device_id, None)
            evict = evict_at(state, self.ctx)
            if evict is not None and evict <= now_ms:
                if run is not None:
                    run.plan.broken.add(device_id)  # forgotten: its next fix is a first one
                self._evict(device_id)
                continue
            result = tick(state, now_ms, self.ctx)
            self._apply(result)
            alerts.extend(result.alerts)
        return self._count(alerts)

    def _step(
        self, reading: Reading, now_ms: int, hits: tuple[FenceHit, ...], alerts: list[Alert]
    ) -> bool:
        """Step one reading, appending its alerts; False if it was a duplicate."""
        return self._fold(reading, now_ms, hits, alerts) is not None

    def _fold(
        self, reading: Reading, now_ms: int, hits: tuple[FenceHit, ...], alerts: list[Alert]
    ) -> Step | None:
        """Step one reading, appending its alerts; its step, or None if it was a duplicate."""
        device_id = reading.device_id
        state = self.devices.get(device_id)
        if state is None:
            state = new_state(device_id)
            self.evicted.discard(device_id)  # back after being forgotten: a new checkpoint row
        result = step(state, reading, self.ctx, now_ms, hits)
        counters = self.counters
        outcome = result.outcome
        if outcome is _DUPLICATE:
            counters.duplicates[reading.stream] += 1
            return None
        counters.readings[reading.stream] += 1
        if outcome is _LATE:
            counters.late[reading.stream] += 1
        elif outcome is _CLOCK_SKEW:
            counters.clock_skew[reading.stream] += 1
        counters.missing += result.missing
        tap = self.tap
        if tap is not None:
            tap.append(reading)
        self._apply(result)
        raised = result.alerts
        if self.defer_loans:  # the per-loan stage runs elsewhere: say where its input is
            if tap is not None:
                self.groups.append(TapGroup(len(tap) - 1, len(raised), result.moved))
        elif result.moved is not None:
            loan = self.ctx.loan_for(device_id)
            if loan is not None and len(loan.device_ids) > 1:
                ls = self.loan_states.get(loan.loan_id) or LoanState(loan.loan_id)
                ls, loan_alerts = step_loan(ls, device_id, result.moved, loan, self.config, now_ms)
                self.loan_states[loan.loan_id] = ls
                self.dirty_loans.add(loan.loan_id)
                raised += loan_alerts
        if raised:
            alerts.extend(self._count(list(raised)))
        return result

    def _apply(self, result: Step) -> None:
        device_id = result.state.device_id
        self.devices[device_id] = result.state
        if device_id in self.starts:  # of the state before: not to be kept alive by it
            del self.starts[device_id]
        self.dirty.add(device_id)
        if result.wake_at is not None:
            self._schedule(device_id, result.wake_at)

    def _schedule(self, device_id: str, wake: int) -> None:
        # Lazy timers: a device keeps one live heap entry, its earliest; a later wake-up is
        # found when that entry pops and the state is asked again (`advance`). So a device
        # that reports every few seconds costs no heap push per reading.
        scheduled = self._scheduled.get(device_id)
        if scheduled is None or wake < scheduled:
            self._scheduled[device_id] = wake
            heapq.heappush(self._heap, (wake, device_id))

    def _evict(self, device_id: str) -> None:
        """Forget a device: its state, and (at the next checkpoint) its stored row."""
        del self.devices[device_id]
        self.starts.pop(device_id, None)
        self._scheduled.pop(device_id, None)
        self.dirty.discard(device_id)
        self.evicted.add(device_id)
        self.counters.evicted += 1

    def _count(self, alerts: list[Alert]) -> list[Alert]:
        for alert in alerts:
            self.counters.alerts[alert.type] += 1
        if self.tap is not None:
            self.tap.extend(alerts)
        return alerts

    def count_raised(self, alerts: Sequence[Alert]) -> None:
        """Count alerts a later stage raised (the consumers'); they are not tapped."""
        for alert in alerts:
            self.counters.alerts[alert.type] += 1

    def take_dirty(self) -> tuple[list[DeviceState], list[LoanState]]:
        """The states changed since the last call: what a checkpoint must write."""
        devices = [self.devices[d] for d in sorted(self.dirty)]
        loans = [self.loan_states[ln] for ln in sorted(self.dirty_loans)]
        self.dirty.clear()
        self.dirty_loans.clear()
        return devices, loans

    def take_evicted(self) -> list[str]:
        """The devices forgotten since the last call: what a checkpoint must delete."""
        evicted = sorted(self.evicted)
        self.evicted.clear()
        return evicted

    def restore_states(self, devices: Iterable[DeviceState], loans: Iterable[LoanState]) -> None:
        """Take states from a checkpoint; timers are recomputed from them."""
        self.devices = {s.device_id: s for s in devices}
        self.starts.clear()
        self.loan_states = {s.loan_id: s for s in loans}
        self._scheduled.clear()
        self._heap.clear()
        for device_id, state in self.devices.items():
            wake = wake_at(state, self.ctx)
            if wake is not None:
                self._scheduled[device_id] = wake
                self._heap.append((wake, device_id))
        heapq.heapify(self._heap)

    def count_stored_duplicates(self, by_stream: Mapping[str, int]) -> None:
        """Readings the store found stored already (a redelivery older than the in-memory
        duplicate window): duplicates after all, no longer counted as accepted."""
        counters = self.counters
        for stream, n in by_stream.items():
            counters.readings[stream] -= n
            counters.duplicates[stream] += n

    def count_rejects(self, reasons: Iterable[str]) -> None:
        """Count rejected inputs by reason."""
        self.counters.rejected.update(reasons)

    def snapshot(self) -> dict[str, object]:
        """A JSON-able, versioned checkpoint of every device's and loan's state."""
        return {
            "v": PIPELINE_SNAPSHOT_VERSION,
            "devices": [device_to_json(s) for _, s in sorted(self.devices.items())],
            "loans": [loan_to_json(s) for _, s in sorted(self.loan_states.items())],
        }

    def restore(self, doc: Mapping[str, object]) -> None:
        """Load a checkpoint made by `snapshot`; timers are recomputed from the states."""
        if doc.get("v") != PIPELINE_SNAPSHOT_VERSION:
            msg = (
                f"pipeline snapshot version {doc.get('v')!r}, expected {PIPELINE_SNAPSHOT_VERSION}"
            )
            raise ValueError(msg)
        devices = doc.get("devices")
        loans = doc.get("loans")
        if not isinstance(devices, list) or not isinstance(loans, list):
            msg = "pipeline snapshot needs 'devices' and 'loans' lists"
            raise ValueError(msg)  # noqa: TRY004  # a malformed document, not a type error
        self.restore_states(map(device_from_json, devices), map(loan_from_json, loans))


class _Run:
    """One batch in the batch step: its readings, clocks and plan, and the quiet fixes held
    per device (indices, in order) until they are settled."""

    __slots__ = ("clocks", "held", "missing", "plan", "readings", "settled")

    def __init__(self, readings: Sequence[Reading], clocks: Sequence[int], plan: QuietPlan) -> None:
        self.readings = readings
        self.clocks = clocks
        self.plan = plan
        self.held: dict[str, list[int]] = {}
        self.settled = 0  # quiet fixes applied
        self.missing = 0  # readings their `seq` gaps skipped
