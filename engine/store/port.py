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
from engine.store.console_types import (
    AlertCase,
    ApiToken,
    AuditEntry,
    AuditQuery,
    CaseChange,
    CaseResult,
    Operator,
    PutOperator,
    StoreKpis,
    Track,
)
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
    """Filters of `GET /v1/alerts`; results newest first (ts, then id), or with `sort`
    "severity" most severe first, then newest."""

    type: str | None = None
    loan_id: str | None = None
    device_id: str | None = None
    since_ms: int | None = None
    limit: int = 100
    cursor: str | None = None  # opaque, from the previous page
    state: str | None = None  # of the case: open, acknowledged, resolved
    assignee: str | None = None
    severity: str | None = None
    fence_id: str | None = None
    sort: str = "ts"  # or "severity"


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """An alert as stored, with the operator's acknowledgement."""

    alert: dict[str, object]  # the DESIGN §4 JSON
    acked_ms: int | None = None
    ack_note: str | None = None
    case: AlertCase | None = None  # the operators' case (None: read without it)


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

    # fences, loans and webhooks: written by the API, read by the engine. A change's
    # `audit` entry, when given, is written in the change's transaction (and only if
    # something changed).
    def put_fences(self, fences: Sequence[Fence], audit: AuditEntry | None = None) -> None:
        """Insert or replace fences, all in one transaction."""

    def delete_fence(self, fence_id: str, audit: AuditEntry | None = None) -> bool:
        """Delete a fence; False if there was none."""

    def get_fence(self, fence_id: str) -> Fence | None:
        """One fence, or None."""

    def list_fences(self, cursor: str | None, limit: int) -> Page[Fence]:
        """Fences by id."""

    def all_fences(self) -> list[Fence]:
        """Every fence (the engine builds its index from these)."""

    def put_loan(
        self, loan: Loan, alerts: Sequence[Alert], now_ms: int, audit: AuditEntry | None = None
    ) -> None:
        """Insert or replace a loan, with the alerts that change raised, in one transaction."""

    def put_loans(
        self,
        loans: Sequence[Loan],
        alerts: Sequence[Alert],
        now_ms: int,
        audit: AuditEntry | None = None,
    ) -> None:
        """Insert or replace loans, with the alerts they raised, in one transaction."""

    def get_loan(self, loan_id: str) -> Loan | None:
        """One loan, or None."""

    def list_loans(self, cursor: str | None, limit: int) -> Page[Loan]:
        """Loans by id."""

    def all_loans(self) -> list[Loan]:
        """Every loan."""

    def loans_with_vin(self, vin: str) -> list[Loan]:
        """Loans whose car has this VIN (any status)."""

    def put_webhook(self, hook: Webhook, audit: AuditEntry | None = None) -> None:
        """Insert or replace a webhook."""

    def get_webhook(self, hook_id: str) -> Webhook | None:
        """One webhook, or None."""

    def list_webhooks(self) -> list[Webhook]:
        """Every webhook."""

    def delete_webhook(self, hook_id: str, audit: AuditEntry | None = None) -> bool:
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

    def device_positions(self) -> list[tuple[str, float, float]]:
        """(device_id, lat, lon) of every device's last committed fix, by id (the
        distributed runtime's API searches them)."""

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

    def redeliver(self, delivery_id: int, now_ms: int, audit: AuditEntry | None = None) -> bool:
        """Move a DEAD delivery back to PENDING, due now, with a fresh retry window
        (attempts and age start again); False if it is not dead."""

    # queries of the API
    def list_alerts(self, query: AlertQuery) -> Page[StoredAlert]:
        """Alerts, newest first."""

    def get_alert(self, alert_id: str) -> StoredAlert | None:
        """One alert, or None."""

    def ack_alert(
        self, alert_id: str, note: str | None, now_ms: int, audit: AuditEntry | None = None
    ) -> bool:
        """Record an operator's acknowledgement (the audit entry's actor acknowledged);
        False if there is no such alert."""

    def change_case(self, alert_id: str, change: CaseChange, audit: AuditEntry) -> CaseResult:
        """Apply a case action by `audit.actor` at `audit.at_ms`, with its audit entry, in
        one transaction."""

    def list_rejects(self, cursor: str | None, limit: int) -> Page[StoredReject]:
        """Dead letters (rejected input), newest first."""

    def count_telemetry(self, device_id: str | None = None) -> int:
        """Stored readings (all, or of one device)."""

    # device tokens of the HTTP inputs: written by the API, read by its guard
    def put_device_token(
        self,
        device_id: str,
        token_sha256: str,
        created_ms: int,
        audit: AuditEntry | None = None,
    ) -> bool:
        """Store the SHA-256 (hex) of a device's new token, replacing its earlier one; True
        if one was replaced."""

    def get_device_token(self, device_id: str) -> IssuedToken | None:
        """Whether a device has a token and since when; None if it has none."""

    def delete_device_token(self, device_id: str, audit: AuditEntry | None = None) -> bool:
        """Revoke a device's token; False if it had none."""

    def device_for_token(self, token_sha256: str) -> str | None:
        """The device whose token has this SHA-256 (hex), or None."""

    # the operator console (console_sql.py): accounts, sessions, machine tokens, audit
    def put_operator(
        self, name: str, role: str, password_hash: str | None, audit: AuditEntry
    ) -> PutOperator:
        """Create an operator or change its role (and password, when given: its sessions
        end); a new one needs a password."""

    def get_operator(self, name: str) -> Operator | None:
        """One operator, or None."""

    def list_operators(self) -> list[Operator]:
        """Every operator, by name."""

    def delete_operator(self, name: str, audit: AuditEntry) -> bool:
        """Delete an operator and its sessions; False if there was none."""

    def operator_login(self, name: str) -> tuple[str, str] | None:
        """(role, password hash) of an operator, or None."""

    def create_session(
        self, session_sha256: str, name: str, expires_ms: int, audit: AuditEntry
    ) -> bool:
        """Store a new session of an operator (the SHA-256 of its id); False if the
        operator no longer exists. Expired sessions are deleted on the way."""

    def session_operator(self, session_sha256: str, now_ms: int) -> tuple[str, str] | None:
        """(name, role) of the operator of an unexpired session, or None."""

    def delete_session(self, session_sha256: str, audit: AuditEntry) -> bool:
        """End a session; False if there was none."""

    def create_api_token(self, name: str, role: str, token_sha256: str, audit: AuditEntry) -> bool:
        """Store a new machine token (its SHA-256); False if the name is taken."""

    def list_api_tokens(self) -> list[ApiToken]:
        """Every machine token, by name (never the token)."""

    def delete_api_token(self, name: str, audit: AuditEntry) -> bool:
        """Revoke a machine token; False if there was none."""

    def api_token_role(self, token_sha256: str) -> tuple[str, str] | None:
        """(name, role) of the machine token with this SHA-256, or None."""

    def list_audit(self, query: AuditQuery) -> Page[AuditEntry]:
        """Audit entries, newest first."""

    def track(self, device_id: str, since_ms: int, until_ms: int, max_fixes: int) -> Track:
        """A device's stored gps fixes with `since_ms <= ts_ms < until_ms`, oldest first;
        thinned to about `max_fixes` when there are more."""

    def kpis(self, since_ms: int, until_ms: int) -> StoreKpis:
        """Alerts per hour by type, times to acknowledge and resolve, deliveries by state,
        rejects by reason, over `[since_ms, until_ms)`."""
