"""The load test's JT/T 808 trackers (`--jt808-share`): the gateway it starts for them
(`pledgewatch gateway jt808`, publishing into the broker the engine reads), their terminals
(`simulator.jt808_terminal`, which register, authenticate, then send what the plan gives
them), and what both counted, as the report's `jt808` section and its Markdown.

The gateway keeps a silent terminal's connection for a day (`--idle-timeout-s`): a scenario
tracker that says nothing for half an hour of event time must not be cut off mid-run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np

from simulator.fleet_plan import FleetPlan, Scheduled
from simulator.harness.gateway_process import HOST, GatewayProcess, GatewayStartError
from simulator.harness.procfs import proc_cpu_s, proc_memory
from simulator.jt808_terminal import TerminalFleet
from simulator.loadtest.options import LoadtestError

GATEWAY_ARGS: Final = ("--idle-timeout-s", "86400", "--summary-s", "3600")
SETTLE_S: Final = 10.0  # the longest wait for the last reports' answers at the end
P: Final = "pledgewatch_jt808_"


class Jt808Side:
    """The gateway and the terminals of one load test; `close` stops both."""

    def __init__(self, mqtt_url: str, work: Path, log_path: Path) -> None:
        log_path.unlink(missing_ok=True)
        self.gateway = GatewayProcess(
            mqtt_url, work / "jt808-auth.json", log_path, args=GATEWAY_ARGS
        )
        self.fleet: TerminalFleet | None = None
        self.trackers = 0  # terminals connected through the gateway
        self.messages = 0  # handed to the terminals (the publishing thread counts)
        self.readings = 0  # in those messages, as the gateway maps them
        self.connect_s = 0.0
        self.gateway_exit: int | None = None

    def start(self) -> None:
        """Start the gateway (LoadtestError if it does not come up) and the terminals' loop."""
        try:
            self.gateway.start()
        except GatewayStartError as exc:
            msg = f"the JT/T 808 gateway did not start: {exc}"
            raise LoadtestError(msg) from exc
        self.fleet = TerminalFleet(HOST, self.gateway.port)

    def connect(self, numbers: Mapping[str, str]) -> None:
        """Register and authenticate a terminal per device id -> number; LoadtestError when
        one cannot."""
        assert self.fleet is not None
        started = time.perf_counter()
        try:
            failed = self.fleet.connect(numbers)
        except TimeoutError as exc:
            msg = f"JT/T 808 terminals did not get through the gateway in time ({exc})"
            raise LoadtestError(msg) from exc
        self.connect_s += time.perf_counter() - started
        if failed:
            msg = (
                f"{failed} of {len(numbers)} JT/T 808 terminals could not register and "
                f"authenticate with the gateway: see {self.gateway.log_path}"
            )
            raise LoadtestError(msg)
        self.trackers = len(self.fleet.terminals)

    def send(self, item: Scheduled) -> None:
        """The publisher's hand-over of a terminal's message (never blocks)."""
        assert self.fleet is not None
        self.messages += 1
        self.readings += len(item.readings)
        self.fleet.send(item.device_id or "", item.msg_id, item.payload)

    def summary(self, share: float, plan: FleetPlan | None) -> dict[str, Any]:
        """The report's `jt808` section: which trackers spoke JT/T 808 (by their cars'
        stories, when `plan` is known) and what the terminals and the gateway counted (waits
        up to `SETTLE_S` for the last answers; scrapes the gateway's `/metrics`)."""
        fleet = self.fleet
        doc: dict[str, Any] = {"share": share, "trackers": self.trackers}
        if plan is not None:
            doc["trackers_by_story"] = _by_story(plan)
        if fleet is None:
            return doc
        unanswered = fleet.settle(SETTLE_S)
        stats = fleet.stats
        latencies = np.array(stats.latencies_s) * 1000
        doc["connect_s"] = round(self.connect_s, 2)
        doc["messages"] = self.messages
        doc["readings"] = self.readings
        doc["terminals"] = {
            "ready": stats.ready,
            "reports_sent": stats.sent,
            "acked": stats.acked,
            "refused": stats.refused,
            "lost": stats.lost,
            "closed": stats.closed,
            "unanswered_at_end": unanswered,
            "ack_ms": {
                q: round(float(np.percentile(latencies, p)), 1) if latencies.size else None
                for q, p in (("p50", 50), ("p99", 99), ("max", 100))
            },
        }
        if not self.gateway.running():
            doc["gateway"] = {"error": "the gateway process had exited"}
            return doc
        try:
            m = self.gateway.metrics()
            cpu_s, rss_peak = proc_cpu_s(self.gateway.pid), proc_memory(self.gateway.pid)["VmHWM"]
        except (httpx.HTTPError, OSError) as exc:
            doc["gateway"] = {"error": f"not measured: {exc}"}
            return doc
        doc["gateway"] = {
            "registrations": round(m.value(P + "registrations_total")),
            "authentications": round(m.value(P + "authentications_total")),
            "connections_opened": round(m.value(P + "connections_opened_total")),
            "frames": _ints(m.by_label(P + "frames_total", "msg_id")),
            "reports_acked": round(m.value(P + "reports_acked_total")),
            "readings_published": _ints(m.by_label(P + "readings_published_total", "stream")),
            "rejected": _ints(m.by_label(P + "rejected_total", "reason")),
            "mqtt_reconnects": round(m.value(P + "mqtt_reconnects_total")),
            "cpu_s": round(cpu_s, 2),
            "rss_peak": rss_peak,
        }
        return doc

    def close(self) -> None:
        """Close the terminals, then stop the gateway (it answers what the broker acked)."""
        if self.fleet is not None:
            self.fleet.close()
        if self.gateway.proc is not None:
            self.gateway_exit = self.gateway.terminate()


def _by_story(plan: FleetPlan) -> dict[str, int]:
    """JT/T 808 trackers per story of their car (`quiet` for commuters)."""
    out = {"quiet": len(plan.terminals)}
    for car in plan.scenario_cars.values():
        on = sum(t.device_id in plan.terminals for t in car.trackers)
        if on and car.scenario is not None:
            out[car.scenario.value] = out.get(car.scenario.value, 0) + on
            out["quiet"] -= on
    return dict(sorted(out.items()))


def _ints(values: Mapping[str, float]) -> dict[str, int]:
    return {k: round(v) for k, v in sorted(values.items()) if v}


def markdown(doc: Mapping[str, Any]) -> list[str]:
    """The report's lines on the JT/T 808 trackers."""
    lines = [
        "## JT/T 808 trackers",
        "",
        (
            f"- {doc['trackers']:,} trackers (share {doc['share']:g} asked) spoke JT/T 808 "
            f"over TCP to `pledgewatch gateway jt808` (connected in "
            f"{doc.get('connect_s', 0):.2f} s): {doc.get('messages', 0):,} messages with "
            f"{doc.get('readings', 0):,} readings"
        ),
    ]
    if doc.get("trackers_by_story"):
        stories = ", ".join(f"{k} {v:,}" for k, v in doc["trackers_by_story"].items())
        lines.append(f"- their cars' stories: {stories}")
    t = doc.get("terminals")
    if t:
        ack = t["ack_ms"]
        lines.append(
            f"- terminals: {t['reports_sent']:,} reports sent, {t['acked']:,} answered result 0, "
            f"{t['refused']:,} refused, {t['unanswered_at_end']:,} unanswered at the end, "
            f"{t['lost']:,} lost; report → 0x8001 p50 {ack['p50']} ms, p99 {ack['p99']} ms"
        )
    g = doc.get("gateway")
    if g and "error" not in g:
        pairs = ", ".join(f"{k} {v:,}" for k, v in g["readings_published"].items())
        frames = ", ".join(f"{k} {v:,}" for k, v in g["frames"].items())
        rejected = ", ".join(f"{k} {v:,}" for k, v in g["rejected"].items()) or "none"
        lines.append(
            f"- gateway: {g['registrations']:,} registrations, {g['authentications']:,} "
            f"authentications, {g['reports_acked']:,} reports acked; frames {frames}"
        )
        lines.append(
            f"- gateway published {pairs}; rejected {rejected}; CPU {g['cpu_s']:.1f} s, "
            f"RSS peak {g['rss_peak'] / 2**20:.0f} MiB"
        )
    elif g:
        lines.append(f"- gateway: {g['error']}")
    return [*lines, ""]
