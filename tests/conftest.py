"""Shared fixtures. Stores: one SQLite file per test, one throwaway PostgreSQL schema per test,
on the shared server or on a private cluster that preloads TimescaleDB (`timescale_dsn`)."""

from __future__ import annotations

import base64
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings
from psycopg import sql

from engine.store.port import Store
from engine.store.postgres_store import PostgresStore
from engine.store.sqlite_store import SqliteStore
from simulator.harness.broker import free_port

# CI explores the same examples on every run (a red build is then a real regression, and
# reproducible); developers' runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

PG_DSN = os.environ.get("PLEDGEWATCH_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
# The TimescaleDB tests' server: PostgreSQL 15 from Debian's packages, with the build of
# ../shared/vendor/timescaledb installed into it by `scripts/services.sh timescaledb`.
PG15_BIN = Path("/usr/lib/postgresql/15/bin")
PG15_EXTENSIONS = Path("/usr/share/postgresql/15/extension")
TIMESCALE_VENDOR = Path(__file__).resolve().parents[2] / "shared" / "vendor" / "timescaledb"

OpenStore = Callable[[], Store]

# One webhook-secret key for the whole run, as an operator would set it: without it a
# PostgreSQL store would make `pledgewatch-secret.key` in the working directory (the
# checkout). tests/test_secrets_at_rest.py unsets it where it tests the key file rule.
TEST_SECRET_KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture(autouse=True, scope="session")
def _secret_key() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("PLEDGEWATCH_SECRET_KEY_FILE"):
            mp.setenv("PLEDGEWATCH_SECRET_KEY", TEST_SECRET_KEY)
        yield


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema name in the test database, dropped with everything in it afterwards."""
    try:
        admin = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_DSN}: {exc}\n"
            "Start it with `bash scripts/services.sh postgres` (scripts/test.sh does), "
            "or point PLEDGEWATCH_TEST_PG_DSN at a server with a `test` database.",
            pytrace=False,
        )
    name = f"pw_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        admin.close()


def with_search_path(dsn: str, schema: str) -> str:
    """`dsn` naming `schema` as its search_path: how a `--db-url` chooses the schema."""
    return f"{dsn}{'&' if '?' in dsn else '?'}options=-csearch_path%3D{schema}"


def timescale_missing() -> str | None:
    """What this machine lacks for a private TimescaleDB cluster; None when it has it all."""
    initdb = PG15_BIN / "initdb"
    if not initdb.is_file():
        return f"PostgreSQL 15 is not installed: no {initdb} (Debian's postgresql-15)"
    control = PG15_EXTENSIONS / "timescaledb.control"
    if not control.is_file():
        where = "is there" if TIMESCALE_VENDOR.is_dir() else "is absent here"
        return (
            f"TimescaleDB is not installed for PostgreSQL 15: no {control}. "
            f"`bash scripts/services.sh timescaledb` installs the build in {TIMESCALE_VENDOR} "
            f"(which {where})"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and no `postgres` OS user to run initdb (it refuses root)"
    return None


class PrivateCluster:
    """A throwaway PostgreSQL 15 cluster in a temporary directory, on a free port of
    127.0.0.1, preloading TimescaleDB; trust authentication, user `postgres`. As root, its
    programs run as the `postgres` OS user (initdb and the server refuse root)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pw-timescale-"))
        self.port = free_port()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    @property
    def dsn(self) -> str:
        """The `postgres` database as its superuser."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """initdb, then start the server and wait until it accepts connections."""
        data = str(self.dir / "data")
        self._run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--locale=C", "-E", "UTF8")
        # fsync off: a test cluster that is thrown away, never crashed. No background
        # workers: the tests run TimescaleDB's policy jobs themselves (`CALL run_job`), and
        # the scheduler, which runs a new job soon after it is added and may start one just
        # after `alter_job(scheduled => false)`, would race them for the same chunks.
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off "
            "-c timescaledb.max_background_workers=0 -c fsync=off"
        )
        log = str(self.dir / "server.log")
        self._run("pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o", options, "start")

    def stop(self) -> None:
        """Stop the server (disconnecting every client) and delete the directory."""
        try:
            if (self.dir / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        argv = [*self._as_owner, str(PG15_BIN / program), *args]
        done = subprocess.run(
            argv, cwd=self.dir, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            pytest.fail(
                f"{shlex.join(argv)} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}{tail}",
                pytrace=False,
            )


@pytest.fixture(scope="session")
def timescale_dsn() -> Iterator[str]:
    """A private cluster preloading TimescaleDB, started once for the session; its DSN.
    Skips, saying what is missing, where PostgreSQL 15 or the TimescaleDB build is not
    installed; fails if they are and the cluster does not start."""
    missing = timescale_missing()
    if missing is not None:
        pytest.skip(missing)
    cluster = PrivateCluster()
    try:
        cluster.start()
        yield cluster.dsn
    finally:
        cluster.stop()


@pytest.fixture
def timescale_schema(timescale_dsn: str) -> Iterator[str]:
    """A fresh schema name on the TimescaleDB cluster, dropped with everything in it afterwards."""
    name = f"pw_ts_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        with psycopg.connect(timescale_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("timescale", marks=pytest.mark.postgres),
    ]
)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Open a migrated store on this test's database; a second call reopens the same data.
    `timescale`: PostgreSQL with telemetry in a hypertable (compression and retention
    policies), on the private cluster."""
    opened: list[Store] = []
    if request.param == "sqlite":
        path = tmp_path / "pledgewatch.db"

        def make() -> Store:
            return SqliteStore(path)
    elif request.param == "postgres":
        schema = request.getfixturevalue("pg_schema")

        def make() -> Store:
            return PostgresStore(PG_DSN, schema=schema, max_size=4)
    else:
        dsn = request.getfixturevalue("timescale_dsn")
        ts_schema = request.getfixturevalue("timescale_schema")

        def make() -> Store:
            return PostgresStore(dsn, schema=ts_schema, max_size=4, timescale=True)

    def open_() -> Store:
        store = make()
        opened.append(store)
        store.migrate()
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: OpenStore) -> Store:
    """A migrated, empty store of each backend."""
    return open_store()
