"""Publish-to-webhook latency: when each received alert became due, from what was published when.

An alert's `device_id` and `ts` (its event time) say what raised it (DESIGN §4):

- **reading**: an alert stamped with the event time of a reading the device published (a
  crossing, a shock, a jump, a tow, power, a VIN, a separation). It became due when the
  message carrying that reading was published: the headline latency.
- **timer**: a zone-grace or dwell timer, stamped with the event time it ran out. It became
  due when the first message of that device with a later reading was published, or, if the
  device fell silent first, `zone_grace_s` wall seconds after its last message (the engine
  then fires a silent device's timers by the wall clock).
- **offline**: `device.offline` is stamped with the wall time it became due (last arrival
  plus `offline_s`), so it is timed from its own `ts`.
- **online**: `device.online` became due with the device's first message published at or
  after the alert's `ts`.

Loan-level alerts raised by an API call (a VIN already on another loan) are not timed.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from simulator.truth import parse_iso_ms

KINDS_TIMED_FROM_TS = frozenset({"device.offline"})


class DueKind(StrEnum):
    """How an alert's due time was found (see the module docstring)."""

    READING = "reading"
    TIMER = "timer"
    OFFLINE = "offline"
    ONLINE = "online"


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed alert: when it became due, was detected and reached the webhook (unix s)."""

    kind: DueKind
    type: str
    due_s: float
    detected_s: float
    received_s: float

    @property
    def total_ms(self) -> float:
        """Due to webhook arrival."""
        return (self.received_s - self.due_s) * 1000

    @property
    def to_detect_ms(self) -> float:
        """Due to the engine's `detected_at`."""
        return (self.detected_s - self.due_s) * 1000

    @property
    def to_webhook_ms(self) -> float:
        """`detected_at` to webhook arrival (outbox, dispatcher, HTTP)."""
        return (self.received_s - self.detected_s) * 1000


class PublishLog:
    """What was published when, per device. `record` is the publisher's `on_sent` hook (any
    thread, cheap); `absorb` indexes what was recorded (one thread)."""

    def __init__(self, zone_grace_s: float) -> None:
        self.zone_grace_s = zone_grace_s
        self._pending: deque[tuple[str | None, tuple[tuple[str, int], ...], float]] = deque()
        self._exact: dict[tuple[str, int], float] = {}
        self._walls: dict[str, list[float]] = {}
        self._max_ts: dict[str, list[int]] = {}  # running maximum of event time, per message
        self.messages = 0
        self.readings = 0
        self.max_ts_ms = 0
        self.readings_by_second: Counter[int] = Counter()  # unix second -> readings published

    def record(
        self, device_id: str | None, readings: tuple[tuple[str, int], ...], at_s: float
    ) -> None:
        """Note one published message (thread-safe: a deque append)."""
        self._pending.append((device_id, readings, at_s))

    def absorb(self) -> int:
        """Index everything recorded so far; the number of messages taken."""
        taken = 0
        while self._pending:
            device, readings, at_s = self._pending.popleft()
            taken += 1
            self.messages += 1
            self.readings += len(readings)
            self.readings_by_second[int(at_s)] += len(readings)
            if device is None or not readings:
                continue
            top = max(ts for _, ts in readings)
            self.max_ts_ms = max(self.max_ts_ms, top)
            for _, ts in readings:
                self._exact.setdefault((device, ts), at_s)
            walls = self._walls.setdefault(device, [])
            tops = self._max_ts.setdefault(device, [])
            walls.append(at_s)
            tops.append(max(top, tops[-1]) if tops else top)
        return taken

    def due(self, alert: Mapping[str, object]) -> tuple[DueKind, float] | None:
        """When `alert` became due (unix seconds) and how that was found; None if unknown."""
        ts_text, device = alert.get("ts"), alert.get("device_id")
        if not isinstance(ts_text, str):
            return None
        ts_ms = parse_iso_ms(ts_text)
        if alert.get("type") in KINDS_TIMED_FROM_TS:
            return DueKind.OFFLINE, ts_ms / 1000
        if not isinstance(device, str):
            return None
        exact = self._exact.get((device, ts_ms))
        if exact is not None:
            return DueKind.READING, exact
        walls = self._walls.get(device)
        if not walls:
            return None
        if alert.get("type") == "device.online":
            i = bisect.bisect_left(walls, ts_ms / 1000)
            return (DueKind.ONLINE, walls[i]) if i < len(walls) else None
        tops = self._max_ts[device]
        i = bisect.bisect_left(tops, ts_ms)  # the first message carrying a reading >= ts
        by_reading = walls[i] if i < len(tops) else math.inf
        silent_from = walls[i - 1] if i > 0 else None
        by_silence = silent_from + self.zone_grace_s if silent_from is not None else math.inf
        due = min(by_reading, by_silence)
        return None if math.isinf(due) else (DueKind.TIMER, due)


def sample(log: PublishLog, alert: Mapping[str, object], received_s: float) -> Sample | None:
    """The alert as a latency sample, or None when its due time cannot be told."""
    found = log.due(alert)
    detected = alert.get("detected_at")
    if found is None or not isinstance(detected, str):
        return None
    kind, due_s = found
    return Sample(kind, str(alert.get("type")), due_s, parse_iso_ms(detected) / 1000, received_s)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 and max (None when there are no values), rounded to 0.1."""
    if not values:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "count": len(values),
        "p50": round(float(p50), 1),
        "p95": round(float(p95), 1),
        "p99": round(float(p99), 1),
        "max": round(float(arr.max()), 1),
    }


def summarize(samples: Iterable[Sample]) -> dict[str, object]:
    """Percentiles by kind: total, due to detection, detection to webhook (milliseconds)."""
    by_kind: dict[DueKind, list[Sample]] = {}
    for s in samples:
        by_kind.setdefault(s.kind, []).append(s)
    out: dict[str, object] = {}
    for kind in DueKind:
        group = by_kind.get(kind, [])
        out[kind.value] = {
            "total_ms": percentiles([s.total_ms for s in group]),
            "to_detect_ms": percentiles([s.to_detect_ms for s in group]),
            "to_webhook_ms": percentiles([s.to_webhook_ms for s in group]),
            "by_type": dict(sorted(Counter(s.type for s in group).items())),
        }
    return out


def windows(
    samples: Sequence[Sample], start_s: float, window_s: float
) -> list[dict[str, float | None]]:
    """Reading latencies in windows of `window_s` by arrival time: t (s after `start_s`),
    count, p50, p95, p99, max."""
    buckets: dict[int, list[float]] = {}
    for s in samples:
        if s.kind is DueKind.READING:
            buckets.setdefault(int((s.received_s - start_s) // window_s), []).append(s.total_ms)
    out: list[dict[str, float | None]] = []
    for k in sorted(buckets):
        stats = percentiles(buckets[k])
        out.append({"t": round((k + 0.5) * window_s, 1), **stats})
    return out
