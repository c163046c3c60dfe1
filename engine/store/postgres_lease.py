"""The engine lease on PostgreSQL: a session-level advisory lock, held for the engine's life.

One connection of its own (not from the pool) takes `pg_try_advisory_lock` on a key
derived from the schema, within the database. The server drops the lock with the session:
at `release()`, when the process dies (kill -9 included: the kernel closes the socket), and
when the host vanishes (server-side TCP keepalives set on the session end it within ~30 s).
The session's `application_name` names the engine's pid and host, so a second engine can
say who holds the lease.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

import psycopg
from psycopg.rows import TupleRow

from engine.store.port import LeaseError

_NAMESPACE = 0x70770001  # the first key: pledgewatch's engine lease
_RETRY_S = 0.2

_HOLDER = (
    "SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local'), "
    "a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid = %s::oid AND l.objid = %s::oid"
)


def _int4(value: int) -> int:
    """`value` as PostgreSQL's signed int4."""
    return value - 2**32 if value >= 2**31 else value


def lease_key(schema: str) -> tuple[int, int]:
    """The two int4 keys of the advisory lock of one schema's engine lease."""
    digest = int.from_bytes(hashlib.sha256(f"pledgewatch:{schema}".encode()).digest()[:4])
    return _int4(_NAMESPACE), _int4(digest)


def holder_name(dsn: str) -> str:
    """How this process names itself as the lease holder: the DSN's `application_name` (or
    `pledgewatch`), then `engine pid=… host=…`."""
    try:
        base = psycopg.conninfo.conninfo_to_dict(dsn).get("application_name") or "pledgewatch"
    except psycopg.ProgrammingError:
        base = "pledgewatch"
    return f"{base} engine pid={os.getpid()} host={socket.gethostname()}"[:63]


class PostgresLease:
    """The lease of one schema, on a connection of its own."""

    def __init__(self, dsn: str, schema: str, connect_timeout_s: float = 10.0) -> None:
        self.dsn = dsn
        self.schema = schema
        self.key = lease_key(schema)
        self._timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[TupleRow] | None = None
        self._wanted = False  # acquired once: `check` keeps it, `release` ends it

    @property
    def held(self) -> bool:
        """Whether this process holds the lease (as far as it knows)."""
        return self._conn is not None

    def acquire(self, wait_s: float = 5.0) -> None:
        """Take the lease, waiting up to `wait_s` (a killed holder's session may take a
        moment to end); LeaseError naming the holder otherwise."""
        if self._conn is not None:
            return
        conn = psycopg.connect(
            self.dsn,
            autocommit=True,
            application_name=holder_name(self.dsn),
            connect_timeout=max(1, round(self._timeout_s)),
            # This side notices a vanished server as soon, rather than hang a check.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            taken = self._try(conn, wait_s)
        except BaseException:
            conn.close()
            raise
        if not taken:
            refusal = self._refusal(conn)
            conn.close()
            raise LeaseError(refusal)
        self._conn, self._wanted = conn, True

    def _try(self, conn: psycopg.Connection[TupleRow], wait_s: float) -> bool:
        """Try for the lock for up to `wait_s`; whether it was taken."""
        # The server ends this session, and frees the lease, once the host is gone.
        conn.execute(
            "SELECT set_config('tcp_keepalives_idle', '10', false), "
            "set_config('tcp_keepalives_interval', '5', false), "
            "set_config('tcp_keepalives_count', '3', false), "
            "set_config('idle_session_timeout', '0', false), "
            "set_config('statement_timeout', '0', false)"
        )
        deadline = time.monotonic() + wait_s
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self.key).fetchone()
            if row is not None and row[0]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_RETRY_S)

    def _refusal(self, conn: psycopg.Connection[TupleRow]) -> str:
        row = conn.execute(_HOLDER, [self.key[0] % 2**32, self.key[1] % 2**32]).fetchone()
        if row is None:
            who = "a session this database role cannot see"
        else:
            pid, app, addr, since = row
            who = f"{app or 'a session'} (backend pid {pid}, from {addr}, connected {since:%c})"
        return (
            f"another pledgewatch engine holds the lease on PostgreSQL schema {self.schema!r}: "
            f"{who}. Two engines on one database store every reading and send every webhook "
            "twice: stop the other engine first, or give this one another database or schema"
        )

    def check(self) -> None:
        """Confirm the lease: if its session was lost (server restart, network), take it
        again; LeaseError if another engine took it meanwhile."""
        if not self._wanted:
            return
        conn = self._conn
        if conn is not None:
            try:
                conn.execute("SELECT 1")
            except psycopg.Error:
                conn.close()
                self._conn = None
            else:
                return
        try:
            self.acquire(wait_s=0.0)
        except LeaseError as exc:
            msg = f"lost the engine lease: {exc}"
            raise LeaseError(msg) from exc
        except psycopg.Error:
            return  # the server is away; the next check takes the lease again

    def release(self) -> None:
        """Give the lease up (the session ends)."""
        conn, self._conn, self._wanted = self._conn, None, False
        if conn is not None:
            conn.close()
