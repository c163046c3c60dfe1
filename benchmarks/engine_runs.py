"""What the engine benchmark records of a run: the throughput run and its checks, the
engine's counters between two scrapes, and CPU seconds by process and for the machine."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from benchmarks.common import rate
from benchmarks.engine_publishers import cpu_self
from simulator.harness.broker import PrivateBroker
from simulator.harness.engine_process import EngineProcess
from simulator.harness.procfs import machine_cpu_s, proc_cpu_s
from simulator.harness.prometheus import (
    ALERTS,
    BATCH_BUCKETS,
    BATCH_SECONDS,
    BATCHES,
    DUPLICATES,
    LATE,
    MISSING,
    READINGS,
    REJECTED,
    Metrics,
)


def rounded(value: float | None, digits: int) -> float | None:
    """`round`, with None for None, NaN and infinities (JSON has no NaN)."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, digits)


@dataclass(slots=True)
class ThroughputRun:
    """One consumer on one workload: how long it took, and whether the counts were right."""

    workload: str
    consumer: str  # "bare" or "engine"
    messages: int
    readings: int
    seconds: float = math.nan
    publish_s: float = math.nan  # first publish to the last PUBACK, all publishers
    consumer_cpu_s: float = math.nan
    check: str = "not run"
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the checks passed."""
        return self.check == "ok"

    @property
    def msgs_per_s(self) -> float | None:
        """Messages per second, or None if the checks failed."""
        return rate(self.messages, self.seconds) if self.ok else None

    @property
    def readings_per_s(self) -> float | None:
        """Readings per second, or None if the checks failed."""
        return rate(self.readings, self.seconds) if self.ok else None

    def as_json(self) -> dict[str, object]:
        """The run as a JSON object."""
        mps, rps = self.msgs_per_s, self.readings_per_s
        return {
            "workload": self.workload,
            "consumer": self.consumer,
            "messages": self.messages,
            "readings": self.readings,
            "seconds": rounded(self.seconds, 3),
            "msgs_per_s": rounded(mps, 1),
            "readings_per_s": rounded(rps, 1),
            "published_msgs_per_s": rounded(rate(self.messages, self.publish_s), 1),
            "consumer_cpu_s": rounded(self.consumer_cpu_s, 2),
            "consumer_cpu_us_per_reading": rounded(self.cpu_us_per_reading, 2),
            "check": self.check,
            **self.extra,
        }

    @property
    def cpu_us_per_reading(self) -> float:
        """The consumer's CPU microseconds per reading."""
        return self.consumer_cpu_s / self.readings * 1e6 if self.readings else math.nan


def counter_delta(before: Metrics, after: Metrics) -> dict[str, float]:
    """What went through between two scrapes, for the checks."""
    names = {
        "readings": READINGS,
        "rejected": REJECTED,
        "duplicates": DUPLICATES,
        "late": LATE,
        "missing": MISSING,
        "alerts": ALERTS,
        "batches": BATCHES,
        "batch_seconds": BATCH_SECONDS,
    }
    delta = {k: after.total(n) - before.total(n) for k, n in names.items()}
    # Every turn is observed, idle ones too (each max_wait_s): count the real batches apart.
    idle = after.value(BATCH_BUCKETS, le="0.001") - before.value(BATCH_BUCKETS, le="0.001")
    delta["batches_over_1ms"] = delta["batches"] - idle
    return delta


def engine_check(delta: dict[str, float], readings: int, pub_check: str = "ok") -> str:
    """'ok' if the engine accepted exactly `readings`: no rejects, duplicates, late, gaps."""
    problems = [] if pub_check == "ok" else [pub_check]
    if delta["readings"] != readings:
        problems.append(f"{delta['readings']:.0f} readings accepted, {readings} published")
    problems += [
        f"{key} {delta[key]:.0f}"
        for key in ("rejected", "duplicates", "late", "missing")
        if delta[key]
    ]
    return "ok" if not problems else "WRONG: " + "; ".join(problems)


@dataclass(frozen=True, slots=True)
class CpuMark:
    """CPU seconds of the machine and of our long-lived processes at one moment."""

    at: float
    machine_busy: float
    interrupts: float
    engine: float
    broker: float
    bench: float

    @classmethod
    def take(cls, engine: EngineProcess | None, broker: PrivateBroker) -> CpuMark:
        """Read them all now."""
        return cls(
            time.time(),
            *machine_cpu_s(),
            engine.cpu_s() if engine is not None else 0.0,
            proc_cpu_s(broker.pid),
            cpu_self(),
        )


def cpu_split(a: CpuMark, b: CpuMark, children_cpu_s: float) -> dict[str, float]:
    """CPU seconds between two marks: ours by process, and the rest of the machine's
    (`others`: busy time no process of ours used; irq and softirq are counted apart)."""
    engine = b.engine - a.engine
    broker = b.broker - a.broker
    bench = b.bench - a.bench
    busy = b.machine_busy - a.machine_busy
    others = busy - engine - broker - bench - children_cpu_s
    return {
        "wall_s": round(b.at - a.at, 3),
        "engine_cpu_s": round(engine, 2),
        "broker_cpu_s": round(broker, 2),
        "clients_cpu_s": round(children_cpu_s, 2),
        "bench_cpu_s": round(bench, 2),
        "machine_busy_s": round(busy, 2),
        "machine_interrupts_s": round(b.interrupts - a.interrupts, 2),
        "others_cpu_s": round(max(others, 0.0), 2),
    }
