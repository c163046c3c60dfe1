"""Schema versions 6 and 7, the operator console's (DESIGN §9), in both backends' spelling.

Version 6:

- `operators`: accounts with a role and the scrypt hash of their password;
  `operator_sessions`: the SHA-256 of each session id, with its expiry (deleted with
  their operator);
- `api_tokens`: named machine tokens with a role, only their SHA-256 (as device tokens);
- `audit_log`: who did what to which target, when, with a small JSON detail;
- alerts gain their case: `case_state` (acknowledged where an acknowledgement was stored
  before), `assignee`, `acked_by`, `resolved_ms`, `resolved_by`; `alert_notes` holds the
  notes history (an acknowledgement's note stored before becomes its first note);
- indexes for the queue's filters (case state, assignee, fence) and for the KPIs' time
  ranges over deliveries (`created_ms`) and dead letters (`received_ms`).

Version 7, `TRACK_INDEX`: telemetry's gps rows indexed by (device_id, ts_ms), for a car's
track (`GET /v1/devices/{id}/track`), which the (ts_ms, device_id, stream) key served only by
reading every car's rows of the period: 180 ms for a period of 1M rows, so some 15 s for a
day of 10k cars reporting every 10 s. Measured here on 1M rows of 10k devices (batches of 1000):
the track of a car takes ~1 ms with the index; the writes take 40 % longer on SQLite and
31 % on PostgreSQL (117k -> 71k and 134k -> 92k rows/s). Partial (gps rows only): vib and
status rows do not pay for it. Building it reads the telemetry already stored.
"""

from __future__ import annotations

_CASE_STATES = "CHECK (case_state IN ('open', 'acknowledged', 'resolved'))"
_COMMON_TAIL = (
    "UPDATE alerts SET case_state = 'acknowledged' WHERE acked_ms IS NOT NULL",
    (
        "INSERT INTO alert_notes (alert_id, at_ms, by_name, text) "
        "SELECT id, acked_ms, NULL, ack_note FROM alerts "
        "WHERE ack_note IS NOT NULL AND acked_ms IS NOT NULL ORDER BY acked_ms, id"
    ),
)

SQLITE_V6: tuple[str, ...] = (
    """CREATE TABLE operators (
        name TEXT PRIMARY KEY NOT NULL,
        role TEXT NOT NULL,
        password TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL)""",
    """CREATE TABLE operator_sessions (
        session_sha256 TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL)""",
    "CREATE INDEX operator_sessions_name ON operator_sessions (name)",
    "CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_ms)",
    """CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY NOT NULL,
        role TEXT NOT NULL,
        token_sha256 TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL)""",
    "CREATE UNIQUE INDEX api_tokens_hash ON api_tokens (token_sha256)",
    """CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        actor_kind TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL)""",
    "CREATE INDEX audit_log_actor ON audit_log (actor, id)",
    "CREATE INDEX audit_log_target ON audit_log (target, id)",
    "CREATE INDEX audit_log_at ON audit_log (at_ms)",
    f"ALTER TABLE alerts ADD COLUMN case_state TEXT NOT NULL DEFAULT 'open' {_CASE_STATES}",
    "ALTER TABLE alerts ADD COLUMN assignee TEXT",
    "ALTER TABLE alerts ADD COLUMN acked_by TEXT",
    "ALTER TABLE alerts ADD COLUMN resolved_ms INTEGER",
    "ALTER TABLE alerts ADD COLUMN resolved_by TEXT",
    "CREATE INDEX alerts_state_ts ON alerts (case_state, ts_ms, id)",
    "CREATE INDEX alerts_assignee_ts ON alerts (assignee, ts_ms, id)",
    "CREATE INDEX alerts_fence_ts ON alerts (fence_id, ts_ms, id)",
    """CREATE TABLE alert_notes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id TEXT NOT NULL REFERENCES alerts (id),
        at_ms INTEGER NOT NULL,
        by_name TEXT,
        text TEXT NOT NULL)""",
    "CREATE INDEX alert_notes_alert ON alert_notes (alert_id, id)",
    "CREATE INDEX deliveries_created ON deliveries (created_ms)",
    "CREATE INDEX dead_letters_received ON dead_letters (received_ms)",
    *_COMMON_TAIL,
)

# Names in "C" collation, as ids are: lists order as in SQLite.
POSTGRES_V6: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS operators (
        name text COLLATE "C" PRIMARY KEY,
        role text NOT NULL,
        password text NOT NULL,
        created_ms bigint NOT NULL,
        updated_ms bigint NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS operator_sessions (
        session_sha256 text PRIMARY KEY,
        name text COLLATE "C" NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
        created_ms bigint NOT NULL,
        expires_ms bigint NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS operator_sessions_name ON operator_sessions (name)",
    "CREATE INDEX IF NOT EXISTS operator_sessions_expiry ON operator_sessions (expires_ms)",
    """CREATE TABLE IF NOT EXISTS api_tokens (
        name text COLLATE "C" PRIMARY KEY,
        role text NOT NULL,
        token_sha256 text NOT NULL,
        created_ms bigint NOT NULL,
        created_by text NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_hash ON api_tokens (token_sha256)",
    """CREATE TABLE IF NOT EXISTS audit_log (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at_ms bigint NOT NULL,
        actor text COLLATE "C" NOT NULL,
        actor_kind text NOT NULL,
        action text NOT NULL,
        target text COLLATE "C" NOT NULL,
        detail json NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor, id)",
    "CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target, id)",
    "CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at_ms)",
    "ALTER TABLE alerts ADD COLUMN IF NOT EXISTS case_state text NOT NULL DEFAULT 'open' "
    + _CASE_STATES,
    'ALTER TABLE alerts ADD COLUMN IF NOT EXISTS assignee text COLLATE "C"',
    "ALTER TABLE alerts ADD COLUMN IF NOT EXISTS acked_by text",
    "ALTER TABLE alerts ADD COLUMN IF NOT EXISTS resolved_ms bigint",
    "ALTER TABLE alerts ADD COLUMN IF NOT EXISTS resolved_by text",
    "CREATE INDEX IF NOT EXISTS alerts_state_ts ON alerts (case_state, ts_ms, id)",
    "CREATE INDEX IF NOT EXISTS alerts_assignee_ts ON alerts (assignee, ts_ms, id)",
    "CREATE INDEX IF NOT EXISTS alerts_fence_ts ON alerts (fence_id, ts_ms, id)",
    """CREATE TABLE IF NOT EXISTS alert_notes (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        alert_id text COLLATE "C" NOT NULL REFERENCES alerts (id),
        at_ms bigint NOT NULL,
        by_name text,
        text text NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS alert_notes_alert ON alert_notes (alert_id, id)",
    "CREATE INDEX IF NOT EXISTS deliveries_created ON deliveries (created_ms)",
    "CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_ms)",
    *_COMMON_TAIL,
)

TRACK_INDEX = (
    "CREATE INDEX IF NOT EXISTS telemetry_device_gps ON telemetry (device_id, ts_ms) "
    "WHERE stream = 'gps'"
)
"""Schema version 7 (both backends; on PostgreSQL it reaches every partition or chunk)."""
