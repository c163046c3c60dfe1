"""The embedded default store: one SQLite file in WAL mode.

Threads: every write goes through ONE writer connection guarded by a lock (SQLite has one
writer per file anyway), inside `BEGIN IMMEDIATE`: the file's write lock is taken up front,
so another process writing the same file (`pledgewatch fences import`) makes us wait up to
the busy timeout instead of failing halfway through a transaction. Reads use a connection
per thread: in WAL mode a reader sees the last commit and never waits for the writer, so
the API and the dispatcher stay responsive while the engine commits a large batch.

One engine per file: `acquire_lease` takes an `flock` on `<database>.lock` (file_lease.py).
The database, its lock file and its secret key file (`<database>.key`, secret_box.py) are
created readable by their owner only; SQLite gives the -wal and -shm files the database's
mode.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import orjson

from alerts.model import Alert
from engine.core.state import DeviceState, LoanState, device_from_json, loan_from_json
from engine.store.console_schema import SQLITE_V6, TRACK_INDEX
from engine.store.console_sql import ConsoleSql
from engine.store.file_lease import FileLease, lock_path
from engine.store.port import Batch, Committed, StoreConfigError, StoreError
from engine.store.rows import (
    ALERT_COLUMNS,
    DAY_MS,
    REJECT_COLUMNS,
    TELEMETRY_COLUMNS,
    alert_row,
    batch_rows,
)
from engine.store.secret_box import SecretBox, key_path, load_secret_box
from engine.store.sql_base import INSERT_MIGRATION, clock_ms, insert_sql

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


_log = logging.getLogger(__name__)

# A reading stored already (same device, stream and ts) is skipped: the unique key decides.
_INSERT_TELEMETRY = insert_sql("telemetry", TELEMETRY_COLUMNS) + " ON CONFLICT DO NOTHING"
_IDS_PER_QUERY = 500  # well below SQLite's limit of bound parameters
_CHECKPOINT_EVERY_S = 1.0
_WAL_MAX_PAGES = 256_000  # ~1 GiB of 4 KiB pages: then a checkpoint that waits for readers
_WAL_KEEP_BYTES = 64 * 1024 * 1024  # the WAL file is cut back to this after a restart
_INSERT_REJECT = insert_sql("dead_letters", REJECT_COLUMNS)
_INSERT_ALERT = insert_sql("alerts", ALERT_COLUMNS) + " ON CONFLICT (id) DO NOTHING"
_UPSERT_STATE = (
    "INSERT INTO {table} (id, doc, updated_ms) VALUES (?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, updated_ms = excluded.updated_ms"
)
_UPSERT_CONSUMER_STATE = (
    "INSERT INTO consumer_state (consumer, key, doc, updated_ms) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (consumer, key) DO UPDATE SET doc = excluded.doc, "
    "updated_ms = excluded.updated_ms"
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
    (
        2,
        (
            # Exact duplicates: one row per (ts_ms, device_id, stream), the first stored kept.
            # ts_ms leads the key: rows mostly arrive in time order and append to the index,
            # and retention's range delete uses it.
            """DELETE FROM telemetry WHERE rowid NOT IN (
                SELECT min(rowid) FROM telemetry GROUP BY ts_ms, device_id, stream)""",
            "CREATE UNIQUE INDEX telemetry_key ON telemetry (ts_ms, device_id, stream)",
            # Claims of `due_deliveries(claim_ms=...)`: until when a dispatcher holds one.
            "ALTER TABLE deliveries ADD COLUMN claimed_until_ms INTEGER NOT NULL DEFAULT 0",
        ),
    ),
    # Webhook secrets sealed at rest (SqlStore._seal_plaintext_secrets runs with it).
    (3, ()),
    (
        4,
        (
            # Consumers' durable state (DESIGN §8): one JSON document per (consumer, key),
            # written in the transaction of the batch that fed the consumer.
            """CREATE TABLE consumer_state (
                consumer TEXT NOT NULL,
                key TEXT NOT NULL,
                doc TEXT NOT NULL,
                updated_ms INTEGER NOT NULL,
                PRIMARY KEY (consumer, key))""",
        ),
    ),
    (
        5,
        (
            # Per-device tokens of the HTTP inputs (DESIGN §9): only each token's SHA-256
            # (hex), looked up by that hash on every request that presents one.
            """CREATE TABLE device_tokens (
                device_id TEXT PRIMARY KEY NOT NULL,
                token_sha256 TEXT NOT NULL,
                created_ms INTEGER NOT NULL)""",
            "CREATE UNIQUE INDEX device_tokens_hash ON device_tokens (token_sha256)",
        ),
    ),
    # The operator console (DESIGN §9): operators, sessions, machine tokens, the audit log,
    # alert cases and their notes (console_schema.py).
    (6, SQLITE_V6),
    # A car's track reads its gps rows by device (console_schema.py).
    (7, (TRACK_INDEX,)),
)
_SEAL_SECRETS_VERSION = 3


def _create_private(path: Path) -> None:
    """Create the database file, readable by its owner only, unless it exists (an existing
    file keeps the mode its owner gave it)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))


class SqliteStore(ConsoleSql[sqlite3.Connection]):
    """`Store` on one SQLite file (created with its directory if missing)."""

    PARAM = "?"
    JSON_TEXT = ""  # JSON columns are TEXT
    JSON_PARAM = ""
    LOCK_HOOKS = ""  # the writer lock and BEGIN IMMEDIATE already exclude other writers
    LOCK_CLAIMS = ""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 5.0,
        retain_days: int | None = None,
        secrets: SecretBox | None = None,
    ) -> None:
        """Open (or create) the database file; `migrate()` creates the tables.

        `secrets` seals webhook secrets; None: the key of `load_secret_box` (its
        environment variables, else `<database>.key`, made on first use if missing).

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
        self._lease = FileLease(lock_path(self.path))
        self._box = secrets
        with self._errors():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _create_private(self.path)
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
        # Checkpoints (WAL pages copied into the database file, then synced) run on a thread
        # of their own, not inside the engine's commits, where they stalled batches.
        self._writer.execute("PRAGMA wal_autocheckpoint = 0")
        self._writer.execute(f"PRAGMA journal_size_limit = {_WAL_KEEP_BYTES}")
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoints, name="sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _checkpoints(self) -> None:
        """Checkpoint the WAL every `_CHECKPOINT_EVERY_S` without blocking the writer; if it
        still grew past `_WAL_MAX_PAGES` (readers kept it), wait for a full restart."""
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            _log.warning("SQLite checkpoints off, the WAL grows until restart: %s", exc)
            return
        with closing(conn):
            while not self._closing.wait(_CHECKPOINT_EVERY_S):
                try:
                    _, wal_pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if wal_pages > _WAL_MAX_PAGES:
                        conn.execute("PRAGMA wal_checkpoint(RESTART)")
                except sqlite3.Error as exc:
                    _log.warning("SQLite checkpoint failed (retrying): %s", exc)

    def _default_secrets(self) -> SecretBox:
        return load_secret_box(key_path(self.path))

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
    def _transaction(self) -> Iterator[sqlite3.Connection]:
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

    def migrate(self, *, target: int | None = None) -> None:
        """Create or upgrade the schema (up to version `target`, default the latest);
        idempotent; runs on start."""
        with self._transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY NOT NULL, applied_ms INTEGER NOT NULL)"
            )
            done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            for version, statements in _MIGRATIONS:
                if version in done or (target is not None and version > target):
                    continue
                for statement in statements:
                    conn.execute(statement)
                if version == _SEAL_SECRETS_VERSION:
                    self._seal_plaintext_secrets(conn)
                conn.execute(INSERT_MIGRATION, (version, clock_ms()))

    def enforce_retention(self, now_ms: int) -> int:
        """Delete telemetry older than `retain_days` (None: keep everything); rows deleted."""
        if self._retain_days is None:
            return 0
        with self._transaction() as conn:
            cur = conn.execute(
                "DELETE FROM telemetry WHERE ts_ms < ?", (now_ms - self._retain_days * DAY_MS,)
            )
            return cur.rowcount

    def acquire_lease(self) -> None:
        """Take the engine lease of this file (an flock on `<database>.lock`); LeaseError
        naming the holder if another engine has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lease.acquire(f"SQLite database {self.path}")

    def maintain(self, now_ms: int) -> None:
        """Check the lease (nothing else to do here: checkpoints have their own thread)."""
        del now_ms
        self._lease.check()

    def close(self) -> None:
        """Release connections, and the lease."""
        self._closing.set()
        self._checkpointer.join()
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        with self._lock:
            self._writer.close()
        self._lease.release()

    # the engine

    def commit_batch(self, batch: Batch) -> Committed:
        """Write a batch atomically: telemetry, dead letters, alerts + outbox, checkpoint,
        consumer state."""
        rows = batch_rows(batch)
        by_stream: dict[object, list[tuple[object, ...]]] = {}
        for row in rows.readings:
            by_stream.setdefault(row[1], []).append(row)
        duplicates: dict[str, int] = {}
        with self._transaction() as conn:
            for stream, group in by_stream.items():
                # One executemany per stream: its rowcount counts the rows inserted.
                skipped = len(group) - conn.executemany(_INSERT_TELEMETRY, group).rowcount
                if skipped:
                    duplicates[str(stream)] = skipped
            conn.executemany(_INSERT_REJECT, rows.rejects)
            self._write_alerts(conn, rows.alerts, batch.now_ms)
            self._forget_devices(conn, rows.evicted)
            conn.executemany(_UPSERT_STATE.format(table="device_state"), rows.devices)
            conn.executemany(_UPSERT_STATE.format(table="loan_state"), rows.loans)
            self._forget_consumer_rows(conn, rows.consumer_deletes)
            if rows.consumers:
                conn.executemany(_UPSERT_CONSUMER_STATE, rows.consumers)
        return Committed(duplicates)

    def _insert_alerts(
        self, tx: sqlite3.Connection, alerts: Sequence[tuple[Alert, bytes]]
    ) -> list[tuple[Alert, bytes]]:
        """Insert alerts whose id is not stored yet; those inserted, in the given order.

        One lookup of the stored ids and one executemany, not a statement per alert: the
        writer lock is held, so nothing can insert an id between the two."""
        ids = [alert.id for alert, _ in alerts]
        stored: set[str] = set()
        for i in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[i : i + _IDS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id FROM alerts WHERE id IN ({marks})"  # noqa: S608  # placeholders
            stored.update(alert_id for (alert_id,) in tx.execute(query, chunk))
        new: list[tuple[Alert, bytes]] = []
        for alert, body in alerts:
            if alert.id not in stored:
                stored.add(alert.id)  # the same id twice in one batch is stored once
                new.append((alert, body))
        tx.executemany(_INSERT_ALERT, [alert_row(alert, body) for alert, body in new])
        return new

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
