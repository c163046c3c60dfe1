"""Kafka from threads: topics made up front, and a producer whose sends wait for acks.

The bridge's loop and the API's handlers are threads; aiokafka is asyncio. `Producer` runs
one aiokafka producer (`acks=all`) on a loop thread of its own and `send` blocks until
every record of the call is acknowledged, or raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from alerts.kafka_sink import LoopThread
from engine.distributed.settings import (
    ALERTS,
    CHANGES,
    LOAN_EVENTS,
    READINGS,
    REJECTS,
    KafkaSettings,
)

_log = logging.getLogger(__name__)

Record = tuple[str, bytes, bytes | None]
"""A record to produce: topic, key, value (None: a tombstone)."""


async def ensure_topics(settings: KafkaSettings) -> None:
    """Create the runtime's topics if they are missing: the keyed ones with the configured
    partitions (the tables' changelogs must match them), the changes topic compacted with
    one partition (every worker reads it whole, in order)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        counts = {
            READINGS: settings.partitions,
            LOAN_EVENTS: settings.loan_partition_count,
            ALERTS: settings.partitions,
            REJECTS: settings.partitions,
        }
        wanted = [
            NewTopic(name, n, settings.replication)
            for name, n in counts.items()
            if name not in existing
        ]
        if CHANGES not in existing:
            compact = {"cleanup.policy": "compact"}
            wanted.append(NewTopic(CHANGES, 1, settings.replication, topic_configs=compact))
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # made by another meanwhile
                await admin.create_topics(wanted)
            _log.info("created topics %s", ", ".join(t.name for t in wanted))
    finally:
        await admin.close()


class Producer:
    """An aiokafka producer for threads: `send` returns once the brokers acked it all."""

    def __init__(self, settings: KafkaSettings, client_id: str, timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.loop = LoopThread(f"kafka-{client_id}")
        self.client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    def start(self) -> None:
        """Connect (and make the topics); KafkaError or TimeoutError if the cluster is away."""

        async def start() -> AIOKafkaProducer:
            await ensure_topics(self.settings)
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.bootstrap,
                client_id=self.client_id,
                acks="all",
                enable_idempotence=False,
                linger_ms=5,
                # tansu reports the end offset of a batch of several records short, and the
                # workers read `pledgewatch.changes` up to its end at start: 1 there
                max_batch_size=self.settings.producer_batch_bytes,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            return producer

        self._producer = self.loop.run(start(), self.timeout_s)

    def send(self, records: Sequence[Record]) -> None:
        """Produce records in order (per partition) and wait for every ack."""
        producer = self._producer
        if producer is None:
            msg = "the producer is not started"
            raise RuntimeError(msg)

        async def send_all() -> None:
            futures = [await producer.send(t, value, key=key) for t, key, value in records]
            await asyncio.gather(*futures)

        if records:
            self.loop.run(send_all(), self.timeout_s)

    def close(self) -> None:
        """Flush and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                self.loop.run(producer.stop(), self.timeout_s)
            except (KafkaError, TimeoutError) as exc:
                _log.warning("closing the Kafka producer: %s", exc)
        self.loop.close()
