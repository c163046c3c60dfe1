"""The pipeline cut in two for the distributed runtime: a device stage keyed by device and a
per-loan stage keyed by loan, with the same core and consumers as the local engine; no I/O.

`DeviceStage` steps readings (partitioned by device_id) and fires the devices' timers with
`engine.runtime.pipeline.Pipeline` in `defer_loans` mode, and routes what happened: each
accepted reading of a tracker on a loan, with the alerts it raised and the fix that moved
the car, becomes a `LoanEvent` for that loan, and so does each timer alert with a loan;
alerts of trackers on no loan go out at once.

`LoanStage` takes a loan's events in order (partitioned by loan_id): the per-loan fold
(tracker separation, `engine.core.loan.step_loan`) where the local pipeline runs it, then the
lending consumers through the same `ConsumerStage`. Its alerts are in the local engine's
order: each event's alerts, then the loan's, then the consumer's. It feeds each device's
readings once: a record it has fed (by its source partition and offset) is skipped when a
restarted device stage steps it again.

Both keep what a checkpoint must write (`take_dirty`) and load it back (`restore`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from alerts.model import Alert
from devices.readings import Reading
from engine.core.config import Config
from engine.core.loan import step_loan
from engine.core.state import DeviceState, LoanState, loan_from_json, loan_to_json
from engine.distributed.records import LoanEvent
from engine.runtime.consumers import ConsumerStage
from engine.runtime.loan_book import LoanBook
from engine.runtime.pipeline import Pipeline
from engine.store.port import ConsumerRow
from geofence.fence import Fence
from geofence.index import FenceIndex
from lending.consumer import LendingConsumer
from lending.model import Loan

Source = tuple[int, int]
"""A reading record's partition and offset."""


@dataclass(slots=True)
class Routed:
    """What a device-stage batch produced."""

    accepted: list[Reading] = field(default_factory=list)  # telemetry to store
    events: list[LoanEvent] = field(default_factory=list)  # to the per-loan stage, in order
    alerts: list[Alert] = field(default_factory=list)  # of trackers on no loan: out at once


class _Fleet:
    """Fences and loans, as the API changes them: every stage of every worker knows all (a
    worker's stages share one index and one `LoanBook`, set by `Partitions`; these put them
    into a stage of its own, as the stages' tests run them without a worker)."""

    pipeline: Pipeline

    def put_fences(self, fences: Sequence[Fence]) -> None:
        """Add or replace fences (from the next batch on)."""
        self.pipeline.set_fences(self.pipeline.index.with_fences(fences))

    def put_loan(self, loan: Loan, now_ms: int) -> None:
        """Add or replace a loan; its VIN was judged at PUT time by the API."""
        self.pipeline.put_loan(loan, now_ms, now_ms, check_vin=False)


class DeviceStage(_Fleet):
    """The core over the devices of this worker's partitions of `pledgewatch.readings`."""

    def __init__(self, config: Config | None = None, loans: LoanBook | None = None) -> None:
        self.pipeline = Pipeline(FenceIndex(), config, defer_loans=True, loans=loans)
        self.pipeline.tap = []

    def step(
        self,
        readings: Sequence[Reading],
        clocks: Sequence[int],
        sources: Sequence[Source],
        now_ms: int | None,
    ) -> Routed:
        """Step readings at their arrival clocks, then (unless `now_ms` is None) fire the
        timers due on the runtime clock `now_ms`; route what happened."""
        p = self.pipeline
        accepted: list[Reading] = []
        p.process(readings, clocks, accepted)
        if now_ms is not None:
            p.advance(now_ms)
        where = {id(r): (src, at) for r, at, src in zip(readings, clocks, sources, strict=True)}
        routed = Routed(accepted)
        tap, groups = p.tap or [], p.groups
        p.tap, p.groups = [], []
        loan_for = p.ctx.loan_for
        at_ms = now_ms if now_ms is not None else (clocks[-1] if clocks else 0)
        i, g = 0, 0
        while i < len(tap):
            item = tap[i]
            if g < len(groups) and groups[g].at == i:
                group = groups[g]
                assert not isinstance(item, Alert)  # the pipeline's invariant
                raised = tuple(a for a in tap[i + 1 : i + 1 + group.alerts] if isinstance(a, Alert))
                loan = loan_for(item.device_id)
                src, clock = where[id(item)]
                if loan is None:
                    routed.alerts += raised
                else:
                    event = LoanEvent(loan.loan_id, clock, item, raised, group.moved, src)
                    routed.events.append(event)
                i += 1 + group.alerts
                g += 1
                continue
            assert isinstance(item, Alert)  # a timer's alert
            if item.loan_id is None:
                routed.alerts.append(item)
            else:
                routed.events.append(LoanEvent(item.loan_id, at_ms, alerts=(item,)))
            i += 1
        return routed

    def take_dirty(self) -> tuple[list[DeviceState], list[str]]:
        """Device states changed, and devices forgotten, since the last call."""
        devices, _ = self.pipeline.take_dirty()
        return devices, self.pipeline.take_evicted()

    def restore(self, states: Iterable[DeviceState]) -> None:
        """Take the states of every device of this worker's partitions (after a rebalance or
        at start); timers are recomputed from them."""
        self.pipeline.restore_states(states, ())
        self.pipeline.dirty.clear()


class LoanStage(_Fleet):
    """The per-loan fold and the lending consumers over this worker's loan partitions."""

    def __init__(
        self,
        config: Config | None = None,
        consumer: LendingConsumer | None = None,
        loans: LoanBook | None = None,
    ) -> None:
        self.pipeline = Pipeline(FenceIndex(), config, loans=loans)
        self.consumers = None if consumer is None else ConsumerStage(self.pipeline, consumer)
        if self.pipeline.tap is None:
            self.pipeline.tap = []
        self.fed: dict[str, dict[str, Source]] = {}  # loan -> device -> last record fed
        self._dirty: set[str] = set()

    def feed(
        self, events: Sequence[LoanEvent], now_ms: int, extra: Sequence[Alert] = ()
    ) -> list[Alert]:
        """Fold events in order; the alerts to produce, in the order their webhooks go out.
        `extra`: alerts stored already that the consumer must see (a PUT's VIN conflict);
        they are not returned, what the consumer raised on them is."""
        p = self.pipeline
        tap = p.tap if p.tap is not None else []
        for event in events:
            reading = event.reading
            if reading is None:
                tap += event.alerts
                continue
            loan_id, device_id = event.loan_id, reading.device_id
            if event.src is not None:
                fed = self.fed.setdefault(loan_id, {})
                last = fed.get(device_id)
                if last is not None and event.src <= last:
                    continue  # stepped again by a restarted device stage: fed already
                fed[device_id] = event.src
                self._dirty.add(loan_id)
            tap.append(reading)
            tap += event.alerts
            loan = p.loans.get(loan_id)
            if event.moved is not None and loan is not None and len(loan.device_ids) > 1:
                state = p.loan_states.get(loan_id) or LoanState(loan_id)
                state, raised = step_loan(
                    state, device_id, event.moved, loan, p.config, event.at_ms
                )
                p.loan_states[loan_id] = state
                self._dirty.add(loan_id)
                if raised:
                    tap += raised
                    p.count_raised(raised)
        if self.consumers is not None:
            return self.consumers.feed(now_ms, extra)
        p.tap = []
        return [a for a in tap if isinstance(a, Alert)]

    def take_dirty(self) -> tuple[dict[str, dict[str, object]], list[ConsumerRow]]:
        """Loans whose fold changed since the last call (`loan_doc` of each), and the
        consumer's changed rows."""
        docs = {loan_id: self.loan_doc(loan_id) for loan_id in sorted(self._dirty)}
        self._dirty.clear()
        self.pipeline.dirty_loans.clear()
        rows = [] if self.consumers is None else self.consumers.take_rows()
        return docs, rows

    def loan_doc(self, loan_id: str) -> dict[str, object]:
        """A loan's fold and what it has fed, as JSON."""
        state = self.pipeline.loan_states.get(loan_id)
        fed = self.fed.get(loan_id, {})
        return {
            "state": None if state is None else loan_to_json(state),
            "fed": {device: list(src) for device, src in sorted(fed.items())},
        }

    def restore(
        self,
        docs: Mapping[str, Mapping[str, object]],
        books: Iterable[tuple[str, Mapping[str, object]]] = (),
        cells: Iterable[tuple[str, dict[str, object]]] = (),
    ) -> None:
        """Take the folds of every loan of this worker's partitions (after a rebalance or at
        start) and the consumer's rows of those loans."""
        p = self.pipeline
        p.loan_states = {}
        self.fed = {}
        for loan_id, doc in docs.items():
            state = doc.get("state")
            if state is not None:
                p.loan_states[loan_id] = loan_from_json(state)
            fed = doc.get("fed")
            if isinstance(fed, dict):
                self.fed[loan_id] = {d: (int(s[0]), int(s[1])) for d, s in fed.items()}
        self._dirty.clear()
        if self.consumers is not None:
            self.consumers.consumer.restore(books, cells)
