"""Fences and loans for every worker: the compacted `pledgewatch.changes`, read whole.

Each worker reads the topic from its start with a consumer of its own (no group: every
worker needs every change) and applies each change to all its stages; `ready` is set once
it has caught up with the end the topic had at start, and the agents wait for it, so no
reading is stepped against a fleet that is still loading. The API of a worker with
`--http` writes the changes (engine.distributed.cluster_api).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.distributed.partitions import Partitions
from engine.distributed.records import RecordError, read_changes
from engine.distributed.settings import CHANGES, KafkaSettings
from geofence.fence import Fence
from lending.model import Loan

_log = logging.getLogger(__name__)


class Fleet:
    """Follows the changes topic into a worker's partitions."""

    def __init__(self, settings: KafkaSettings, parts: Partitions) -> None:
        self.settings = settings
        self.parts = parts
        self.ready = asyncio.Event()
        self.applied = 0
        self.bad = 0

    def apply(self, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Apply change records in order (a bad one is logged and counted, never fatal); a
        run of fence changes rebuilds the fence index once."""
        fences: list[Fence | str] = []
        for (key, _), change in zip(records, read_changes(records), strict=True):
            if isinstance(change, RecordError):
                self.bad += 1
                _log.error("changes record %r: %s", key[:80], change)
                continue
            if isinstance(change, Loan):
                self.parts.change_fences(fences)  # what came before the loan, first
                fences = []
                self.parts.put_loan(change)
            else:
                fences.append(change)
            self.applied += 1
        self.parts.change_fences(fences)

    async def follow(self) -> None:
        """Read the topic from its start, then follow it for good."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.settings.fetch_wait_ms or 500,  # aiokafka's default
        )
        await consumer.start()
        try:
            tp = TopicPartition(CHANGES, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            if end == 0:
                self._ready()
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    self.apply([(m.key or b"", m.value) for m in messages])
                if not self.ready.is_set() and await consumer.position(tp) >= end:
                    self._ready()
        finally:
            await consumer.stop()

    def _ready(self) -> None:
        _log.info(
            "fleet loaded: %d fences, %d loans", len(self.parts.fences), len(self.parts.loans)
        )
        self.ready.set()
