"""Telemetry day partitions on PostgreSQL, managed off the engine's commit path.

`CREATE TABLE ... PARTITION OF` and the `DROP TABLE` of a partition take an ACCESS
EXCLUSIVE lock on `telemetry`: any open transaction that has read the table (a report, a
pg_dump) holds them off, and every insert queues behind the waiting DDL. Partitions once
made inside the commit path stalled every device's ingestion for 606 s. So:

- The commit path runs no DDL. The DEFAULT partition (`telemetry_default`) takes every row
  whose day has no partition of its own: nothing waits, nothing is lost.
- `prepare` (the engine's maintenance thread, every minute) keeps the partitions of
  today-1 .. today+2 (UTC days) ready ahead of time, and gives a partition of its own to any
  day within retention whose rows wait in the default partition (moving them). A partition
  is made as a plain table, which locks nothing else, then ATTACHed: SHARE UPDATE EXCLUSIVE
  on `telemetry` (readers and writers do not conflict with it) and ACCESS EXCLUSIVE on the
  default partition, which PostgreSQL scans to prove that no row of that day is left there.
- Days outside that window (before the retention cutoff, or more than `ahead` days ahead:
  a reading stamped 1970 or 2090) never get a partition; their rows stay in the default
  partition, and retention deletes the expired ones row by row.
- Every DDL runs under `SET LOCAL lock_timeout`: a lock not granted in time makes it give up
  with a StoreError naming the session in the way, and the next pass tries again. A session
  that has held a lock on the table for longer than that timeout is looked for first, and
  the DDL is then not even queued: a queued ACCESS EXCLUSIVE request blocks every insert
  behind it until it times out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
from psycopg import errors, sql
from psycopg.rows import TupleRow

from engine.store.port import StoreError
from engine.store.rows import DAY_MS, TELEMETRY_COLUMNS

Connection = psycopg.Connection[TupleRow]

DEFAULT_PARTITION = "telemetry_default"
CREATE_DEFAULT = f"CREATE TABLE IF NOT EXISTS {DEFAULT_PARTITION} PARTITION OF telemetry DEFAULT"

_PARTITION_RE = re.compile(r"telemetry_p(\d{8})")
_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, TELEMETRY_COLUMNS))

_CHILDREN = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = 'telemetry'::regclass ORDER BY c.relname"
)
# The oldest other session whose open transaction holds a lock on one of these tables and
# began more than N seconds ago: the one a DDL would wait for.
_HOLDER = (
    "SELECT a.pid, coalesce(nullif(a.application_name, ''), a.usename::text, '?'), "
    "coalesce(a.state, '?'), extract(epoch FROM now() - a.xact_start)::float8, "
    "left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 80) "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.granted AND l.pid <> pg_backend_pid() AND l.locktype = 'relation' "
    "AND l.relation = ANY(%s::regclass[]) "
    "AND a.xact_start < now() - make_interval(secs => %s) "
    "ORDER BY a.xact_start LIMIT 1"
)


def partition_name(day: int) -> str:
    """`telemetry_pYYYYMMDD` of a UTC day (days since the epoch)."""
    return "telemetry_p" + datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y%m%d")


def partition_day(name: str) -> int | None:
    """The UTC day of a partition's name; None for any other table (the default partition)."""
    m = _PARTITION_RE.fullmatch(name)
    if m is None:
        return None
    when = datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC)
    return int(when.timestamp()) // 86_400


def children(conn: Connection) -> list[str]:
    """Names of every partition of `telemetry` (day partitions and the default one)."""
    return [str(name) for (name,) in conn.execute(_CHILDREN).fetchall()]


def holder(conn: Connection, tables: Sequence[str], older_than_s: float) -> str | None:
    """Who has held a lock on one of `tables` for more than `older_than_s`, or None."""
    row = conn.execute(_HOLDER, [list(tables), older_than_s]).fetchone()
    if row is None:
        return None
    pid, app, state, age_s, query = row
    return f"pid {pid} ({app}, {state}, transaction open {age_s:.0f} s: {query!r})"


@contextmanager
def ddl(conn: Connection, what: str, tables: Sequence[str], timeout_s: float) -> Iterator[None]:
    """One transaction for one DDL step that gives up when its locks are not free: at
    once if a session has held one of `tables` for longer than `timeout_s`, else after
    `timeout_s` of waiting. Either way a StoreError saying who was in the way."""
    if tables:
        blocker = holder(conn, tables, timeout_s)
        if blocker is not None:
            msg = f"{what} deferred: {blocker} holds a lock on {', '.join(tables)}; retrying later"
            raise StoreError(msg)
    try:
        with conn.transaction():
            timeout = sql.Literal(f"{max(1, round(timeout_s * 1000))}ms")
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(timeout))
            yield
    except errors.LockNotAvailable as exc:
        blocker = holder(conn, tables or ["telemetry"], 0.0) or "another session"
        msg = f"{what} gave up after {timeout_s:g} s waiting for a lock held by {blocker}"
        raise StoreError(msg) from exc


def create_day(conn: Connection, day: int, timeout_s: float) -> int:
    """Give `day` a partition of its own, with the rows the default partition held for it;
    how many rows moved. A no-op if another process made it first."""
    name = partition_name(day)
    table = sql.Identifier(name)
    low, high = sql.Literal(day * DAY_MS), sql.Literal((day + 1) * DAY_MS)
    default = sql.Identifier(DEFAULT_PARTITION)
    in_day = sql.SQL("ts_ms >= {} AND ts_ms < {}").format(low, high)
    try:
        with ddl(conn, f"creating partition {name}", [DEFAULT_PARTITION], timeout_s):
            # The default partition first: no insert can land a row of this day in it
            # between the move and the ATTACH, which would then fail its check.
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(default))
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE telemetry INCLUDING ALL)").format(table))
            moved = conn.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} WHERE {}").format(
                    table, _COLUMNS, _COLUMNS, default, in_day
                )
            ).rowcount
            if moved:
                conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(default, in_day))
            conn.execute(
                sql.SQL(
                    "ALTER TABLE telemetry ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
                ).format(table, low, high)
            )
    except errors.DuplicateTable:
        return 0
    return moved


def prepare(
    conn: Connection, now_ms: int, first_day: int, ahead_days: int, timeout_s: float
) -> int:
    """Make the partitions of yesterday .. today + `ahead_days`, and of every day from
    `first_day` on whose rows wait in the default partition; how many were made. Stops at
    the first lock not granted in time (StoreError): the next pass goes on from there."""
    today = now_ms // DAY_MS
    last = today + ahead_days
    have = {d for d in map(partition_day, children(conn)) if d is not None}
    want = {day for day in range(today - 1, last + 1) if day >= first_day}
    waiting = conn.execute(
        sql.SQL("SELECT DISTINCT ts_ms / {day} FROM {} WHERE ts_ms >= %s AND ts_ms < %s").format(
            sql.Identifier(DEFAULT_PARTITION), day=sql.Literal(DAY_MS)
        ),
        [first_day * DAY_MS, (last + 1) * DAY_MS],
    ).fetchall()
    want.update(int(day) for (day,) in waiting)
    made = 0
    for day in sorted(want - have):
        create_day(conn, day, timeout_s)
        made += 1
    return made


def drop_before(conn: Connection, ts_ms: int, timeout_s: float) -> int:
    """Drop the day partitions wholly older than `ts_ms` and delete the default partition's
    rows older than it; partitions dropped plus rows deleted. StoreError (after what was
    done) when a lock is not free in time."""
    dropped = 0
    for name in children(conn):
        day = partition_day(name)
        if day is None or (day + 1) * DAY_MS > ts_ms:
            continue
        table = sql.Identifier(name)
        with ddl(conn, f"dropping partition {name}", ["telemetry", name], timeout_s):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        dropped += 1
    # Row deletes take ROW EXCLUSIVE: readers do not hold them off, so nothing to look for.
    with ddl(conn, "deleting expired rows of the default partition", [], timeout_s):
        cur = conn.execute(
            sql.SQL("DELETE FROM {} WHERE ts_ms < %s").format(sql.Identifier(DEFAULT_PARTITION)),
            [ts_ms],
        )
        dropped += cur.rowcount
    return dropped
