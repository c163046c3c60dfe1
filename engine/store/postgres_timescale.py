"""TimescaleDB for telemetry, when the server has it: loading the extension, the hypertable
in one-day chunks on `ts_ms`, and its compression and retention policies."""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from engine.store.port import StoreConfigError
from engine.store.rows import DAY_MS

log = logging.getLogger(__name__)

Cursor = psycopg.Cursor[TupleRow]


def load_timescale(cur: Cursor, wanted: bool | None) -> str | None:
    """Load TimescaleDB if `wanted` (None: if the server can) and return the schema of its
    functions; None when it is not used. StoreConfigError if `wanted` and it cannot be."""
    if wanted is False:
        return None
    available = cur.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if available is None:
        if wanted:
            msg = "timescale=True, but the timescaledb extension is not installed on the server"
            raise StoreConfigError(msg)
        return None
    # Installed but not preloaded: CREATE EXTENSION would end the session (FATAL), not
    # just fail, so it is not even tried.
    preload = cur.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    if preload is None or "timescaledb" not in str(preload[0]):
        if wanted:
            msg = (
                "timescale=True, but the server does not preload timescaledb: add it to "
                "shared_preload_libraries in postgresql.conf and restart the server"
            )
            raise StoreConfigError(msg)
        log.warning("timescaledb is installed but not preloaded; partitioning by day")
        return None
    try:
        with cur.connection.transaction():  # a savepoint: a failure here is not fatal
            cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public")
    except psycopg.Error as exc:
        if wanted:
            msg = f"timescale=True, but CREATE EXTENSION timescaledb failed: {exc}"
            raise StoreConfigError(msg) from exc
        log.warning("timescaledb is available but does not load (%s); partitioning by day", exc)
        return None
    row = cur.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'timescaledb'"
    ).fetchone()
    return None if row is None else str(row[0])


def make_hypertable(cur: Cursor, ts_schema: str) -> None:
    """Turn the new, empty telemetry table into a hypertable of one-day chunks."""
    ts = sql.Identifier(ts_schema)
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


def apply_policies(
    cur: Cursor, ts_schema: str, compress_after_days: int, retain_days: int | None
) -> None:
    """Compression and retention as configured now (replacing earlier policies)."""
    ts = sql.Identifier(ts_schema)
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
                    "SELECT {}.add_compression_policy('telemetry', compress_after => %s::bigint)"
                ).format(ts),
                [compress_after_days * DAY_MS],
            )
    except psycopg.Error as exc:
        # The Apache-licensed build of TimescaleDB has no compression.
        log.warning("telemetry compression not enabled: %s", exc)
    cur.execute(
        sql.SQL("SELECT {}.remove_retention_policy('telemetry', if_exists => true)").format(ts)
    )
    if retain_days is not None:
        cur.execute(
            sql.SQL("SELECT {}.add_retention_policy('telemetry', drop_after => %s::bigint)").format(
                ts
            ),
            [retain_days * DAY_MS],
        )
