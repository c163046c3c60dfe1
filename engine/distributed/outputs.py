"""What a worker's stages hand on, to Kafka: loan events and alerts, batched.

- Loan events go to `pledgewatch.loan-events` as one record per loan partition per batch
  (`records.loan_event_records`): a produce and a consume per batch, not per reading.
- Alerts go to `pledgewatch.alerts` one record each, keyed by loan (the public topic).

Both through an aiokafka producer of the worker's own with ordinary batching: Faust's
producer keeps one record per batch on tansu for its changelogs (table recovery reads their
end offsets, which tansu reports short after a batch of several records); nothing reads the
end offsets of these topics. `flush` waits until everything sent so far is acknowledged (or
raises): a checkpoint calls it before it writes the tables that say these were sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiokafka import AIOKafkaProducer

from engine.distributed.records import LoanEvent, alert_key, alert_record, loan_event_records
from engine.distributed.settings import ALERTS, LOAN_EVENTS, KafkaSettings, loan_partition
from engine.distributed.stages import Routed

BATCH_BYTES = 262_144
"""aiokafka's batch size here: a loan-events record of a full batch fits one."""


class Outputs:
    """The worker's producer of loan events and alerts."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[Awaitable[object]] = []
        self._partition_of: dict[str, int] = {}  # loan id -> its loan-events partition
        self.loan_events = 0
        self.alerts = 0

    async def start(self) -> None:
        """Connect."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            client_id=f"{self.settings.app_id}-outputs",
            acks="all",
            enable_idempotence=False,
            max_batch_size=BATCH_BYTES,
        )
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        """Flush and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send(self, routed: Routed) -> None:
        """Queue a batch's loan events (by loan partition, in order) and alerts."""
        producer = self._producer
        if producer is None:
            msg = "the outputs' producer is not started"
            raise RuntimeError(msg)
        if routed.events:
            n, partition_of = self.settings.loan_partition_count, self._partition_of
            by_partition: dict[int, list[LoanEvent]] = {}
            for event in routed.events:
                partition = partition_of.get(event.loan_id)
                if partition is None:  # murmur2 in Python: once per loan
                    partition = partition_of[event.loan_id] = loan_partition(event.loan_id, n)
                by_partition.setdefault(partition, []).append(event)
            for partition, events in by_partition.items():
                for value in loan_event_records(events):
                    fut = await producer.send(LOAN_EVENTS, value, partition=partition)
                    self._pending.append(fut)
            self.loan_events += len(routed.events)
        for alert in routed.alerts:
            fut = await producer.send(ALERTS, alert_record(alert), key=alert_key(alert))
            self._pending.append(fut)
        self.alerts += len(routed.alerts)

    async def flush(self) -> None:
        """Wait until the brokers acknowledged everything sent so far (raises if any send
        failed)."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
