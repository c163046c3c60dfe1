"""Prometheus text exposition of the engine's counters (DESIGN §3 `/metrics`)."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Mapping

BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """A cumulative histogram with fixed buckets, safe to observe from one thread and read
    from another."""

    def __init__(self, buckets: tuple[float, ...] = BATCH_BUCKETS_S) -> None:
        self.buckets = buckets
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Record one value."""
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sum += value

    def render(self, name: str, help_: str) -> list[str]:
        """The histogram's exposition lines."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        lines = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
        running = 0
        for bound, n in zip(self.buckets, counts, strict=False):
            running += n
            lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
        running += counts[-1]
        lines += [
            f'{name}_bucket{{le="+Inf"}} {running}',
            f"{name}_sum {total}",
            f"{name}_count {running}",
        ]
        return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def counter_lines(name: str, help_: str, label: str, values: Mapping[str, int]) -> list[str]:
    """A labelled counter family."""
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} counter"]
    lines += [f'{name}{{{label}="{_escape(str(k))}"}} {v}' for k, v in sorted(values.items())]
    return lines


def labelled_gauge_lines(
    name: str, help_: str, label: str, values: Mapping[str, float]
) -> list[str]:
    """A labelled gauge family."""
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} gauge"]
    lines += [f'{name}{{{label}="{_escape(str(k))}"}} {v}' for k, v in sorted(values.items())]
    return lines


def gauge_lines(name: str, help_: str, value: float) -> list[str]:
    """One unlabelled gauge."""
    return [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {value}"]


MetricSource = Callable[[], list[str]]
"""A part of the exposition, rendered on each scrape."""


def render(sources: list[MetricSource]) -> str:
    """The whole exposition text."""
    lines: list[str] = []
    for source in sources:
        lines += source()
    return "\n".join(lines) + "\n"
