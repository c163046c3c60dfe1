"""The distributed benchmark's throughput runs: one worker draining pre-loaded reading
records, the bridge moving queued MQTT messages into Kafka, and the local engine's sides
(`pledgewatch replay` of the same lines, `pledgewatch run` draining the same readings as
arrays), each checked before its rate counts."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import log, rate
from benchmarks.distributed_cluster import (
    KafkaProbe,
    TopicStats,
    bridge,
    kafka_cpu_s,
    private_kafka,
    process_cpu_s,
    row_sizes,
    worker,
)
from benchmarks.distributed_profile import Spy, read_profile
from benchmarks.engine_publishers import HelperPool, cpu_self
from benchmarks.engine_workload import Workload
from benchmarks.replay_methods import pledgewatch_command
from engine.distributed.kafka_io import Record
from engine.distributed.settings import ALERTS, LOAN_EVENTS, READINGS, REJECTS
from simulator.harness.broker import PrivateBroker
from simulator.harness.cluster_process import ClusterProcess
from simulator.harness.procfs import machine_cpu_s, proc_cpu_s, tree_memory

RECORDS = "pledgewatch_worker_records_total"
PRODUCED = "pledgewatch_worker_alerts_produced"
LOAN_EVENTS_TOTAL = "pledgewatch_worker_loan_events_total"
DRAINED = "pledgewatch_worker_alerts_drained"
CHECKPOINTS = "pledgewatch_worker_checkpoints"
TABLE_WRITES = "pledgewatch_worker_table_writes"
BAD = "pledgewatch_worker_bad_records"
KEEPALIVE = "Thread keepalive is not responding"
STALL_S = 90.0  # no record stepped for this long: the worker is stuck


@dataclass(frozen=True, slots=True)
class Marks:
    """CPU seconds at one moment: the process under test, the Kafka broker, the MQTT broker,
    this benchmark (and its helpers that have ended), and the whole machine."""

    at: float
    process: float
    kafka: float
    mqtt: float
    bench: float
    machine: float

    @classmethod
    def take(
        cls, process: float, kafka: float, mqtt: PrivateBroker | None = None, helpers: float = 0.0
    ) -> Marks:
        """Read the machine and this process now; the others are given."""
        return cls(
            time.time(),
            process,
            kafka,
            proc_cpu_s(mqtt.pid) if mqtt is not None else 0.0,
            cpu_self() + helpers,
            machine_cpu_s()[0],
        )


def cpu_between(a: Marks, b: Marks) -> dict[str, float]:
    """CPU seconds between two marks by process, and `others`: the machine's busy time that
    none of ours used (other work on a shared machine)."""
    mine = {
        "process_cpu_s": b.process - a.process,
        "kafka_cpu_s": b.kafka - a.kafka,
        "mqtt_cpu_s": b.mqtt - a.mqtt,
        "bench_cpu_s": b.bench - a.bench,
    }
    busy = b.machine - a.machine
    out = {"wall_s": b.at - a.at, **mine, "machine_busy_s": busy}
    out["others_cpu_s"] = max(0.0, busy - sum(mine.values()))
    return {k: round(v, 2) for k, v in out.items()}


def _wait_checkpoint(w: ClusterProcess, after: float, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while w.metrics().value(CHECKPOINTS) <= after and time.monotonic() < deadline:
        time.sleep(0.2)


def _drained(w: ClusterProcess, timeout_s: float) -> tuple[float, Any]:
    """Wait until the loan events the worker sent are all stepped and the alerts it produced
    all drained (true on two looks 0.3 s apart); when it first held, and the scrape. Its own
    counts: the worker's outputs are batched, and tansu's end offsets fall short of batches
    (what Kafka holds is read back and compared at the end)."""
    deadline = time.monotonic() + timeout_s
    held_since: float | None = None
    while True:
        m = w.metrics()
        now = time.time()
        done = m.value(LOAN_EVENTS_TOTAL, way="stepped") >= m.value(
            LOAN_EVENTS_TOTAL, way="sent"
        ) and m.value(DRAINED) >= m.value(PRODUCED)
        if done and held_since is not None and now - held_since >= 0.3:
            return held_since, m
        held_since = (held_since or now) if done else None
        if time.monotonic() > deadline:
            msg = f"loan events or alerts not drained within {timeout_s:.0f} s"
            raise TimeoutError(msg)
        time.sleep(0.1)


def run_worker(
    work: Path,
    name: str,
    changes: Sequence[Record],
    records: Sequence[tuple[bytes, bytes]],
    opts: Any,
    spy_binary: str | None = None,
) -> dict[str, Any]:
    """One worker drains `records` pre-loaded into `pledgewatch.readings` (the fleet in
    `pledgewatch.changes` first): from its first record stepped to every reading stepped,
    then to every loan event stepped and every alert drained into its store."""
    n = len(records)
    run_dir = work / name
    with private_kafka(run_dir) as kafka, KafkaProbe(kafka, opts.partitions) as probe:
        probe.create_topics()
        log(f"{name}: writing {len(changes)} fleet changes and {n} reading records to Kafka")
        preload_s = probe.produce([*changes, *((READINGS, k, v) for k, v in records)])
        w = worker(
            kafka,
            run_dir,
            "worker",
            partitions=opts.partitions,
            checkpoint_s=opts.checkpoint_s,
            store=opts.store,
            lending=opts.lending,
        )
        started = time.time()
        w.start(opts.start_timeout_s)
        ready_s = time.time() - started
        spy = Spy.attach(spy_binary, w.proc.pid, run_dir / "worker.pyspy") if spy_binary else None  # type: ignore[union-attr]  # started
        try:
            mark0 = Marks.take(process_cpu_s(w), kafka_cpu_s(kafka))
            first = math.nan
            last_n, last_move = 0.0, time.monotonic()
            while True:
                stepped = w.metrics().value(RECORDS, topic=READINGS)
                now = time.time()
                if stepped and math.isnan(first):
                    first = now
                    log(f"{name}: first records stepped {now - started:.1f} s after start")
                if stepped >= n:
                    break
                if stepped != last_n:
                    last_n, last_move = stepped, time.monotonic()
                elif time.monotonic() - last_move > STALL_S:
                    msg = f"{name}: the worker stepped nothing for {STALL_S:.0f} s ({stepped}/{n})"
                    raise TimeoutError(msg)
                time.sleep(0.05 if math.isnan(first) else 0.25)
            readings_done = now
            mark1 = Marks.take(process_cpu_s(w), kafka_cpu_s(kafka))
            log(f"{name}: every reading stepped after {readings_done - first:.1f} s")
            all_done, at_end = _drained(w, 600.0)
            mark2 = Marks.take(process_cpu_s(w), kafka_cpu_s(kafka))
        finally:
            profile_note = spy.stop() if spy is not None else None
        log(f"{name}: loan events and alerts drained after {all_done - first:.1f} s")
        _wait_checkpoint(w, at_end.value(CHECKPOINTS), 3 * opts.checkpoint_s + 10)
        # Timers run on the wall clock: some may fire now (zone grace 300 s after the records'
        # arrival clock); the counts are compared once what they made is drained too.
        _, final = _drained(w, 120.0)
        topics = [READINGS, LOAN_EVENTS, ALERTS, REJECTS]
        changelogs = [t for t in probe.topics() if t.endswith("-changelog")]
        stats = probe.read([*topics, *changelogs], keep_values=[ALERTS])
        memory = tree_memory(w.proc.pid)  # type: ignore[union-attr]  # running
        status = w.terminate()
        tail = w.log_tail(400_000)
    doc = _worker_doc(n, final, stats, changelogs, status, tail)
    doc.update(
        {
            "preload_s": round(preload_s, 2),
            "start_to_ready_s": round(ready_s, 2),
            "readings_s": round(readings_done - first, 3),
            "seconds": round(all_done - first, 3),
            "readings_phase_per_s": round(rate(n, readings_done - first), 1),
            "readings_per_s": round(rate(n, all_done - first), 1),
            "cpu_readings_phase": cpu_between(mark0, mark1),
            "cpu": cpu_between(mark0, mark2),
            "table_writes_per_s": round(rate(int(doc["table_writes"]), all_done - first), 1),
            "worker_peak_rss_bytes": memory["VmHWM"],
        }
    )
    doc["worker_cpu_us_per_reading"] = round(doc["cpu"]["process_cpu_s"] / n * 1e6, 1)
    doc["readings_per_worker_cpu_s"] = round(rate(n, doc["cpu"]["process_cpu_s"]), 1)
    if spy is not None:
        path = run_dir / "worker.pyspy"
        doc["profile"] = (
            {"note": profile_note}
            if profile_note
            else read_profile(path).as_json() | {"raw": str(path)}
        )
    return doc


def _worker_doc(
    n: int,
    final: Any,
    stats: dict[str, TopicStats],
    changelogs: list[str],
    status: int,
    tail: str,
) -> dict[str, Any]:
    alerts = [orjson.loads(v) for v in stats[ALERTS].values]
    loan_events = final.value(LOAN_EVENTS_TOTAL, way="sent")
    problems = []
    if stats[READINGS].records != n:
        problems.append(f"{stats[READINGS].records} reading records in Kafka, {n} written")
    if final.value(RECORDS, topic=READINGS) != n:
        problems.append(f"{final.value(RECORDS, topic=READINGS):.0f} readings stepped of {n}")
    accepted = final.total("pledgewatch_readings_total")
    if accepted != n:
        problems.append(f"{accepted:.0f} readings accepted of {n}")
    if final.value(LOAN_EVENTS_TOTAL, way="stepped") != loan_events:
        stepped = final.value(LOAN_EVENTS_TOTAL, way="stepped")
        problems.append(f"{stepped:.0f} loan events stepped of {loan_events:.0f} sent")
    if final.value(RECORDS, topic=LOAN_EVENTS) != stats[LOAN_EVENTS].records:
        problems.append(
            f"{final.value(RECORDS, topic=LOAN_EVENTS):.0f} loan-event records stepped, "
            f"{stats[LOAN_EVENTS].records} in Kafka"
        )
    if not final.value(DRAINED) == final.value(PRODUCED) == len(alerts):
        problems.append(
            f"{final.value(DRAINED):.0f} alerts drained, {final.value(PRODUCED):.0f} "
            f"produced, {len(alerts)} in Kafka"
        )
    if final.value(BAD) or stats[REJECTS].records:
        problems.append(f"{final.value(BAD):.0f} bad records, {stats[REJECTS].records} rejects")
    if status != 0:
        problems.append(f"exit status {status}")
    errors = [line for line in tail.splitlines() if "Traceback" in line or " ERROR " in line]
    # Faust's warning that its consumer thread was late to answer (a starved CPU): counted
    stalls = [line for line in errors if KEEPALIVE in line]
    if len(errors) > len(stalls):
        problems.append(f"{len(errors) - len(stalls)} errors in the worker's log")
    table_writes = final.value(TABLE_WRITES)
    rows: dict[str, dict[str, float]] = {}
    for topic in changelogs:
        rows.update(row_sizes(stats[topic]))
    changelog_records = sum(stats[t].records for t in changelogs)
    changelog_bytes = sum(stats[t].key_bytes + stats[t].value_bytes for t in changelogs)
    return {
        "readings": n,
        "loan_events": loan_events,
        "loan_event_records": stats[LOAN_EVENTS].records,
        "alerts": len(alerts),
        "alert_ids": [[str(a["id"]), str(a["type"])] for a in alerts],
        "alerts_by_type": dict(Counter(str(a["type"]) for a in alerts)),
        "checkpoints": final.value(CHECKPOINTS),
        "table_writes": table_writes,
        "table_writes_per_reading": round(table_writes / n, 5) if n else None,
        "consumer_thread_stalls_logged": len(stalls),
        "loan_events_per_reading": round(loan_events / n, 4) if n else None,
        "alerts_per_reading": round(len(alerts) / n, 4) if n else None,
        "topics": {t: s.as_json() for t, s in stats.items()},
        "changelog_records": changelog_records,
        "changelog_bytes": changelog_bytes,
        "table_rows": rows,
        "check": "ok" if not problems else "WRONG: " + "; ".join(problems),
    }


def run_replay_cli(
    readings: Path, fences: Path, loans: Path, work: Path, lending: bool
) -> dict[str, Any]:
    """`pledgewatch replay` of the same lines as a subprocess: wall time, start-up and fence
    parsing included; its alerts as the reference."""
    out_path = work / "replay-alerts.jsonl"
    cmd = [
        *pledgewatch_command(),
        "replay",
        str(readings),
        "--fences",
        str(fences),
        "--loans",
        str(loans),
        *([] if lending else ["--no-lending"]),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    started = time.perf_counter()
    cpu0 = os.times()
    with out_path.open("wb") as out:
        proc = subprocess.run(  # noqa: S603  # our own command line, no shell
            cmd, stdout=out, stderr=subprocess.PIPE, env=env, check=False
        )
    seconds = time.perf_counter() - started
    cpu1 = os.times()
    lines = sum(1 for line in readings.read_bytes().splitlines() if line.strip())
    alerts = [orjson.loads(x) for x in out_path.read_bytes().splitlines() if x.strip()]
    summary = proc.stderr.decode("utf-8", "replace").strip()
    cpu_s = (cpu1.children_user + cpu1.children_system) - (
        cpu0.children_user + cpu0.children_system
    )
    return {
        "readings": lines,
        "seconds": round(seconds, 3),
        "readings_per_s": round(rate(lines, seconds), 1),
        "cpu_s": round(cpu_s, 2),
        "cpu_us_per_reading": round(cpu_s / lines * 1e6, 1) if lines else None,
        "alerts": len(alerts),
        "alert_ids": [[str(a["id"]), str(a["type"])] for a in alerts],
        "alerts_by_type": dict(Counter(str(a["type"]) for a in alerts)),
        "summary": summary[-300:],
        "check": "ok" if proc.returncode == 0 else f"WRONG: exit status {proc.returncode}",
    }


def run_bridge(
    work: Path,
    broker: PrivateBroker,
    pool: HelperPool,
    w: Workload,
    partitions: int,
    name: str,
    batch_bytes: int,
) -> dict[str, Any]:
    """The bridge alone: single-reading messages queued at the broker for its stopped
    session, then from SIGCONT until a consumer has read every reading record from Kafka
    (counted as read: with batches, tansu's end offsets fall short)."""
    run_dir = work / name
    n = w.readings
    with private_kafka(run_dir) as kafka, KafkaProbe(kafka, partitions) as probe:
        probe.create_topics()
        b = bridge(kafka, broker.url, run_dir, name, partitions, batch_bytes)
        b.start()
        pid = b.proc.pid  # type: ignore[union-attr]  # started
        pubs = pool.start_publishers(w.messages, "bridge")
        pool.ready(pubs)
        os.kill(pid, signal.SIGSTOP)
        try:
            pool.go(pubs)
            results, pub_check = pool.finish_publishers(pubs)
            pub_cpu = sum(float(r["cpu_s"]) for r in results)
            mark0 = Marks.take(process_cpu_s(b), kafka_cpu_s(kafka), broker, pub_cpu)
            started = time.time()
            os.kill(pid, signal.SIGCONT)
            ended = probe.follow(READINGS, n, 600.0)
            mark1 = Marks.take(process_cpu_s(b), kafka_cpu_s(kafka), broker, pub_cpu)
        finally:
            os.kill(pid, signal.SIGCONT)
        stats = probe.read([READINGS])[READINGS]  # all: anything more would be a duplicate
        rejects = probe.end_total(REJECTS)
        status = b.terminate()
    problems = [] if pub_check == "ok" else [pub_check]
    if stats.records != n:
        problems.append(f"{stats.records} reading records in Kafka, {n} published")
    if rejects:
        problems.append(f"{rejects} rejects")
    if status != 0:
        problems.append(f"exit status {status}")
    cpu = cpu_between(mark0, mark1)
    return {
        "producer_batch_bytes": batch_bytes,
        "messages": len(w.messages),
        "readings": n,
        "seconds": round(ended - started, 3),
        "readings_per_s": round(rate(n, ended - started), 1),
        "cpu": cpu,
        "bridge_cpu_us_per_reading": round(cpu["process_cpu_s"] / n * 1e6, 1) if n else None,
        "reading_record_bytes": round(stats.mean_bytes, 1),
        "check": "ok" if not problems else "WRONG: " + "; ".join(problems),
    }


READING_ALERTS = ("geofence.enter", "geofence.exit")
"""Alerts a reading raises, whatever the clock: the worker's must be the replay's, id for
id. The others come from timers (zone grace, dwell) and what follows them (risk tiers); a
worker runs its timers on the wall clock, the replay on event time, and here a worker takes
minutes of wall clock over records that all arrived at once, so those differ by design."""


def same_alerts(worker: Sequence[Sequence[str]], replay: Sequence[Sequence[str]]) -> str:
    """'ok' if the worker's reading alerts are the replay's, as sets of ids with none twice."""
    got = Counter(i for i, kind in worker if kind in READING_ALERTS)
    want = {i for i, kind in replay if kind in READING_ALERTS}
    problems = []
    if not want:
        problems.append("the replay raised no enter/exit alert: nothing was compared")
    if set(got) != want:
        problems.append(
            f"{len(set(got) - want)} alerts the replay did not raise, "
            f"{len(want - set(got))} of the replay's missing"
        )
    twice = sum(1 for c in got.values() if c > 1)
    if twice:
        problems.append(f"{twice} alert ids produced more than once")
    return "ok" if not problems else "WRONG: " + "; ".join(problems)
