"""`Store` on PostgreSQL: psycopg 3, a connection pool, binary COPY for telemetry.

Telemetry layout, chosen when `migrate()` first creates the table:
- the `timescaledb` extension is available, preloaded and loads (postgres_timescale.py): a
  hypertable in one-day chunks on `ts_ms`, compressed after `compress_after_days` (default
  7, segmented by device) and dropped after `retain_days` (default 400; None keeps all);
- otherwise native declarative RANGE partitioning by UTC day on `ts_ms`, with a DEFAULT
  partition for rows of days that have no partition of their own. Partitions are made
  ahead of time by `maintain(now_ms)` and dropped by `enforce_retention(now_ms)`, never on
  the commit path, and every DDL gives up when its lock is not free within
  `ddl_lock_timeout_s` (postgres_partitions.py says why and how).

Telemetry has a unique key (ts_ms, device_id, stream). A batch's readings go in by binary
COPY inside a savepoint; if the key refuses one (a redelivery), they are staged in a
temporary table by COPY and inserted with ON CONFLICT DO NOTHING, and the duplicates are
counted. The staged path costs about half of COPY's rate and runs only for batches that
hold a duplicate.

Every connection of the pool waits at most `lock_timeout_s` for a lock: a commit blocked
by a lock fails as a StoreError, which the engine logs and retries, instead of hanging
silently. `acquire_lease()` takes the engine lease (postgres_lease.py); `due_deliveries`
claims with FOR UPDATE SKIP LOCKED, so several dispatchers can share the outbox.

Time is epoch milliseconds (`bigint`) everywhere, as in the rest of pledgewatch: no per-row
datetime conversion on the hot path. Every table lives in one schema (the `schema` argument,
else the DSN's `search_path` option, else `public`), set as each connection's
`search_path`; tests use a throwaway schema.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import orjson
import psycopg
import psycopg_pool
from psycopg import errors, sql
from psycopg.rows import TupleRow

from alerts.model import Alert
from engine.core.state import DeviceState, LoanState, device_from_json, loan_from_json
from engine.store.console_schema import POSTGRES_V6, TRACK_INDEX
from engine.store.console_sql import ConsoleSql
from engine.store.port import Batch, Committed, StoreConfigError, StoreError
from engine.store.postgres_lease import PostgresLease
from engine.store.postgres_partitions import CREATE_DEFAULT, drop_before, prepare
from engine.store.postgres_schema import (
    CONSUMER_STATE_DDL,
    DDL_V1,
    DEDUPLICATE_TELEMETRY,
    DELIVERY_CLAIMS,
    DEVICE_TOKENS_DDL,
    REJECT_TYPES,
    TELEMETRY_DDL,
    TELEMETRY_KEY,
    TELEMETRY_TYPES,
)
from engine.store.postgres_timescale import apply_policies, load_timescale, make_hypertable
from engine.store.rows import (
    DAY_MS,
    REJECT_COLUMNS,
    TELEMETRY_COLUMNS,
    alert_row,
    batch_rows,
)
from engine.store.secret_box import SecretBox, load_secret_box
from engine.store.sql_base import INSERT_MIGRATION, clock_ms

log = logging.getLogger(__name__)

Cursor = psycopg.Cursor[TupleRow]
Layout = Literal["hypertable", "partitioned", "plain"]

_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SEARCH_PATH_RE = re.compile(r"-c\s*search_path\s*=\s*([^\s,]+)")

_INSERT_ALERTS = (
    "INSERT INTO alerts (id, type, ts_ms, detected_ms, device_id, loan_id, fence_id, body) "
    "SELECT id, type, ts_ms, detected_ms, device_id, loan_id, fence_id, body::json "
    "FROM unnest(%s::text[], %s::text[], %s::int8[], %s::int8[], %s::text[], %s::text[], "
    "%s::text[], %s::text[]) AS u (id, type, ts_ms, detected_ms, device_id, loan_id, "
    "fence_id, body) ON CONFLICT (id) DO NOTHING RETURNING id"
)
_STAGE = "pledgewatch_telemetry_stage"
_CREATE_STAGE = f"CREATE TEMP TABLE {_STAGE} (LIKE telemetry INCLUDING DEFAULTS) ON COMMIT DROP"
_INSERT_STAGED = sql.SQL(
    "WITH stored AS (INSERT INTO telemetry ({columns}) SELECT {columns} FROM {stage} "
    "ON CONFLICT DO NOTHING RETURNING stream) SELECT stream, count(*) FROM stored GROUP BY stream"
).format(
    columns=sql.SQL(", ").join(map(sql.Identifier, TELEMETRY_COLUMNS)),
    stage=sql.Identifier(_STAGE),
)
_MIGRATE_LOCK_TIMEOUT_S = 10.0
_BACKFILL_DAYS = 400  # with no retention: how far back a day still gets a partition
_UPSERT_STATE = (
    "INSERT INTO {} (id, doc, updated_ms) "
    "SELECT id, doc::json, updated_ms FROM unnest(%s::text[], %s::text[], %s::int8[]) "
    "AS u (id, doc, updated_ms) "
    "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, updated_ms = excluded.updated_ms"
)
_UPSERT_CONSUMER_STATE = (
    "INSERT INTO consumer_state (consumer, key, doc, updated_ms) "
    "SELECT consumer, key, doc::json, updated_ms "
    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::int8[]) "
    "AS u (consumer, key, doc, updated_ms) ON CONFLICT (consumer, key) "
    "DO UPDATE SET doc = excluded.doc, updated_ms = excluded.updated_ms"
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


class PostgresStore(ConsoleSql[Cursor]):
    """`Store` on PostgreSQL; every table in `schema`."""

    PARAM = "%s"
    JSON_TEXT = "::text"  # psycopg would parse a json value; the codecs take its text
    JSON_PARAM = "::json"
    # KEY SHARE: a concurrent delete_webhook waits for this commit, so every delivery
    # written here refers to a hook that exists when the batch commits.
    LOCK_HOOKS = " FOR KEY SHARE"
    # Two dispatchers claiming at once take different heads (or wait for none).
    LOCK_CLAIMS = " FOR UPDATE SKIP LOCKED"

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
        lock_timeout_s: float = 30.0,
        ddl_lock_timeout_s: float = 2.0,
        partitions_ahead_days: int = 2,
        lease_wait_s: float = 5.0,
        secrets: SecretBox | None = None,
    ) -> None:
        """Open a pool on `dsn` and wait for its first connection (`StoreError` if none).

        `schema` None takes the first schema of a `search_path` set in the DSN's options
        (`postgresql://host/db?options=-csearch_path%3Dmyschema`), else `public`.

        `timescale`: None uses TimescaleDB when the extension is available, True requires
        it, False never uses it. `compress_after_days` and `retain_days` (None: keep
        forever) are TimescaleDB policies, and `retain_days` is also what
        `enforce_retention` keeps of native partitions.

        `lock_timeout_s`: how long any statement waits for a lock before it fails as a
        StoreError (a commit is then retried by the engine, which logs why).
        `ddl_lock_timeout_s`: the same for partition DDL, which then waits for the next
        `maintain`. `partitions_ahead_days`: how many days ahead partitions are made.
        `lease_wait_s`: how long `acquire_lease` waits for a killed holder's session to end.
        `secrets` seals webhook secrets; None: the key of `load_secret_box` (its environment
        variables, else `pledgewatch-secret.key` in the working directory), on first use.
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
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._lock_timeout_ms = max(1, round(lock_timeout_s * 1000))
        self._ddl_timeout_s = ddl_lock_timeout_s
        self._ahead_days = partitions_ahead_days
        self._lease: PostgresLease | None = None
        self._lease_wait_s = lease_wait_s
        self._box = secrets
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
                check=self._check_connection,
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
        conn.execute(
            "SELECT set_config('search_path', %s, false), set_config('lock_timeout', %s, false)",
            [f'"{self.schema}"', f"{self._lock_timeout_ms}ms"],
        )

    def _check_connection(self, conn: psycopg.Connection[TupleRow]) -> None:
        """The pool's checkout test. One dead connection means the server dropped them
        (a restart, a failover, a kill): the pool would find the others one at a time, a
        1, 2, 4 ... s backoff apart (4 dead took 6.8 s), so test every idle one now and
        pay that backoff once."""
        try:
            psycopg_pool.ConnectionPool.check_connection(conn)
        except Exception:
            self._pool.check()
            raise

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

    def migrate(self, *, target: int | None = None) -> None:
        """Create or upgrade the schema (up to version `target`, default the latest);
        idempotent; runs on start."""
        try:
            self._migrate(target)
        except errors.LockNotAvailable as exc:
            msg = (
                f"migrating schema {self.schema!r}: a table was locked for more than "
                f"{_MIGRATE_LOCK_TIMEOUT_S:g} s (a long transaction: a report, a pg_dump?); "
                f"start again once it ends ({exc})"
            )
            raise StoreError(msg) from exc

    def _migrate(self, target: int | None) -> None:
        with self._transaction() as cur:
            # Serialise migrations of this schema across processes (waiting for another
            # one as long as it takes); then nothing races.
            cur.execute("SET LOCAL lock_timeout = 0")
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"pledgewatch:{self.schema}"]
            )
            cur.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(
                    sql.Literal(f"{_MIGRATE_LOCK_TIMEOUT_S:g}s")
                )
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
            steps = (
                (1, self._migrate_v1),
                (2, self._migrate_v2),
                (3, self._migrate_v3),
                (4, self._migrate_v4),
                (5, self._migrate_v5),
                (6, self._migrate_v6),
                (7, self._migrate_v7),
            )
            for version, step in steps:
                if version in done or (target is not None and version > target):
                    continue
                step(cur)
                cur.execute(self._sql(INSERT_MIGRATION), (version, clock_ms()))
            self._layout = self._detect_layout(cur)
            if self._layout == "hypertable":
                assert self._ts_schema is not None
                apply_policies(cur, self._ts_schema, self._compress_after_days, self._retain_days)

    def _migrate_v1(self, cur: Cursor) -> None:
        for statement in DDL_V1:
            cur.execute(statement)
        self._ts_schema = load_timescale(cur, self._timescale)
        if self._ts_schema is None:
            cur.execute(TELEMETRY_DDL + " PARTITION BY RANGE (ts_ms)")
            return
        cur.execute(TELEMETRY_DDL)
        make_hypertable(cur, self._ts_schema)

    def _migrate_v2(self, cur: Cursor) -> None:
        """Exact duplicates (a unique key on telemetry), a default partition, claims."""
        if self._detect_layout(cur) == "partitioned":
            cur.execute(CREATE_DEFAULT)
        copy_, delete, insert = DEDUPLICATE_TELEMETRY
        cur.execute(copy_)
        removed = cur.execute(delete).rowcount - cur.execute(insert).rowcount
        if removed:
            log.warning("schema version 2: deleted %d duplicate telemetry rows", removed)
        cur.execute(TELEMETRY_KEY)
        cur.execute(DELIVERY_CLAIMS)

    def _migrate_v3(self, cur: Cursor) -> None:
        """Webhook secrets sealed at rest."""
        self._seal_plaintext_secrets(cur)

    def _migrate_v4(self, cur: Cursor) -> None:
        """Consumers' durable state."""
        cur.execute(CONSUMER_STATE_DDL)

    def _migrate_v5(self, cur: Cursor) -> None:
        """Per-device tokens of the HTTP inputs."""
        for statement in DEVICE_TOKENS_DDL:
            cur.execute(statement)

    def _migrate_v6(self, cur: Cursor) -> None:
        """The operator console: accounts, sessions, tokens, audit, alert cases."""
        for statement in POSTGRES_V6:
            cur.execute(statement)

    def _migrate_v7(self, cur: Cursor) -> None:
        """A car's track reads its gps rows by device."""
        cur.execute(TRACK_INDEX)

    def _default_secrets(self) -> SecretBox:
        return load_secret_box(None)

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

    def layout(self) -> Layout:
        """How telemetry is stored: a TimescaleDB hypertable, day partitions, or a plain table."""
        if self._layout is None:
            with self._transaction() as cur:
                self._layout = self._detect_layout(cur)
        return self._layout

    def partitions(self) -> list[str]:
        """Names of the telemetry day partitions (or TimescaleDB chunks), oldest first; the
        default partition is not listed."""
        rows = self._query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent "
            "JOIN pg_namespace n ON n.oid = p.relnamespace "
            "WHERE n.nspname = %s AND p.relname = 'telemetry' ORDER BY c.relname",
            [self.schema],
        )
        return [str(name) for (name,) in rows if str(name) != "telemetry_default"]

    def drop_partitions_before(self, ts_ms: int) -> int:
        """Drop telemetry wholly older than `ts_ms`: whole days or chunks, and the default
        partition's rows; partitions (or chunks) dropped plus rows deleted. StoreError when
        a lock is not free within `ddl_lock_timeout_s` (retry later)."""
        if self.layout() == "hypertable":
            assert self._ts_schema is not None
            rows = self._query(
                sql.SQL("SELECT {}.drop_chunks('telemetry', older_than => {})").format(
                    sql.Identifier(self._ts_schema), sql.Literal(ts_ms)
                )
            )
            return len(rows)
        if self.layout() != "partitioned":
            return 0
        with self._errors(), self._pool.connection() as conn:
            return drop_before(conn, ts_ms, self._ddl_timeout_s)

    def enforce_retention(self, now_ms: int) -> int:
        """Drop native partitions older than `retain_days`; TimescaleDB does this itself."""
        if self._retain_days is None or self.layout() == "hypertable":
            return 0
        return self.drop_partitions_before(now_ms - self._retain_days * DAY_MS)

    def maintain(self, now_ms: int) -> None:
        """Check the lease; make the telemetry partitions of the coming days (and of days
        whose rows wait in the default partition) ready. StoreError if a lock was not free
        in time: the next call goes on."""
        if self._lease is not None:
            with self._errors():
                self._lease.check()
        if self.layout() != "partitioned":
            return
        window_days = self._retain_days if self._retain_days is not None else _BACKFILL_DAYS
        first_day = (now_ms - window_days * DAY_MS) // DAY_MS
        with self._errors(), self._pool.connection() as conn:
            made = prepare(conn, now_ms, first_day, self._ahead_days, self._ddl_timeout_s)
        if made:
            log.info("made %d telemetry day partitions ahead", made)

    def acquire_lease(self) -> None:
        """Take the engine lease of this schema (a session advisory lock); LeaseError naming
        the holder if another engine has it."""
        if self._lease is None:
            self._lease = PostgresLease(self._dsn, self.schema, self._timeout_s)
        with self._errors():
            self._lease.acquire(self._lease_wait_s)

    def close(self) -> None:
        """Release connections, and the lease."""
        self._pool.close()
        if self._lease is not None:
            self._lease.release()

    # the engine

    def commit_batch(self, batch: Batch) -> Committed:
        """Write a batch atomically: telemetry, dead letters, alerts + outbox, checkpoint,
        consumer state."""
        rows = batch_rows(batch)
        duplicates: dict[str, int] = {}
        with self._transaction() as cur:
            if rows.readings:
                duplicates = self._write_telemetry(cur, rows.readings)
            if rows.rejects:
                self._copy(cur, "dead_letters", REJECT_COLUMNS, REJECT_TYPES, rows.rejects)
            self._write_alerts(cur, rows.alerts, batch.now_ms)
            self._forget_devices(cur, rows.evicted)
            for table, states in (("device_state", rows.devices), ("loan_state", rows.loans)):
                if states:
                    cur.execute(
                        sql.SQL(_UPSERT_STATE).format(sql.Identifier(table)), _columns(states, 3)
                    )
            self._forget_consumer_rows(cur, rows.consumer_deletes)
            if rows.consumers:
                cur.execute(_UPSERT_CONSUMER_STATE, _columns(rows.consumers, 4))
        return Committed(duplicates)

    def _write_telemetry(self, cur: Cursor, rows: Sequence[Sequence[object]]) -> dict[str, int]:
        """Store the readings not stored yet; the others counted by stream.

        Binary COPY first, in a savepoint: duplicates are rare (a redelivery after a crash),
        so the common batch pays one savepoint. If the unique key refuses the COPY, the rows
        are staged in a temporary table and inserted with ON CONFLICT DO NOTHING."""
        try:
            with cur.connection.transaction():
                self._copy(cur, "telemetry", TELEMETRY_COLUMNS, TELEMETRY_TYPES, rows)
        except errors.UniqueViolation:
            pass
        else:
            return {}
        cur.execute(_CREATE_STAGE)
        self._copy(cur, _STAGE, TELEMETRY_COLUMNS, TELEMETRY_TYPES, rows)
        stored = {str(stream): int(n) for stream, n in cur.execute(_INSERT_STAGED).fetchall()}
        staged = Counter(str(row[1]) for row in rows)
        return {k: n - stored.get(k, 0) for k, n in staged.items() if n > stored.get(k, 0)}

    def outbox_pending(self) -> int:
        """How many deliveries are pending; StoreError rather than a wait over 2 s (health
        and metrics ask this, and must answer while the database is stuck)."""
        with self._transaction() as cur:
            cur.execute("SET LOCAL statement_timeout = '2s'")
            row = cur.execute("SELECT count(*) FROM deliveries WHERE state = 'pending'").fetchone()
        return 0 if row is None else int(row[0])

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
