"""Sampling a running load test: the publish log and the webhook alerts timed against it, the
engine's `/metrics` and process once a second, the derived time series, and the progress line.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from simulator.harness.procfs import machine_cpu_s, tree_cpu_s, tree_memory
from simulator.harness.prometheus import ALERTS, OUTBOX, Metrics
from simulator.harness.receiver import ReceivedWebhook
from simulator.loadtest.latency import DueKind, PublishLog, Sample, sample
from simulator.loadtest.target import Target

MIN_INTERVAL_S = 0.5  # rates need this much time between samples (CPU time moves in ticks)


@dataclass(frozen=True, slots=True)
class Point:
    """One sample of the sampler, cumulative counts since publishing started."""

    t: float  # unix seconds
    published: int  # valid readings handed to the broker
    processed: float  # valid readings the engine took (accepted + duplicates)
    alerts_raised: float
    webhooks: int  # unique alerts received
    outbox: float
    engine_cpu_s: float | None
    engine_rss: int | None
    self_cpu_s: float
    machine_busy_s: float
    p99_ms: float | None


class Progress:
    """Setup lines and the live one-line display, on stderr."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self._last_plain = 0.0
        self._live = False

    def say(self, message: str) -> None:
        """A line of its own (ends a live line first)."""
        end_live = "\n" if self._live else ""
        self._live = False
        self._write(f"{end_live}[{time.monotonic() - self.started:6.1f}s] {message}\n")

    def live(self, message: str, *, force: bool = False) -> None:
        """Rewrite the live line (a terminal), or print it every 5 s (a log file)."""
        now = time.monotonic()
        text = f"[{now - self.started:6.1f}s] {message}"
        if self.tty:
            self._write("\r\x1b[K" + text)
            self._live = True
        elif force or now - self._last_plain >= 5.0:
            self._last_plain = now
            self._write(text + "\n")

    def _write(self, text: str) -> None:
        # A closed stderr (piped into `head`) must not stop the run before its cleanup.
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()


@dataclass(slots=True)
class Collector:
    """Alerts as the webhook receives them, timed against the publish log by the sampler."""

    log: PublishLog
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # unique, by id
    samples: list[Sample] = field(default_factory=list)
    not_timed: list[dict[str, Any]] = field(default_factory=list)
    last_received_s: float = 0.0
    _inbox: list[ReceivedWebhook] = field(default_factory=list)
    _waiting: list[ReceivedWebhook] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _take_lock: threading.Lock = field(default_factory=threading.Lock)

    def on_delivery(self, delivery: ReceivedWebhook) -> None:
        """The receiver's hook (its threads)."""
        with self._lock:
            self._inbox.append(delivery)
            self.last_received_s = delivery.received_s

    def take(self, *, final: bool = False) -> None:
        """Time what arrived. An alert whose reading is not in the log yet waits for the next
        turn (the publisher notes a send just after it); at the end it is 'not timed'."""
        with self._take_lock:  # the sampler and the drain both call this
            self._take(final=final)

    def _take(self, *, final: bool) -> None:
        with self._lock:
            fresh, self._inbox = self._inbox, []
        todo, self._waiting = [*self._waiting, *fresh], []
        for d in todo:
            if not d.first_seen:
                continue  # a redelivery: timed once, by the first arrival
            self.alerts.setdefault(str(d.alert.get("id")), d.alert)
            s = sample(self.log, d.alert, d.received_s)
            if s is not None:
                self.samples.append(s)
            elif final or time.time() - d.received_s > 5.0:
                self.not_timed.append(d.alert)
            else:
                self._waiting.append(d)

    def p99(self, since_s: float = 0.0) -> float | None:
        """p99 of reading latencies (ms) of alerts received since `since_s`."""
        values = [
            s.total_ms
            for s in self.samples
            if s.kind is DueKind.READING and s.received_s >= since_s
        ]
        return float(np.percentile(values, 99)) if values else None


class Sampler(threading.Thread):
    """Once a second: `/metrics`, the engine's CPU and RSS, the publish log, the alerts."""

    def __init__(
        self,
        target: Target,
        collector: Collector,
        progress: Progress,
        baseline: Metrics,
        phase: Callable[[], str],
    ) -> None:
        super().__init__(name="loadtest-sampler", daemon=True)
        self.target = target
        self.collector = collector
        self.progress = progress
        self.baseline = baseline
        self.phase = phase
        self.points: list[Point] = []
        self.latest_metrics = baseline
        self.scrape_errors = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        while not self.stop_event.is_set():
            self.tick()
            self.stop_event.wait(1.0)

    def tick(self) -> Point:
        """Take one sample now."""
        now = time.time()
        self.collector.log.absorb()
        self.collector.take()
        try:
            m = self.target.metrics()
            self.latest_metrics = m
        except Exception:  # noqa: BLE001  # a slow or dying engine must not stop the sampling
            self.scrape_errors += 1
            m = self.latest_metrics
        pid = self.target.pid
        cpu: float | None = None
        rss: int | None = None
        if pid is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                # the engine with its MQTT child process
                cpu, rss = tree_cpu_s(pid), tree_memory(pid)["VmRSS"]
        times = os.times()
        base = self.baseline
        point = Point(
            t=now,
            published=self.collector.log.readings,
            processed=m.processed - base.processed,
            alerts_raised=m.total(ALERTS) - base.total(ALERTS),
            webhooks=len(self.collector.alerts),
            outbox=m.total(OUTBOX),
            engine_cpu_s=cpu,
            engine_rss=rss,
            self_cpu_s=times.user + times.system,
            machine_busy_s=sum(machine_cpu_s()),  # interrupts included
            p99_ms=self.collector.p99(),
        )
        self.points.append(point)
        self._show(point)
        return point

    def _show(self, p: Point) -> None:
        prev = self.points[-2] if len(self.points) > 1 else None
        dt = p.t - prev.t if prev else 0.0
        pub = (p.published - prev.published) / dt if prev and dt > 0 else 0.0
        done = (p.processed - prev.processed) / dt if prev and dt > 0 else 0.0
        p99 = f"{p.p99_ms:,.0f} ms" if p.p99_ms is not None else "-"
        self.progress.live(
            f"{self.phase():<8} published {pub:8,.0f}/s  processed {done:8,.0f}/s  "
            f"backlog {max(0, p.published - p.processed):8,.0f}  alerts {p.webhooks:7,d}  "
            f"p99 {p99}"
        )

    def stop(self) -> None:
        """Stop sampling and take a last sample."""
        self.stop_event.set()
        self.join(10)
        self.tick()


def processed_at(points: list[Point], at_s: float) -> float:
    """Processed readings at `at_s`, interpolated between samples."""
    prev: Point | None = None
    for p in points:
        if p.t >= at_s:
            if prev is None or p.t == prev.t:
                return p.processed
            frac = (at_s - prev.t) / (p.t - prev.t)
            return prev.processed + frac * (p.processed - prev.processed)
        prev = p
    return points[-1].processed if points else 0.0


def series(points: list[Point], t0: float) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {
        k: []
        for k in (
            "t",
            "published_rps",
            "processed_rps",
            "backlog",
            "engine_cpu_cores",
            "engine_rss_mib",
            "webhooks",
        )
    }
    for prev, p in itertools.pairwise(points):
        dt = p.t - prev.t
        if dt < MIN_INTERVAL_S:
            continue
        out["t"].append(round(p.t - t0, 2))
        out["published_rps"].append(round((p.published - prev.published) / dt, 1))
        out["processed_rps"].append(round((p.processed - prev.processed) / dt, 1))
        out["backlog"].append(max(0.0, p.published - p.processed))
        cpu = (
            round((p.engine_cpu_s - prev.engine_cpu_s) / dt, 3)
            if p.engine_cpu_s is not None and prev.engine_cpu_s is not None
            else None
        )
        out["engine_cpu_cores"].append(cpu)
        out["engine_rss_mib"].append(
            None if p.engine_rss is None else round(p.engine_rss / 2**20, 1)
        )
        out["webhooks"].append(p.webhooks)
    return out


def resources(pts: list[Point], publish_pts: list[Point], target: Target) -> dict[str, Any]:
    """CPU (cores, mean over the publish phase and the peak second) and RSS of the engine;
    CPU of this process and of the whole machine."""
    out: dict[str, Any] = {}
    first, last = (publish_pts[0], publish_pts[-1]) if publish_pts else (pts[0], pts[-1])
    span = max(last.t - first.t, 1e-9)
    out["loadtest_cpu_cores_mean"] = round((last.self_cpu_s - first.self_cpu_s) / span, 3)
    out["machine_busy_cores_mean"] = round((last.machine_busy_s - first.machine_busy_s) / span, 3)
    if first.engine_cpu_s is None or last.engine_cpu_s is None:
        out["engine_not_measured"] = (
            "attached to an engine without --engine-pid"
            if target.mode == "attached"
            else "its process could not be read"
        )
        return out
    out["engine_cpu_cores_mean"] = round((last.engine_cpu_s - first.engine_cpu_s) / span, 3)
    per_second = [
        (b.engine_cpu_s - a.engine_cpu_s) / (b.t - a.t)
        for a, b in itertools.pairwise(pts)
        if a.engine_cpu_s is not None and b.engine_cpu_s is not None and b.t - a.t >= MIN_INTERVAL_S
    ]
    out["engine_cpu_cores_peak"] = round(max(per_second), 3) if per_second else None
    rss = [p.engine_rss for p in pts if p.engine_rss is not None]
    out["engine_rss_start"] = rss[0] if rss else None
    out["engine_rss_peak"] = max(rss) if rss else None
    out["engine_rss_end"] = rss[-1] if rss else None
    out["engine_cpu_s_total"] = (
        round(pts[-1].engine_cpu_s - pts[0].engine_cpu_s, 2)
        if (pts[-1].engine_cpu_s is not None and pts[0].engine_cpu_s is not None)
        else None
    )
    return out
