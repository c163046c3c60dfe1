"""`Store` on PostgreSQL: psycopg 3, a connection pool, binary COPY for telemetry.

Telemetry layout, chosen when `migrate()` first creates the table:
- the `timescaledb` extension is available (`pg_available_extensions`) and loads: a
  hypertable in one-day chunks on `ts_ms`, compressed after `compress_after_days` (default
  7, segmented by device) and dropped after `retain_days` (default 400; None keeps all);
- otherwise native declarative RANGE partitioning by UTC day on `ts_ms`. Each batch creates
  the partitions of the days it touches before its transaction (a partition is created in
  its own short transaction: `CREATE TABLE ... PARTITION OF` locks the parent, which must
  not be held for a whole batch); `drop_partitions_before(ts_ms)` or
  `enforce_retention(now_ms)` is the retention.

Time is epoch milliseconds (`bigint`) everywhere, as in the rest of pledgewatch: no per-row
datetime conversion on the hot path. Every table lives in one schema (the `schema` argument,
else the DSN's `search_path` option, else `public`), set as each connection's
`search_path`; tests use a throwaway schema.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Literal

import orjson
import psycopg
import psycopg_pool
from psycopg import errors, sql
from psycopg.rows import TupleRow

from alerts.model import Alert
from devices.readings import Reading
from engine.core.state import DeviceState, LoanState, device_from_json, loan_from_json
from engine.store.port import Batch, StoreConfigError, StoreError
from engine.store.postgres_schema import DDL_V1, REJECT_TYPES, TELEMETRY_DDL, TELEMETRY_TYPES
from engine.store.rows import (
    DAY_MS,
    REJECT_COLUMNS,
    TELEMETRY_COLUMNS,
    alert_row,
    batch_rows,
)
from engine.store.sql_base import INSERT_MIGRATION, SqlStore, clock_ms

log = logging.getLogger(__name__)

Cursor = psycopg.Cursor[TupleRow]
Layout = Literal["hypertable", "partitioned", "plain"]

_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_PARTITION_RE = re.compile(r"telemetry_p(\d{8})")
_SEARCH_PATH_RE = re.compile(r"-c\s*search_path\s*=\s*([^\s,]+)")

_INSERT_ALERTS = (
    "INSERT INTO alerts (id, type, ts_ms, detected_ms, device_id, loan_id, fence_id, body) "
    "SELECT id, type, ts_ms, detected_ms, device_id, loan_id, fence_id, body::json "
    "FROM unnest(%s::text[], %s::text[], %s::int8[], %s::int8[], %s::text[], %s::text[], "
    "%s::text[], %s::text[]) AS u (id, type, ts_ms, detected_ms, device_id, loan_id, "
    "fence_id, body) ON CONFLICT (id) DO NOTHING RETURNING id"
)
_UPSERT_STATE = (
    "INSERT INTO {} (id, doc, updated_ms) "
    "SELECT id, doc::json, updated_ms FROM unnest(%s::text[], %s::text[], %s::int8[]) "
    "AS u (id, doc, updated_ms) "
    "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, updated_ms = excluded.updated_ms"
)


def _columns(rows: Sequence[Sequence[object]], width: int) -> list[list[object]]:
    """Rows transposed into one list per column: the arrays that `unnest` zips back."""
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def _why_not(dsn: str, timeout_s: float) -> str | None:
    """The server's or the network's reason for refusing a connection (the pool logs it only)."""
    try:
        psycopg.connect(dsn, connect_timeout=max(1, round(timeout_s))).close()
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


def _dsn_schema(dsn: str) -> str | None:
    """The first schema of `-c search_path=...` in the DSN's `options`, if any."""
    try:
        options = psycopg.conninfo.conninfo_to_dict(dsn).get("options")
    except psycopg.ProgrammingError as exc:
        msg = f"invalid PostgreSQL DSN: {exc}"
        raise StoreConfigError(msg) from exc
    m = _SEARCH_PATH_RE.search(str(options or ""))
    return None if m is None else m.group(1).strip('"')


def _partition_name(day: int) -> str:
    return "telemetry_p" + datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y%m%d")


def _partition_day(name: str) -> int | None:
    m = _PARTITION_RE.fullmatch(name)
    if m is None:
        return None
    when = datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC)
    return int(when.timestamp()) // 86_400


class PostgresStore(SqlStore[Cursor]):
    """`Store` on PostgreSQL; every table in `schema`."""

    PARAM = "%s"
    JSON_TEXT = "::text"  # psycopg would parse a json value; the codecs take its text
    JSON_PARAM = "::json"
    # KEY SHARE: a concurrent delete_webhook waits for this commit, so every delivery
    # written here refers to a hook that exists when the batch commits.
    LOCK_HOOKS = " FOR KEY SHARE"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 8,
        timeout_s: float = 10.0,
        timescale: bool | None = None,
        compress_after_days: int = 7,
        retain_days: int | None = 400,
    ) -> None:
        """Open a pool on `dsn` and wait for its first connection (`StoreError` if none).

        `schema` None takes the first schema of a `search_path` set in the DSN's options
        (`postgresql://host/db?options=-csearch_path%3Dmyschema`), else `public`.

        `timescale`: None uses TimescaleDB when the extension is available, True requires
        it, False never uses it. `compress_after_days` and `retain_days` (None: keep
        forever) are TimescaleDB policies, and `retain_days` is also what
        `enforce_retention` keeps of native partitions.
        """
        if schema is None:
            schema = _dsn_schema(dsn) or "public"
        if not _SCHEMA_RE.fullmatch(schema):
            msg = f"schema {schema!r}: use letters, digits and _ (at most 63, not digit-first)"
            raise StoreConfigError(msg)
        self.schema = schema
        self._timescale = timescale
        self._compress_after_days = compress_after_days
        self._retain_days = retain_days
        self._layout: Layout | None = None
        self._ts_schema: str | None = None
        self._partitions: set[int] = set()  # days whose telemetry partition exists
        self._partitions_lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[TupleRow]] = (
            psycopg_pool.ConnectionPool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=timeout_s,
                kwargs={"autocommit": True},
                configure=self._configure,
                # A server restart leaves dead connections in the pool: test each one on
                # checkout (one round trip) rather than fail the engine's next batch.
                check=psycopg_pool.ConnectionPool.check_connection,
                open=False,
                name=f"pledgewatch-{schema}",
            )
        )
        try:
            self._pool.open(wait=True, timeout=timeout_s)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            msg = (
                f"cannot connect to PostgreSQL within {timeout_s} s: is the server up and the "
                f"DSN right (host, port, user, database)? ({_why_not(dsn, timeout_s) or exc})"
            )
            raise StoreError(msg) from exc

    def _configure(self, conn: psycopg.Connection[TupleRow]) -> None:
        conn.execute("SELECT set_config('search_path', %s, false)", [f'"{self.schema}"'])

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg_pool.PoolClosed:
            raise  # using a closed store is a bug, not an outage
        except psycopg.OperationalError as exc:
            # Connection lost, server shutting down, pool exhausted, serialization failure,
            # deadlock, disk full: the caller may retry the whole operation.
            msg = f"PostgreSQL: {exc.__class__.__name__}: {exc}; retry the operation"
            raise StoreError(msg) from exc

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        """A cursor in one transaction: committed at the end, rolled back on any error."""
        with (
            self._errors(),
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            yield cur

    def _query(self, query: str | sql.Composed, params: Sequence[object] = ()) -> list[TupleRow]:
        with self._errors(), self._pool.connection() as conn:
            return conn.execute(query, params).fetchall()

    # schema

    def migrate(self) -> None:
        """Create or upgrade the schema; idempotent; runs on start."""
        with self._transaction() as cur:
            # Serialise migrations of this schema across processes; then nothing races.
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"pledgewatch:{self.schema}"]
            )
            cur.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version integer PRIMARY KEY, applied_ms bigint NOT NULL)"
            )
            done = {v for (v,) in cur.execute("SELECT version FROM schema_migrations").fetchall()}
            # Versioned steps: append (version, step) to change the schema; never edit one
            # that has been applied.
            for version, step in ((1, self._migrate_v1),):
                if version in done:
                    continue
                step(cur)
                cur.execute(self._sql(INSERT_MIGRATION), (version, clock_ms()))
            self._layout = self._detect_layout(cur)
            if self._layout == "hypertable":
                self._apply_policies(cur)

    def _migrate_v1(self, cur: Cursor) -> None:
        for statement in DDL_V1:
            cur.execute(statement)
        if not self._use_timescale(cur):
            cur.execute(TELEMETRY_DDL + " PARTITION BY RANGE (ts_ms)")
            return
        assert self._ts_schema is not None
        cur.execute(TELEMETRY_DDL)
        ts = sql.Identifier(self._ts_schema)
        # Integer time needs a "now" in the same unit for the policies.
        cur.execute(
            "CREATE FUNCTION pledgewatch_now_ms() RETURNS bigint LANGUAGE sql STABLE "
            "AS 'SELECT (extract(epoch FROM now()) * 1000)::bigint'"
        )
        cur.execute(
            sql.SQL(
                "SELECT {}.create_hypertable('telemetry', 'ts_ms', "
                "chunk_time_interval => %s::bigint, create_default_indexes => false)"
            ).format(ts),
            [DAY_MS],
        )
        cur.execute(
            sql.SQL("SELECT {}.set_integer_now_func('telemetry', 'pledgewatch_now_ms')").format(ts)
        )

    def _use_timescale(self, cur: Cursor) -> bool:
        """Load TimescaleDB if wanted and possible; remember the schema of its functions."""
        if self._timescale is False:
            return False
        available = cur.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        if available is None:
            if self._timescale:
                msg = "timescale=True, but the timescaledb extension is not installed on the server"
                raise StoreConfigError(msg)
            return False
        try:
            with cur.connection.transaction():  # a savepoint: a failure here is not fatal
                cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public")
        except psycopg.Error as exc:
            if self._timescale:
                msg = f"timescale=True, but CREATE EXTENSION timescaledb failed: {exc}"
                raise StoreConfigError(msg) from exc
            log.warning("timescaledb is available but does not load (%s); partitioning by day", exc)
            return False
        row = cur.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'timescaledb'"
        ).fetchone()
        self._ts_schema = None if row is None else str(row[0])
        return row is not None

    def _detect_layout(self, cur: Cursor) -> Layout:
        row = cur.execute(
            "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = 'telemetry'",
            [self.schema],
        ).fetchone()
        if row is None:
            msg = f"schema {self.schema!r} has no telemetry table: call migrate() first"
            raise StoreConfigError(msg)
        if row[0] == "p":
            return "partitioned"
        ext = cur.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'timescaledb'"
        ).fetchone()
        if ext is not None:
            self._ts_schema = str(ext[0])
            hyper = cur.execute(
                "SELECT 1 FROM timescaledb_information.hypertables "
                "WHERE hypertable_schema = %s AND hypertable_name = 'telemetry'",
                [self.schema],
            ).fetchone()
            if hyper is not None:
                return "hypertable"
        return "plain"

    def _apply_policies(self, cur: Cursor) -> None:
        """Compression and retention as configured now (replacing earlier policies)."""
        assert self._ts_schema is not None
        ts = sql.Identifier(self._ts_schema)
        try:
            with cur.connection.transaction():
                cur.execute(
                    "ALTER TABLE telemetry SET (timescaledb.compress, "
                    "timescaledb.compress_segmentby = 'device_id', "
                    "timescaledb.compress_orderby = 'ts_ms')"
                )
                cur.execute(
                    sql.SQL(
                        "SELECT {}.remove_compression_policy('telemetry', if_exists => true)"
                    ).format(ts)
                )
                cur.execute(
                    sql.SQL(
                        "SELECT {}.add_compression_policy('telemetry', "
                        "compress_after => %s::bigint)"
                    ).format(ts),
                    [self._compress_after_days * DAY_MS],
                )
        except psycopg.Error as exc:
            # The Apache-licensed build of TimescaleDB has no compression.
            log.warning("telemetry compression not enabled: %s", exc)
        cur.execute(
            sql.SQL("SELECT {}.remove_retention_policy('telemetry', if_exists => true)").format(ts)
        )
        if self._retain_days is not None:
            cur.execute(
                sql.SQL(
                    "SELECT {}.add_retention_policy('telemetry', drop_after => %s::bigint)"
                ).format(ts),
                [self._retain_days * DAY_MS],
            )

    def layout(self) -> Layout:
        """How telemetry is stored: a TimescaleDB hypertable, day partitions, or a plain table."""
        if self._layout is None:
            with self._transaction() as cur:
                self._layout = self._detect_layout(cur)
        return self._layout

    def _ensure_partitions(self, readings: Sequence[Reading]) -> None:
        """Create the day partitions these readings need, each in its own transaction."""
        days = {r.ts_ms // DAY_MS for r in readings}
        with self._partitions_lock:
            missing = sorted(days - self._partitions)
        if not missing:
            return
        with self._errors(), self._pool.connection() as conn:
            for day in missing:
                create = sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF telemetry "
                    "FOR VALUES FROM ({}) TO ({})"
                ).format(
                    sql.Identifier(_partition_name(day)),
                    sql.Literal(day * DAY_MS),
                    sql.Literal((day + 1) * DAY_MS),
                )
                # Another process may create it between IF NOT EXISTS and the creation.
                with suppress(errors.DuplicateTable, errors.UniqueViolation):
                    conn.execute(create)
                with self._partitions_lock:
                    self._partitions.add(day)

    def partitions(self) -> list[str]:
        """Names of the telemetry partitions (or TimescaleDB chunks), oldest first."""
        rows = self._query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent "
            "JOIN pg_namespace n ON n.oid = p.relnamespace "
            "WHERE n.nspname = %s AND p.relname = 'telemetry' ORDER BY c.relname",
            [self.schema],
        )
        return [str(name) for (name,) in rows]

    def drop_partitions_before(self, ts_ms: int) -> int:
        """Drop telemetry wholly older than `ts_ms` (whole days or chunks); how many went."""
        if self.layout() == "hypertable":
            assert self._ts_schema is not None
            rows = self._query(
                sql.SQL("SELECT {}.drop_chunks('telemetry', older_than => {})").format(
                    sql.Identifier(self._ts_schema), sql.Literal(ts_ms)
                )
            )
            return len(rows)
        dropped = 0
        for name in self.partitions():
            day = _partition_day(name)
            if day is None or (day + 1) * DAY_MS > ts_ms:
                continue
            with self._transaction() as cur:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
            with self._partitions_lock:
                self._partitions.discard(day)
            dropped += 1
        return dropped

    def enforce_retention(self, now_ms: int) -> int:
        """Drop native partitions older than `retain_days`; TimescaleDB does this itself."""
        if self._retain_days is None or self.layout() == "hypertable":
            return 0
        return self.drop_partitions_before(now_ms - self._retain_days * DAY_MS)

    def close(self) -> None:
        """Release connections."""
        self._pool.close()

    # the engine

    def commit_batch(self, batch: Batch) -> None:
        """Write a batch atomically: telemetry, dead letters, alerts + outbox, checkpoint."""
        rows = batch_rows(batch)
        partitioned = bool(rows.readings) and self.layout() == "partitioned"
        if partitioned:
            self._ensure_partitions(batch.readings)
        try:
            with self._transaction() as cur:
                if rows.readings:
                    self._copy(cur, "telemetry", TELEMETRY_COLUMNS, TELEMETRY_TYPES, rows.readings)
                if rows.rejects:
                    self._copy(cur, "dead_letters", REJECT_COLUMNS, REJECT_TYPES, rows.rejects)
                self._write_alerts(cur, rows.alerts, batch.now_ms)
                self._forget_devices(cur, rows.evicted)
                for table, states in (("device_state", rows.devices), ("loan_state", rows.loans)):
                    if states:
                        cur.execute(
                            sql.SQL(_UPSERT_STATE).format(sql.Identifier(table)),
                            _columns(states, 3),
                        )
        except errors.CheckViolation as exc:
            if not partitioned:
                raise
            # "no partition of relation telemetry found for row": someone else dropped a
            # partition we had cached. Forget the cache; the retry recreates it.
            with self._partitions_lock:
                self._partitions.clear()
            msg = f"PostgreSQL: telemetry partition missing ({exc}); retry the batch"
            raise StoreError(msg) from exc

    @staticmethod
    def _copy(
        cur: Cursor,
        table: str,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Sequence[Sequence[object]],
    ) -> None:
        query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with cur.copy(query) as copy:
            copy.set_types(list(types))
            write = copy.write_row
            for row in rows:
                write(row)

    def _insert_alerts(
        self, tx: Cursor, alerts: Sequence[tuple[Alert, bytes]]
    ) -> list[tuple[Alert, bytes]]:
        """Insert alerts whose id is not stored yet; those inserted, in the given order."""
        if not alerts:
            return []
        tx.execute(_INSERT_ALERTS, _columns([alert_row(a, b) for a, b in alerts], 8))
        inserted = {alert_id for (alert_id,) in tx.fetchall()}
        return [(alert, body) for alert, body in alerts if alert.id in inserted]

    def load_checkpoint(self) -> tuple[list[DeviceState], list[LoanState]]:
        """The last committed state of every device and loan."""
        # One statement, one snapshot: devices and loans from the same commit.
        rows = self._query(
            "SELECT false, id, doc::text FROM device_state "
            "UNION ALL SELECT true, id, doc::text FROM loan_state ORDER BY 1, 2"
        )
        return (
            [device_from_json(orjson.loads(doc)) for is_loan, _, doc in rows if not is_loan],
            [loan_from_json(orjson.loads(doc)) for is_loan, _, doc in rows if is_loan],
        )
