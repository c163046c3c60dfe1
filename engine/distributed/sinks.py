"""A worker's sinks: `pledgewatch.alerts` into the outbox (the `outbox` agent) and
`pledgewatch.rejects` into the dead letters (`rejected`), each record once, in order.

The store, not Faust's committed offset, says where a sink's partition resumes: each batch
writes, in the transaction that stores its alerts or rejects, the last offset it took per
partition (consumer rows `kafka-offsets`, `{app_id}/{topic}/{partition}` → `{"last": n}`).
A partition given to a worker starts after that offset (`engine.distributed.offset_order`
rewinds the consumer there), so a commit that ran ahead of the store, or records Faust
stepped over, cost nothing but a seek. A record is acknowledged only after the store has it
(an extra reference until then: `take_events` acks a batch however its processing ended).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from alerts.model import Alert
from devices.readings import Reject
from engine.distributed.events import Event, by_partition, sort_events
from engine.distributed.offset_order import Key, OffsetOrder
from engine.distributed.records import RecordError, read_alert, read_reject
from engine.distributed.settings import ALERTS, REJECTS
from engine.distributed.worker_metrics import WorkerCounters
from engine.store.port import Batch, ConsumerRow, Store

_log = logging.getLogger(__name__)
SINK_OFFSETS = "kafka-offsets"


class Sinks:
    """The outbox and rejects agents' work on one worker's store."""

    def __init__(
        self,
        store: Store,
        app_id: str,
        order: OffsetOrder,
        counters: WorkerCounters,
        now_ms: Callable[[], int],
    ) -> None:
        self.store = store
        self.now_ms = now_ms
        self.app_id = app_id
        self.order = order
        self.counters = counters
        # partitions whose row was looked up since they were given to this worker: only
        # their holder writes it, so one look is enough (a quiet partition is not asked
        # again at every housekeeping tick)
        self._asked: set[Key] = set()

    async def drain(self, stream: Any, events: Sequence[Event]) -> None:
        """Alerts records into the outbox (a repeat is found by its id)."""
        fresh, kept, rows = await self._sorted(ALERTS, events)
        alerts: list[Alert] = []
        for event in fresh:
            try:
                alerts.append(read_alert(event.value))
            except RecordError as exc:
                self.counters.bad_records += 1
                _log.error("alerts record at offset %s: %s", event.message.offset, exc)
        batch = Batch(self.now_ms(), alerts=alerts, consumer_rows=rows)
        await self._store_then_ack(stream, [*kept, *fresh], batch)
        self.counters.drained += len(alerts)

    async def keep_rejects(self, stream: Any, events: Sequence[Event]) -> None:
        """Rejects records into the dead letters, counted by reason."""
        fresh, kept, rows = await self._sorted(REJECTS, events)
        rejects: list[Reject] = []
        for event in fresh:
            try:
                reject = read_reject(event.value)
            except RecordError as exc:
                self.counters.bad_records += 1
                _log.error("rejects record at offset %s: %s", event.message.offset, exc)
                continue
            rejects.append(reject)
            reason = reject.reason.value
            self.counters.rejects[reason] = self.counters.rejects.get(reason, 0) + 1
        batch = Batch(self.now_ms(), rejects=rejects, consumer_rows=rows)
        await self._store_then_ack(stream, [*kept, *fresh], batch)

    async def resume(self, keys: Sequence[Key]) -> None:
        """Start each partition not known yet after the last record the store has, when it
        has one (else at the first record that comes, as Faust positions it)."""
        new = [k for k in keys if k not in self._asked and not self.order.knows(k)]
        if not new:
            return
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(None, self.store.load_consumer_rows, SINK_OFFSETS)
        stored = dict(rows)
        for key in new:
            self._asked.add(key)
            doc = stored.get(self._row_key(key))
            last = doc.get("last") if doc else None
            if not self.order.knows(key) and isinstance(last, int):
                self.order.start_at(key, last)
                _log.info("%s/%d: the store has records up to %d", key[0], key[1], last)

    def forget(self, keys: Iterable[Key]) -> None:
        """The partitions were taken away: whoever holds one next looks its row up again."""
        self._asked.difference_update(keys)

    def _row_key(self, key: Key) -> str:
        return f"{self.app_id}/{key[0]}/{key[1]}"

    async def _sorted(
        self, topic: str, events: Sequence[Event]
    ) -> tuple[list[Event], list[Event], list[ConsumerRow]]:
        """(fresh, kept, rows): the records the store lacks, those it has, and the rows that
        say which it has once this batch is in."""
        parts = by_partition(events)
        await self.resume([(topic, p) for p in parts])
        fresh: list[Event] = []
        kept: list[Event] = []
        rows: list[ConsumerRow] = []
        for partition, batch in parts.items():
            taken, had = sort_events(self.order, topic, partition, batch)
            fresh += taken
            kept += had
            if taken:
                last = {"last": taken[-1].message.offset}
                rows.append(ConsumerRow(SINK_OFFSETS, self._row_key((topic, partition)), last))
        return fresh, kept, rows

    async def _store_then_ack(self, stream: Any, events: Sequence[Event], batch: Batch) -> None:
        """Commit `batch` to the store, then acknowledge `events` (held until then: Faust
        must not commit an offset whose record is not in the store). Their offsets go to
        the lag gauge."""
        for event in events:
            event.message.incref()
        if batch.alerts or batch.rejects or batch.consumer_rows:
            await asyncio.get_running_loop().run_in_executor(None, self.store.commit_batch, batch)
        for event in events:
            m = event.message
            self.counters.processed[(m.topic, m.partition)] = m.offset
            await stream.ack(event)
