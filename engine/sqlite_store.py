"""The embedded default store: one SQLite file in WAL mode.

Threads: every write goes through ONE writer connection guarded by a lock (SQLite has one
writer per file anyway), inside `BEGIN IMMEDIATE`: the file's write lock is taken up front,
so another process writing the same file (`pledgewatch fences import`) makes us wait up to
the busy timeout instead of failing halfway through a transaction. Reads use a connection
per thread: in WAL mode a reader sees the last commit and never waits for the writer, so
the API and the dispatcher stay responsive while the engine commits a large batch.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from alerts.model import Alert
from devices.readings import Reject
from engine.core.state import DeviceState, LoanState, device_from_json, loan_from_json
from engine.store import (
    AlertQuery,
    Batch,
    Delivery,
    DeliveryState,
    Page,
    StoredAlert,
    StoreError,
    Webhook,
)
from engine.stores import (
    DAY_MS,
    StoreConfigError,
    alert_row,
    alert_where,
    check_limit,
    decode_cursor,
    delivery_from_row,
    delivery_rows,
    device_state_rows,
    encode_alerts,
    encode_cursor,
    fence_from_row,
    fence_row,
    loan_from_row,
    loan_row,
    loan_state_rows,
    make_page,
    reject_from_row,
    reject_row,
    stored_alert_from_row,
    telemetry_row,
    webhook_from_row,
    webhook_row,
)
from geofence.fence import Fence
from lending.model import Loan

# Failures of the environment, not of our SQL: the caller may retry the whole operation.
_RETRYABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


_DELIVERY = (
    "id, hook_id, alert_id, alert_type, order_key, body, state, attempts, created_ms, "
    "next_at_ms, last_error, last_status"
)  # the order of `DELIVERY_COLUMNS`
_INSERT_TELEMETRY = (
    "INSERT INTO telemetry (device_id, stream, ts_ms, lat, lon, speed_kmh, heading_deg, hdop, "
    "sats, ignition, odometer_km, seq, accuracy_m, g, duration_ms, ext_power, battery_v, "
    "tamper, vin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_REJECT = (
    "INSERT INTO dead_letters (topic, reason, detail, device_id, array_index, raw, received_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_ALERT = (
    "INSERT INTO alerts (id, type, ts_ms, detected_ms, device_id, loan_id, fence_id, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
_INSERT_DELIVERY = (
    "INSERT INTO deliveries (hook_id, alert_id, alert_type, order_key, body, state, attempts, "
    "created_ms, next_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_STATE = (
    "INSERT INTO {table} (id, doc, updated_ms) VALUES (?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, updated_ms = excluded.updated_ms"
)

# Versioned migrations: append a new (version, statements) to change the schema; never edit
# an applied one. Every table is NOT NULL where the engine relies on a value: SQLite lets a
# TEXT PRIMARY KEY be NULL otherwise.
_MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE fences (
                id TEXT PRIMARY KEY NOT NULL,
                kind TEXT NOT NULL,
                feature TEXT NOT NULL,
                updated_ms INTEGER NOT NULL)""",
            """CREATE TABLE loans (
                id TEXT PRIMARY KEY NOT NULL,
                vin TEXT NOT NULL,
                status TEXT NOT NULL,
                doc TEXT NOT NULL,
                updated_ms INTEGER NOT NULL)""",
            "CREATE INDEX loans_vin ON loans (vin)",
            """CREATE TABLE webhooks (
                id TEXT PRIMARY KEY NOT NULL,
                url TEXT NOT NULL,
                secret TEXT NOT NULL,
                types TEXT)""",
            # No index: (device_id, ts_ms) halves the insert rate or worse as the table grows
            # (measured), and nothing in the API reads telemetry by device.
            """CREATE TABLE telemetry (
                device_id TEXT NOT NULL,
                stream TEXT NOT NULL,
                ts_ms INTEGER NOT NULL,
                lat REAL, lon REAL, speed_kmh REAL, heading_deg REAL, hdop REAL,
                sats INTEGER, ignition INTEGER, odometer_km REAL, seq INTEGER,
                accuracy_m REAL, g REAL, duration_ms INTEGER, ext_power INTEGER,
                battery_v REAL, tamper INTEGER, vin TEXT)""",
            """CREATE TABLE alerts (
                id TEXT PRIMARY KEY NOT NULL,
                type TEXT NOT NULL,
                ts_ms INTEGER NOT NULL,
                detected_ms INTEGER NOT NULL,
                device_id TEXT,
                loan_id TEXT,
                fence_id TEXT,
                body TEXT NOT NULL,
                acked_ms INTEGER,
                ack_note TEXT)""",
            "CREATE INDEX alerts_ts ON alerts (ts_ms, id)",
            "CREATE INDEX alerts_type_ts ON alerts (type, ts_ms, id)",
            "CREATE INDEX alerts_loan_ts ON alerts (loan_id, ts_ms, id)",
            "CREATE INDEX alerts_device_ts ON alerts (device_id, ts_ms, id)",
            # AUTOINCREMENT: an id is never reused, even after the newest rows are deleted,
            # so a dispatcher holding an id can never mark someone else's delivery.
            """CREATE TABLE deliveries (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                hook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
                alert_id TEXT NOT NULL REFERENCES alerts (id),
                alert_type TEXT NOT NULL,
                order_key TEXT NOT NULL,
                body BLOB NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
                attempts INTEGER NOT NULL,
                created_ms INTEGER NOT NULL,
                next_at_ms INTEGER NOT NULL,
                last_error TEXT,
                last_status INTEGER)""",
            # The head of each (hook, order_key) queue is the first entry of its group here.
            """CREATE INDEX deliveries_queue ON deliveries (hook_id, order_key, id)
                WHERE state = 'pending'""",
            "CREATE INDEX deliveries_dead ON deliveries (id) WHERE state = 'dead'",
            "CREATE INDEX deliveries_hook ON deliveries (hook_id)",
            """CREATE TABLE dead_letters (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                topic TEXT NOT NULL,
                reason TEXT NOT NULL,
                detail TEXT NOT NULL,
                device_id TEXT,
                array_index INTEGER,
                raw BLOB NOT NULL,
                received_ms INTEGER NOT NULL)""",
            """CREATE TABLE device_state (
                id TEXT PRIMARY KEY NOT NULL,
                doc TEXT NOT NULL,
                updated_ms INTEGER NOT NULL)""",
            """CREATE TABLE loan_state (
                id TEXT PRIMARY KEY NOT NULL,
                doc TEXT NOT NULL,
                updated_ms INTEGER NOT NULL)""",
        ),
    ),
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqliteStore:
    """`Store` on one SQLite file (created with its directory if missing)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 5.0,
        retain_days: int | None = None,
    ) -> None:
        """Open (or create) the database file; `migrate()` creates the tables.

        `synchronous=NORMAL` is safe with WAL: a commit survives a crash or `kill -9` of this
        process (DESIGN §6), and the file never corrupts; only an OS crash or power loss can
        lose the last few commits, because the WAL is synced at checkpoints rather than at
        every commit. Pass `synchronous="FULL"` to sync every commit (several times slower
        on small batches) when that matters more than speed.
        """
        if synchronous.upper() not in {"NORMAL", "FULL", "EXTRA"}:
            msg = f"synchronous={synchronous!r}: use NORMAL, FULL or EXTRA (OFF is unsafe)"
            raise StoreConfigError(msg)
        self.path = Path(path)
        self._synchronous = synchronous.upper()
        self._busy_timeout_s = busy_timeout_s
        self._retain_days = retain_days
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        with self._errors():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect()
            mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            self._writer.close()
            msg = (
                f"{self.path}: SQLite refused WAL mode (journal_mode is {mode!r}); "
                "put the database on a local filesystem"
            )
            raise StoreConfigError(msg)
        self._writer.execute(f"PRAGMA synchronous = {self._synchronous}")
        self._writer.execute("PRAGMA foreign_keys = ON")

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False:
        # the writer moves between threads under the lock, and close() closes readers
        # from whichever thread calls it.
        return sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in _RETRYABLE:
                raise
            msg = f"SQLite {self.path}: {exc} ({exc.sqlite_errorname}); retry the operation"
            raise StoreError(msg) from exc
        except OSError as exc:
            msg = f"SQLite {self.path}: {exc}; check the path and its permissions, then retry"
            raise StoreError(msg) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer connection; rolled back on any error."""
        with self._lock, self._errors():
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # An I/O error or a full disk may have rolled back already.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._errors():
                conn = self._connect()
                conn.execute("PRAGMA query_only = ON")
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self._errors():
            return self._reader().execute(sql, params).fetchall()

    def migrate(self) -> None:
        """Create or upgrade the schema; idempotent; runs on start."""
        with self._write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY NOT NULL, applied_ms INTEGER NOT NULL)"
            )
            done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            for version, statements in _MIGRATIONS:
                if version in done:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_ms) VALUES (?, ?)",
                    (version, _now_ms()),
                )

    def enforce_retention(self, now_ms: int) -> int:
        """Delete telemetry older than `retain_days` (None: keep everything); rows deleted."""
        if self._retain_days is None:
            return 0
        with self._write() as conn:
            cur = conn.execute(
                "DELETE FROM telemetry WHERE ts_ms < ?", (now_ms - self._retain_days * DAY_MS,)
            )
            return cur.rowcount

    def close(self) -> None:
        """Release connections."""
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        with self._lock:
            self._writer.close()

    # fences, loans and webhooks

    def put_fences(self, fences: Sequence[Fence]) -> None:
        """Insert or replace fences, all in one transaction."""
        now_ms = _now_ms()
        rows = [fence_row(f, now_ms) for f in fences]
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO fences (id, kind, feature, updated_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, "
                "feature = excluded.feature, updated_ms = excluded.updated_ms",
                rows,
            )

    def delete_fence(self, fence_id: str) -> bool:
        """Delete a fence; False if there was none."""
        with self._write() as conn:
            return conn.execute("DELETE FROM fences WHERE id = ?", (fence_id,)).rowcount > 0

    def get_fence(self, fence_id: str) -> Fence | None:
        """One fence, or None."""
        rows = self._query("SELECT feature FROM fences WHERE id = ?", (fence_id,))
        return fence_from_row(fence_id, rows[0][0]) if rows else None

    def list_fences(self, cursor: str | None, limit: int) -> Page[Fence]:
        """Fences by id."""
        after = "" if cursor is None else decode_cursor("fence", cursor, (str,))[0]
        rows = self._query(
            "SELECT id, feature FROM fences WHERE id > ? ORDER BY id LIMIT ?",
            (after, check_limit(limit) + 1),
        )
        return make_page(
            rows,
            limit,
            lambda r: fence_from_row(r[0], r[1]),
            lambda r: encode_cursor("fence", r[0]),
        )

    def all_fences(self) -> list[Fence]:
        """Every fence (the engine builds its index from these)."""
        rows = self._query("SELECT id, feature FROM fences ORDER BY id")
        return [fence_from_row(fence_id, feature) for fence_id, feature in rows]

    def put_loan(self, loan: Loan, alerts: Sequence[Alert], now_ms: int) -> None:
        """Insert or replace a loan, with the alerts that change raised, in one transaction."""
        row = loan_row(loan, now_ms)
        encoded = encode_alerts(alerts)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO loans (id, vin, status, doc, updated_ms) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET vin = excluded.vin, status = excluded.status, "
                "doc = excluded.doc, updated_ms = excluded.updated_ms",
                row,
            )
            self._write_alerts(conn, encoded, now_ms)

    def get_loan(self, loan_id: str) -> Loan | None:
        """One loan, or None."""
        rows = self._query("SELECT doc FROM loans WHERE id = ?", (loan_id,))
        return loan_from_row(loan_id, rows[0][0]) if rows else None

    def list_loans(self, cursor: str | None, limit: int) -> Page[Loan]:
        """Loans by id."""
        after = "" if cursor is None else decode_cursor("loan", cursor, (str,))[0]
        rows = self._query(
            "SELECT id, doc FROM loans WHERE id > ? ORDER BY id LIMIT ?",
            (after, check_limit(limit) + 1),
        )
        return make_page(
            rows, limit, lambda r: loan_from_row(r[0], r[1]), lambda r: encode_cursor("loan", r[0])
        )

    def all_loans(self) -> list[Loan]:
        """Every loan."""
        rows = self._query("SELECT id, doc FROM loans ORDER BY id")
        return [loan_from_row(loan_id, doc) for loan_id, doc in rows]

    def loans_with_vin(self, vin: str) -> list[Loan]:
        """Loans whose car has this VIN (any status)."""
        rows = self._query("SELECT id, doc FROM loans WHERE vin = ? ORDER BY id", (vin,))
        return [loan_from_row(loan_id, doc) for loan_id, doc in rows]

    def put_webhook(self, hook: Webhook) -> None:
        """Insert or replace a webhook."""
        # An upsert, never INSERT OR REPLACE: replacing deletes the row, and the cascade
        # would take the hook's pending deliveries with it.
        with self._write() as conn:
            conn.execute(
                "INSERT INTO webhooks (id, url, secret, types) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET url = excluded.url, secret = excluded.secret, "
                "types = excluded.types",
                webhook_row(hook),
            )

    def get_webhook(self, hook_id: str) -> Webhook | None:
        """One webhook, or None."""
        rows = self._query("SELECT id, url, secret, types FROM webhooks WHERE id = ?", (hook_id,))
        return webhook_from_row(rows[0]) if rows else None

    def list_webhooks(self) -> list[Webhook]:
        """Every webhook."""
        rows = self._query("SELECT id, url, secret, types FROM webhooks ORDER BY id")
        return [webhook_from_row(r) for r in rows]

    def delete_webhook(self, hook_id: str) -> bool:
        """Delete a webhook and its deliveries (pending ones included); False if none."""
        with self._write() as conn:
            return conn.execute("DELETE FROM webhooks WHERE id = ?", (hook_id,)).rowcount > 0

    # the engine

    def commit_batch(self, batch: Batch) -> None:
        """Write a batch atomically: telemetry, dead letters, alerts + outbox, checkpoint."""
        # Encode everything first: the write lock is then held only for the inserts.
        readings = [telemetry_row(r) for r in batch.readings]
        rejects = [reject_row(r, batch.now_ms) for r in batch.rejects]
        alerts = encode_alerts(batch.alerts)
        devices = device_state_rows(batch.devices, batch.now_ms)
        loans = loan_state_rows(batch.loans, batch.now_ms)
        with self._write() as conn:
            conn.executemany(_INSERT_TELEMETRY, readings)
            conn.executemany(_INSERT_REJECT, rejects)
            self._write_alerts(conn, alerts, batch.now_ms)
            conn.executemany(_UPSERT_STATE.format(table="device_state"), devices)
            conn.executemany(_UPSERT_STATE.format(table="loan_state"), loans)

    def _write_alerts(
        self, conn: sqlite3.Connection, alerts: Sequence[tuple[Alert, bytes]], now_ms: int
    ) -> None:
        """Insert new alerts and, for those only, one delivery per webhook that wants them."""
        new = [
            (alert, body)
            for alert, body in alerts
            if conn.execute(_INSERT_ALERT, alert_row(alert, body)).rowcount == 1
        ]
        if not new:
            return
        # Read inside the write transaction: the hooks registered when this batch commits.
        hooks = [
            webhook_from_row(r)
            for r in conn.execute("SELECT id, url, secret, types FROM webhooks ORDER BY id")
        ]
        conn.executemany(_INSERT_DELIVERY, delivery_rows(new, hooks, now_ms))

    def load_checkpoint(self) -> tuple[list[DeviceState], list[LoanState]]:
        """The last committed state of every device and loan."""
        with self._errors():
            conn = self._reader()
            # One read transaction: devices and loans from the same commit.
            conn.execute("BEGIN")
            try:
                devices = conn.execute("SELECT doc FROM device_state ORDER BY id").fetchall()
                loans = conn.execute("SELECT doc FROM loan_state ORDER BY id").fetchall()
            finally:
                conn.execute("COMMIT")
        return (
            [device_from_json(orjson.loads(doc)) for (doc,) in devices],
            [loan_from_json(orjson.loads(doc)) for (doc,) in loans],
        )

    # the outbox

    def due_deliveries(self, hook_id: str, now_ms: int, limit: int) -> list[Delivery]:
        """Due heads of this webhook's queues (one per order_key), oldest first."""
        rows = self._query(
            "SELECT " + _DELIVERY + " FROM deliveries WHERE id IN ("  # noqa: S608  # constants
            "  SELECT min(id) FROM deliveries WHERE hook_id = ? AND state = 'pending'"
            "  GROUP BY order_key"
            ") AND next_at_ms <= ? ORDER BY id LIMIT ?",
            (hook_id, now_ms, check_limit(limit)),
        )
        return [delivery_from_row(r) for r in rows]

    def mark_delivered(self, delivery_id: int, now_ms: int, status: int) -> None:
        """Record a 2xx."""
        with self._write() as conn:
            conn.execute(
                "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, "
                "last_status = ?, last_error = NULL, next_at_ms = ? "
                "WHERE id = ? AND state = 'pending'",
                (status, now_ms, delivery_id),
            )

    def mark_failed(
        self, delivery_id: int, now_ms: int, error: str, status: int | None, retry_at_ms: int | None
    ) -> None:
        """Record a failed attempt; retry at `retry_at_ms`, or None to move it to DEAD."""
        state = DeliveryState.PENDING if retry_at_ms is not None else DeliveryState.DEAD
        with self._write() as conn:
            conn.execute(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, last_error = ?, "
                "last_status = ?, next_at_ms = ? WHERE id = ? AND state = 'pending'",
                (
                    state.value,
                    error,
                    status,
                    now_ms if retry_at_ms is None else retry_at_ms,
                    delivery_id,
                ),
            )

    def outbox_pending(self) -> int:
        """How many deliveries are pending (`pledgewatch_outbox_pending`)."""
        count: int = self._query("SELECT count(*) FROM deliveries WHERE state = 'pending'")[0][0]
        return count

    def list_dead(self, cursor: str | None, limit: int) -> Page[Delivery]:
        """Deliveries that gave up, newest first."""
        before = 2**63 - 1 if cursor is None else decode_cursor("dead", cursor, (int,))[0]
        rows = self._query(
            "SELECT " + _DELIVERY + " FROM deliveries "  # noqa: S608  # constants
            "WHERE state = 'dead' AND id < ? ORDER BY id DESC LIMIT ?",
            (before, check_limit(limit) + 1),
        )
        return make_page(rows, limit, delivery_from_row, lambda r: encode_cursor("dead", r[0]))

    def redeliver(self, delivery_id: int, now_ms: int) -> bool:
        """Move a DEAD delivery back to PENDING, due now, with a fresh retry window
        (attempts and age start again); False if it is not dead."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE deliveries SET state = 'pending', next_at_ms = ?, "
                "created_ms = ?, attempts = 0 "
                "WHERE id = ? AND state = 'dead'",
                (now_ms, now_ms, delivery_id),
            )
            return cur.rowcount > 0

    # queries of the API

    def list_alerts(self, query: AlertQuery) -> Page[StoredAlert]:
        """Alerts, newest first (ts, then id)."""
        where, params = alert_where(query, "?")
        rows = self._query(
            "SELECT body, acked_ms, ack_note, ts_ms, id FROM alerts "  # noqa: S608  # fixed fragments
            f"{where}ORDER BY ts_ms DESC, id DESC LIMIT ?",
            params,
        )
        return make_page(
            rows,
            query.limit,
            lambda r: stored_alert_from_row(r[0], r[1], r[2]),
            lambda r: encode_cursor("alert", r[3], r[4]),
        )

    def get_alert(self, alert_id: str) -> StoredAlert | None:
        """One alert, or None."""
        rows = self._query("SELECT body, acked_ms, ack_note FROM alerts WHERE id = ?", (alert_id,))
        return stored_alert_from_row(*rows[0]) if rows else None

    def ack_alert(self, alert_id: str, note: str | None, now_ms: int) -> bool:
        """Record an operator's acknowledgement; False if there is no such alert."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE alerts SET acked_ms = ?, ack_note = ? WHERE id = ?",
                (now_ms, note, alert_id),
            )
            return cur.rowcount > 0

    def list_rejects(self, cursor: str | None, limit: int) -> Page[Reject]:
        """Dead letters (rejected input), newest first."""
        before = 2**63 - 1 if cursor is None else decode_cursor("reject", cursor, (int,))[0]
        rows = self._query(
            "SELECT topic, reason, detail, device_id, array_index, raw, received_ms, id "
            "FROM dead_letters WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before, check_limit(limit) + 1),
        )
        return make_page(rows, limit, reject_from_row, lambda r: encode_cursor("reject", r[-1]))

    def count_telemetry(self, device_id: str | None = None) -> int:
        """Stored readings (all, or of one device)."""
        if device_id is None:
            rows = self._query("SELECT count(*) FROM telemetry")
        else:
            rows = self._query("SELECT count(*) FROM telemetry WHERE device_id = ?", (device_id,))
        count: int = rows[0][0]
        return count
