"""The parts a load test runs against: the broker (a private Mosquitto, the one `--mqtt-url`
names, or with `--api` the local one), the engine (`pledgewatch run` started on SQLite in a
temporary directory, or attached by `--api`) with its rules, the plan's fences and loans
loaded into it, our own signed-webhook receiver registered with it, and, for JT/T 808
trackers, the gateway they talk to (`simulator.loadtest.jt808`)."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from devices.mqtt_source import BrokerAddress
from engine.core.config import Config
from simulator.fleet_plan import FleetPlan
from simulator.harness.broker import BrokerUnavailable, PrivateBroker, answers
from simulator.harness.receiver import ReceivedWebhook, WebhookReceiver
from simulator.loadtest.jt808 import Jt808Side
from simulator.loadtest.judging import LENDING_TYPES, unjudged
from simulator.loadtest.options import LoadtestError, Options
from simulator.loadtest.sampling import Progress
from simulator.loadtest.target import StartedEngine, Target

DEFAULT_ATTACH_MQTT = "mqtt://127.0.0.1:1883"
HOOK_ID_PREFIX = "loadtest-"


class Stack:
    """The broker, the engine and the receiver of one load test, in its temporary directory;
    `close` takes them down in the reverse order they came up."""

    def __init__(
        self,
        opts: Options,
        progress: Progress,
        setup: dict[str, float | int],
        notes: list[str],
    ) -> None:
        self.opts = opts
        self.progress = progress
        self.setup = setup  # the report's setup times and counts, filled in here
        self.notes = notes  # the report's notes, added to here
        self.work = Path(tempfile.mkdtemp(prefix="pledgewatch-loadtest-"))
        self.exits = contextlib.ExitStack()
        self.broker_pid: int | None = None
        self.receiver: WebhookReceiver | None = None
        self.hook_id = f"{HOOK_ID_PREFIX}{os.getpid()}"
        self.rules = Config()
        self.unjudged: set[str] = set(LENDING_TYPES)  # and, attached, what the rules change
        self.engine_exit: int | None = None
        self.jt808: Jt808Side | None = None

    def broker(self) -> str:
        """The broker to publish to, started if it is ours; its URL."""
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
        self.exits.callback(broker.stop)
        self.broker_pid = broker.pid
        self.progress.say(f"started a private Mosquitto on {broker.url} (deploy/mosquitto.conf)")
        return broker.url

    def engine(self, mqtt_url: str, plan_config: Mapping[str, object]) -> Target:
        """The engine under test, attached or started with the rules the plan needs."""
        if self.opts.api:
            token = self.opts.api_token or ""
            target = Target(self.opts.api, token, self.opts.engine_pid, "attached", "unknown")
            self.exits.callback(target.close)
            target.check()
            self.rules = self.opts.engine_rules or Config()
            self.unjudged, notes = unjudged(plan_config, self.rules)
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
        self.exits.callback(self._stop_engine, engine)
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

    def load(self, target: Target, plan: FleetPlan, *, loans: bool) -> None:
        """Load the plan's fences, and its loans if asked, through the engine's API."""
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

    def receive(self, target: Target, on_delivery: Callable[[ReceivedWebhook], None]) -> None:
        """Start our webhook receiver and register it with the engine."""
        secret = secrets.token_urlsafe(24)
        receiver = WebhookReceiver(secret, on_delivery=on_delivery, keep=False)
        receiver.start()
        self.receiver = receiver
        self.exits.callback(receiver.stop)
        target.put_webhook(self.hook_id, receiver.url, secret)
        self.exits.callback(target.delete_webhook, self.hook_id)

    def start_jt808(self, mqtt_url: str) -> Jt808Side:
        """Start the JT/T 808 gateway, publishing into the broker the engine reads."""
        side = Jt808Side(mqtt_url, self.work, self.opts.report_dir / "gateway.log")
        self.exits.callback(self._stop_jt808, side)
        started = time.perf_counter()
        self.progress.say("starting pledgewatch gateway jt808 for the JT/T 808 trackers")
        side.start()
        self.setup["gateway_start_s"] = round(time.perf_counter() - started, 2)
        self.jt808 = side
        return side

    def _stop_jt808(self, side: Jt808Side) -> None:
        side.close()
        tail = side.gateway.log_tail(200_000)
        if side.gateway_exit not in {None, 0} or "Traceback" in tail or " ERROR " in tail:
            self.notes.append(f"the JT/T 808 gateway logged errors: see {side.gateway.log_path}")

    def close(self) -> None:
        """Delete the webhook and stop the receiver, the JT/T 808 gateway and its terminals,
        the engine and the broker."""
        self.exits.close()
