"""`pledgewatch bridge`: MQTT in, decoded readings out to Kafka keyed by device_id (DESIGN §9).

Each bridge subscribes to the topics of DESIGN §2 through one MQTT v5 shared subscription
(`$share/pledgewatch-bridge/...`), so several bridges split the traffic; each has its own
persistent session (its client id), so a killed bridge that comes back gets again what it
had not acknowledged. A batch of messages is decoded exactly as the engine decodes them
(`devices.inputs.decode_message`, the bridge's clock at arrival as the runtime clock), each
reading produced to `pledgewatch.readings` with its device_id as key and each rejected input
to `pledgewatch.rejects`, and only when the brokers acknowledged every record (`acks=all`)
are the messages acknowledged to MQTT: a crash at any point loses nothing; what was
produced but not acknowledged comes again and the workers' duplicate detection absorbs it.

A device's readings keep their order within a bridge. Across bridges a device's messages
may be split (the broker picks a subscriber per message), so a reading can reach Kafka
after a later one: the core takes it as late, as it takes a tracker's own reordering.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka.errors import KafkaError

from alerts.retry import backoff_s
from devices.inputs import decode_message
from devices.mqtt_source import TOPICS, Message
from devices.readings import Reading, Reject
from engine.distributed.kafka_io import Producer, Record
from engine.distributed.records import reading_record, reject_record
from engine.distributed.settings import READINGS, REJECTS
from engine.runtime.live import Source

_log = logging.getLogger(__name__)

SHARE_GROUP = "pledgewatch-bridge"


def shared_topics(group: str = SHARE_GROUP) -> list[str]:
    """The engine's MQTT topic filters as one shared subscription group's."""
    return [f"$share/{group}/{topic}" for topic in TOPICS]


@dataclass(slots=True)
class BridgeCounters:
    """What a bridge did: its `/metrics` and its log line."""

    messages: int = 0
    readings: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    produce_failures: int = 0


def input_records(
    readings: Sequence[Reading], rejects: Sequence[Reject], at_ms: int
) -> list[Record]:
    """The Kafka records of decoded input that arrived at `at_ms`: each reading keyed by its
    device, each reject by its device (or its topic)."""
    records: list[Record] = [
        (READINGS, r.device_id.encode(), reading_record(r, at_ms)) for r in readings
    ]
    for reject in rejects:
        key = (reject.device_id or reject.topic[:200]).encode("utf-8", "replace")
        records.append((REJECTS, key, reject_record(reject)))
    return records


def records_of(messages: Sequence[Message], counters: BridgeCounters) -> list[Record]:
    """The Kafka records of a batch of MQTT messages, in order."""
    records: list[Record] = []
    for m in messages:
        decoded = decode_message(m.topic, m.payload, m.arrived_ms)
        records += input_records(decoded.readings, decoded.rejects, m.arrived_ms)
        for reject in decoded.rejects:
            reason = reject.reason.value
            counters.rejects[reason] = counters.rejects.get(reason, 0) + 1
        counters.readings += len(decoded.readings)
    counters.messages += len(messages)
    return records


class Bridge:
    """Moves MQTT batches into Kafka; acks MQTT only after Kafka acked."""

    def __init__(
        self,
        source: Source,
        producer: Producer,
        max_batch: int = 1000,
        max_wait_s: float = 0.05,
        retry_cap_s: float = 10.0,
    ) -> None:
        self.source = source
        self.producer = producer
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.retry_cap_s = retry_cap_s
        self.counters = BridgeCounters()
        self.stopping = threading.Event()

    def turn(self) -> int:
        """One batch: take, decode, produce (retried until acked or stopping), ack. Returns
        how many messages it moved."""
        messages = self.source.get_batch(self.max_batch, self.max_wait_s)
        if not messages:
            return 0
        records = records_of(messages, self.counters)
        attempt = 0
        while True:
            try:
                self.producer.send(records)
                break
            except (KafkaError, TimeoutError, OSError) as exc:
                self.counters.produce_failures += 1
                delay = min(backoff_s(attempt), self.retry_cap_s)
                attempt += 1
                _log.warning("Kafka did not take a batch (%s); retrying in %.1f s", exc, delay)
                if self.stopping.wait(delay):
                    return 0  # not acked: the broker sends these messages again
        self.source.ack(messages)
        self.counters.batches += 1
        return len(messages)

    def run(self, report_every_s: float = 30.0) -> None:
        """Move batches until `stopping` is set; a progress line every `report_every_s`."""
        last = time.monotonic()
        while not self.stopping.is_set():
            self.turn()
            if time.monotonic() - last >= report_every_s:
                last = time.monotonic()
                c = self.counters
                _log.info(
                    "bridge: %d messages, %d readings, %d rejects, %d produce failures",
                    c.messages,
                    c.readings,
                    sum(c.rejects.values()),
                    c.produce_failures,
                )
