"""What exact duplicates cost the telemetry writes, side by side in one run.

    python -m benchmarks.bench_store [--rows 200000] [--batch 1000] [--repeat 3]
                                     [--pg-dsn DSN] [--no-postgres] [--out-dir DIR]

Each method writes the same seeded gps rows (2,000 devices, batches of `--batch` like the
engine's) into a fresh store and reports rows/s, the median of `--repeat` runs:

- PostgreSQL, before: binary COPY into a day partition of the schema-1 table (no key);
- PostgreSQL, after: `PostgresStore.commit_batch` on schema 2, new rows (COPY under the
  unique key, in a savepoint), and the same batches again (every row a duplicate: COPY is
  refused, the rows are staged and inserted with ON CONFLICT DO NOTHING);
- PostgreSQL, staged always: what the write would cost if every batch took that path;
- SQLite, before and after: executemany INSERT without a key, `commit_batch` with it, and
  the batches again.

Every figure includes encoding the readings into rows. Rates on a shared machine swing:
compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from benchmarks.common import RESULTS_DIR, log, machine_info, write_json
from devices.readings import GpsFix
from engine.store.port import Batch
from engine.store.postgres_schema import TELEMETRY_TYPES
from engine.store.postgres_store import PostgresStore
from engine.store.rows import DAY_MS, TELEMETRY_COLUMNS, telemetry_row
from engine.store.sqlite_store import SqliteStore

T0 = 1_796_000_000_000 - 1_796_000_000_000 % DAY_MS  # a UTC midnight
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, TELEMETRY_COLUMNS))
_STAGED = sql.SQL(
    "INSERT INTO telemetry ({c}) SELECT {c} FROM stage ON CONFLICT DO NOTHING"
).format(c=_COLUMNS)

Method = Callable[[list[list[GpsFix]]], float]
BEFORE = {"postgres": "postgres_copy_no_key (before)", "sqlite": "sqlite_insert_no_key (before)"}


def workload(rows: int, batch: int) -> list[list[GpsFix]]:
    """Seeded gps fixes of 2,000 devices over one day, in engine-sized batches."""
    fixes = [
        GpsFix(f"trk-{i % 2000}", T0 + i * 10, 31.2 + i * 1e-7, 121.4, speed_kmh=i % 90, seq=i)
        for i in range(rows)
    ]
    return [fixes[i : i + batch] for i in range(0, rows, batch)]


def timed(write: Callable[[list[GpsFix]], object], batches: list[list[GpsFix]]) -> float:
    """Rows per second of `write` over every batch."""
    started = time.perf_counter()
    for b in batches:
        write(b)
    return sum(map(len, batches)) / (time.perf_counter() - started)


@contextmanager
def pg_store(dsn: str, target: int | None) -> Iterator[PostgresStore]:
    """A fresh schema migrated to `target`, with the day's partition made; dropped after."""
    schema = f"pw_bench_{uuid.uuid4().hex[:10]}"
    store = PostgresStore(dsn, schema=schema, max_size=2, timescale=False)
    try:
        store.migrate(target=target)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(schema, "telemetry_p"),
                    sql.Identifier(schema, "telemetry"),
                    sql.Literal(T0),
                    sql.Literal(T0 + DAY_MS),
                )
            )
        yield store
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def copy_rows(conn: psycopg.Connection, table: str, fixes: Sequence[GpsFix]) -> None:
    """Binary COPY of encoded readings, as the store's commit does."""
    query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), _COLUMNS
    )
    with conn.cursor() as cur, cur.copy(query) as copy:
        copy.set_types(TELEMETRY_TYPES)
        for r in fixes:
            copy.write_row(telemetry_row(r))


def pg_before(dsn: str) -> Method:
    def run(batches: list[list[GpsFix]]) -> float:
        with pg_store(dsn, 1) as store, psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(store.schema)))

            def write(fixes: list[GpsFix]) -> None:
                with conn.transaction():
                    copy_rows(conn, "telemetry", fixes)

            return timed(write, batches)

    return run


def pg_after(dsn: str, *, replay: bool) -> Method:
    def run(batches: list[list[GpsFix]]) -> float:
        with pg_store(dsn, None) as store:
            if replay:
                for b in batches:
                    store.commit_batch(Batch(T0, readings=b))
            return timed(lambda b: store.commit_batch(Batch(T0, readings=b)), batches)

    return run


def pg_staged_always(dsn: str) -> Method:
    def run(batches: list[list[GpsFix]]) -> float:
        with pg_store(dsn, None) as store, psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(store.schema)))

            def write(fixes: list[GpsFix]) -> None:
                with conn.transaction():
                    conn.execute("CREATE TEMP TABLE stage (LIKE telemetry) ON COMMIT DROP")
                    copy_rows(conn, "stage", fixes)
                    conn.execute(_STAGED)

            return timed(write, batches)

    return run


def sqlite_before(batches: list[list[GpsFix]]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "b.db")
        try:
            store.migrate(target=1)
            insert = "INSERT INTO telemetry ({}) VALUES ({})".format(  # noqa: S608  # constants
                ", ".join(TELEMETRY_COLUMNS), ", ".join("?" * len(TELEMETRY_COLUMNS))
            )

            def write(fixes: list[GpsFix]) -> None:
                rows = [telemetry_row(r) for r in fixes]
                with store._transaction() as conn:  # noqa: SLF001  # schema 1's plain write
                    conn.executemany(insert, rows)

            return timed(write, batches)
        finally:
            store.close()


def sqlite_after(*, replay: bool) -> Method:
    def run(batches: list[list[GpsFix]]) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            store = SqliteStore(Path(tmp) / "a.db")
            try:
                store.migrate()
                if replay:
                    for b in batches:
                        store.commit_batch(Batch(T0, readings=b))
                return timed(lambda b: store.commit_batch(Batch(T0, readings=b)), batches)
            finally:
                store.close()

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Run every method `--repeat` times, interleaved; print and write the medians."""
    parser = argparse.ArgumentParser(prog="bench_store", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg-dsn", default=PG_DSN)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    batches = workload(args.rows, args.batch)
    methods: dict[str, Method] = {}
    if not args.no_postgres:
        methods["postgres_copy_no_key (before)"] = pg_before(args.pg_dsn)
        methods["postgres_commit_new (after)"] = pg_after(args.pg_dsn, replay=False)
        methods["postgres_commit_replayed (after)"] = pg_after(args.pg_dsn, replay=True)
        methods["postgres_staged_always"] = pg_staged_always(args.pg_dsn)
    methods["sqlite_insert_no_key (before)"] = sqlite_before
    methods["sqlite_commit_new (after)"] = sqlite_after(replay=False)
    methods["sqlite_commit_replayed (after)"] = sqlite_after(replay=True)
    rates: dict[str, list[float]] = {name: [] for name in methods}
    for n in range(args.repeat):
        for name, method in methods.items():
            rates[name].append(method(batches))
            log(f"run {n + 1}: {name}: {rates[name][-1]:,.0f} rows/s")
    medians = {name: statistics.median(r) for name, r in rates.items()}
    print(f"{'method':36} {'rows/s':>10} {'vs before':>10}")
    for name, rate in medians.items():
        base = medians[BEFORE[name.split("_", 1)[0]]]
        print(f"{name:36} {rate:10,.0f} {rate / base:10.2f}")
    write_json(
        args.out_dir / "bench_store.json",
        {
            "rows": args.rows,
            "batch": args.batch,
            "repeat": args.repeat,
            "rows_per_s": rates,
            "median_rows_per_s": medians,
            "machine": machine_info(),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
