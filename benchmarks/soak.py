"""A soak of `pledgewatch run` on PostgreSQL: a simulated fleet for an hour, disturbed, and
nothing lost, counted exactly.

    python -m benchmarks.soak [--duration-s 3600] [--devices 2000] [--rate 100] [--seed S]
                              [--out-dir DIR] [--quick]

Plans a seeded fleet (`simulator.fleet_plan`) and counts what its stream must leave in the
store (`InputCounter`: readings, duplicates, rejects); starts a private Mosquitto, a fresh
PostgreSQL schema and `pledgewatch run` on it; loads the fleet's fences and loans and
registers a signing webhook receiver; then publishes the fleet at its pace while, on a fixed
timetable, fences and loans are edited through the API, the receiver answers 503 or stalls
past the sender's timeout, and the engine's database connections are killed; a sampler
records memory, CPU, `/metrics`, backlogs and latency every few seconds. After publishing,
it waits for the engine to take everything and the outbox to drain, then counts the
telemetry rows and compares the stored alerts with those received. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import secrets
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from alerts.retry import RetryPolicy
from benchmarks.common import (
    RESULTS_DIR,
    exit_status,
    log,
    machine_info,
    mosquitto_version,
    work_dir,
    write_json,
)
from benchmarks.soak_chaos import Chaos, Editor, Flapper, Timing, timetable
from benchmarks.soak_checks import alert_checks, counter_delta, engine_checks, input_checks
from benchmarks.soak_report import charts, episodes, series_summary, summary_text
from benchmarks.soak_sampling import Sampler
from benchmarks.soak_stack import (
    SoakDatabase,
    engine_process,
    load_plan,
    log_findings,
    planned_input,
    register_webhook,
    wait_drained,
)
from engine.core.config import Config
from simulator.fleet_plan import plan_fleet
from simulator.fleet_spec import DEFAULT_MIX, FleetSpec
from simulator.harness.broker import PrivateBroker
from simulator.harness.prometheus import ALERTS, DELIVERIES, LATE, MISSING
from simulator.harness.receiver import WebhookReceiver
from simulator.loadtest.latency import DueKind, PublishLog
from simulator.loadtest.sampling import Collector
from simulator.mqtt_publisher import PublishProgress, publish

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
START_TIMEOUT_S = 120.0
RETRY_BASE_S = 0.5  # the dispatcher's first retry: short, so a flap's backlog clears soon
RETRY_CAP_S = RetryPolicy().cap_s  # the dispatcher's longest wait between attempts

FULL = {
    "duration_s": 3600.0, "devices": 2000, "rate": 100.0, "sample_s": 5.0,
    "edit_every_s": 120.0, "kill_every_s": 180.0, "flap_every_s": 300.0,
    "flap_503_s": 60.0, "flap_stall_s": 45.0, "drain_timeout_s": 900.0,
}  # fmt: skip
QUICK = {
    "duration_s": 45.0, "devices": 300, "rate": 60.0, "sample_s": 1.0,
    "edit_every_s": 5.0, "kill_every_s": 8.0, "flap_every_s": 16.0,
    "flap_503_s": 6.0, "flap_stall_s": 5.0, "drain_timeout_s": 40.0,
}  # fmt: skip
"""Defaults of the full soak and of `--quick` (a ~60 s run for the smoke test)."""


def soak(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], list[Any]]:
    """Plan, start, publish under disturbances, drain, count; the document and the samples."""
    mode = "fleet pace" if not args.rate else f"{args.rate:g} msg/s"
    log(f"planning {args.devices} trackers for {args.duration_s:g} s at {mode}")
    spec = FleetSpec(
        devices=args.devices,
        seed=str(args.seed),
        duration_s=args.duration_s,
        rate=args.rate or None,
        speed=None if args.rate else 1.0,
        mix=DEFAULT_MIX,
        id_prefix="soak",
    )
    plan = plan_fleet(spec, log)
    expected, messages, readings = planned_input(plan)
    expected_inputs = (
        sum(expected.readings.values()) + expected.duplicates + sum(expected.rejects.values())
    )
    log(f"the stream: {messages:,} messages, {readings:,} readings; expected {expected}")
    timing = Timing(
        args.duration_s,
        args.edit_every_s,
        args.kill_every_s,
        args.flap_every_s,
        args.flap_503_s,
        args.flap_stall_s,
        stall_s=args.webhook_timeout_s + 1.5,
        settle_s=min(60.0, args.duration_s / 10),
    )
    doc: dict[str, Any] = {
        "fleet": {
            "messages": messages,
            "readings": readings,
            "speed": round(plan.speed, 3),
            "rate_msgs_per_s": round(messages / args.duration_s, 1),
            "kinds": plan.kinds(),
            "scenarios_skipped": len(plan.skipped()),
            "engine_config": plan.engine_config(),
        },
        "expected": expected.to_json(),
    }
    db = SoakDatabase(args.pg_dsn)
    doc["database"] = {"schema": db.schema, "application_name": db.app}
    engine_args = [
        *("--webhook-timeout-s", f"{args.webhook_timeout_s:g}"),
        *("--webhook-retry-base-s", f"{RETRY_BASE_S:g}"),
        *("--webhook-max-age-s", f"{args.max_age_s:g}"),
    ]
    with ExitStack() as stack:
        broker = PrivateBroker(work)
        broker.start()
        stack.callback(broker.stop)
        db.create()
        stack.callback(db.drop)
        engine = engine_process(broker.url, db, work, plan.engine_config(), engine_args)
        stack.enter_context(engine)
        log(f"starting pledgewatch run on PostgreSQL schema {db.schema}")
        setup_started = time.perf_counter()
        engine.start(START_TIMEOUT_S)
        http = stack.enter_context(engine.client(60.0))
        doc["setup"] = load_plan(http, plan)
        flapper = Flapper(timing.stall_s)
        collector = Collector(PublishLog(zone_grace_s=Config().zone_grace_s))
        secret = secrets.token_urlsafe(24)
        receiver = WebhookReceiver(
            secret, on_delivery=collector.on_delivery, respond=flapper, keep=False
        )
        receiver.start()
        stack.callback(receiver.stop)
        register_webhook(http, receiver.url, secret)
        time.sleep(1.0)  # the engine takes API changes between batches
        doc["setup"]["seconds"] = round(time.perf_counter() - setup_started, 2)
        doc["setup"]["rss_loaded_bytes"] = engine.rss()
        log(f"generating the stream; {len(timetable(timing))} disturbances planned")
        plan.prepare()
        baseline = engine.metrics(http)
        t0 = time.time()
        sampler = Sampler(
            engine,
            stack.enter_context(engine.client(30.0)),
            collector,
            lambda: flapper.phase.value,
            lambda: receiver.counts.requests,
            baseline,
            t0,
            args.sample_s,
            log,
        )
        editor = Editor(stack.enter_context(engine.client(30.0)), plan, random.Random(args.seed))
        chaos = Chaos(timetable(timing), flapper, editor, db, t0)
        sampler.start()
        stack.callback(sampler.cancel)
        chaos.start()
        stack.callback(chaos.stop)
        stop = threading.Event()

        def watch(_p: PublishProgress) -> None:
            if not engine.running():
                stop.set()

        log(f"publishing for {args.duration_s:g} s over {args.clients} MQTT connections")
        stats = publish(
            plan,
            broker.url,
            clients=args.clients,
            on_sent=lambda m, at: collector.log.record(m.device_id, m.readings, at),
            stop=stop,
            progress=watch,
        )
        publish_s = time.time() - t0
        chaos.stop()
        log(f"published {stats.sent:,} messages in {publish_s:.0f} s; draining")
        drain = wait_drained(
            engine,
            http,
            db,
            collector,
            baseline.handled() + expected_inputs,
            args.drain_timeout_s,
        )
        sampler.stop()
        final = sampler.latest  # a scrape after the drain, unless the engine is gone
        log("counting the store, stopping the engine")
        stored = db.alerts_detected()
        telemetry = db.telemetry()
        deliveries = db.deliveries()
        dead = db.dead()
        peak_rss = engine.peak_rss() if engine.running() else None
        exit_status = engine.terminate()
        doc["engine"] = {
            "exit_status": exit_status,
            "died_at_s": sampler.engine_died_at,
            "peak_rss_bytes": peak_rss,
            "log": log_findings(engine.log_path),
        }
        doc["database"] |= {
            "telemetry": telemetry,
            "alerts_by_type": db.alerts_by_type(),
            "deliveries": deliveries,
            "dead": dead,
            "dead_letters": db.dead_letters(),
        }
    collector.log.absorb()
    collector.take(final=True)
    doc.update(
        publish={
            "seconds": round(publish_s, 1),
            "messages": stats.sent,
            "readings": collector.log.readings,
            "msgs_per_s": round(stats.rate, 1),
            "max_lag_s": round(stats.max_lag_s, 2),
            "failed": stats.failed,
            "unacked": stats.unacked,
        },
        drain={k: v for k, v in drain.items() if k != "drained_at"},
    )
    checks = input_checks(
        expected,
        (messages, readings),
        stats,
        collector.log.readings,
        baseline,
        final,
        telemetry,
    )
    drained_at = drain.get("drained_at")
    alert_check, alert_counts = alert_checks(
        stored,
        set(collector.alerts),
        None if drained_at is None else int(drained_at * 1000),
        deliveries,
        receiver.counts.refused,
    )
    checks |= alert_check
    checks |= engine_checks(exit_status, sampler.engine_died_at, chaos.of("edit"))
    kills = chaos.of("kill")
    latencies = [s.total_ms for s in collector.samples if s.kind is DueKind.READING]
    doc.update(
        checks=checks,
        checks_passed=all(v == "ok" for v in checks.values()),
        counts={
            "expected_readings": sum(expected.readings.values()),
            "telemetry_rows": telemetry["rows"],
            **alert_counts,
            "redeliveries": receiver.counts.accepted - receiver.counts.unique,
            "alerts_counted_by_engine": int(final.total(ALERTS) - baseline.total(ALERTS)),
            "late": {
                "engine": int(final.total(LATE) - baseline.total(LATE)),
                "planned": expected.late,
            },
            "missing": {
                "engine": int(final.total(MISSING) - baseline.total(MISSING)),
                "planned": expected.missing,
            },
            "deliveries_by_result": counter_delta(baseline, final, DELIVERIES, "result"),
        },
        exercised={
            "edits": len(chaos.of("edit")),
            "edit_retries": sum(int(e.get("attempts", 1)) - 1 for e in chaos.of("edit")),
            "kills": len(kills),
            "backends_killed": sum(int(k.get("killed", 0)) for k in kills),
            "killed_busy": sum(
                n for k in kills for s, n in dict(k.get("states", {})).items() if s != "idle"
            ),
            "answered_503": flapper.answers.get("503", 0),
            "stalled": flapper.answers.get("stall", 0),
        },
        receiver=dataclasses.asdict(receiver.counts) | {"answers_by_phase": dict(flapper.answers)},
        summary=series_summary(sampler.samples, latencies, publish_s),
        episodes=episodes(chaos.log, sampler.samples),
        events=chaos.log,
        scrape_errors=sampler.scrape_errors,
        not_timed=len(collector.not_timed),
    )
    return doc, sampler.samples


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; those left out take the full or the `--quick` defaults."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a ~60 s run (the smoke test)")
    p.add_argument("--duration-s", type=float, help="seconds of publishing (3600)")
    p.add_argument("--devices", type=int, help="simulated trackers (2000)")
    p.add_argument("--rate", type=float, help="messages/s (100); 0: the fleet's own pace")
    p.add_argument("--seed", default="soak")
    p.add_argument("--sample-s", type=float, help="seconds between samples (5)")
    p.add_argument("--edit-every-s", type=float, help="seconds between API edits (120)")
    p.add_argument("--kill-every-s", type=float, help="seconds between connection kills (180)")
    p.add_argument("--flap-every-s", type=float, help="seconds between receiver episodes (300)")
    p.add_argument("--flap-503-s", type=float, help="length of a 503 episode (60)")
    p.add_argument("--flap-stall-s", type=float, help="length of a stall episode (45)")
    p.add_argument("--drain-timeout-s", type=float, help="wait this long after publishing (900)")
    p.add_argument("--webhook-timeout-s", type=float, default=2.0, help="the engine's, per POST")
    p.add_argument(
        "--max-age-s", type=float, default=3600.0, help="the engine's webhook maximum age"
    )
    p.add_argument("--clients", type=int, default=8, help="MQTT connections to publish over")
    p.add_argument("--pg-dsn", default=DEFAULT_PG_DSN, help="a scratch database")
    p.add_argument("--work-dir", type=Path, help="keep the engine's log here (default: temp)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where soak.json goes")
    p.add_argument("--plots-dir", type=Path, help="the charts (default: OUT_DIR/soak)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    longest = max(args.flap_503_s, args.flap_stall_s)
    if args.max_age_s <= longest + RETRY_CAP_S:
        p.error(
            f"--max-age-s {args.max_age_s:g} is within reach of a receiver episode "
            f"({longest:g} s) plus the dispatcher's longest backoff ({RETRY_CAP_S:g} s): "
            "raise it, or a flap could kill deliveries the soak counts as lost"
        )
    if args.plots_dir is None:
        args.plots_dir = args.out_dir / "soak"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak, print the summary, write `<out-dir>/soak.json` and the charts."""
    args = parse_args(argv)
    started = time.perf_counter()
    info = machine_info()
    with ExitStack() as stack:
        work = work_dir(stack, args.work_dir, "pw-soak-")
        doc, samples = soak(args, work)
    doc = {
        "benchmark": "soak",
        "checks_passed": doc["checks_passed"],
        "checks": doc["checks"],
        "machine": info,
        "mosquitto": mosquitto_version(),
        "parameters": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in {"work_dir", "out_dir", "plots_dir", "pg_dsn"}
        },
        **doc,
        "samples": [s.to_json() for s in samples],
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    doc["charts"] = [str(p) for p in charts(doc, samples, args.plots_dir)]
    text = summary_text(doc)
    doc["table"] = text
    print(text)
    write_json(args.out_dir / "soak.json", doc)
    return exit_status(doc["checks_passed"])


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C: the engine, broker and schema are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
