"""The soak's sampler: every few seconds the engine's memory and CPU (its process tree, from
/proc), its `/metrics` (readings, rejects, alerts, outbox, deliveries, batch latency), what
was published, and the publish-to-webhook latency of the alerts received since the last
sample (timed by the load test's `Collector` against its `PublishLog`)."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import httpx
import numpy as np

from simulator.harness.engine_process import EngineProcess
from simulator.harness.procfs import tree_cpu_s, tree_memory
from simulator.harness.prometheus import (
    ALERTS,
    BATCH_BUCKETS,
    DELIVERIES,
    OUTBOX,
    REJECTED,
    Metrics,
)
from simulator.loadtest.latency import DueKind
from simulator.loadtest.sampling import Collector


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample. Counts are cumulative since publishing started; `*_ms` and `cpu_share`
    cover the interval since the previous sample; None when unknown (a failed scrape)."""

    t: float  # seconds since publishing started
    phase: str  # the receiver's phase (ok, 503, stall)
    rss_bytes: int | None  # the engine and its MQTT child
    cpu_share: float | None  # cores busy in the engine's tree over the interval
    published: int  # valid readings handed to the broker (duplicates included)
    processed: float | None  # readings the engine took: accepted + duplicates
    rejected: float | None
    alerts: float | None  # raised by the engine's pipeline
    webhooks: int  # distinct alert ids the receiver accepted
    posts: int  # POSTs the receiver answered, whatever the answer
    delivered: float | None  # the dispatcher's attempts by result
    failed: float | None
    dead: float | None
    outbox: float | None  # deliveries pending
    batch_p50_ms: float | None  # the engine's turns (idle ones too), from its histogram
    batch_p99_ms: float | None
    batch_max_ms: float | None  # the top bucket's bound: 5,000 reads "5 s or more"
    latency_n: int  # reading alerts first received in the interval
    latency_p50_ms: float | None  # publish to webhook of those
    latency_p99_ms: float | None

    @property
    def backlog(self) -> float | None:
        """Readings published that the engine has not taken yet."""
        return None if self.processed is None else self.published - self.processed

    def to_json(self) -> dict[str, object]:
        """The sample as a JSON object, with the backlog."""
        return {**asdict(self), "backlog": self.backlog}


def bucket_quantile(cumulative: Mapping[float, float], q: float) -> float | None:
    """The `q` quantile (0-1) of a cumulative histogram {upper bound: count}, interpolated
    within its bucket as Prometheus's `histogram_quantile` does; None when empty."""
    items = sorted(cumulative.items())
    if not items or items[-1][1] <= 0:
        return None
    rank = q * items[-1][1]
    low, below = 0.0, 0.0
    for bound, count in items:
        if count >= rank:
            if math.isinf(bound):
                return low  # past the last finite bucket: its bound is all we know
            share = (rank - below) / (count - below) if count > below else 1.0
            return low + (bound - low) * share
        low, below = bound, count
    return low


def bucket_max(cumulative: Mapping[float, float]) -> float | None:
    """The upper bound of the highest non-empty bucket (the last finite bound when values
    fell past it); None when empty."""
    items = sorted(cumulative.items())
    top, below = None, 0.0
    for bound, count in items:
        if count > below:
            top = bound
        below = count
    if top is not None and math.isinf(top):
        finite = [b for b, _ in items if not math.isinf(b)]
        return finite[-1] if finite else None
    return top


def _buckets(m: Metrics) -> dict[float, float]:
    return {float(le): n for le, n in m.by_label(BATCH_BUCKETS, "le").items()}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


class Sampler(threading.Thread):
    """Takes a `Sample` every `every_s` until stopped; `say` gets a progress line now and then."""

    def __init__(  # what a sample reads, spelled out
        self,
        engine: EngineProcess,
        http: httpx.Client,
        collector: Collector,
        phase: Callable[[], str],
        posts: Callable[[], int],
        baseline: Metrics,
        t0: float,
        every_s: float,
        say: Callable[[str], None],
    ) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.engine = engine
        self.http = http
        self.collector = collector
        self.phase = phase
        self.posts = posts
        self.baseline = baseline
        self.t0 = t0
        self.every_s = every_s
        self.say = say
        self.samples: list[Sample] = []
        self.scrape_errors: list[dict[str, object]] = []
        self.engine_died_at: float | None = None
        self._halt = threading.Event()
        self.latest = baseline  # the last good scrape
        self._prev_cpu: tuple[float, float] | None = None
        self._timed = 0  # collector samples already taken into a Sample
        self._said = 0.0

    def run(self) -> None:
        """Sample until `stop`."""
        while not self._halt.wait(max(0.0, self.every_s - (time.time() - self.t0) % self.every_s)):
            self.tick()

    def stop(self) -> None:
        """Stop sampling (after the sample in hand), then take one last sample."""
        self.cancel()
        self.tick()

    def cancel(self) -> None:
        """Stop sampling (after the sample in hand)."""
        self._halt.set()
        if self.is_alive():
            self.join(30)

    def tick(self) -> Sample:
        """Take one sample now."""
        now = time.time()
        m: Metrics | None = None
        try:
            m = self.engine.metrics(self.http)
        except (httpx.HTTPError, ValueError) as exc:
            self.scrape_errors.append({"t": round(now - self.t0, 2), "error": str(exc)[:300]})
        # after the scrape: what was published is counted up to now, never behind the engine
        self.collector.log.absorb()
        self.collector.take()
        fresh = self.collector.samples[self._timed :]
        self._timed += len(fresh)
        latencies = [s.total_ms for s in fresh if s.kind is DueKind.READING]
        rss: int | None = None
        cpu_share: float | None = None
        if self.engine.running():
            with contextlib.suppress(OSError, ValueError, IndexError):
                rss = tree_memory(self.engine.pid)["VmRSS"]
                cpu = tree_cpu_s(self.engine.pid)
                if self._prev_cpu is not None and now > self._prev_cpu[0]:
                    cpu_share = (cpu - self._prev_cpu[1]) / (now - self._prev_cpu[0])
                self._prev_cpu = (now, cpu)
        elif self.engine_died_at is None:
            self.engine_died_at = now - self.t0
        sample = self._sample(now, m, rss, cpu_share, latencies)
        self.samples.append(sample)
        if now - self._said >= 30.0:
            self._said = now
            self.say(_progress(sample))
        return sample

    def _sample(
        self,
        now: float,
        m: Metrics | None,
        rss: int | None,
        cpu_share: float | None,
        latencies: list[float],
    ) -> Sample:
        base = self.baseline
        p50 = p99 = top = None
        if m is not None:
            delta = {b: n - _buckets(self.latest).get(b, 0.0) for b, n in _buckets(m).items()}
            p50, p99 = bucket_quantile(delta, 0.5), bucket_quantile(delta, 0.99)
            top = bucket_max(delta)
            self.latest = m

        def since(name: str, **labels: str) -> float | None:
            return None if m is None else m.value(name, **labels) - base.value(name, **labels)

        lat = np.percentile(latencies, [50, 99]) if latencies else None
        return Sample(
            t=round(now - self.t0, 2),
            phase=self.phase(),
            rss_bytes=rss,
            cpu_share=None if cpu_share is None else round(cpu_share, 3),
            published=self.collector.log.readings,
            processed=None if m is None else m.processed - base.processed,
            rejected=since(REJECTED),
            alerts=since(ALERTS),
            webhooks=len(self.collector.alerts),
            posts=self.posts(),
            delivered=since(DELIVERIES, result="delivered"),
            failed=since(DELIVERIES, result="failed"),
            dead=since(DELIVERIES, result="dead"),
            outbox=None if m is None else m.total(OUTBOX),
            batch_p50_ms=_ms(p50),
            batch_p99_ms=_ms(p99),
            batch_max_ms=_ms(top),
            latency_n=len(latencies),
            latency_p50_ms=None if lat is None else round(float(lat[0]), 1),
            latency_p99_ms=None if lat is None else round(float(lat[1]), 1),
        )


def _progress(s: Sample) -> str:
    rss = f"{s.rss_bytes / 2**20:,.0f} MiB" if s.rss_bytes is not None else "-"
    backlog = f"{s.backlog:,.0f}" if s.backlog is not None else "-"
    outbox = f"{s.outbox:,.0f}" if s.outbox is not None else "-"
    p99 = f"{s.latency_p99_ms:,.0f} ms" if s.latency_p99_ms is not None else "-"
    return (
        f"t={s.t:,.0f}s published {s.published:,} backlog {backlog} outbox {outbox} "
        f"webhooks {s.webhooks:,} p99 {p99} rss {rss} receiver {s.phase}"
    )
