"""A worker's partitions: one device stage per partition of `pledgewatch.readings`, one
per-loan stage per partition of `pledgewatch.loan-events`, their bucketed table rows, and
the fences and loans every stage reads (one fence index and one `LoanBook` per worker,
shared); no Kafka here (engine.distributed.worker wires it).

Stages are per partition so that a rebalance moves whole partitions: a partition given to
this worker gets a fresh stage restored from its table buckets (its timers recomputed from
the states: a silent car still goes offline), a partition taken away is dropped with its
stage. Risk-site discovery runs per loan partition (one lending consumer each).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from alerts.model import Alert
from devices.readings import Reading
from engine.core.config import Config
from engine.core.state import DeviceState, device_from_json, device_to_json
from engine.distributed.buckets import BucketMirror, offset_key, read_checkpoint
from engine.distributed.records import LoanEvent, RecordError, read_loan_events, read_reading
from engine.distributed.stages import DeviceStage, LoanStage, Routed
from engine.runtime.loan_book import LoanBook
from geofence.fence import Fence
from geofence.index import FenceIndex
from lending.consumer import LOANS, SITES, LendingConsumer
from lending.model import Loan

DEVICES_SPACE = "d"
LOANS_SPACE = "l"
CONSUMER_SPACE = {LOANS: "b", SITES: "s"}  # the consumer's rows: loan books, site cells


@dataclass(frozen=True, slots=True)
class Bad:
    """A record no stage could read: counted and logged, never stops the worker."""

    topic: str
    partition: int
    offset: int
    error: str


class Partitions:
    """The stages of the partitions this worker holds, and the fleet they share."""

    def __init__(
        self, config: Config, lending: Callable[[], LendingConsumer] | None = None
    ) -> None:
        self.config = config
        self.lending = lending
        self.fences: dict[str, Fence] = {}
        self._index: FenceIndex | None = None
        self.book = LoanBook()  # one for every stage: a loan is held once per worker
        self.loans: dict[str, Loan] = self.book.loans
        self.devices: dict[int, DeviceStage] = {}
        self.device_rows: dict[int, BucketMirror] = {}
        self.loan_stages: dict[int, LoanStage] = {}
        self.loan_rows: dict[int, dict[str, BucketMirror]] = {}
        self.bad: list[Bad] = []

    # -- the fleet, from the changes topic
    def fence_index(self) -> FenceIndex:
        """The index of every fence, built once per change and shared by every stage (an
        index is an immutable snapshot)."""
        if self._index is None:
            self._index = FenceIndex.build(self.fences.values())
        return self._index

    def _share_fences(self) -> None:
        stages = (*self.devices.values(), *self.loan_stages.values())
        if stages:
            index = self.fence_index()
            for stage in stages:
                stage.pipeline.set_fences(index)

    def change_fences(self, changes: Iterable[Fence | str]) -> None:
        """Put fences (a `Fence`) and delete them (an id), in order; the index is rebuilt and
        shared once, not per fence (an import of thousands comes as as many changes)."""
        changed = False
        for change in changes:
            if isinstance(change, Fence):
                self.fences[change.fence_id] = change
                changed = True
            elif self.fences.pop(change, None) is not None:
                changed = True
        if changed:
            self._index = None
            self._share_fences()

    def put_loan(self, loan: Loan) -> None:
        """Add or replace a loan (its VIN was judged at PUT time by the API): once, in the
        book every stage reads; each device stage reschedules the timers it changes."""
        touched = self.book.put(loan)
        for stage in (*self.devices.values(), *self.loan_stages.values()):
            stage.pipeline.loan_changed(touched)

    # -- partitions given and taken
    def assign_devices(self, partition: int, values: Mapping[bytes, bytes]) -> int:
        """Hold a readings partition: a new stage restored from its table buckets. Returns
        how many device states were restored."""
        stage = DeviceStage(self.config, self.book)
        stage.pipeline.set_fences(self.fence_index())
        _, slots = read_checkpoint(values.get(offset_key(partition)))
        rows = BucketMirror(DEVICES_SPACE, partition)
        rows.load(values, slots.get(DEVICES_SPACE, 0))
        stage.restore(device_from_json(doc) for _, doc in rows.rows())
        self.devices[partition], self.device_rows[partition] = stage, rows
        return len(stage.pipeline.devices)

    def assign_loans(self, partition: int, values: Mapping[bytes, bytes]) -> int:
        """Hold a loan-events partition: a new stage restored from its table buckets.
        Returns how many loan folds were restored."""
        consumer = None if self.lending is None else self.lending()
        stage = LoanStage(self.config, consumer, self.book)
        stage.pipeline.set_fences(self.fence_index())
        mirrors = {
            space: BucketMirror(space, partition)
            for space in (LOANS_SPACE, *CONSUMER_SPACE.values())
        }
        _, slots = read_checkpoint(values.get(offset_key(partition)))
        for space, mirror in mirrors.items():
            mirror.load(values, slots.get(space, 0))
        books = [(k, _doc(v)) for k, v in mirrors[CONSUMER_SPACE[LOANS]].rows()]
        cells = [(k, _doc(v)) for k, v in mirrors[CONSUMER_SPACE[SITES]].rows()]
        folds = {k: _doc(v) for k, v in mirrors[LOANS_SPACE].rows()}
        stage.restore(folds, books, cells)
        self.loan_stages[partition], self.loan_rows[partition] = stage, mirrors
        return len(folds)

    def revoke(self, readings: Sequence[int], loan_events: Sequence[int]) -> None:
        """Drop the stages of partitions given to another worker; what they did not
        checkpoint that worker does again from the committed offsets."""
        for p in readings:
            self.devices.pop(p, None)
            self.device_rows.pop(p, None)
        for p in loan_events:
            self.loan_stages.pop(p, None)
            self.loan_rows.pop(p, None)

    # -- records
    def step_readings(
        self, partition: int, records: Sequence[tuple[bytes, int]], now_ms: int | None
    ) -> Routed:
        """Step one partition's reading records (value, offset) in order."""
        stage = self.devices[partition]
        readings: list[Reading] = []
        clocks: list[int] = []
        sources: list[tuple[int, int]] = []
        for value, offset in records:
            try:
                reading, at = read_reading(value)
            except RecordError as exc:
                self.bad.append(Bad("readings", partition, offset, str(exc)))
                continue
            readings.append(reading)
            clocks.append(at)
            sources.append((partition, offset))
        return stage.step(readings, clocks, sources, now_ms)

    def tick(self, now_ms: int) -> Routed:
        """Fire every held device's timers due at `now_ms`."""
        out = Routed()
        for stage in self.devices.values():
            routed = stage.step([], [], [], now_ms)
            out.events += routed.events
            out.alerts += routed.alerts
        return out

    def feed_loans(
        self, partition: int, records: Sequence[tuple[bytes, int]], now_ms: int
    ) -> tuple[list[Alert], int]:
        """Fold one partition's loan-event records in order; the alerts to produce, and how
        many events the records held."""
        events: list[LoanEvent] = []
        for value, offset in records:
            try:
                events += read_loan_events(value)
            except RecordError as exc:
                self.bad.append(Bad("loan-events", partition, offset, str(exc)))
        return self.loan_stages[partition].feed(events, now_ms), len(events)

    # -- checkpoints
    def device_buckets(
        self, partition: int
    ) -> tuple[dict[bytes, bytes], list[DeviceState], list[str]]:
        """The partition's changed device buckets (table key -> value), and the states
        changed and devices forgotten in them (for the store, where the API reads them)."""
        stage, rows = self.devices.get(partition), self.device_rows.get(partition)
        if stage is None or rows is None:
            return {}, [], []
        states, evicted = stage.take_dirty()
        for state in states:
            rows.put(state.device_id, device_to_json(state))
        for device_id in evicted:
            rows.put(device_id, None)
        return rows.take_dirty(), states, evicted

    def slots(self, loans: bool, partition: int) -> dict[str, int]:
        """The bucket slots of a partition's spaces, for its checkpoint record (written after
        its changed buckets)."""
        if loans:
            return {space: m.slots for space, m in self.loan_rows.get(partition, {}).items()}
        rows = self.device_rows.get(partition)
        return {} if rows is None else {DEVICES_SPACE: rows.slots}

    def loan_buckets(self, partition: int) -> dict[bytes, bytes]:
        """The partition's changed loan and consumer buckets, as table key -> value."""
        stage, mirrors = self.loan_stages.get(partition), self.loan_rows.get(partition)
        if stage is None or mirrors is None:
            return {}
        folds, rows = stage.take_dirty()
        for loan_id, doc in folds.items():
            mirrors[LOANS_SPACE].put(loan_id, doc)
        for row in rows:
            space = CONSUMER_SPACE.get(row.consumer)
            if space is not None:
                mirrors[space].put(row.key, None if row.doc is None else dict(row.doc))
        out: dict[bytes, bytes] = {}
        for mirror in mirrors.values():
            out.update(mirror.take_dirty())
        return out


def _doc(value: object) -> dict[str, object]:
    """A row as a JSON object (rows are stored as they came)."""
    if isinstance(value, dict):
        return value
    return dict(orjson.loads(orjson.dumps(value)))
