"""The engine under test: `pledgewatch run` through the harness's launcher, a fresh store for
each engine, its fences and loans through the API, and its throughput run."""

from __future__ import annotations

import argparse
import math
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import orjson

from benchmarks.common import REPO, rate
from benchmarks.engine_publishers import HelperPool
from benchmarks.engine_runs import (
    CpuMark,
    ThroughputRun,
    counter_delta,
    cpu_split,
    engine_check,
    rounded,
)
from benchmarks.engine_workload import Workload
from benchmarks.replay_methods import pledgewatch_command
from simulator.harness.api_client import import_items
from simulator.harness.broker import PrivateBroker
from simulator.harness.engine_process import EngineProcess

TOKEN = "bench-token"  # noqa: S105  # a throwaway token for a private engine on loopback
START_TIMEOUT_S = 120.0
API_TIMEOUT_S = 60.0  # the imports of 10k fences or loans take seconds


def engine_process(
    broker: PrivateBroker,
    db_url: str,
    work: Path,
    client_id: str,
    env: Mapping[str, str] | None = None,
) -> EngineProcess:
    """`pledgewatch run` (the installed script) on `broker` and `db_url`, not started yet;
    its log is `<work>/<client_id>.log`; `env` adds to its environment."""
    return EngineProcess(
        broker.url,
        db_url,
        token=TOKEN,
        log_path=work / f"{client_id}.log",
        client_id=client_id,
        cwd=REPO,
        command=pledgewatch_command(),
        env=env,
    )


@contextmanager
def database(
    args: argparse.Namespace, work: Path, name: str
) -> Iterator[tuple[str, Callable[[str], int]]]:
    """A fresh database for one engine: its URL and a row counter (`table` -> count(*))."""
    if args.db == "sqlite":
        path = work / f"{name}.db"

        def count(table_name: str) -> int:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                return int(conn.execute(f"SELECT count(*) FROM {table_name}").fetchone()[0])  # noqa: S608  # our table names

        yield f"sqlite:///{path}", count
        return
    import psycopg
    from psycopg import sql

    schema = f"pw_bench_{name}_{uuid.uuid4().hex[:8]}".replace("-", "_")
    sep = "&" if "?" in args.pg_dsn else "?"
    url = f"{args.pg_dsn}{sep}options=-csearch_path%3D{schema}"

    def pg_count(table_name: str) -> int:
        with psycopg.connect(args.pg_dsn) as conn:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table_name)
                )
            ).fetchone()
            return int(row[0]) if row else 0

    try:
        yield url, pg_count
    finally:
        with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def load(http: httpx.Client, fences_path: Path, loans_path: Path | None) -> dict[str, float]:
    """Fences through `POST /v1/fences:import`, loans through `POST /v1/loans:import`."""
    features = orjson.loads(fences_path.read_bytes())["features"]
    started = time.perf_counter()
    import_items(http, "fences", features)
    fences_s = time.perf_counter() - started
    started = time.perf_counter()
    loans = orjson.loads(loans_path.read_bytes()) if loans_path is not None else []
    import_items(http, "loans", loans)
    loans_s = time.perf_counter() - started
    return {
        "fences": len(features),
        "fences_s": fences_s,
        "loans": len(loans),
        "loans_s": loans_s,
    }


def run_engine(
    pool: HelperPool, w: Workload, drain: bool, engine: EngineProcess, http: httpx.Client
) -> ThroughputRun:
    """The engine takes the workload: from the first publish (or, draining, from SIGCONT)
    to every reading handled, as `/metrics` counts them (scraped through `http`)."""
    run = ThroughputRun(w.name, "engine", len(w.messages), w.readings)
    before = engine.metrics(http)
    pubs = pool.start_publishers(w.messages, f"{w.name}-engine")
    pool.ready(pubs)
    if drain:
        engine.send_signal(signal.SIGSTOP)  # it takes nothing; the broker queues its session
    mark0 = CpuMark.take(engine, pool.broker)
    pool.go(pubs)
    started = math.nan
    try:
        if drain:
            results, pub_check = pool.finish_publishers(pubs)
            started = time.time()
            engine.send_signal(signal.SIGCONT)
        ended, after = engine.wait_handled(before.handled() + w.readings, http)
    finally:
        if drain:
            engine.send_signal(signal.SIGCONT)
    mark1 = CpuMark.take(engine, pool.broker)
    if not drain:
        results, pub_check = pool.finish_publishers(pubs)
        started = min(r["first_s"] for r in results)
    run.seconds = ended - started
    run.publish_s = max(r["last_ack_s"] for r in results) - min(r["first_s"] for r in results)
    run.consumer_cpu_s = mark1.engine - mark0.engine
    pub_cpu = sum(float(r["cpu_s"]) for r in results)
    delta = counter_delta(before, after)
    run.extra = {
        "cpu": cpu_split(mark0, mark1, pub_cpu),
        "publishers_cpu_s": round(pub_cpu, 2),
        "counters": delta,
        "readings_per_batch": rounded(rate(int(delta["readings"]), delta["batches_over_1ms"]), 1),
        "engine_busy_in_batches": rounded(delta["batch_seconds"] / run.seconds, 3),
        "rss_after_bytes": engine.rss(),
    }
    run.check = engine_check(delta, w.readings, pub_check)
    return run
