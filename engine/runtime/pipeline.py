"""Keyed dispatch of readings to the pure core, with timers and counters; no I/O.

A `Pipeline` owns the per-device and per-loan states, a heap of device wake-ups on the
runtime clock, and the fence index snapshot. Runtimes (replay, the live engine) feed it
batches of decoded readings with the runtime clock and collect the alerts it raises.

Memory stays bounded under any stream of device ids: a device on no active loan is
forgotten `evict_after_s` after its last reading (`engine.core.device.evict_at`), by the
same timer heap, so the cost is one heap entry per device; the ids forgotten since the
last checkpoint are handed to the runtime (`take_evicted`) so that the store drops them too.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from alerts.model import Alert
from devices.readings import GpsFix, Reading
from engine.core.config import Config
from engine.core.context import Context, Outcome
from engine.core.device import Step, evict_at, new_state, step, tick, wake_at
from engine.core.loan import put_conflicts, step_loan
from engine.core.state import (
    DeviceState,
    LoanState,
    Position,
    device_from_json,
    device_to_json,
    loan_from_json,
    loan_to_json,
)
from geofence.index import FenceHit, FenceIndex
from lending.model import Loan

PIPELINE_SNAPSHOT_VERSION = 1
_DUPLICATE, _LATE, _CLOCK_SKEW = Outcome.DUPLICATE, Outcome.LATE, Outcome.CLOCK_SKEW


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
    """The core applied to a whole fleet, one reading at a time in arrival order."""

    def __init__(
        self, index: FenceIndex, config: Config | None = None, defer_loans: bool = False
    ) -> None:
        self.config = config or Config()
        # The distributed runtime steps loans after a repartition by loan (engine.distributed):
        # then the per-loan stage is not run here; `groups` says, for each accepted reading in
        # `tap`, where it is, how many alerts follow it, and the fix that moved the car.
        self.defer_loans = defer_loans
        self.groups: list[TapGroup] = []
        self.index = index
        self.loans: dict[str, Loan] = {}
        self._by_device: dict[str, Loan] = {}  # the context's view, kept up to date in place
        self._loan_ids_by_device: dict[str, set[str]] = {}
        self._loan_ids_by_vin: dict[str, set[str]] = {}
        self.ctx = Context(self.config, index.by_id, self._by_device)
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

    def put_loan(self, loan: Loan, ts_ms: int, now_ms: int, check_vin: bool = True) -> list[Alert]:
        """Add or replace a loan; returns the VIN conflicts of `put_conflicts` if `check_vin`."""
        old = self.loans.get(loan.loan_id)
        alerts: list[Alert] = []
        if check_vin:  # False when the caller judged the VIN already (the API, at PUT time)
            stored = [self.loans[i] for i in self._loan_ids_by_vin.get(loan.vin, ())]
            if old is not None and old.vin != loan.vin:
                stored.append(old)
            alerts = put_conflicts(stored, [loan], ts_ms, now_ms)
        self.loans[loan.loan_id] = loan
        if old is not None:
            self._loan_ids_by_vin[old.vin].discard(old.loan_id)
            for device_id in old.device_ids:
                self._loan_ids_by_device[device_id].discard(old.loan_id)
        self._loan_ids_by_vin.setdefault(loan.vin, set()).add(loan.loan_id)
        for device_id in loan.device_ids:
            self._loan_ids_by_device.setdefault(device_id, set()).add(loan.loan_id)
        for device_id in {*loan.device_ids, *(old.device_ids if old else ())}:
            # a tracker moved between loans belongs to its active loan (ties: the larger id)
            claimants = [self.loans[i] for i in self._loan_ids_by_device[device_id]]
            if claimants:
                self._by_device[device_id] = max(claimants, key=lambda ln: (ln.active, ln.loan_id))
            else:
                del self._by_device[device_id]
            state = self.devices.get(device_id)
            if state is not None:  # on or off an active loan: offline and eviction change
                wake = wake_at(state, self.ctx)
                if wake is not None:
                    self._schedule(device_id, wake)
        return self._count(alerts)

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
        telemetry a runtime stores).
        """
        hits = iter(self.hits_for(readings))
        alerts: list[Alert] = []
        for reading, now_ms in zip(readings, clocks, strict=True):
            alerts.extend(self.advance(now_ms))
            fix_hits = next(hits) if isinstance(reading, GpsFix) else ()
            if self._step(reading, now_ms, fix_hits, alerts) and accepted is not None:
                accepted.append(reading)
        return alerts

    def advance(self, now_ms: int) -> list[Alert]:
        """Fire every device timer due at or before `now_ms` on the runtime clock, and
        forget the devices whose eviction is due (`take_evicted` hands them out)."""
        alerts: list[Alert] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            due, device_id = heapq.heappop(heap)
            if self._scheduled.get(device_id) != due:
                continue  # superseded by an earlier wake-up
            del self._scheduled[device_id]
            state = self.devices[device_id]
            wake = wake_at(state, self.ctx)
            if wake is None:
                continue
            if wake != due:  # the device reported since: take its turn at the new time
                self._schedule(device_id, wake)
                continue
            evict = evict_at(state, self.ctx)
            if evict is not None and evict <= now_ms:
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
            return False
        counters.readings[reading.stream] += 1
        if outcome is _LATE:
            counters.late[reading.stream] += 1
        elif outcome is _CLOCK_SKEW:
            counters.clock_skew[reading.stream] += 1
        counters.missing += result.missing
        if self.tap is not None:
            self.tap.append(reading)
        self._apply(result)
        raised = result.alerts
        if self.defer_loans:
            if self.tap is not None:
                at = len(self.tap) - 1
                self.groups.append(TapGroup(at, len(result.alerts), result.moved))
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
        return True

    def _apply(self, result: Step) -> None:
        device_id = result.state.device_id
        self.devices[device_id] = result.state
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
