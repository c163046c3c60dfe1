"""A scrape of the engine's `GET /metrics`: the Prometheus text format, parsed once, here.

The tests, the load test and the benchmarks read the engine's counters through this one
parser, by the metric names below (DESIGN §3 lists them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

READINGS = "pledgewatch_readings_total"
DUPLICATES = "pledgewatch_duplicates_total"
REJECTED = "pledgewatch_rejected_total"
ALERTS = "pledgewatch_alerts_total"
OUTBOX = "pledgewatch_outbox_pending"
DELIVERIES = "pledgewatch_deliveries_total"
BATCHES = "pledgewatch_batch_seconds_count"
BATCH_SECONDS = "pledgewatch_batch_seconds_sum"
BATCH_BUCKETS = "pledgewatch_batch_seconds_bucket"
LATE = "pledgewatch_late_total"
MISSING = "pledgewatch_readings_missing_total"
DEVICES = "pledgewatch_devices"


@dataclass(frozen=True, slots=True)
class Metrics:
    """One scrape: each sample as the engine wrote it (`name{labels}`) -> its value."""

    values: dict[str, float]

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse the Prometheus text format; comments, and lines that are not samples, are
        skipped, and a trailing timestamp is ignored."""
        values: dict[str, float] = {}
        for line in text.splitlines():
            line = line.strip()  # noqa: PLW2901  # the same line, trimmed
            if not line or line.startswith("#"):
                continue
            close = line.rfind("}")
            if "{" in line and close > line.index("{"):
                key, rest = line[: close + 1], line[close + 1 :].split()
            else:
                key, *rest = line.split()
            try:
                values[key] = float(rest[0])
            except (IndexError, ValueError):
                continue
        return cls(values)

    def value(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels` (0 when none)."""
        return sum(
            v
            for key, v in self.values.items()
            if _name(key) == name and labels.items() <= _labels(key).items()
        )

    def total(self, name: str) -> float:
        """A metric summed over its labels (0 when absent)."""
        return self.value(name)

    def by_label(self, name: str, label: str | None = None) -> dict[str, float]:
        """A labelled metric as {value of `label` (default: its first label): value}."""
        out: dict[str, float] = {}
        for key, v in self.values.items():
            if _name(key) != name:
                continue
            found = _labels(key)
            if not found:
                continue
            which = label if label is not None else next(iter(found))
            if which in found:
                out[found[which]] = out.get(found[which], 0.0) + v
        return out

    @property
    def processed(self) -> float:
        """Valid readings the engine has taken: accepted plus dropped as duplicates."""
        return self.total(READINGS) + self.total(DUPLICATES)

    def handled(self) -> float:
        """Every input the engine has finished: readings accepted, duplicate or rejected."""
        return self.processed + self.total(REJECTED)


def _name(key: str) -> str:
    return key.partition("{")[0]


def _labels(key: str) -> Mapping[str, str]:
    """`name{a="x",b="y\\"z"}` -> {"a": "x", "b": 'y"z'} (the format's escapes undone)."""
    _, brace, body = key.partition("{")
    if not brace:
        return {}
    out: dict[str, str] = {}
    i, end = 0, len(body) - 1  # body ends with "}"
    while i < end:
        eq = body.find("=", i)
        if eq < 0 or eq + 1 >= len(body) or body[eq + 1] != '"':
            break
        name = body[i:eq].strip().lstrip(",").strip()
        j, chars = eq + 2, []
        while j < end and body[j] != '"':
            if body[j] == "\\" and j + 1 < end:
                j += 1
                chars.append("\n" if body[j] == "n" else body[j])
            else:
                chars.append(body[j])
            j += 1
        out[name] = "".join(chars)
        i = j + 1
    return out
