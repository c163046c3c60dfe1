"""The distributed benchmark's local-engine side (`pledgewatch run` draining arrays, and the
bare paho subscriber the bridge is set against), the per-unit figures the sizing takes, and
the printed report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.common import fmt_rate, fmt_ratio, table
from benchmarks.distributed_cluster import TANSU_FETCH_WAIT_MS
from benchmarks.distributed_profile import profile_lines
from benchmarks.distributed_sizing import Measured, sizing_lines
from benchmarks.engine_bare import run_bare
from benchmarks.engine_publishers import HelperPool
from benchmarks.engine_side import API_TIMEOUT_S, START_TIMEOUT_S, engine_process, load, run_engine
from benchmarks.engine_workload import Workload
from benchmarks.replay_workload import Inputs
from engine.distributed.buckets import BUCKETS
from engine.distributed.settings import ALERTS, LOAN_EVENTS, READINGS
from simulator.harness.broker import PrivateBroker
from simulator.harness.prometheus import ALERTS as ALERTS_TOTAL

TARGET_PER_WORKER = 8000.0
"""Issue 13's target: readings/s per worker with batching, here."""


def local_run(
    broker: PrivateBroker,
    pool: HelperPool,
    fleet: Inputs,
    arrays: Workload,
    work: Path,
    args: argparse.Namespace,
    single: Workload,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`pledgewatch run` (SQLite, the fleet loaded through its API) drains the readings as
    arrays queued at the broker for its stopped session; then the bare paho subscriber
    drains the bridge's single-reading messages on the same broker."""
    engine = engine_process(broker, f"sqlite:///{work / 'local-run.db'}", work, "pw-local")
    if not args.lending:
        engine.args.append("--no-lending")
    with engine:
        engine.start(START_TIMEOUT_S)
        with engine.client(API_TIMEOUT_S) as http:
            setup = load(http, fleet.fences, fleet.loans)
            time.sleep(1.0)  # the engine takes API changes between batches
            before = engine.metrics(http).by_label(ALERTS_TOTAL)
            run = run_engine(pool, arrays, drain=True, engine=engine, http=http)
            after = engine.metrics(http).by_label(ALERTS_TOTAL)
            bare = run_bare(pool, single, drain=True, engine=engine)
        status = engine.terminate()
    doc = run.as_json() | {
        "setup": {k: round(v, 2) for k, v in setup.items()},
        "alerts_by_type": {k: v - before.get(k, 0.0) for k, v in after.items()},
        "exit_status": status,
    }
    if status != 0 and doc["check"] == "ok":
        doc["check"] = f"WRONG: exit status {status}"
    return doc, bare.as_json()


def _row_bytes_per_car(worker: dict[str, Any], cars: int) -> dict[str, float]:
    rows: dict[str, dict[str, float]] = worker["table_rows"]
    return {space: r["stored_bytes"] / max(1, cars) for space, r in sorted(rows.items())}


def measured_for_sizing(doc: dict[str, Any], size_by: str) -> Measured:
    """The per-unit figures of this run the sizing is derived from: a worker's rate as its
    wall-clock rate here (`wall`) or per second of its own CPU (`cpu`: what it does with a
    core to itself, which a shared 2-core machine cannot give it)."""
    w = doc["worker"]
    topics = w["topics"]
    per_worker = w["readings_per_worker_cpu_s"] if size_by == "cpu" else w["readings_per_s"]
    return Measured(
        worker_basis=size_by,
        worker_readings_per_s=float(per_worker),
        bridge_readings_per_s=float(doc["bridge_batched"]["readings_per_s"]),
        reading_bytes=float(topics[READINGS]["mean_record_bytes"]),
        loan_events_per_reading=float(w["loan_events_per_reading"]),
        loan_event_records_per_reading=topics[LOAN_EVENTS]["records"] / max(1, w["readings"]),
        loan_event_bytes=(topics[LOAN_EVENTS]["key_bytes"] + topics[LOAN_EVENTS]["value_bytes"])
        / max(1.0, float(w["loan_events"])),
        alerts_per_reading=float(w["alerts_per_reading"]),
        alert_bytes=float(topics[ALERTS]["mean_record_bytes"]),
        row_bytes=_row_bytes_per_car(w, doc["sizes"].devices),
    )


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def worker_bound(doc: dict[str, Any]) -> dict[str, float] | None:
    """The best a worker could reach here, an estimate from this run's numbers: Faust's CPU
    per record (the floor) for each reading and each alert record the outbox agent drains,
    plus the local engine's own CPU per reading (replay's, which also decodes the lines and
    starts up: a little more work than the worker's, so the bound is a little low). None if
    a figure is missing."""
    floor, w, rp = doc.get("faust_floor"), doc["worker"], doc["replay"]
    if not floor or floor.get("cpu_us_per_record") is None or rp["cpu_us_per_reading"] is None:
        return None
    faust_us = float(floor["cpu_us_per_record"])
    alerts = float(w["alerts_per_reading"] or 0.0)
    us = faust_us * (1 + alerts) + float(rp["cpu_us_per_reading"])
    return {
        "faust_cpu_us_per_record": faust_us,
        "alert_records_per_reading": alerts,
        "replay_cpu_us_per_reading": float(rp["cpu_us_per_reading"]),
        "cpu_us_per_reading": round(us, 1),
        "readings_per_s": round(1e6 / us, 1) if us > 0 else 0.0,
    }


def throughput_lines(doc: dict[str, Any]) -> list[str]:
    """The throughput table: the worker against the local engine, the bridge against paho."""
    w, rp, run = doc["worker"], doc["replay"], doc["local_run"]
    bridge, bare, floor = doc["bridge"], doc["bare"], doc["faust_floor"]
    replay_rate = rp["readings_per_s"]

    def row(
        name: str, readings: int, seconds: float, rps: float | None, us: float | None, other: Any
    ) -> list[str]:
        ratio = fmt_ratio(rps / replay_rate) if rps and replay_rate else "-"
        return [name, f"{readings:,}", _num(seconds, 2), fmt_rate(rps), _num(us), ratio, other]

    rows = [
        row(
            "worker: first record to all drained",
            w["readings"],
            w["seconds"],
            w["readings_per_s"],
            w["worker_cpu_us_per_reading"],
            w["cpu"]["others_cpu_s"],
        ),
        row(
            "worker: readings phase only",
            w["readings"],
            w["readings_s"],
            w["readings_phase_per_s"],
            None,
            w["cpu_readings_phase"]["others_cpu_s"],
        ),
        row(
            "Faust alone: trivial agent, same records",
            floor["readings"],
            floor["seconds"],
            floor["readings_per_s"],
            floor["cpu_us_per_record"],
            "-",
        ),
        row(
            "pledgewatch replay (CLI, whole process)",
            rp["readings"],
            rp["seconds"],
            replay_rate,
            rp["cpu_us_per_reading"],
            "-",
        ),
        row(
            f"pledgewatch run, drain, {doc['sizes'].fixes}/msg",
            run["readings"],
            run["seconds"],
            run["readings_per_s"],
            run["consumer_cpu_us_per_reading"],
            run["cpu"]["others_cpu_s"],
        ),
        row(
            f"bridge: MQTT -> Kafka, drain, 1/msg, batch {bridge['producer_batch_bytes']}",
            bridge["readings"],
            bridge["seconds"],
            bridge["readings_per_s"],
            bridge["bridge_cpu_us_per_reading"],
            bridge["cpu"]["others_cpu_s"],
        ),
        row(
            "bridge, batched (16 KiB, as on Kafka)",
            doc["bridge_batched"]["readings"],
            doc["bridge_batched"]["seconds"],
            doc["bridge_batched"]["readings_per_s"],
            doc["bridge_batched"]["bridge_cpu_us_per_reading"],
            doc["bridge_batched"]["cpu"]["others_cpu_s"],
        ),
        row(
            "bare paho subscriber, drain, 1/msg",
            bare["readings"],
            bare["seconds"],
            bare["readings_per_s"],
            bare["consumer_cpu_us_per_reading"],
            bare["cpu"]["others_cpu_s"],
        ),
    ]
    header = [
        "side",
        "readings",
        "seconds",
        "readings/s",
        "cpu us/rdg",
        "vs replay",
        "others' cpu s",
    ]
    target = TARGET_PER_WORKER
    verdict = "MET" if w["readings_per_s"] >= target else "NOT MET"
    cpu = w["cpu"]
    vs_run = fmt_ratio(w["readings_per_s"] / run["readings_per_s"])
    batched = doc["bridge_batched"]
    vs_bare = (
        f"{fmt_ratio(bridge['readings_per_s'] / bare['readings_per_s'])} batch "
        f"{bridge['producer_batch_bytes']}, "
        f"{fmt_ratio(batched['readings_per_s'] / bare['readings_per_s'])} batched"
    )
    fewer = fmt_ratio(w["readings"] / max(1.0, w["table_writes"]))
    bound = doc["partitions"] * BUCKETS * max(1, len(w["table_rows"]))
    return [
        table(header, rows),
        "",
        f"worker vs pledgewatch run: {vs_run} the rate; bridge vs bare paho: {vs_bare} (the "
        "bridge's best of "
        + ", ".join(fmt_rate(r["readings_per_s"]) for r in bridge.get("rounds", []))
        + " and "
        + ", ".join(fmt_rate(r["readings_per_s"]) for r in batched.get("rounds", []))
        + " readings/s)",
        (
            f"target >= {target:,.0f} readings/s per worker: {verdict} "
            f"({w['readings_per_s']:,.0f}/s; "
            f"{w['readings_per_worker_cpu_s']:,.0f} per worker-CPU-second)"
        ),
        bound_line(doc),
        (
            f"during the worker's run: worker {cpu['process_cpu_s']} s CPU, "
            f"tansu {cpu['kafka_cpu_s']} s, machine busy {cpu['machine_busy_s']} s "
            f"of {2 * cpu['wall_s']:.0f} core-s, others {cpu['others_cpu_s']} s"
        ),
        (
            f"start to ready {w['start_to_ready_s']} s (not timed), peak RSS "
            f"{w['worker_peak_rss_bytes'] / 2**20:,.0f} MiB; per reading: "
            f"{w['loan_events_per_reading']} loan events, {w['alerts_per_reading']} alerts, "
            f"{w['table_writes_per_reading']} table writes ({w['table_writes']:,.0f} bucket "
            f"writes in {w['checkpoints']:.0f} checkpoints, {w['table_writes_per_s']:,.0f}/s: "
            f"{fewer} fewer writes than readings; at most {bound:,} per checkpoint whatever "
            "the rate); "
            f"changelogs {w['changelog_records']:,} records, {w['changelog_bytes'] / 1e6:,.1f} MB"
        ),
        (
            f"alerts: worker {w['alerts']:,}, replay {rp['alerts']:,}, run "
            f"{sum(run['alerts_by_type'].values()):,.0f}; enter/exit id for id: "
            f"{doc['checks'].get('worker_reading_alerts_are_the_replays')}"
        ),
        *alert_type_lines(doc),
    ]


def bound_line(doc: dict[str, Any]) -> str:
    """The best a worker could reach here, with its formula and figures."""
    b = worker_bound(doc)
    if b is None:
        return "best a worker could reach here: - (a figure is missing)"
    side = "under" if b["readings_per_s"] < TARGET_PER_WORKER else "at or over"
    return (
        f"best a worker could reach here (an estimate): {b['readings_per_s']:,.0f} readings/s "
        f"with a core to itself, {side} the target; = 1e6 / "
        f"({b['faust_cpu_us_per_record']:,.1f} us Faust alone per record x (1 + "
        f"{b['alert_records_per_reading']} alert records per reading) + "
        f"{b['replay_cpu_us_per_reading']:,.1f} us of replay's CPU per reading). Replay also "
        "decodes its lines and starts up, which the worker does not: this slightly overstates "
        "the work"
    )


def alert_type_lines(doc: dict[str, Any]) -> list[str]:
    """Alerts by type on each side: the timers' differ (wall clock against event time)."""
    sides = {
        "worker": doc["worker"]["alerts_by_type"],
        "replay": doc["replay"]["alerts_by_type"],
        "run": doc["local_run"]["alerts_by_type"],
    }
    kinds = sorted({k for counts in sides.values() for k in counts})
    rows = [[k, *(f"{counts.get(k, 0):,.0f}" for counts in sides.values())] for k in kinds]
    return [
        table(["alert type", *sides], rows),
        (
            "(enter/exit come from readings and must match; zone.left, dwell and what follows "
            "them come from timers, which a worker runs on the wall clock: minutes of it here, "
            "over records that all arrived at once)"
        ),
    ]


def latency_lines(doc: dict[str, Any]) -> list[str]:
    """The latency table, one row per checkpoint interval."""
    rows = []
    for lat in doc["latency"]:
        total, to_b, to_h = (
            lat["latency_ms"],
            lat["publish_to_bridge_ms"],
            lat["bridge_to_webhook_ms"],
        )
        rows.append(
            [
                f"{lat['checkpoint_s']:g} s",
                _num(lat["paced_rate_per_s"], 0),
                f"{lat['alerts_timed']:,}",
                _num(total["p50"]),
                _num(total["p95"]),
                _num(total["p99"]),
                _num(total["max"]),
                _num(to_b["p99"]),
                _num(to_h["p99"]),
                _num(lat["cpu"]["worker_cpu_s"]),
                _num(lat["cpu"]["bridge_cpu_s"]),
                _num(lat["cpu"]["others_cpu_s"]),
            ]
        )
    header = [
        "checkpoints",
        "readings/s",
        "webhooks",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "to bridge p99",
        "bridge->hook p99",
        "worker cpu s",
        "bridge cpu s",
        "others' cpu s",
    ]
    hops = doc["broker_hop_ms"]
    hop = ", ".join(
        f"{key.removeprefix('fetch_max_wait_').replace('ms', ' ms wait')}: p50 {v['p50']} ms"
        for key, v in hops.items()
        if key.startswith("fetch_max_wait_")
    )
    lines = [
        "Publish -> webhook (bridge + worker --http + dispatcher; enter/exit of cars on loans)",
        table(header, rows),
    ]
    if not hop:
        return lines
    return [
        *lines,
        (
            f"one Kafka hop on tansu, produce -> a waiting consumer, by the fetch's wait: {hop} "
            "(Faust's consumer asks 1500 ms and tansu holds a fetch for its whole wait, Apache "
            "Kafka answers it when data comes: the workers here run --fetch-wait-ms "
            f"{TANSU_FETCH_WAIT_MS}). A reading takes 3 hops to its webhook (readings, "
            "loan-events, alerts), then the dispatcher's 0.2 s outbox poll."
        ),
    ]


def report(doc: dict[str, Any], sized: dict[str, Any], args: argparse.Namespace) -> str:
    """The whole printed report."""
    sz = doc["sizes"]
    lines = [
        (
            f"Distributed runtime: one worker, {sz.devices:,} devices x {sz.fixes} fixes, "
            f"{sz.fences:,} fences, {args.partitions} partitions, lending "
            f"{'on' if args.lending else 'off'}, tansu (memory), --producer-batch-bytes 1 "
            f"(changelogs), --fetch-wait-ms {TANSU_FETCH_WAIT_MS}"
        ),
        "",
        *throughput_lines(doc),
        "",
        *latency_lines(doc),
        "",
        *sizing_lines(sized),
    ]
    prof = doc.get("worker_profile")
    if prof:
        lines.append("")
        if "samples" in prof:
            lines += profile_lines(prof)
        else:
            lines.append(f"worker profile: {prof.get('note')}")
    lines += ["", "checks: " + ", ".join(f"{k} {v}" for k, v in doc["checks"].items())]
    return "\n".join(lines)
