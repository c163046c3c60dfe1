"""The storage port: one interface, two backends (`sqlite_store.py`, `postgres_store.py`).

Everything the engine, the dispatcher and the API persist goes through `Store`. The
engine's `commit_batch` writes telemetry, dead letters, alerts with their outbox rows and
the state checkpoint in ONE transaction (DESIGN §5, §6): after it returns, the batch's MQTT
messages may be acknowledged. The consumers the batch fed (the lending ones) keep their own
durable state, written in that same transaction as `ConsumerRow`s (DESIGN §8). Times are
epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from alerts.model import Alert
from alerts.outbox import Attempt, Delivery, OutboxError, Webhook
from devices.readings import Reading, Reject
from engine.core.state import DeviceState, LoanState
from geofence.fence import Fence
from lending.model import Loan

T = TypeVar("T")


class StoreConfigError(ValueError):
    """A database URL or store setting that cannot work; the message says what to change."""


class StoreError(OutboxError):
    """A storage failure the caller may retry (connection lost, database locked)."""


class LeaseError(RuntimeError):
    """Another engine holds this database's lease (or took it from us); the message names it.

    Two engines on one database would store every reading twice and send every webhook
    twice: the second one must not start, and one that lost its lease must stop."""


@dataclass(frozen=True, slots=True)
class ConsumerRow:
    """One row of a consumer's durable state: `doc` None deletes the row."""

    consumer: str  # which consumer ("loans", "sites", ...)
    key: str  # the consumer's own key (a loan id, a grid cell)
    doc: Mapping[str, object] | None


@dataclass(frozen=True, slots=True)
class Batch:
    """What one engine batch commits atomically."""

    now_ms: int
    readings: Sequence[Reading] = ()  # accepted readings (late ones included): telemetry
    rejects: Sequence[Reject] = ()  # dead letters
    alerts: Sequence[Alert] = ()  # to the alerts table and, per matching webhook, the outbox
    devices: Sequence[DeviceState] = ()  # changed device states: the checkpoint
    loans: Sequence[LoanState] = ()  # changed loan states
    evicted: Sequence[str] = ()  # devices forgotten: their checkpoint rows are deleted
    consumer_rows: Sequence[ConsumerRow] = ()  # consumers' durable state: upserts, deletes


@dataclass(frozen=True, slots=True)
class Committed:
    """What `commit_batch` found: readings whose key (device_id, stream, ts_ms) was stored
    already (a redelivery the engine's in-memory window missed). They were not written
    again; the engine counts them as duplicates, not as accepted readings."""

    duplicates: Mapping[str, int] = field(default_factory=dict)  # by stream


@dataclass(frozen=True, slots=True)
class AlertQuery:
    """Filters of `GET /v1/alerts`; results newest first (ts, then id)."""

    type: str | None = None
    loan_id: str | None = None
    device_id: str | None = None
    since_ms: int | None = None
    limit: int = 100
    cursor: str | None = None  # opaque, from the previous page


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """An alert as stored, with the operator's acknowledgement."""

    alert: dict[str, object]  # the DESIGN §4 JSON
    acked_ms: int | None = None
    ack_note: str | None = None


@dataclass(frozen=True, slots=True)
class StoredReject:
    """A dead letter as stored: the rejected input and when it was received."""

    reject: Reject
    received_ms: int


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """That a device has an ingest token, and since when; the token itself is never stored
    (only its SHA-256), so it cannot be shown again."""

    device_id: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list endpoint: `{"items": [...], "next": cursor or null}`."""

    items: list[T] = field(default_factory=list)
    next: str | None = None


class Store(Protocol):
    """Persistence of pledgewatch. Implementations are safe to call from several threads."""

    def migrate(self) -> None:
        """Create or upgrade the schema; idempotent; runs on start."""

    def close(self) -> None:
        """Release connections."""

    def enforce_retention(self, now_ms: int) -> int:
        """Drop telemetry older than the store's retention; returns partitions or rows
        dropped. The engine calls it now and then, off its commit path; a no-op where
        nothing is set. StoreError when a lock was not free in time: retry later."""

    def acquire_lease(self) -> None:
        """Take this database's engine lease for the life of the store (`close()`, or the
        death of the process, releases it); LeaseError naming the holder if another engine
        has it. Idempotent. Only the engine takes it: readers and tools need none."""

    def maintain(self, now_ms: int) -> None:
        """Housekeeping off the commit path, called every minute or so: on PostgreSQL the
        telemetry partitions of the coming days are made ready. Checks the lease, if this
        store holds one: LeaseError if it was lost to another engine. StoreError when a
        lock was not free in time (the step is retried at the next call)."""

    # fences, loans and webhooks: written by the API, read by the engine
    def put_fences(self, fences: Sequence[Fence]) -> None:
        """Insert or replace fences, all in one transaction."""

    def delete_fence(self, fence_id: str) -> bool:
        """Delete a fence; False if there was none."""

    def get_fence(self, fence_id: str) -> Fence | None:
        """One fence, or None."""

    def list_fences(self, cursor: str | None, limit: int) -> Page[Fence]:
        """Fences by id."""

    def all_fences(self) -> list[Fence]:
        """Every fence (the engine builds its index from these)."""

    def put_loan(self, loan: Loan, alerts: Sequence[Alert], now_ms: int) -> None:
        """Insert or replace a loan, with the alerts that change raised, in one transaction."""

    def put_loans(self, loans: Sequence[Loan], alerts: Sequence[Alert], now_ms: int) -> None:
        """Insert or replace loans, with the alerts they raised, in one transaction."""

    def get_loan(self, loan_id: str) -> Loan | None:
        """One loan, or None."""

    def list_loans(self, cursor: str | None, limit: int) -> Page[Loan]:
        """Loans by id."""

    def all_loans(self) -> list[Loan]:
        """Every loan."""

    def loans_with_vin(self, vin: str) -> list[Loan]:
        """Loans whose car has this VIN (any status)."""

    def put_webhook(self, hook: Webhook) -> None:
        """Insert or replace a webhook."""

    def get_webhook(self, hook_id: str) -> Webhook | None:
        """One webhook, or None."""

    def list_webhooks(self) -> list[Webhook]:
        """Every webhook."""

    def delete_webhook(self, hook_id: str) -> bool:
        """Delete a webhook and its pending deliveries; False if there was none."""

    # the engine
    def commit_batch(self, batch: Batch) -> Committed:
        """Write a batch atomically: telemetry, dead letters, alerts + outbox, checkpoint.

        A reading whose (device_id, stream, ts_ms) is stored already is not stored again;
        the result counts them. The checkpoint rows of `batch.evicted` are deleted before
        `batch.devices` are written (a device forgotten and seen again in one batch keeps
        its new row).
        An alert id already stored is skipped, and so are its deliveries (a replay after a
        crash raises the same ids): delivery stays at least once, never twice from here.
        `batch.consumer_rows` are upserted (a `doc` of None deletes its row); the last row
        of a (consumer, key) repeated in the batch wins.
        """

    def load_checkpoint(self) -> tuple[list[DeviceState], list[LoanState]]:
        """The last committed state of every device and loan."""

    def get_device_state(self, device_id: str) -> DeviceState | None:
        """One device's last committed state (the distributed runtime's API reads it)."""

    def load_consumer_rows(self, consumer: str) -> list[tuple[str, dict[str, object]]]:
        """The last committed state of one consumer: (key, doc) by key."""

    # the outbox
    def due_deliveries(
        self, hook_id: str, now_ms: int, limit: int, claim_ms: int = 0
    ) -> list[Delivery]:
        """Pending deliveries to one webhook that are due, oldest first, at most one per
        `order_key`: the head of each loan's queue (a later one waits for it). With
        `claim_ms`, the deliveries returned are claimed for that long: no other caller gets
        them until their attempt is recorded or the claim expires."""

    def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Record the results of delivery attempts, in one transaction. An attempt on a
        delivery that is no longer pending (redelivered, deleted) is ignored."""

    def outbox_pending(self) -> int:
        """How many deliveries are pending (`pledgewatch_outbox_pending`)."""

    def list_dead(self, cursor: str | None, limit: int) -> Page[Delivery]:
        """Deliveries that gave up, newest first."""

    def redeliver(self, delivery_id: int, now_ms: int) -> bool:
        """Move a DEAD delivery back to PENDING, due now, with a fresh retry window
        (attempts and age start again); False if it is not dead."""

    # queries of the API
    def list_alerts(self, query: AlertQuery) -> Page[StoredAlert]:
        """Alerts, newest first."""

    def get_alert(self, alert_id: str) -> StoredAlert | None:
        """One alert, or None."""

    def ack_alert(self, alert_id: str, note: str | None, now_ms: int) -> bool:
        """Record an operator's acknowledgement; False if there is no such alert."""

    def list_rejects(self, cursor: str | None, limit: int) -> Page[StoredReject]:
        """Dead letters (rejected input), newest first."""

    def count_telemetry(self, device_id: str | None = None) -> int:
        """Stored readings (all, or of one device)."""

    # device tokens of the HTTP inputs: written by the API, read by its guard
    def put_device_token(self, device_id: str, token_sha256: str, created_ms: int) -> bool:
        """Store the SHA-256 (hex) of a device's new token, replacing its earlier one; True
        if one was replaced."""

    def get_device_token(self, device_id: str) -> IssuedToken | None:
        """Whether a device has a token and since when; None if it has none."""

    def delete_device_token(self, device_id: str) -> bool:
        """Revoke a device's token; False if it had none."""

    def device_for_token(self, token_sha256: str) -> str | None:
        """The device whose token has this SHA-256 (hex), or None."""
