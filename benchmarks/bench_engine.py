"""`pledgewatch run` under load, side by side with a bare paho-mqtt subscriber, in one run.

    python -m benchmarks.bench_engine [--devices 10000] [--fences 10000] [--messages 200000]
                                      [--seed S] [--db sqlite|postgres] [--quick]

Starts a private Mosquitto (from deploy/mosquitto.conf) and `pledgewatch run` as a
subprocess, loads the fences and loans through its API, then, with the same publisher
processes feeding each consumer in turn: (1) single-reading QoS 1 messages, live and as a
drain of a queued session, into a bare paho subscriber and into the engine; (2) 50-reading
array payloads; (3) publish-to-webhook latency at a paced rate; (4) RSS per tracked device,
also at 50k devices on a second engine. Every count is checked before a rate is reported.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS_DIR,
    exit_status,
    fmt_rate,
    log,
    machine_info,
    mosquitto_version,
    rate,
    work_dir,
    write_json,
)
from benchmarks.engine_bare import run_bare, subscribe_worker
from benchmarks.engine_fold import compare_fold, fold_report, live_batches
from benchmarks.engine_latency import run_latency
from benchmarks.engine_memory import run_memory
from benchmarks.engine_profile import profile_engine
from benchmarks.engine_publishers import HelperPool, publish_worker
from benchmarks.engine_report import TARGET_ARRAY_RPS, TARGET_P99_MS, TARGET_RATIO, ratios, report
from benchmarks.engine_runs import ThroughputRun, rounded
from benchmarks.engine_side import (
    API_TIMEOUT_S,
    START_TIMEOUT_S,
    database,
    engine_process,
    load,
    run_engine,
)
from benchmarks.engine_workload import Sizes, Workload, as_arrays, make_fleet, read_messages, sizes
from benchmarks.replay_workload import T0_MS
from simulator.harness.broker import PrivateBroker
from simulator.harness.prometheus import ALERTS, DELIVERIES, DEVICES, READINGS

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"

WORKERS: dict[str, Callable[[Sequence[str]], int]] = {
    "_publish": publish_worker,
    "_subscribe": subscribe_worker,
}
"""The helper processes: `python -m benchmarks.bench_engine _publish|_subscribe ...`."""


def fast_path_env(args: argparse.Namespace) -> dict[str, str]:
    """The engine's environment for `--fast-path`."""
    return {} if args.fast_path == "on" else {"PLEDGEWATCH_FAST_PATH": "0"}


def measure(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], list[ThroughputRun]]:
    """Generate, start, measure every part, check; the JSON document."""
    sz = sizes(args)
    now_ms = round(time.time() * 1000)
    checks: dict[str, str] = {}

    # The fleet of the throughput runs: single messages live, then drained, then arrays.
    single_steps = math.ceil(sz.messages / sz.devices)
    array_fixes = sz.array_size * sz.arrays_per_device
    fixes = 2 * single_steps + array_fixes + 1
    log(f"generating the fleet: {sz.devices} devices x {fixes} fixes, {sz.fences} fences")
    fleet = make_fleet(
        work / "fleet", args.seed, sz.devices, sz.fences, fixes, 30, 0.6, extras=True
    )
    span_ms = round(fleet.event_span_s * 1000)
    # Event times end an hour before now: in the past, as replayed history would be.
    msgs = read_messages(fleet.readings, now_ms - 3_600_000 - span_ms - T0_MS)
    live = Workload("single_live", "live, 1 reading/msg", msgs[: sz.messages])
    drain = Workload("single_drain", "drain, 1 reading/msg", msgs[sz.messages : 2 * sz.messages])
    arrays = Workload(
        "arrays_live",
        f"live, {sz.array_size} readings/msg",
        as_arrays(msgs[2 * sz.messages :], sz.array_size),
    )
    del msgs
    lat_devices = sz.latency_rate * sz.latency_interval_s
    lat_fixes = 1 + max(1, math.ceil(sz.latency_s / sz.latency_interval_s))
    log(f"generating the latency fleet: {lat_devices} devices x {lat_fixes} fixes")
    lat_fleet = make_fleet(
        work / "latency", args.seed, lat_devices, sz.fences, lat_fixes, 5, 0.6, extras=False
    )
    if lat_fleet.fences.read_bytes() != fleet.fences.read_bytes():
        msg = "the latency fleet's fences differ from the engine's: same seed and count needed"
        raise RuntimeError(msg)

    broker = PrivateBroker(work)
    broker.start()
    pool = HelperPool(work, broker, args.publishers)
    runs: list[ThroughputRun] = []
    doc: dict[str, Any] = {}
    try:
        with (
            database(args, work, "main") as (db_url, count_rows),
            engine_process(broker, db_url, work, "pw-bench", fast_path_env(args)) as engine,
        ):
            log("starting pledgewatch run")
            engine.start(START_TIMEOUT_S)
            with engine.client(API_TIMEOUT_S) as http:
                rss_started = engine.rss()
                log(f"loading {sz.fences} fences and {sz.devices} loans through the API")
                setup = load(http, fleet.fences, fleet.loans)
                time.sleep(1.0)  # the engine takes API changes between batches
                rss_loaded = engine.rss()
                memory_a: list[dict[str, object]] = [
                    {"state": "started (empty store)", "devices": 0, "rss_bytes": rss_started},
                    {"state": "fences and loans loaded", "devices": 0, "rss_bytes": rss_loaded},
                ]
                fixes_so_far = 0
                for w, drained in ((live, False), (drain, True), (arrays, False)):
                    how = "drain" if drained else "live"
                    log(f"{w.label}: bare paho subscriber, {len(w.messages)} messages ({how})")
                    bare = run_bare(pool, w, drained, engine)
                    runs.append(bare)
                    log(f"{w.label}: pledgewatch run, {len(w.messages)} messages ({how})")
                    run = run_engine(pool, w, drained, engine, http)
                    runs.append(run)
                    log(
                        f"  bare {fmt_rate(bare.readings_per_s)} vs engine "
                        f"{fmt_rate(run.readings_per_s)} readings/s ({run.check})"
                    )
                    fixes_so_far += round(w.readings / sz.devices)
                    memory_a.append(
                        {
                            "state": f"after {w.label}",
                            "devices": int(engine.metrics(http).total(DEVICES)),
                            "readings_per_device": fixes_so_far,
                            "rss_bytes": engine.rss(),
                        }
                    )
                latency = run_latency(
                    pool, engine, http, fleet.fences, lat_fleet, sz.latency_interval_s
                )
                log(
                    f"latency: p99 {latency['latency_ms']['p99']} ms over "  # type: ignore[index]  # our dict
                    f"{latency['alerts_received']} webhooks ({latency['check']})"
                )
                final = engine.metrics(http)
            peak = engine.peak_rss()
            status = engine.terminate()
            published = sum(r.readings for r in runs if r.consumer == "engine")
            published += int(latency["devices"]) + int(latency["readings_paced"])  # type: ignore[call-overload]  # ints we put there
            stored = count_rows("telemetry")
            checks["engine_exit_status"] = "ok" if status == 0 else f"WRONG: exit status {status}"
            checks["telemetry_rows"] = (
                "ok" if stored == published else f"WRONG: {stored} rows, {published} published"
            )
            tail = engine.log_tail(200_000)
            checks["engine_log"] = (
                "ok"
                if "Traceback" not in tail and " ERROR " not in tail
                else "WRONG: errors in the log"
            )
            doc["setup"] = {k: rounded(v, 3) for k, v in setup.items()}
            doc["engine_totals"] = {
                "readings": final.total(READINGS),
                "alerts_by_type": final.by_label(ALERTS),
                "deliveries": final.by_label(DELIVERIES),
                "telemetry_rows": stored,
                "peak_rss_bytes": peak,
            }
            doc["latency"] = latency
        log(f"memory: a second engine, {sz.mem_fences} fences, {sz.mem_devices} devices, no loans")
        doc["memory_b"] = run_memory(pool, args, sz, now_ms)
    finally:
        pool.kill_children()
        broker.stop()
    if args.fold:
        log("Engine.process with the batch step and the fold alone, the same messages")
        doc["fold"] = compare_fold(
            args, work, fleet, sz.devices, live, arrays, live_batches(runs, arrays)
        )
        checks["fold"] = doc["fold"]["check"]
    if args.profile:
        log("profile: Engine.process in this process, the same messages, timed then cProfiled")
        lat = doc["latency"]["counters"]
        paced_batch = max(1, round(rate(int(lat["readings"]), lat["batches_over_1ms"])))
        doc["profile"] = profile_engine(
            args, work, fleet, sz.devices, live, arrays, runs, paced_batch
        )
    doc["memory_a"] = memory_a
    doc["sizes"] = sz
    doc["checks"] = checks
    return doc, runs


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_engine", description=__doc__)
    p.add_argument("--devices", type=int, help="devices (and loans) of the throughput runs")
    p.add_argument("--fences", type=int)
    p.add_argument("--messages", type=int, help="single-reading messages per run")
    p.add_argument("--seed", type=int, default=20261130)
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--pg-dsn", default=DEFAULT_PG_DSN, help="with --db postgres: a scratch DB")
    p.add_argument("--quick", action="store_true", help="small sizes, ~20 s (the smoke test)")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--array-size", type=int, default=50, help="readings per array payload")
    p.add_argument("--arrays-per-device", type=int)
    p.add_argument("--latency-rate", type=int, help="readings/s of the latency run")
    p.add_argument("--latency-s", type=int, help="seconds of the latency run")
    p.add_argument("--mem-devices", type=int)
    p.add_argument("--mem-fences", type=int)
    p.add_argument("--mem-fixes", type=int, help="readings per device, first two memory rounds")
    p.add_argument("--mem-more-fixes", type=int, help="readings per device, third round")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip cProfile")
    p.add_argument(
        "--no-fold", dest="fold", action="store_false", help="skip the batch step vs fold run"
    )
    p.add_argument(
        "--fast-path",
        choices=("on", "off"),
        default="on",
        help="the batch step of the engine under load (off: PLEDGEWATCH_FAST_PATH=0)",
    )
    p.add_argument("--profile-readings", type=int, help="readings per timed and profiled pass")
    p.add_argument("--work-dir", type=Path, help="keep logs and files here (default: temp)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write `<out-dir>/bench_engine.json`."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in WORKERS:
        return WORKERS[args_list[0]](args_list[1:])
    args = parse_args(args_list)
    started = time.perf_counter()
    info = machine_info()
    with ExitStack() as stack:
        work = work_dir(stack, args.work_dir, "pw-bench-")
        doc, runs = measure(args, work)
    sz: Sizes = doc["sizes"]
    checks: dict[str, str] = {f"{r.workload}/{r.consumer}": r.check for r in runs}
    checks["latency"] = doc["latency"]["check"]
    checks["memory_b"] = doc["memory_b"]["check"]
    checks.update(doc["checks"])
    doc["checks"] = checks
    doc["checks_passed"] = all(v == "ok" for v in checks.values())
    doc["machine"] = info
    doc["mosquitto"] = mosquitto_version()
    text = report(doc, runs, args)
    if "fold" in doc:
        text += "\n\n" + "\n".join(fold_report(doc["fold"]))
    print(text)
    out: dict[str, object] = {
        "benchmark": "bench_engine",
        "checks_passed": doc["checks_passed"],
        "machine": info,
        "mosquitto": doc["mosquitto"],
        "parameters": {
            **dataclasses.asdict(sz),
            "seed": args.seed,
            "db": args.db,
            "publishers": args.publishers,
            "quick": args.quick,
            "engine": "pledgewatch run, defaults (max_batch 1000, Receive Maximum 2000)",
            "fast_path": args.fast_path,
        },
        "setup": doc["setup"],
        "runs": [r.as_json() for r in runs],
        "ratios": ratios(runs),
        "targets": {
            "single_live_engine_over_bare_min": TARGET_RATIO,
            "arrays_readings_per_s_min": TARGET_ARRAY_RPS,
            "latency_p99_ms_max": TARGET_P99_MS,
        },
        "latency": doc["latency"],
        "memory": {"engine_a": doc["memory_a"], "engine_b": doc["memory_b"]},
        "engine_totals": doc["engine_totals"],
        "profile": doc.get("profile"),
        "fold": doc.get("fold"),
        "checks": checks,
        "table": text,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    write_json(args.out_dir / "bench_engine.json", out)
    return exit_status(doc["checks_passed"])


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the engines, helpers and broker are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
