"""`pledgewatch worker`: Faust agents run the core and the consumers per partition (DESIGN §9).

- The `devices` agent takes `pledgewatch.readings` in batches and steps each partition's
  device stage (`engine.distributed.partitions`); the loan events it routes go to
  `pledgewatch.loan-events` by loan, a record per loan partition per batch (the
  repartition), alerts of trackers on no loan straight to `pledgewatch.alerts`; both through
  `engine.distributed.outputs`.
- The `loans` agent takes `pledgewatch.loan-events` and runs the per-loan fold and the
  lending consumers; its alerts go to `pledgewatch.alerts` keyed by loan.
- With a store, the `outbox` agent drains `pledgewatch.alerts` into the outbox (the same
  ids: a repeat is found by its id) and `rejected` keeps `pledgewatch.rejects`, each
  resumed where the store is (`engine.distributed.sinks`); the dispatcher of a worker with
  `--http` sends the webhooks.
- A timer fires the devices' timers on the wall clock, takes partitions given to this worker
  once their tables are recovered, and checkpoints.
- Fences and loans come from the compacted `pledgewatch.changes`, read whole by every worker
  before its agents start (`engine.distributed.fleet`).

Checkpoints: every `checkpoint_s`, with no stage stepping meanwhile, the loan events and
alerts produced so far are flushed (acknowledged by the brokers), then the changed state
buckets are written to the Faust tables (`pledgewatch-devices`, `pledgewatch-loans`), each
partition's checkpoint record last (atomic per partition: `engine.distributed.buckets`), and
the accepted readings to the store; only then are the records that made them acknowledged:
each record is held (`Message.incref`) from its batch until the checkpoint after it. A
partition given to a worker is restored from its last whole checkpoint and read from the
record after it, wherever Faust's committed offset lies: a worker killed between two
checkpoints is replaced by one that steps the records since again, with the same alerts and
ids, which the outbox keeps once. Every stage takes its partition's records once each, in
offset order, none stepped over (`engine.distributed.offset_order`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
import faust.streams

from devices.readings import Reading
from engine.core.config import Config
from engine.core.state import DeviceState
from engine.distributed.buckets import (
    checkpoint_value,
    offset_key,
    parse_table_key,
    read_checkpoint,
)
from engine.distributed.events import Event, by_partition, sort_events
from engine.distributed.fleet import Fleet
from engine.distributed.kafka_io import ensure_topics
from engine.distributed.offset_order import Key, OffsetOrder, Why
from engine.distributed.outputs import Outputs
from engine.distributed.partitions import Partitions
from engine.distributed.settings import ALERTS, LOAN_EVENTS, READINGS, REJECTS, KafkaSettings
from engine.distributed.sinks import Sinks
from engine.distributed.stages import Routed
from engine.distributed.worker_metrics import WorkerCounters, worker_metric_lines
from engine.store.port import Batch, Store
from lending.consumer import LendingConsumer

_log = logging.getLogger(__name__)
DEVICES_TABLE = "pledgewatch-devices"
LOANS_TABLE = "pledgewatch-loans"


@contextlib.contextmanager
def as_current(event: Event) -> Iterator[None]:
    """Make `event` Faust's current event, so that table writes go to its partition.

    Faust finds a table write's partition from the event being processed; a checkpoint runs
    after its batch, so it names the event itself. This is Faust's private context variable
    (`faust.streams._current_event`, faust-streaming 0.15.3, pinned); tests/test_distributed
    fail if it moves.
    """
    token = faust.streams._current_event.set(weakref.ref(event))  # noqa: SLF001
    try:
        yield
    finally:
        faust.streams._current_event.reset(token)  # noqa: SLF001


@dataclass(slots=True)
class _Held:
    """Records stepped since the last checkpoint, with the last one of each partition."""

    events: list[tuple[Any, Event]] = field(default_factory=list)
    last: dict[tuple[str, int], Event] = field(default_factory=dict)
    accepted: list[Reading] = field(default_factory=list)


class Worker:
    """One Faust app: agents, tables, timer and checkpoints around `Partitions`."""

    def __init__(
        self,
        settings: KafkaSettings,
        config: Config,
        store: Store | None = None,
        lending: Callable[[], LendingConsumer] | None = None,
        web: tuple[str, int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.parts = Partitions(config, lending)
        self.counters = WorkerCounters()
        self.held = _Held()
        self.fleet = Fleet(settings, self.parts)
        self.outputs = Outputs(settings)
        self._checkpointing = asyncio.Lock()  # one checkpoint at a time
        self._stepping = asyncio.Lock()  # stages step, or a checkpoint reads them
        self._last_checkpoint = time.monotonic()
        self._settled = False  # True from a rebalance's recovery to the next rebalance
        self.order = OffsetOrder()  # the last offset each stage holds, per partition
        self.sinks = None
        if store is not None:
            self.sinks = Sinks(store, settings.app_id, self.order, self.counters, self.now_ms)
        self.app = self._app(web)

    def now_ms(self) -> int:
        """The wall clock, epoch ms: the runtime clock of the devices' timers."""
        return int(self.clock() * 1000)

    def _app(self, web: tuple[str, int] | None) -> faust.App:
        s = self.settings
        app = faust.App(
            s.app_id,
            broker=[f"kafka://{host}" for host in s.bootstrap.split(",")],
            store=s.store,
            datadir=s.data_dir,
            key_serializer="raw",
            value_serializer="raw",
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication,
            producer_max_batch_size=s.producer_batch_bytes,
            producer_acks=-1,
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=max(0.5, s.session_timeout_s / 3),
            broker_rebalance_timeout=s.session_timeout_s,
            table_standby_replicas=0,
            consumer_auto_offset_reset="earliest",
            web_enabled=web is not None,
            web_host=web[0] if web else "127.0.0.1",
            web_port=web[1] if web else 6066,
        )
        readings = app.topic(READINGS, key_type=bytes, value_type=bytes, partitions=s.partitions)
        loan_events = app.topic(
            LOAN_EVENTS, key_type=bytes, value_type=bytes, partitions=s.loan_partition_count
        )
        alerts = app.topic(ALERTS, key_type=bytes, value_type=bytes, partitions=s.partitions)
        rejects = app.topic(REJECTS, key_type=bytes, value_type=bytes, partitions=s.partitions)
        self.devices_table = app.Table(
            DEVICES_TABLE, key_type=bytes, value_type=bytes, partitions=s.partitions
        )
        self.loans_table = app.Table(
            LOANS_TABLE, key_type=bytes, value_type=bytes, partitions=s.loan_partition_count
        )

        @app.task  # type: ignore[untyped-decorator]  # Faust's decorators are untyped
        async def follow_changes() -> None:
            await ensure_topics(s)
            await self.outputs.start()
            try:
                await self.fleet.follow()
            finally:
                await self.outputs.stop()

        @app.agent(readings, name="devices")
        async def devices(stream: Any) -> None:
            await self.fleet.ready.wait()
            async for events in stream.take_events(s.max_batch, within=s.max_wait_s):
                await self._devices(stream, events)

        @app.agent(loan_events, name="loans")
        async def loans(stream: Any) -> None:
            await self.fleet.ready.wait()
            async for events in stream.take_events(s.max_batch, within=s.max_wait_s):
                await self._loans(stream, events)

        if self.sinks is not None:
            sinks = self.sinks

            @app.agent(alerts, name="outbox")
            async def outbox(stream: Any) -> None:
                async for events in stream.take_events(s.max_batch, within=s.max_wait_s):
                    await sinks.drain(stream, events)
                    await self._rewind()

            @app.agent(rejects, name="rejected")
            async def rejected(stream: Any) -> None:
                async for events in stream.take_events(s.max_batch, within=s.max_wait_s):
                    await sinks.keep_rejects(stream, events)
                    await self._rewind()

        @app.timer(0.5)  # type: ignore[untyped-decorator]
        async def housekeeping() -> None:
            if self.fleet.ready.is_set():
                await self._housekeeping()

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def revoked(_app: faust.App, revoked: set[Any], **_: Any) -> None:
            self._settled = False
            self._revoke(revoked)

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def assigned(_app: faust.App, _tps: set[Any], **_: Any) -> None:
            self._settled = False  # until the tables of the new partitions are recovered

        @app.on_rebalance_complete.connect  # type: ignore[arg-type]
        async def rebalanced(_app: faust.App, **_: Any) -> None:
            self._settled = True

        @app.page("/metrics")
        async def metrics(web: Any, _request: Any) -> Any:
            return web.text(
                "\n".join(self.metric_lines()) + "\n",
                content_type="text/plain",
            )

        return app

    # -- the agents' work
    async def _devices(self, stream: Any, events: Sequence[Event]) -> None:
        async with self._stepping:
            now = self.now_ms()
            routed = Routed()
            for partition, batch in by_partition(events).items():
                if partition not in self.parts.devices:
                    self._take_devices(partition)
                fresh = self._in_order(stream, READINGS, partition, batch)
                records = [(e.value, e.message.offset) for e in fresh]
                out = self.parts.step_readings(partition, records, now)
                routed.events += out.events
                routed.alerts += out.alerts
                self.held.accepted += out.accepted
                self.counters.readings += len(fresh)
            await self._send(routed)
        await self._rewind()
        await self._maybe_checkpoint()

    async def _loans(self, stream: Any, events: Sequence[Event]) -> None:
        async with self._stepping:
            now = self.now_ms()
            for partition, batch in by_partition(events).items():
                if partition not in self.parts.loan_stages:
                    self._take_loans(partition)
                fresh = self._in_order(stream, LOAN_EVENTS, partition, batch)
                records = [(e.value, e.message.offset) for e in fresh]
                alerts, fed = self.parts.feed_loans(partition, records, now)
                self.counters.loan_event_records += len(fresh)
                self.counters.loan_events += fed
                await self._send(Routed(alerts=alerts))
        await self._rewind()
        await self._maybe_checkpoint()

    async def _rewind(self) -> None:
        """Seek the partitions whose next record is not where the consumer is, and name the
        records taken to be gone from the log (`engine.distributed.offset_order`)."""
        for (topic, partition), first, last in self.order.take_gaps():
            _log.error(
                "%s/%d: records %d to %d are not in the log (retention?): going on after them",
                topic,
                partition,
                first,
                last,
            )
        for r in self.order.take_rewinds():
            key = (r.topic, r.partition)
            if not self.order.knows(key):
                continue  # taken away meanwhile
            if r.why is Why.AHEAD:
                _log.warning("%s/%d: record %d came before %d: rewinding", *key, r.seen, r.to)
            elif r.why is Why.UNDONE:
                _log.warning("%s/%d: the last seek did not take: again to %d", *key, r.to)
            elif r.why is Why.BEHIND:
                _log.warning(
                    "%s/%d: the consumer is at %d, past %d, the next record this worker "
                    "lacks, and nothing comes: rewinding",
                    *key,
                    r.seen,
                    r.to,
                )
            await self.app.consumer.seek(_tp(r.topic, r.partition), r.to)

    def _in_order(
        self, stream: Any, topic: str, partition: int, batch: Sequence[Event]
    ) -> list[Event]:
        """The records of `batch` that come next in the partition's log; holds those it
        takes and those already in the stage's state for the next checkpoint.

        A stage steps each record once, in offset order. After a rebalance the stage is
        restored from the table as of its last checkpoint (offset N) and Faust seeks to the
        committed offset, normally at most N + 1, so records up to N come again: they are in
        the state already, held for the next checkpoint but not stepped."""
        fresh, kept = sort_events(self.order, topic, partition, batch)
        if kept or fresh:
            self._hold(stream, topic, partition, [*kept, *fresh])
        return fresh

    def _hold(self, stream: Any, topic: str, partition: int, batch: Sequence[Event]) -> None:
        """Keep the records unacknowledged until the next checkpoint has written their
        effect (take_events acks each once; the extra reference is the checkpoint's)."""
        for event in batch:
            event.message.incref()
            self.held.events.append((stream, event))
        self.held.last[(topic, partition)] = batch[-1]
        self.counters.processed[(topic, partition)] = batch[-1].message.offset

    async def _send(self, routed: Routed) -> None:
        await self.outputs.send(routed)

    # -- partitions given and taken
    def _table_values(self, table: Any, partition: int) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for key, value in table.data.items():
            parsed = parse_table_key(key)
            if parsed is not None and parsed[1] == partition:
                out[key] = value
        return out

    def _take_devices(self, partition: int) -> None:
        values = self._table_values(self.devices_table, partition)
        n = self.parts.assign_devices(partition, values)
        at = self._restored_offset(READINGS, partition, values)
        _log.info("readings partition %d: %d device states restored (offset %d)", partition, n, at)

    def _take_loans(self, partition: int) -> None:
        values = self._table_values(self.loans_table, partition)
        n = self.parts.assign_loans(partition, values)
        at = self._restored_offset(LOAN_EVENTS, partition, values)
        _log.info("loan-events partition %d: %d loan folds restored (offset %d)", partition, n, at)

    def _restored_offset(self, topic: str, partition: int, values: dict[bytes, bytes]) -> int:
        """The last record the restored state holds: the stage steps from the next one."""
        at, _ = read_checkpoint(values.get(offset_key(partition)))
        # Step from the record after the checkpoint, wherever Faust's committed offset is:
        # it may lie past records no stage checkpointed (see `_sorted`).
        self.order.start_at((topic, partition), at)
        return at

    def _revoke(self, revoked: set[Any]) -> None:
        readings = [tp.partition for tp in revoked if tp.topic == READINGS]
        loans = [tp.partition for tp in revoked if tp.topic == LOAN_EVENTS]
        self.parts.revoke(readings, loans)
        gone = {(tp.topic, tp.partition) for tp in revoked}
        self.held.events = [
            (s, e)
            for s, e in self.held.events
            if (e.message.topic, e.message.partition) not in gone
        ]
        for key in gone:
            self.held.last.pop(key, None)
            self.order.forget(key)
        if self.sinks is not None:
            self.sinks.forget(gone)
        if readings or loans:
            _log.info("partitions taken away: readings %s, loan-events %s", readings, loans)

    def fetch_wait_ms(self) -> int | None:
        """Set the consumer's fetch wait (`settings.fetch_wait_ms`) and return it as it is;
        None before the consumer runs. Faust 0.15.3 hard-codes 1500 ms when it makes the
        aiokafka consumer; its fetcher reads the attribute at every fetch. Private attributes
        of both (pinned): tests/test_distributed reads this back from `/metrics`."""
        consumer: Any = self.app.consumer
        fetcher: Any = getattr(
            getattr(getattr(consumer, "_thread", None), "_consumer", None), "_fetcher", None
        )
        if not hasattr(fetcher, "_fetch_max_wait_ms"):  # not started yet
            return None
        if self.settings.fetch_wait_ms is not None:
            fetcher._fetch_max_wait_ms = self.settings.fetch_wait_ms  # noqa: SLF001
        return int(fetcher._fetch_max_wait_ms)  # noqa: SLF001

    async def _housekeeping(self) -> None:
        self.fetch_wait_ms()
        if self._settled:  # every assigned partition's table is recovered
            sinks: list[Key] = []
            for tp in self.app.consumer.assignment():
                if tp.topic == READINGS and tp.partition not in self.parts.devices:
                    self._take_devices(tp.partition)
                elif tp.topic == LOAN_EVENTS and tp.partition not in self.parts.loan_stages:
                    self._take_loans(tp.partition)
                elif tp.topic in (ALERTS, REJECTS):
                    sinks.append((tp.topic, tp.partition))
            if self.sinks is not None:  # a quiet partition too: what lies below its position
                await self.sinks.resume(sinks)
        self.order.recheck(await self._positions() if self._settled else None)
        await self._rewind()
        async with self._stepping:
            await self._send(self.parts.tick(self.now_ms()))
        await self._maybe_checkpoint()

    async def _positions(self) -> dict[Key, int]:
        """Where the consumer fetches next, for each partition a stage has taken."""
        positions: dict[Key, int] = {}
        consumer = self.app.consumer
        for tp in consumer.assignment():
            key = (tp.topic, tp.partition)
            if self.order.knows(key):
                with contextlib.suppress(Exception):  # taken away meanwhile
                    at = await consumer.position(tp)
                    if at is not None:
                        positions[key] = int(at)
        return positions

    # -- checkpoints
    async def _maybe_checkpoint(self) -> None:
        due = time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_s
        if due and not self._checkpointing.locked():
            await self.checkpoint()

    async def checkpoint(self) -> None:
        """Write changed state buckets and the accepted readings, then acknowledge the
        records whose effect they hold."""
        async with self._checkpointing:
            async with self._stepping:  # no stage steps until their state is written
                self._last_checkpoint = time.monotonic()
                # What the stepped records produced (loan events, alerts) must be on the
                # brokers before a table says they were stepped: the changelog goes out per
                # partition, ahead of records queued earlier on busier partitions, and a
                # worker killed in between would restore a state whose alerts never left.
                await self.outputs.flush()
                held, self.held = self.held, _Held()
                states, evicted = self._write_tables(held)
            if (held.accepted or states or evicted) and self.store is not None:
                # telemetry, and the device states the API shows (`GET /v1/devices/{id}`)
                batch = Batch(self.now_ms(), held.accepted, devices=states, evicted=evicted)
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self.store.commit_batch, batch)
            for stream, event in held.events:
                await stream.ack(event)
            self.counters.checkpoints += 1
            if held.last:
                done = ", ".join(
                    f"{t.rsplit('.', 1)[-1]}/{p}@{self.order.applied.get((t, p), -1)}"
                    for t, p in sorted(held.last)
                )
                _log.info("checkpoint %d: %s", self.counters.checkpoints, done)

    def _write_tables(self, held: _Held) -> tuple[list[DeviceState], list[str]]:
        """Write the changed rows of the partitions `held` stepped, with the offset each
        stepped last; the device states changed and forgotten, for the store."""
        states: list[DeviceState] = []
        evicted: list[str] = []
        for (topic, partition), event in held.last.items():
            if topic == READINGS:
                values, changed, gone = self.parts.device_buckets(partition)
                states += changed
                evicted += gone
                table = self.devices_table
            else:
                values = self.parts.loan_buckets(partition)
                table = self.loans_table
            # last: the checkpoint is whole once this record is in (engine.distributed.buckets)
            slots = self.parts.slots(topic == LOAN_EVENTS, partition)
            values[offset_key(partition)] = checkpoint_value(
                self.order.applied[(topic, partition)], slots
            )
            with as_current(event):
                for key, value in values.items():
                    table[key] = value
            self.counters.table_writes += len(values)
        return states, evicted

    # -- metrics
    def metric_lines(self) -> list[str]:
        """This worker's part of `/metrics`: its counters, its stages' and lag per partition."""
        wait = self.fetch_wait_ms()
        lag: dict[str, int] = {}
        consumer = self.app.consumer
        for (topic, partition), offset in self.counters.processed.items():
            with contextlib.suppress(Exception):  # a partition no longer assigned
                high = consumer.highwater(_tp(topic, partition))
                lag[f"{topic}/{partition}"] = max(0, int(high) - offset - 1)
        return worker_metric_lines(
            self.counters, self.parts, self.outputs, self.order, -1 if wait is None else wait, lag
        )


def _tp(topic: str, partition: int) -> Any:
    from faust.types import TP  # noqa: PLC0415

    return TP(topic, partition)
