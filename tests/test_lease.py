"""One engine per database: a second `pledgewatch run` on the same SQLite file or the same
PostgreSQL schema refuses to start, naming the first; once the first is killed (-9), the
lease is free again. Real processes, a real Mosquitto, SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from simulator.harness.engine_process import EngineStartError
from tests.brokers import Broker, broker  # noqa: F401  # the fixture
from tests.conftest import PG_DSN
from tests.live import EngineProcess, engines  # noqa: F401  # the fixture

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/pw.db"
        return
    schema = f"lease_{time.time_ns()}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_DSN}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_a_second_engine_on_one_database_refuses_to_start_until_the_first_dies(
    broker: Broker,  # noqa: F811
    db_url: str,
    engines: Callable[[str], EngineProcess],  # noqa: F811
) -> None:
    first = engines(db_url)
    first.start()
    second = engines(db_url)
    with pytest.raises(EngineStartError, match="exited with status 1") as info:
        second.start()
    refusal = str(info.value)
    assert "pledgewatch: another pledgewatch engine holds the lease" in refusal
    assert "Traceback" not in refusal  # one line that says why, not a stack
    assert str(first.pid) in refusal  # the holder is named
    assert first.running()  # and keeps running
    first.kill9()  # the kernel drops the flock, the server the session's advisory lock
    second.start()
    health = second.health()
    assert health is not None
    assert health["engine_alive"] is True
    assert second.terminate() == 0
