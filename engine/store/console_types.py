"""What the operator console stores (DESIGN §9 "Console"): operators, their sessions,
machine tokens, alert cases with their notes, the audit log, tracks and KPI aggregates.

Only values here: the SQL is in `console_sql.py`, the roles and their rules in the API
(`engine.api.roles`). A role is stored as its name. Secrets never appear in clear: a
password as its scrypt hash (`engine.api.credentials`), a session id and a token as their
SHA-256. Times are epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class ActorKind(StrEnum):
    """How a request proved who made it."""

    OPERATOR = "operator"  # an operator's session (or the CLI acting for one)
    TOKEN = "token"  # noqa: S105  # a kind, not a secret: a named machine token (`POST /v1/tokens`)
    API_TOKEN = "api-token"  # noqa: S105  # a kind, not a secret: the single `--api-token`
    ANONYMOUS = "anonymous"  # insecure dev mode: no auth at all
    CLI = "cli"  # `pledgewatch operators ...` on the database itself


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something: an operator's or a token's name, or `api-token`."""

    name: str
    kind: ActorKind


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log: who did what to which target, when, with a small detail.

    `action` is `<kind>.<verb>` (`fence.put`, `alert.ack`); `target` is `<kind>:<id>`
    (`fence:lot-1`, `alert:3f2a…`); `id` is set when the entry is read back."""

    at_ms: int
    actor: Actor
    action: str
    target: str
    detail: Mapping[str, object] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters of `GET /v1/audit`; newest first (by id). `until_ms` is exclusive."""

    since_ms: int | None = None
    until_ms: int | None = None
    actor: str | None = None
    target: str | None = None
    limit: int = 100
    cursor: str | None = None


class CaseState(StrEnum):
    """Where an alert's case stands: open → acknowledged → resolved (→ open if reopened)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class CaseAction(StrEnum):
    """What an operator does to a case."""

    ACK = "ack"
    ASSIGN = "assign"
    RESOLVE = "resolve"
    REOPEN = "reopen"
    NOTE = "note"


class CaseResult(StrEnum):
    """The outcome of a case action."""

    DONE = "done"
    MISSING = "missing"  # no such alert
    CONFLICT = "conflict"  # not allowed from the case's state (resolve a resolved one)


@dataclass(frozen=True, slots=True)
class CaseChange:
    """One case action: `note` goes to the notes history (required for NOTE), `assignee`
    is the operator for ASSIGN (None unassigns)."""

    action: CaseAction
    note: str | None = None
    assignee: str | None = None


@dataclass(frozen=True, slots=True)
class CaseNote:
    """One note of a case; `by` is None for a note acknowledged before schema version 6."""

    by: str | None
    at_ms: int
    text: str


@dataclass(frozen=True, slots=True)
class AlertCase:
    """An alert's case. `notes` are filled by `get_alert` only (lists leave them out)."""

    state: CaseState = CaseState.OPEN
    assignee: str | None = None
    acked_ms: int | None = None
    acked_by: str | None = None
    resolved_ms: int | None = None
    resolved_by: str | None = None
    notes: tuple[CaseNote, ...] = ()


class PutOperator(StrEnum):
    """The outcome of `put_operator`."""

    CREATED = "created"
    UPDATED = "updated"
    NEEDS_PASSWORD = "needs-password"  # noqa: S105  # an outcome: a new operator without a password: nothing stored


@dataclass(frozen=True, slots=True)
class Operator:
    """An operator account as shown: never its password."""

    name: str
    role: str
    created_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A named machine token as shown: never the token (only its SHA-256 is stored)."""

    name: str
    role: str
    created_ms: int
    created_by: str


@dataclass(frozen=True, slots=True)
class TrackPoint:
    """One stored gps fix of a device: event time, WGS84 degrees, speed if reported."""

    ts_ms: int
    lat: float
    lon: float
    speed_kmh: float | None


@dataclass(frozen=True, slots=True)
class Track:
    """A device's fixes in a period, oldest first. `fixes` counts every fix stored in the
    period; when it is over the caller's cap, `points` keeps the first fix of each of
    about cap equal time buckets (`thinned`)."""

    fixes: int
    points: list[TrackPoint]
    thinned: bool = False


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Durations in milliseconds: how many, and the nearest-rank p50 and p90 (None if none)."""

    count: int
    p50_ms: int | None
    p90_ms: int | None


@dataclass(frozen=True, slots=True)
class StoreKpis:
    """The console's KPIs that the store aggregates, over alerts whose event time is in the
    period, deliveries created and rejects received in it."""

    alerts_per_hour: list[tuple[int, str, int]]  # (hour start ms, type, count), by hour
    to_ack: Percentiles  # detected → first acknowledged
    to_resolve: Percentiles  # detected → resolved
    deliveries: dict[str, int]  # by state: pending, delivered, dead
    rejected: dict[str, int]  # by reason
    cases: dict[str, int] = field(default_factory=dict)  # alerts of the period by case state
