"""The outbox contract (DESIGN §5): webhooks, deliveries and attempts, which alert goes
to which webhook and in which queue, and the port the dispatcher drains.

The engine's store implements `Outbox`; the dispatcher (`alerts.dispatcher`) needs nothing
else of it. Times are epoch milliseconds.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from alerts.model import Alert


class OutboxError(Exception):
    """The outbox could not be read or written now (connection lost, database locked); retry."""


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook endpoint. `types` None means every alert type."""

    hook_id: str
    url: str
    secret: str
    types: frozenset[str] | None = None

    def wants(self, alert_type: str) -> bool:
        """Whether alerts of this type go to this endpoint."""
        return self.types is None or alert_type in self.types


class DeliveryState(StrEnum):
    """Where a delivery of one alert to one webhook stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"  # gave up after the maximum age; shown by the API, can be redelivered


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert to one webhook. Deliveries with the same (hook, `order_key`) go in id order."""

    delivery_id: int
    hook_id: str
    alert_id: str
    alert_type: str
    order_key: str  # the loan id, else the device id: per-loan order (DESIGN §5)
    body: bytes  # the alert JSON exactly as signed and sent
    state: DeliveryState
    attempts: int
    created_ms: int
    next_at_ms: int
    last_error: str | None = None
    last_status: int | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of one POST of a delivery: DELIVERED, PENDING again (a retry due at
    `next_at_ms`) or DEAD (given up)."""

    delivery_id: int
    at_ms: int
    state: DeliveryState
    next_at_ms: int
    status: int | None = None  # the HTTP status, None when no response came
    error: str | None = None  # why it failed; None when delivered


def order_key(alert: Alert) -> str:
    """The outbox queue an alert joins: its loan, else its device, else itself (DESIGN §5)."""
    return alert.loan_id or alert.device_id or alert.id


class DeliveryCounters:
    """Webhook deliveries by result, counted by the dispatcher's threads."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, result: str) -> None:
        """Count one delivery attempt's result (`delivered`, `failed`, `dead`)."""
        with self._lock:
            self._counts[result] += 1

    def snapshot(self) -> dict[str, int]:
        """The counts now."""
        with self._lock:
            return dict(self._counts)


class Outbox(Protocol):
    """What the dispatcher needs of the store that holds the outbox."""

    def list_webhooks(self) -> list[Webhook]:
        """Every registered webhook."""
        ...

    def due_deliveries(
        self, hook_id: str, now_ms: int, limit: int, claim_ms: int = 0
    ) -> list[Delivery]:
        """Pending deliveries of one webhook due by `now_ms`, at most one per order key
        (the oldest of its queue), oldest first, and not claimed by another dispatcher.

        With `claim_ms` they are claimed until `now_ms + claim_ms`: several dispatchers on one
        outbox never send the same delivery, nor two of one queue, at once. Recording an
        attempt ends its claim; a dead dispatcher's claims expire."""
        ...

    def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Record the results of one round of POSTs, in one transaction."""
        ...
