"""The state of one load test as it runs: its options and parts, what it published when, the
alerts it received, the samples, how far it got, and the small steps every phase shares
(planning a fleet, generating its messages, the truth and the score so far)."""

from __future__ import annotations

import math
import os
import platform
import time
from datetime import UTC, datetime
from typing import IO, Any

from simulator.fleet_plan import FleetPlan, Scheduled, plan_fleet
from simulator.fleet_spec import FleetSpec
from simulator.loadtest.judging import widen_wall_clock
from simulator.loadtest.latency import PublishLog
from simulator.loadtest.options import Options
from simulator.loadtest.quality import Quality, score
from simulator.loadtest.sampling import Collector, Progress, Sampler
from simulator.loadtest.stack import Stack
from simulator.loadtest.target import Target
from simulator.mqtt_publisher import PublishStats
from simulator.truth import GroundTruth


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _machine() -> dict[str, object]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": [round(x, 2) for x in load] if load else None,
    }


class Loadtest:
    """One load test as it runs: its parts, what it published and received, how far it got."""

    def __init__(self, opts: Options, err: IO[str]) -> None:
        self.opts = opts
        self.progress = Progress(err)
        self.status = "not started"
        self.notes: list[str] = []
        self.setup: dict[str, float | int] = {}
        self.stack = Stack(opts, self.progress, self.setup, self.notes)
        self.started_at = _now_iso()
        self.machine = _machine()
        self.target: Target | None = None
        self.plan: FleetPlan | None = None
        self.log = PublishLog(zone_grace_s=self.stack.rules.zone_grace_s)
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
        self.map_messages: list[tuple[str, int, bytes]] = []  # device, JT/T 808 msg_id, payload
        self.ramp_steps: list[dict[str, Any]] = []
        self.ramp_result: dict[str, Any] | None = None

    def plan_fleet(self, spec: FleetSpec) -> FleetPlan:
        """Plan the fleet of `spec`, its time added to the setup's."""
        started = time.perf_counter()
        plan = plan_fleet(spec, self.progress.say)
        self.setup["plan_s"] = round(
            self.setup.get("plan_s", 0.0) + time.perf_counter() - started, 2
        )
        return plan

    def prepare(self, plan: FleetPlan) -> None:
        """Generate the plan's messages before the clock starts, the time added to the setup's."""
        started = time.perf_counter()
        plan.prepare(lambda done, total: self.progress.live(f"generating cars {done:,}/{total:,}"))
        took = time.perf_counter() - started
        self.setup["generate_s"] = round(self.setup.get("generate_s", 0.0) + took, 2)
        self.progress.say(f"generated the cars' messages in {took:.1f} s")

    def on_sent(self, msg: Scheduled, at_s: float) -> None:
        """The publisher's hook: note what went out when (its threads; kept cheap)."""
        self.log.record(msg.device_id, msg.readings, at_s)
        if msg.device_id in self.map_devices:
            self.map_messages.append((msg.device_id or "", msg.msg_id, msg.payload))

    def truth(self) -> GroundTruth:
        """The plan's truth for a live engine, its wall-clock windows widened by how late
        the stream started after it was planned (the setup in between)."""
        assert self.base_truth is not None
        return widen_wall_clock(self.base_truth, self.late_s)

    def score(self, truth: GroundTruth) -> Quality:
        """The alerts received so far against `truth` (up to the last event time published,
        when publishing stopped early)."""
        self.collector.take()
        complete = self.stats is not None and not self.stats.stopped
        return score(
            truth,
            list(self.collector.alerts.values()),
            horizon_ms=None if complete else self.log.max_ts_ms,
            unjudged=self.stack.unjudged,
        )
