"""`pledgewatch loadtest`: set up an engine, play a planned fleet into it, measure, report.

Phases: plan the fleet; start a private Mosquitto (unless `--mqtt-url`) and `pledgewatch run`
on SQLite in a temporary directory (unless `--api` names a running engine); load the plan's
fences and loans through the API; register our own signed-webhook receiver; publish the plan
at its pace; drain until the engine has processed everything and the alerts stopped coming;
judge and write the report. A sampler thread scrapes `/metrics` and `/proc/<pid>` once a
second and keeps a progress line on stderr. Ctrl-C (or SIGTERM) stops publishing and writes
a partial report.

Ramp mode (`--ramp`) publishes steps of rising rate instead, each a fresh fleet of its own
trackers (ids prefixed per step: a tracker's event time must never run backwards, and each
step's stream starts its event time anew; no loans, so no zone rules), and reports the
highest rate at which processing kept up and the p99 latency stayed under `--max-p99-ms`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from devices.mqtt_source import BrokerAddress
from engine.core.config import Config
from simulator.fleet_plan import FleetPlan, Scheduled, plan_fleet
from simulator.fleet_spec import FleetError, FleetSpec
from simulator.harness.broker import BrokerUnavailable, PrivateBroker, answers
from simulator.harness.prometheus import ALERTS, DELIVERIES, Metrics
from simulator.harness.receiver import WebhookReceiver
from simulator.loadtest import report
from simulator.loadtest.latency import DueKind, PublishLog, summarize, windows
from simulator.loadtest.quality import Quality, score
from simulator.loadtest.sampling import (
    Collector,
    Point,
    Progress,
    Sampler,
    processed_at,
    resources,
    series,
)
from simulator.loadtest.target import StartedEngine, Target, TargetError
from simulator.mqtt_publisher import PublishStats, publish
from simulator.truth import GroundTruth, Role

DEFAULT_ATTACH_MQTT = "mqtt://127.0.0.1:1883"
HOOK_ID_PREFIX = "loadtest-"
TRUTH_LAG_S = 30.0  # device.offline may come this late on the wall clock (see FleetPlan.truth)
STALL_S = 30.0  # the drain gives up when the engine processed nothing for this long
QUIET_S = 2.0  # the drain ends once no webhook arrived for this long (and all else is done)
LATENCY_WINDOW_S = 5.0
RAMP_OFFLINE_S = 86_400
RAMP_START_RATE = 500.0  # messages/s of the first ramp step (or the fleet's own rate, if more)
PUBLISHER_LAG_S = 1.0  # a ramp step whose publisher ended further behind is generator-bound
MIN_STEP_ALERTS = 20  # fewer timed alerts in a ramp step: its p99 is not judged
MAP_CARS = 6
# Scenarios worth a map panel, most telling first; others fill the remaining panels.
MAP_PREFERENCE = (
    "towed",
    "pawnshop_dwell",
    "leaves_zone",
    "tracker_removed",
    "spoofed_jump",
    "impounded",
    "flatbed_tow",
    "vin_swap",
)
# Which alert types each rule decides: with an engine whose rules differ from the plan's,
# those types cannot be judged.
RULE_TYPES: Mapping[str, tuple[str, ...]] = {
    "hysteresis_m": (
        "geofence.enter",
        "geofence.exit",
        "zone.left",
        "zone.returned",
        "pledge.risk_site_dwell",
    ),
    "zone_grace_s": ("zone.left", "zone.returned"),
    "offline_s": ("device.offline", "device.online"),
    "max_speed_kmh": ("gps.impossible_travel",),
    "reanchor_fixes": ("gps.impossible_travel",),
    "shock_g": ("shock", "tow.suspected"),
    "tow_distance_m": ("tow.suspected",),
    "tow_speed_kmh": ("tow.suspected",),
    "separation_m": ("pledge.tracker_separation",),
    "separation_max_age_s": ("pledge.tracker_separation",),
    "separation_confirmations": ("pledge.tracker_separation",),
    "dwell_default_s": ("pledge.risk_site_dwell",),
    "dwell_by_category_s": ("pledge.risk_site_dwell",),
}


class LoadtestError(Exception):
    """The load test cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Options:
    """Everything `pledgewatch loadtest` takes from its flags."""

    spec: FleetSpec
    clients: int = 8
    api: str | None = None  # a running engine's API; None: start one
    api_token: str | None = None
    engine_pid: int | None = None
    mqtt_url: str | None = None  # None: a private Mosquitto (or, attached, 127.0.0.1:1883)
    db_url: str | None = None  # the started engine's store; None: SQLite in a temp dir
    engine_rules: Config | None = None  # an attached engine's rules, if known
    drain_s: float = 30.0
    report_dir: Path = Path("loadtest-report")
    ramp: bool = False
    ramp_step_s: float = 20.0
    ramp_factor: float = 1.5
    max_p99_ms: float = 1000.0
    ramp_max_steps: int = 12
    command: str = ""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _spec_json(spec: FleetSpec, clients: int) -> dict[str, object]:
    return {
        "devices": spec.devices,
        "seed": spec.seed,
        "duration_s": spec.duration_s,
        "rate": spec.rate,
        "speed": spec.speed,
        "mix": {str(k): v for k, v in spec.mix.items()},
        "qos": spec.qos,
        "clients": clients,
    }


def _machine() -> dict[str, object]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": [round(x, 2) for x in load] if load else None,
    }


def _unjudged(plan_config: Mapping[str, object], rules: Config) -> tuple[set[str], list[str]]:
    """Alert types an engine with `rules` cannot be judged on for a plan needing
    `plan_config`, and a note per differing rule."""
    types: set[str] = set()
    notes: list[str] = []
    for key, wanted in sorted(plan_config.items()):
        have = getattr(rules, key, None)
        if have is None or have == wanted:
            continue
        affected = RULE_TYPES.get(key, ())
        types.update(affected)
        notes.append(
            f"the engine runs {key}={have!r} but this plan needs {wanted!r}: "
            f"{', '.join(affected) or 'nothing'} not judged"
        )
    return types, notes


class Loadtest:
    """One load test: its parts, what it measured, and its report."""

    def __init__(self, opts: Options, err: IO[str]) -> None:
        self.opts = opts
        self.progress = Progress(err)
        self.work = Path(tempfile.mkdtemp(prefix="pledgewatch-loadtest-"))
        self.stack = contextlib.ExitStack()
        self.status = "not started"
        self.notes: list[str] = []
        self.setup: dict[str, float | int] = {}
        self.started_at = _now_iso()
        self.machine = _machine()
        self.target: Target | None = None
        self.broker_pid: int | None = None
        self.receiver: WebhookReceiver | None = None
        self.hook_id = f"{HOOK_ID_PREFIX}{os.getpid()}"
        self.plan: FleetPlan | None = None
        self.rules = Config()
        self.unjudged: set[str] = set()
        self.log = PublishLog(zone_grace_s=self.rules.zone_grace_s)
        self.collector = Collector(self.log)
        self.sampler: Sampler | None = None
        self.phase = "setup"
        self.t0 = math.nan  # unix seconds publishing started
        self.publish_end = math.nan
        self.late_s = 0.0  # how long after its planned start the stream started
        self.base_truth: GroundTruth | None = None
        self.stats: PublishStats | None = None
        self.publish_error: str | None = None
        self.map_devices: dict[str, str] = {}  # device id -> car id, for the map
        self.map_messages: list[tuple[str, bytes]] = []
        self.ramp_steps: list[dict[str, Any]] = []
        self.ramp_result: dict[str, Any] | None = None
        self.engine_exit: int | None = None

    # -- setup

    def _broker(self) -> str:
        if self.opts.mqtt_url:
            address = BrokerAddress.parse(self.opts.mqtt_url)
            if not answers(address.host, address.port):
                msg = f"no MQTT broker answers at {self.opts.mqtt_url}; check --mqtt-url"
                raise LoadtestError(msg)
            return self.opts.mqtt_url
        if self.opts.api:
            return DEFAULT_ATTACH_MQTT
        try:
            broker = PrivateBroker(self.work)
            broker.start()
        except BrokerUnavailable as exc:
            msg = f"{exc}; or point the load test at a broker with --mqtt-url mqtt://HOST:PORT"
            raise LoadtestError(msg) from exc
        self.stack.callback(broker.stop)
        self.broker_pid = broker.pid
        self.progress.say(f"started a private Mosquitto on {broker.url} (deploy/mosquitto.conf)")
        return broker.url

    def _engine(self, mqtt_url: str, plan_config: Mapping[str, object]) -> Target:
        if self.opts.api:
            token = self.opts.api_token or ""
            target = Target(self.opts.api, token, self.opts.engine_pid, "attached", "unknown")
            self.stack.callback(target.close)
            target.check()
            self.rules = self.opts.engine_rules or Config()
            self.unjudged, notes = _unjudged(plan_config, self.rules)
            self.notes += notes
            if (
                self.opts.engine_pid is not None
                and not Path(f"/proc/{self.opts.engine_pid}").exists()
            ):
                msg = f"--engine-pid {self.opts.engine_pid}: no such process on this machine"
                raise LoadtestError(msg)
            return target
        db_url = self.opts.db_url or f"sqlite:///{self.work}/loadtest.db"
        token = secrets.token_urlsafe(16)
        self.opts.report_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.opts.report_dir / "engine.log"
        log_path.unlink(missing_ok=True)
        engine = StartedEngine(mqtt_url, db_url, plan_config, self.work, log_path, token)
        self.stack.callback(self._stop_engine, engine)
        started = time.perf_counter()
        self.progress.say(f"starting pledgewatch run ({db_url.split(':')[0]} store)")
        engine.start()
        self.setup["engine_start_s"] = round(time.perf_counter() - started, 2)
        self.rules = Config(**plan_config)  # type: ignore[arg-type]  # Config fields from the plan
        return engine

    def _stop_engine(self, engine: StartedEngine) -> None:
        self.engine_exit = engine.stop()
        tail = engine.log_path.read_text(errors="replace")[-200_000:]
        if "Traceback" in tail or " ERROR " in tail:
            self.notes.append(f"the engine logged errors: see {engine.log_path}")

    def _plan(self, spec: FleetSpec) -> FleetPlan:
        started = time.perf_counter()
        plan = plan_fleet(spec, self.progress.say)
        self.setup["plan_s"] = round(
            self.setup.get("plan_s", 0.0) + time.perf_counter() - started, 2
        )
        return plan

    def _load(self, target: Target, plan: FleetPlan, *, loans: bool) -> None:
        started = time.perf_counter()
        self.setup["fences"] = target.import_fences(plan.fences_doc(), self.progress.say)
        self.setup["fences_s"] = round(time.perf_counter() - started, 2)
        if loans:
            docs = plan.loans_doc()
            started = time.perf_counter()
            self.progress.say(f"loading {len(docs):,} loans through POST /v1/loans:import")
            self.setup["loans"] = target.import_loans(docs, self.progress.live)
            self.setup["loans_s"] = round(time.perf_counter() - started, 2)
            self.progress.say(f"{len(docs):,} loans in {self.setup['loans_s']:.1f} s")

    def _receiver(self, target: Target) -> None:
        secret = secrets.token_urlsafe(24)
        receiver = WebhookReceiver(secret, on_delivery=self.collector.on_delivery, keep=False)
        receiver.start()
        self.receiver = receiver
        self.stack.callback(receiver.stop)
        target.put_webhook(self.hook_id, receiver.url, secret)
        self.stack.callback(target.delete_webhook, self.hook_id)

    def _choose_map_cars(self, truth: GroundTruth) -> None:
        scenario_cars = [c for c in truth.cars if c.role is Role.SCENARIO and c.scenario]
        rank = {s: i for i, s in enumerate(MAP_PREFERENCE)}
        chosen: list[str] = []
        seen: set[str] = set()
        for car in sorted(scenario_cars, key=lambda c: (rank.get(c.scenario or "", 99), c.car_id)):
            if car.scenario not in seen and len(chosen) < MAP_CARS:
                seen.add(car.scenario or "")
                chosen.append(car.car_id)
                self.map_devices.update(dict.fromkeys(car.device_ids, car.car_id))

    def on_sent(self, msg: Scheduled, at_s: float) -> None:
        """The publisher's hook: note what went out when (its threads; kept cheap)."""
        self.log.record(msg.device_id, msg.readings, at_s)
        if msg.device_id in self.map_devices:
            self.map_messages.append((msg.device_id or "", msg.payload))

    # -- the run

    def execute(self) -> None:
        """Run every phase; `status` says how far it got."""
        opts = self.opts
        setup_started = time.perf_counter()
        self.status = "planning"
        spec = opts.spec
        if opts.ramp:
            rate = spec.rate if spec.rate or spec.speed else RAMP_START_RATE
            spec = dataclasses.replace(
                spec, duration_s=opts.ramp_step_s, rate=rate, id_prefix=f"{spec.id_prefix}r1"
            )
        try:
            plan = self._plan(spec)
        except FleetError:
            if not opts.ramp or opts.spec.rate or opts.spec.speed:
                raise
            # A fleet whose own rate is above the default start: start at real time.
            spec = dataclasses.replace(spec, rate=None, speed=1.0)
            plan = self._plan(spec)
        self.status = "setting up"
        mqtt_url = self._broker()
        plan_config = plan.engine_config()
        if opts.ramp:
            # Each step's trackers fall silent when the step ends: their device.offline
            # alerts would land in the next step's measurement. The ramp judges no quality.
            plan_config = {**plan_config, "offline_s": RAMP_OFFLINE_S}
        self.target = target = self._engine(mqtt_url, plan_config)
        self.log.zone_grace_s = self.rules.zone_grace_s
        self.progress.say(f"loading the plan's fences into {target.url}")
        self._load(target, plan, loans=not opts.ramp)
        self._receiver(target)
        time.sleep(1.0)  # the engine takes API changes between batches
        baseline = target.metrics()
        self.sampler = Sampler(target, self.collector, self.progress, baseline, lambda: self.phase)
        if opts.ramp:
            self.setup["total_s"] = round(time.perf_counter() - setup_started, 2)
            self._ramp(mqtt_url, plan)
            return
        self.plan = plan
        started = time.perf_counter()
        self.progress.say("working out the ground truth")
        self.base_truth = plan.truth(lag_s=TRUTH_LAG_S)
        self.setup["truth_s"] = round(time.perf_counter() - started, 2)
        self._choose_map_cars(self.base_truth)
        self._prepare(plan)
        self.setup["total_s"] = round(time.perf_counter() - setup_started, 2)
        self.progress.say(f"setup took {self.setup['total_s']:.1f} s; publishing")
        self.status = "publishing"
        self._publish(plan, mqtt_url)
        self.status = "draining"
        self._drain(self._truth())
        self.status = "complete"

    def _prepare(self, plan: FleetPlan) -> None:
        started = time.perf_counter()
        plan.prepare(lambda done, total: self.progress.live(f"generating cars {done:,}/{total:,}"))
        took = time.perf_counter() - started
        self.setup["generate_s"] = round(self.setup.get("generate_s", 0.0) + took, 2)
        self.progress.say(f"generated the cars' messages in {took:.1f} s")

    def _truth(self) -> GroundTruth:
        """The plan's truth for a live engine, its wall-clock windows widened by how late
        the stream started after it was planned (the setup in between)."""
        assert self.base_truth is not None
        return widen_wall_clock(self.base_truth, self.late_s)

    def _publish(self, plan: FleetPlan, mqtt_url: str) -> None:
        """Publish the plan on a thread (the main thread stays free for Ctrl-C)."""
        stop = threading.Event()
        result: list[PublishStats] = []

        done = threading.Event()

        def work() -> None:
            try:
                result.append(
                    publish(
                        plan, mqtt_url, clients=self.opts.clients, on_sent=self.on_sent, stop=stop
                    )
                )
            except Exception as exc:  # noqa: BLE001  # reported, and the run stops
                self.publish_error = f"{type(exc).__name__}: {exc}"
            finally:
                done.set()

        thread = threading.Thread(target=work, name="loadtest-publish", daemon=True)
        now = time.time()
        self.late_s = now - plan.start_wall_ms / 1000
        if math.isnan(self.t0):
            self.t0 = now
            assert self.sampler is not None
            self.sampler.start()
        self.phase = "publish" if not self.opts.ramp else self.phase
        thread.start()
        # An Event, not Thread.join: a join interrupted by Ctrl-C leaves Python 3.11's
        # is_alive() False while the thread still runs (cpython issue 90882).
        try:
            while not done.wait(0.2):
                if isinstance(self.target, StartedEngine) and not self.target.running():
                    self.notes.append("the engine process exited during the run")
                    stop.set()
        except KeyboardInterrupt:
            stop.set()
            done.wait(30)  # publish stops at the next message and returns its stats
            raise
        finally:
            self.publish_end = time.time()
            if result:
                self.stats = result[0]
        if self.publish_error:
            msg = f"publishing failed: {self.publish_error}"
            raise LoadtestError(msg)

    def _drain(self, truth: GroundTruth) -> None:
        """Wait until the engine has processed everything published (as long as it makes
        progress), then up to `--drain-s` for the alerts still due: until the outbox is
        empty, the webhooks stopped coming and every required alert arrived."""
        self.phase = "drain"
        assert self.sampler is not None
        progress_at, last = time.time(), -1.0
        while True:
            time.sleep(0.5)
            p = self.sampler.points[-1] if self.sampler.points else None
            if p is None or p.t <= self.publish_end:
                continue
            if p.processed >= self.log.readings:
                break
            if p.processed > last:
                progress_at, last = time.time(), p.processed
            elif time.time() - progress_at > STALL_S:
                left = self.log.readings - p.processed
                self.notes.append(
                    f"the engine stopped making progress with {left:,.0f} readings "
                    f"unprocessed ({STALL_S:g} s without progress)"
                )
                return
        deadline = time.time() + self.opts.drain_s
        last_score = 0.0
        all_met = False
        while time.time() < deadline:
            time.sleep(0.5)
            p = self.sampler.points[-1]
            quiet = time.time() - self.collector.last_received_s >= QUIET_S
            if time.time() - last_score >= 2.0:
                last_score = time.time()
                q = self._score(truth)
                all_met = q.met == q.required
            if p.outbox == 0 and quiet and all_met:
                return
        self.notes.append(
            f"the drain ran its full {self.opts.drain_s:g} s after the engine caught up"
        )

    def _score(self, truth: GroundTruth) -> Quality:
        self.collector.take()
        complete = self.stats is not None and not self.stats.stopped
        return score(
            truth,
            list(self.collector.alerts.values()),
            horizon_ms=None if complete else self.log.max_ts_ms,
            unjudged=self.unjudged,
        )

    # -- ramp

    def _ramp(self, mqtt_url: str, first: FleetPlan) -> None:
        """Steps of rising rate until p99 or the backlog says the engine cannot keep up."""
        opts = self.opts
        best: dict[str, Any] | None = None
        why = f"reached --ramp-max-steps {opts.ramp_max_steps}"
        self.status = "ramping"
        plan = first
        for step in range(1, opts.ramp_max_steps + 1):
            if step > 1:
                assert best is not None
                spec = dataclasses.replace(
                    opts.spec,
                    duration_s=opts.ramp_step_s,
                    rate=best["published_msgs_per_s"] * opts.ramp_factor,
                    speed=None,
                    id_prefix=f"{opts.spec.id_prefix}r{step}",
                )
                plan = self._plan(spec)
            self._prepare(plan)
            self.phase = f"step {step}"
            before = self.sampler.points[-1] if self.sampler and self.sampler.points else None
            self._publish(plan, mqtt_url)
            result = self._judge_step(step, plan, before)
            self.ramp_steps.append(result)
            p99 = "-" if result["p99_ms"] is None else f"{result['p99_ms']:,.0f} ms"
            self.progress.say(
                f"step {step}: {result['published_msgs_per_s']:,.0f} msg/s "
                f"({result['published_rps']:,.0f} readings/s), p99 {p99}: {result['verdict']}"
            )
            if result["verdict"] != "sustained":
                why = result["verdict"]
                break
            best = result
        self.ramp_result = {
            "max_p99_ms": opts.max_p99_ms,
            "step_s": opts.ramp_step_s,
            "factor": opts.ramp_factor,
            "sustained_msgs_per_s": best["published_msgs_per_s"] if best else None,
            "sustained_readings_per_s": best["published_rps"] if best else None,
            "stopped_because": why,
            "steps": self.ramp_steps,
        }
        self.status = "complete"

    def _judge_step(self, step: int, plan: FleetPlan, before: Point | None) -> dict[str, Any]:
        """A step is sustained when the engine processed everything within 5 s of the last
        publish, the p99 of its reading latencies stayed under the bound (judged when at
        least `MIN_STEP_ALERTS` alerts were timed), and the publisher kept to its schedule.
        The plan's rate for a target is estimated from a pilot fleet: the step's own
        published rate is what counts."""
        assert self.sampler is not None
        assert self.stats is not None
        start_s, end_s = self.publish_end - self.stats.elapsed_s, self.publish_end
        published_before = before.published if before else 0
        processed_before = before.processed if before else 0.0
        target = self.log.readings
        settle_until = time.time() + 5.0
        while time.time() < settle_until:
            if self.sampler.points and self.sampler.points[-1].processed >= target:
                break
            time.sleep(0.25)
        caught_up = bool(self.sampler.points) and self.sampler.points[-1].processed >= target
        time.sleep(QUIET_S)  # the step's last alerts reach the webhook
        self.collector.take()
        span = max(end_s - start_s, 1e-9)
        published = target - published_before
        processed_in_time = processed_at(self.sampler.points, end_s) - processed_before
        step_samples = [
            s.total_ms
            for s in self.collector.samples
            if s.kind is DueKind.READING and start_s <= s.due_s <= end_s
        ]
        p99 = float(np.percentile(step_samples, 99)) if step_samples else None
        msgs = self.stats.sent
        wanted = plan.spec.rate or msgs / span
        verdict = "sustained"
        if not caught_up:
            left = target - self.sampler.points[-1].processed
            verdict = f"processing fell behind: {left:,.0f} readings left 5 s after the step"
        elif (
            p99 is not None and len(step_samples) >= MIN_STEP_ALERTS and p99 > self.opts.max_p99_ms
        ):
            verdict = f"p99 {p99:,.0f} ms over {self.opts.max_p99_ms:g} ms"
        elif self.stats.final_lag_s > PUBLISHER_LAG_S:
            verdict = (
                f"the load generator fell {self.stats.final_lag_s:.1f} s behind its schedule "
                f"at {msgs / span:,.0f} msg/s (the engine kept up: the sustained rate is a "
                "lower bound)"
            )
        return {
            "step": step,
            "start_t": round(start_s - self.t0, 2),
            "end_t": round(end_s - self.t0, 2),
            "target_rate": round(wanted, 1),
            "speed": round(plan.speed, 3),
            "published_msgs_per_s": round(msgs / span, 1),
            "published_rps": round(published / span, 1),
            "processed_rps": round(processed_in_time / span, 1),
            "alerts_timed": len(step_samples),
            "p99_ms": None if p99 is None else round(p99, 1),
            "verdict": verdict,
        }

    # -- the end

    def finish(self) -> Path | None:
        """Stop the sampler, the engine and the broker; write the report; its directory."""
        if self.sampler is not None and self.sampler.is_alive():
            self.sampler.stop()
        final_metrics = self.sampler.latest_metrics if self.sampler else None
        self.log.absorb()
        self.collector.take(final=True)
        receiver_counts = dataclasses.asdict(self.receiver.counts) if self.receiver else {}
        self.stack.close()  # webhook deleted, engine and broker stopped, in reverse order
        if self.sampler is None or not self.sampler.points:
            shutil.rmtree(self.work, ignore_errors=True)
            return None
        doc = self._document(final_metrics, receiver_counts)
        out = self.opts.report_dir
        out.mkdir(parents=True, exist_ok=True)
        self._charts(doc, out)
        report.write_json(out / "report.json", doc)
        (out / "report.md").write_text(report.markdown(doc))
        shutil.rmtree(self.work, ignore_errors=True)
        return out

    def _charts(self, doc: dict[str, Any], out: Path) -> None:
        charts: dict[str, str] = {}
        try:
            report.chart_throughput(doc["series"], self.ramp_steps, out / "throughput.png")
            charts["throughput"] = "throughput.png"
            points = [
                (s.received_s - self.t0, s.total_ms)
                for s in self.collector.samples
                if s.kind is DueKind.READING
            ]
            report.chart_latency(doc["latency"]["windows"], points, out / "latency.png")
            charts["latency"] = "latency.png"
            if self.plan is not None and self.map_devices:
                report.chart_map(self.plan.fences_doc(), self._map_cars(), out / "map.png")
                charts["map"] = "map.png"
        except Exception as exc:  # noqa: BLE001  # a chart must not cost the numbers
            self.notes.append(f"a chart failed: {type(exc).__name__}: {exc}")
        doc["charts"] = charts

    def _map_cars(self) -> list[report.CarTrack]:
        assert self.plan is not None
        truth = self._truth()
        cars = {c.car_id: c for c in truth.cars}
        tracks: dict[str, report.CarTrack] = {}
        for car_id in dict.fromkeys(self.map_devices.values()):
            car = cars[car_id]
            tracks[car_id] = report.CarTrack(car_id, car.scenario or "", car.zone_ids)
        for device, payload in self.map_messages:
            track = tracks[self.map_devices[device]]
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(payload)
                for r in doc if isinstance(doc, list) else [doc]:
                    if isinstance(r, dict) and isinstance(r.get("ts"), int) and "lat" in r:
                        fix = (int(r["ts"]), float(r["lat"]), float(r["lon"]))
                        track.fixes.setdefault(device, []).append(fix)
        loan_car = {ln: c.car_id for c in truth.cars for ln in c.loan_ids}
        for alert in self.collector.alerts.values():
            owner = self.map_devices.get(str(alert.get("device_id"))) or loan_car.get(
                str(alert.get("loan_id"))
            )
            if owner in tracks:
                tracks[owner].alerts.append(alert)
        return list(tracks.values())

    def _document(
        self, final: Metrics | None, receiver_counts: Mapping[str, int]
    ) -> dict[str, Any]:
        assert self.sampler is not None
        assert self.target is not None
        pts = self.sampler.points
        t0 = self.t0
        over_time = series(pts, t0)
        publish_pts = [p for p in pts if p.t <= self.publish_end + 0.5]
        span = max(self.publish_end - t0, 1e-9)
        published = self.log.readings
        processed = pts[-1].processed
        processed_by_end = processed_at(pts, self.publish_end)
        caught = next(
            (p.t for p in pts if p.t >= self.publish_end and p.processed >= published), None
        )
        rates = [r for r in over_time["processed_rps"] if r is not None]
        base = self.sampler.baseline
        raised = (
            {k: v - base.by_label(ALERTS).get(k, 0.0) for k, v in final.by_label(ALERTS).items()}
            if final
            else {}
        )
        by_type: dict[str, int] = {}
        for a in self.collector.alerts.values():
            by_type[str(a.get("type"))] = by_type.get(str(a.get("type")), 0) + 1
        quality = None
        if self.plan is not None and not self.opts.ramp:
            quality = self._score(self._truth()).to_json()
        plan_doc: dict[str, Any] = {"speed": None, "cars": 0, "scenario_cars": 0, "skipped": []}
        if self.plan is not None and self.base_truth is not None:
            truth = self._truth()
            plan_doc = {
                "speed": self.plan.speed,
                "cars": len(truth.cars),
                "scenario_cars": sum(c.role is Role.SCENARIO for c in truth.cars),
                "scenarios": _count(c.scenario for c in truth.cars if c.role is Role.SCENARIO),
                "event_start": truth.start_ms,
                "event_end": truth.end_ms,
                "required_alerts": len(truth.required),
                "skipped": self.plan.skipped(),
                "engine_config": self.plan.engine_config(),
            }
        elif self.opts.ramp:
            plan_doc["speed"] = math.nan
        return {
            "pledgewatch_loadtest": 1,
            "status": self.status,
            "started_at": self.started_at,
            "command": self.opts.command,
            "spec": _spec_json(self.opts.spec, self.opts.clients),
            "plan": plan_doc,
            "machine": {**self.machine, "load_average_end": [round(x, 2) for x in os.getloadavg()]},
            "engine": {
                "mode": self.target.mode,
                "api": self.target.url,
                "store": self.target.store,
                "pid": self.target.pid,
                "rules": _rules_json(self.rules),
                "exit_status": self.engine_exit,
                "metrics_scrape_errors": self.sampler.scrape_errors,
            },
            "setup": self.setup,
            "publish": {
                **(dataclasses.asdict(self.stats) if self.stats else {}),
                "messages": self.log.messages,
                "readings": published,
                "error": self.publish_error,
            },
            "throughput": {
                "published_messages": self.log.messages,
                "published_readings": published,
                "processed_readings": round(processed),
                "publish_s": round(span, 2),
                "published_rps_mean": round(published / span, 1),
                "processed_rps_mean": round(processed_by_end / span, 1),
                "processed_rps_peak": round(max(rates), 1) if rates else None,
                "backlog_max": round(max(over_time["backlog"], default=0.0)),
                "caught_up_s": None if caught is None else round(caught - self.publish_end, 2),
            },
            "latency": {
                "by_kind": summarize(self.collector.samples),
                "not_timed": len(self.collector.not_timed),
                "not_timed_by_type": _count(str(a.get("type")) for a in self.collector.not_timed),
                "windows": windows(self.collector.samples, t0, LATENCY_WINDOW_S),
                "window_s": LATENCY_WINDOW_S,
            },
            "alerts": {
                "received_unique": len(self.collector.alerts),
                "received_by_type": dict(sorted(by_type.items())),
                "raised_by_engine": {k: round(v) for k, v in sorted(raised.items()) if v},
                "receiver": dict(receiver_counts),
                "deliveries_by_result": final.by_label(DELIVERIES) if final else {},
            },
            "quality": quality,
            "resources": resources(pts, publish_pts, self.target),
            "ramp": self.ramp_result,
            "series": over_time,
            "notes": self.notes,
        }


WALL_CLOCK_TYPES = frozenset({"device.offline", "device.online"})


def widen_wall_clock(truth: GroundTruth, late_s: float) -> GroundTruth:
    """`truth` with the windows of wall-clock alerts (`device.offline`, the `device.online`
    after it) stretched by `late_s`: the plan put them on the wall clock of a stream that
    starts when planned; it started that much later (setup, generating the cars)."""
    extra_ms = max(0, round(late_s * 1000))
    required = tuple(
        dataclasses.replace(e, ts_max_ms=e.ts_max_ms + extra_ms)
        if e.type in WALL_CLOCK_TYPES and e.ts_max_ms is not None
        else e
        for e in truth.required
    )
    return dataclasses.replace(truth, required=required)


def _rules_json(rules: Config) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(rules):
        value = getattr(rules, f.name)
        out[f.name] = dict(value) if isinstance(value, Mapping) else value
    return out


def _count(values: Iterable[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items()))


def run(opts: Options, err: IO[str] = sys.stderr) -> int:
    """Run a load test; 0 when it completed, 1 when it failed, 130 when interrupted.

    Whatever happens, the engine and the broker it started are stopped and what was
    measured is written."""
    test = Loadtest(opts, err)
    code = 1
    try:
        test.execute()
        code = 0
    except KeyboardInterrupt:
        test.progress.say("interrupted: stopping, writing a partial report")
        test.status = f"interrupted while {test.status}"
        code = 130
    except (LoadtestError, TargetError, FleetError) as exc:
        test.progress.say(f"the load test failed: {exc}")
        test.status = f"failed while {test.status}: {exc}"
    except Exception as exc:
        test.status = f"failed while {test.status}: {type(exc).__name__}: {exc}"
        raise  # a bug: its traceback, after the cleanup below
    finally:
        out = test.finish()
        if out is not None:
            test.progress.say(f"report: {out / 'report.md'} ({out / 'report.json'})")
    return code
