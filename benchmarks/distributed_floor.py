"""The floor under `bench_distributed`'s worker: Faust alone, on the same records.

A Faust app with one agent on `pledgewatch.readings` that takes events the way the worker's
agents do (`take_events(max_batch, within=max_wait_s)`, `KafkaSettings`' defaults), with the
worker's consumer settings (raw serializers, the partitions, `earliest`, the short session
and rebalance timeouts, the benchmark's `--fetch-wait-ms`), and does nothing with a record
but count it and its value's bytes: no tables, no stages, no producer. Its CPU per record is
what Faust costs before pledgewatch does anything; the gap to the worker is pledgewatch's.

    python -m benchmarks.distributed_floor worker -l warn

runs it: Faust's own CLI owns the command line (and redirects stdout), so the parameters
come in `FLOOR_*` environment variables (`FloorSpec`) and the result goes to a JSON file.
Once it has counted `records` it writes the file and exits. `run_floor` does the whole run
on a fresh private tansu with the records pre-loaded, as the worker's run does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import faust
import orjson

from benchmarks.common import REPO, log, rate
from benchmarks.distributed_cluster import TANSU_FETCH_WAIT_MS, KafkaProbe, private_kafka
from engine.distributed.settings import READINGS, KafkaSettings, bootstrap_servers

APP_ID = "pledgewatch-floor"
WHAT = (
    "one Faust agent on pledgewatch.readings, take_events(max_batch, within=max_wait_s), "
    "counting records and value bytes; memory store, raw serializers, no tables, no producer"
)


class FloorError(RuntimeError):
    """The floor's app failed or did not count its records in time."""


@dataclass(frozen=True, slots=True)
class FloorSpec:
    """The app's parameters, passed to its process as `FLOOR_*` environment variables."""

    kafka_url: str
    records: int  # count this many, then report and exit
    out: Path  # the JSON result file
    data_dir: Path  # Faust's datadir (it makes one even with a memory store)
    partitions: int
    fetch_wait_ms: int

    def as_env(self) -> dict[str, str]:
        """The spec as environment variables."""
        return {
            "FLOOR_KAFKA_URL": self.kafka_url,
            "FLOOR_RECORDS": str(self.records),
            "FLOOR_OUT": str(self.out),
            "FLOOR_DATA_DIR": str(self.data_dir),
            "FLOOR_PARTITIONS": str(self.partitions),
            "FLOOR_FETCH_WAIT_MS": str(self.fetch_wait_ms),
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """The spec `as_env` wrote; FloorError naming what is missing."""
        missing = [k for k in cls("", 0, Path(), Path(), 0, 0).as_env() if k not in env]
        if missing:
            msg = f"set {', '.join(missing)} (benchmarks.distributed_floor.run_floor does)"
            raise FloorError(msg)
        return cls(
            kafka_url=env["FLOOR_KAFKA_URL"],
            records=int(env["FLOOR_RECORDS"]),
            out=Path(env["FLOOR_OUT"]),
            data_dir=Path(env["FLOOR_DATA_DIR"]),
            partitions=int(env["FLOOR_PARTITIONS"]),
            fetch_wait_ms=int(env["FLOOR_FETCH_WAIT_MS"]),
        )


@dataclass(slots=True)
class _Count:
    records: int = 0
    value_bytes: int = 0
    first_at: float = 0.0  # epoch s of the first batch
    started: float | None = None  # perf_counter at the first batch
    cpu0: float = 0.0  # process_time at the first batch


def _set_fetch_wait(app: faust.App, ms: int) -> int | None:
    """Set the consumer's fetch wait as the worker does (`Worker.fetch_wait_ms`: Faust 0.15.3
    hard-codes 1500 ms; its aiokafka fetcher reads the attribute at every fetch) and return
    it as it is; None before the consumer runs."""
    consumer: Any = app.consumer
    fetcher: Any = getattr(
        getattr(getattr(consumer, "_thread", None), "_consumer", None), "_fetcher", None
    )
    if not hasattr(fetcher, "_fetch_max_wait_ms"):  # not started yet
        return None
    fetcher._fetch_max_wait_ms = ms  # noqa: SLF001
    return int(fetcher._fetch_max_wait_ms)  # noqa: SLF001


def _report(spec: FloorSpec, app: faust.App, count: _Count) -> None:
    """Write the result file (whole, then renamed) and end the process at once: Faust's
    orderly shutdown (leaving the group, stopping the consumer thread) is not what is
    measured, and the parent waits for the exit."""
    seconds = time.perf_counter() - (count.started or 0.0)
    cpu_s = time.process_time() - count.cpu0
    doc = {
        "records": count.records,
        "value_bytes": count.value_bytes,
        "seconds": seconds,
        "cpu_s": cpu_s,
        "first_batch_at": count.first_at,
        "fetch_wait_ms": _set_fetch_wait(app, spec.fetch_wait_ms),
    }
    tmp = spec.out.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(doc))
    tmp.replace(spec.out)
    os._exit(0)


def floor_app(spec: FloorSpec) -> faust.App:
    """The counting app, configured as the worker's `_app` is where it matters to a consumer."""
    s = KafkaSettings(url=spec.kafka_url, partitions=spec.partitions)
    app = faust.App(
        APP_ID,
        broker=[f"kafka://{host}" for host in bootstrap_servers(spec.kafka_url).split(",")],
        store="memory://",
        datadir=str(spec.data_dir),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=s.partitions,
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=max(0.5, s.session_timeout_s / 3),
        broker_rebalance_timeout=s.session_timeout_s,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
    )
    readings = app.topic(READINGS, key_type=bytes, value_type=bytes, partitions=s.partitions)
    count = _Count()

    @app.agent(readings, name="floor")
    async def floor(stream: Any) -> None:
        async for events in stream.take_events(s.max_batch, within=s.max_wait_s):
            if count.started is None:
                count.first_at = time.time()
                count.started = time.perf_counter()
                count.cpu0 = time.process_time()
            count.records += len(events)
            count.value_bytes += sum(len(e.value) for e in events)
            if count.records >= spec.records:
                _report(spec, app, count)

    @app.timer(0.5)  # type: ignore[untyped-decorator]  # Faust's decorators are untyped
    async def fetch_wait() -> None:  # the worker's housekeeping sets it on the same beat
        _set_fetch_wait(app, spec.fetch_wait_ms)

    return app


def run_floor(work: Path, records: Sequence[tuple[bytes, bytes]], opts: Any) -> dict[str, Any]:
    """The floor app drains `records` pre-loaded into `pledgewatch.readings` on a fresh
    private tansu: from its first batch to the last record counted, its rate and its own
    CPU per record; FloorError if it fails or takes too long."""
    n = len(records)
    run_dir = work / "faust-floor"
    with private_kafka(run_dir) as kafka, KafkaProbe(kafka, opts.partitions) as probe:
        probe.create_topics()
        log(f"faust floor: writing {n} reading records to Kafka")
        preload_s = probe.produce([(READINGS, k, v) for k, v in records])
        spec = FloorSpec(
            kafka_url=kafka.url,
            records=n,
            out=run_dir / "floor.json",
            data_dir=run_dir / "floor-data",
            partitions=opts.partitions,
            fetch_wait_ms=TANSU_FETCH_WAIT_MS,
        )
        started = time.time()
        status = _run_app(spec, run_dir / "floor.log", opts.start_timeout_s + max(60.0, n / 500))
    got = orjson.loads(spec.out.read_bytes())
    want_bytes = sum(len(v) for _, v in records)
    problems = []
    if got["records"] != n:
        problems.append(f"{got['records']} records counted of {n}")
    if got["value_bytes"] != want_bytes:
        problems.append(f"{got['value_bytes']} value bytes counted of {want_bytes}")
    if status != 0:
        problems.append(f"exit status {status}")
    return {
        "what": WHAT,
        "readings": n,
        "preload_s": round(preload_s, 2),
        "start_to_first_batch_s": round(got["first_batch_at"] - started, 2),
        "seconds": round(got["seconds"], 3),
        "readings_per_s": round(rate(n, got["seconds"]), 1),
        "cpu_s": round(got["cpu_s"], 2),
        "cpu_us_per_record": round(got["cpu_s"] / n * 1e6, 1) if n else None,
        "fetch_wait_ms": got["fetch_wait_ms"],
        "check": "ok" if not problems else "WRONG: " + "; ".join(problems),
    }


def _run_app(spec: FloorSpec, log_path: Path, timeout_s: float) -> int:
    """Run the app to its end; its exit status, or FloorError with its log's end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLEDGEWATCH_", "FLOOR_"))}
    env |= spec.as_env() | {"PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "benchmarks.distributed_floor", "worker", "-l", "warn"]
    spec.out.unlink(missing_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603  # our own interpreter and module
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, process_group=0
        )
    try:
        status = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        msg = (
            f"the Faust floor did not count {spec.records} records within {timeout_s:.0f} s; "
            f"its log ({log_path}) ends:\n{_tail(log_path)}"
        )
        raise FloorError(msg) from None
    if not spec.out.exists():
        msg = (
            f"the Faust floor exited with status {status} and no result; "
            f"its log ({log_path}) ends:\n{_tail(log_path)}"
        )
        raise FloorError(msg)
    return status


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text("utf-8", "replace")[-chars:] if path.exists() else "(no log)"


if __name__ == "__main__":
    floor_app(FloorSpec.from_env(os.environ)).main()
