"""Detection quality: the alerts an engine raised against a run's ground truth.

Each alert (one per id) is judged once:

- **correct** when it fulfils a required expectation of the truth (same type, fence and
  device or loan, `ts` inside the window, and no more than the expectation's `count`), or
  matches an allowed one (a crossing of a fence a scenario car drives past);
- **false** otherwise, and always when it comes from a quiet background car;
- **not judged** when its type cannot be judged with the engine's rules (see `unjudged`),
  or when its time lies after the horizon (the end of the stream, or where an interrupted
  run stopped) and it fulfils nothing: silence after the last message is the test ending
  (every tracker goes offline then), not the car.

Recall per type is met / judged required expectations; in an interrupted run an
expectation whose window ends after the horizon is not judged. Precision is correct /
(correct + false). False alerts per 1,000 car-hours divide by the event time the cars were
simulated for, up to the horizon.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from simulator.truth import Expectation, GroundTruth, parse_iso_ms

MS_PER_HOUR = 3_600_000
EXAMPLES_KEPT = 20


@dataclass(frozen=True, slots=True)
class TypeQuality:
    """One alert type's tally."""

    required: int = 0  # required expectations judged
    met: int = 0
    alerts: int = 0  # alerts judged (correct + false)
    correct: int = 0
    false: int = 0
    not_judged: int = 0  # alerts not judged (rules differ, or after the horizon)

    @property
    def recall(self) -> float | None:
        """met / required, None when nothing of this type was required."""
        return self.met / self.required if self.required else None

    @property
    def precision(self) -> float | None:
        """correct / judged alerts, None when none was raised."""
        return self.correct / self.alerts if self.alerts else None

    def to_json(self) -> dict[str, object]:
        """The tally as a JSON object, with recall and precision."""
        return {
            "required": self.required,
            "met": self.met,
            "recall": _round(self.recall),
            "alerts": self.alerts,
            "correct": self.correct,
            "false": self.false,
            "precision": _round(self.precision),
            "not_judged": self.not_judged,
        }


@dataclass(frozen=True, slots=True)
class Quality:
    """The verdict on one run."""

    by_type: dict[str, TypeQuality]
    cars: int
    car_hours: float
    horizon_ms: int
    misses: tuple[str, ...] = ()
    false_examples: tuple[str, ...] = ()
    expectations_not_judged: tuple[str, ...] = ()
    unjudged_types: tuple[str, ...] = ()
    extra: dict[str, int] = field(default_factory=dict)

    def _sum(self, attr: str) -> int:
        return sum(int(getattr(t, attr)) for t in self.by_type.values())

    @property
    def required(self) -> int:
        """Required expectations judged, all types."""
        return self._sum("required")

    @property
    def met(self) -> int:
        """Required expectations met, all types."""
        return self._sum("met")

    @property
    def false(self) -> int:
        """False alerts, all types."""
        return self._sum("false")

    @property
    def recall(self) -> float | None:
        """Overall recall, None when nothing was required."""
        required = self.required
        return self.met / required if required else None

    @property
    def precision(self) -> float | None:
        """Overall precision, None when no alert was judged."""
        judged = self._sum("alerts")
        return self._sum("correct") / judged if judged else None

    @property
    def false_per_1000_car_hours(self) -> float | None:
        """False alerts per 1,000 car-hours of event time; None without car-hours."""
        return self.false * 1000 / self.car_hours if self.car_hours > 0 else None

    def to_json(self) -> dict[str, object]:
        """The verdict as a JSON object."""
        return {
            "recall": _round(self.recall),
            "precision": _round(self.precision),
            "required": self.required,
            "met": self.met,
            "false_alerts": self.false,
            "cars": self.cars,
            "car_hours": round(self.car_hours, 3),
            "false_per_1000_car_hours": _round(self.false_per_1000_car_hours),
            "horizon_ms": self.horizon_ms,
            "by_type": {k: v.to_json() for k, v in sorted(self.by_type.items())},
            "misses": list(self.misses),
            "false_examples": list(self.false_examples),
            "expectations_not_judged": list(self.expectations_not_judged),
            "unjudged_types": list(self.unjudged_types),
            **self.extra,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ts_ms(alert: Mapping[str, object]) -> int | None:
    ts = alert.get("ts")
    if not isinstance(ts, str):
        return None
    try:
        return parse_iso_ms(ts)
    except ValueError:
        return None


def _summary(alert: Mapping[str, object]) -> str:
    return (
        f"{alert.get('type')} device={alert.get('device_id')} loan={alert.get('loan_id')} "
        f"fence={alert.get('fence_id')} at {alert.get('ts')}"
    )


def score(
    truth: GroundTruth,
    alerts: Sequence[Mapping[str, object]],
    *,
    horizon_ms: int | None = None,
    unjudged: Collection[str] = (),
) -> Quality:
    """Judge `alerts` (DESIGN §4 JSON, one per id) against `truth`.

    `horizon_ms` is the last event time an interrupted run covered (None: the run was
    complete, every expectation is judged); `unjudged` lists alert types the engine's
    rules cannot be judged on for this run.
    """
    horizon = truth.end_ms if horizon_ms is None else min(horizon_ms, truth.end_ms)
    partial = horizon_ms is not None
    unjudged_set = frozenset(unjudged)
    tallies: dict[str, Counter[str]] = {}

    def tally(type_: str) -> Counter[str]:
        return tallies.setdefault(type_, Counter())

    ordered = sorted(alerts, key=lambda a: (_ts_ms(a) or 0, str(a.get("id"))))
    by_key: dict[tuple[object, object], list[int]] = {}  # (type, fence_id): alerts, in ts order
    for i, a in enumerate(ordered):
        by_key.setdefault((a.get("type"), a.get("fence_id")), []).append(i)
    allowed: dict[tuple[object, object], list[Expectation]] = {}
    for exp in truth.allowed:
        allowed.setdefault((exp.type, exp.fence_id), []).append(exp)
    claimed: set[int] = set()  # indexes into `ordered` of alerts that fulfilled a requirement
    misses: list[str] = []
    skipped: list[str] = []
    for exp in truth.required:
        if exp.type in unjudged_set:
            skipped.append(f"{exp.describe()}: the engine's rules differ for {exp.type}")
            continue
        if partial and (exp.ts_max_ms is None or exp.ts_max_ms > horizon):
            skipped.append(f"{exp.describe()}: its window ends after the run's horizon")
            continue
        t = tally(exp.type)
        t["required"] += 1
        candidates = [
            i for i in by_key.get((exp.type, exp.fence_id), ()) if exp.matches(ordered[i])
        ]
        fulfilling = [i for i in candidates if i not in claimed and exp.in_window(ordered[i])]
        if fulfilling:
            t["met"] += 1
        else:
            got = ", ".join(str(ordered[i].get("ts")) for i in candidates) or "none"
            misses.append(f"{exp.describe()} (matching alerts at: {got})")
        limit = exp.count if exp.count is not None else len(fulfilling)
        claimed.update(fulfilling[:limit])
    quiet_devices, quiet_loans = truth.quiet_device_ids, truth.quiet_loan_ids
    false_examples: list[str] = []
    after_horizon = 0
    for i, alert in enumerate(ordered):
        type_ = str(alert.get("type"))
        t = tally(type_)
        ts = _ts_ms(alert)
        quiet = alert.get("device_id") in quiet_devices or alert.get("loan_id") in quiet_loans
        if i in claimed:
            t["alerts"] += 1
            t["correct"] += 1
        elif type_ in unjudged_set:
            t["not_judged"] += 1
        elif ts is not None and ts > horizon:
            t["not_judged"] += 1
            after_horizon += 1
        elif not quiet and any(
            e.matches(alert) for e in allowed.get((alert.get("type"), alert.get("fence_id")), ())
        ):
            t["alerts"] += 1
            t["correct"] += 1
        else:
            t["alerts"] += 1
            t["false"] += 1
            if len(false_examples) < EXAMPLES_KEPT:
                why = "quiet car" if quiet else _why_false(truth.required, alert)
                false_examples.append(f"{_summary(alert)} ({why})")
    span_ms = max(0, horizon - truth.start_ms)
    return Quality(
        by_type={
            k: TypeQuality(
                required=c["required"],
                met=c["met"],
                alerts=c["alerts"],
                correct=c["correct"],
                false=c["false"],
                not_judged=c["not_judged"],
            )
            for k, c in tallies.items()
        },
        cars=len(truth.cars),
        car_hours=len(truth.cars) * span_ms / MS_PER_HOUR,
        horizon_ms=horizon,
        misses=tuple(misses),
        false_examples=tuple(false_examples),
        expectations_not_judged=tuple(skipped),
        unjudged_types=tuple(sorted(unjudged_set)),
        extra={"alerts_after_horizon": after_horizon},
    )


def _why_false(required: Sequence[Expectation], alert: Mapping[str, object]) -> str:
    """Why an alert from a scenario car was not correct: late, early, repeated, or unexpected."""
    matching = [e for e in required if e.matches(alert)]
    if not matching:
        return "expected by no scenario"
    if any(e.in_window(alert) for e in matching):
        return "one more than the scenario's count"
    return "outside its expected window"
