"""The seam between a dispatcher worker and where its alerts go (DESIGN §5).

A webhook's URL picks the sink: `http(s)://` POSTs (`alerts.dispatcher.Endpoint`),
`mqtt(s)://` publishes to a topic (`alerts.mqtt_sink.MqttEndpoint`), `kafka(s)://` produces
to a topic (`alerts.kafka_sink.KafkaEndpoint`). All share the outbox, the alert ids, the
signing, the retries, the dead letters and per-loan order; a sender only says what became
of one delivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Answer:
    """What a sink made of one delivery. Not delivered and not `permanent`: a retry."""

    delivered: bool
    permanent: bool = False  # a refusal no retry will change: dead at once, the queue moves on
    status: int | None = None  # the HTTP status; None for other sinks
    error: str | None = None  # why it was not delivered, as the dead-letter list shows it


class Sender(Protocol):
    """Delivers signed alerts to one sink; safe to call from several threads at once."""

    def send(self, body: bytes, sent: dict[str, str]) -> Answer:
        """Deliver `body` with the signing headers `sent`. Raises OSError (a timeout, a lost
        connection: retried), `AddressRefusedError` (dead) or ValueError (a bad URL)."""
        ...

    def close(self) -> None:
        """Release every connection."""
        ...
