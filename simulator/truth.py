"""Ground truth of a simulated run: the alerts it must raise, may raise, and what the input holds.

An `Expectation` matches an alert (a DESIGN §4 JSON object) when the type and `fence_id` are
equal and every other field it sets (`device_id`, `loan_id`, `vin`) is equal too. A required
expectation must be met by at least one alert inside its time window (recall), and by exactly
`count` alerts when `count` is set (one per episode). Every alert of a run must match a
required or an allowed expectation (precision); background cars are allowed nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum


class Role(StrEnum):
    """Why a car is in a run."""

    SCENARIO = "scenario"  # it plays a scenario and must raise its alerts
    QUIET = "quiet"  # background traffic: keeps time moving and must raise nothing


def iso_utc(ts_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC (`...Z`), milliseconds kept when present."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    if ts_ms % 1000:
        return f"{dt:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}Z"
    return f"{dt:%Y-%m-%dT%H:%M:%S}Z"


def parse_iso_ms(text: str) -> int:
    """ISO-8601 with an offset (or `Z`) as epoch milliseconds."""
    dt = datetime.fromisoformat(text)
    return round(dt.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Expectation:
    """An alert a run must (or may) raise. None fields, except `fence_id`, match anything."""

    type: str
    fence_id: str | None = None
    device_id: str | None = None
    loan_id: str | None = None
    vin: str | None = None
    count: int | None = None  # exactly this many matching alerts (required only)
    ts_min_ms: int | None = None  # event-time window of the alert (required only)
    ts_max_ms: int | None = None
    why: str = ""

    def matches(self, alert: Mapping[str, object]) -> bool:
        """Tell whether `alert` (DESIGN §4 JSON) is one this expectation describes."""
        return (
            alert.get("type") == self.type
            and alert.get("fence_id") == self.fence_id
            and (self.device_id is None or alert.get("device_id") == self.device_id)
            and (self.loan_id is None or alert.get("loan_id") == self.loan_id)
            and (self.vin is None or alert.get("vin") == self.vin)
        )

    def in_window(self, alert: Mapping[str, object]) -> bool:
        """Tell whether the alert's `ts` falls inside the window (no window: always)."""
        ts = alert.get("ts")
        if not isinstance(ts, str):
            return False
        ts_ms = parse_iso_ms(ts)
        lo = self.ts_min_ms if self.ts_min_ms is not None else ts_ms
        hi = self.ts_max_ms if self.ts_max_ms is not None else ts_ms
        return lo <= ts_ms <= hi

    def describe(self) -> str:
        """A short human form, for test failures."""
        who = self.device_id or self.loan_id or self.vin or "-"
        window = ""
        if self.ts_min_ms is not None and self.ts_max_ms is not None:
            window = f" in [{iso_utc(self.ts_min_ms)}, {iso_utc(self.ts_max_ms)}]"
        count = f" x{self.count}" if self.count is not None else ""
        return f"{self.type} {who} fence={self.fence_id}{count}{window}"

    def to_json(self) -> dict[str, object]:
        """The expectation as a JSON object (times as ISO-8601 UTC)."""
        doc: dict[str, object] = {"type": self.type, "fence_id": self.fence_id}
        for key in ("device_id", "loan_id", "vin", "count"):
            value = getattr(self, key)
            if value is not None:
                doc[key] = value
        if self.ts_min_ms is not None:
            doc["ts_min"] = iso_utc(self.ts_min_ms)
        if self.ts_max_ms is not None:
            doc["ts_max"] = iso_utc(self.ts_max_ms)
        if self.why:
            doc["why"] = self.why
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> Expectation:
        """Read an expectation written by `to_json`."""

        def opt_str(key: str) -> str | None:
            value = doc.get(key)
            return value if isinstance(value, str) else None

        count = doc.get("count")
        ts_min, ts_max = opt_str("ts_min"), opt_str("ts_max")
        return cls(
            type=str(doc["type"]),
            fence_id=opt_str("fence_id"),
            device_id=opt_str("device_id"),
            loan_id=opt_str("loan_id"),
            vin=opt_str("vin"),
            count=count if isinstance(count, int) else None,
            ts_min_ms=parse_iso_ms(ts_min) if ts_min else None,
            ts_max_ms=parse_iso_ms(ts_max) if ts_max else None,
            why=opt_str("why") or "",
        )


@dataclass(frozen=True, slots=True)
class CarTruth:
    """Who is who in a run: a car, its role, loans and trackers."""

    car_id: str
    role: Role
    scenario: str | None
    vin: str
    loan_ids: tuple[str, ...]
    device_ids: tuple[str, ...]
    zone_ids: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        """The car as a JSON object."""
        return {
            "car_id": self.car_id,
            "role": self.role.value,
            "scenario": self.scenario,
            "vin": self.vin,
            "loan_ids": list(self.loan_ids),
            "device_ids": list(self.device_ids),
            "zone_ids": list(self.zone_ids),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> CarTruth:
        """Read a car written by `to_json`."""
        scenario = doc.get("scenario")
        return cls(
            car_id=str(doc["car_id"]),
            role=Role(str(doc["role"])),
            scenario=scenario if isinstance(scenario, str) else None,
            vin=str(doc["vin"]),
            loan_ids=_strs(doc.get("loan_ids")),
            device_ids=_strs(doc.get("device_ids")),
            zone_ids=_strs(doc.get("zone_ids")),
        )


def _strs(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _counts(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, int)}


@dataclass(frozen=True, slots=True)
class InputCounts:
    """What the replay must count: accepted readings by stream, duplicates, late readings,
    readings missing from `seq` gaps, and rejects by reason (all injected on purpose)."""

    readings: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    late: int = 0
    missing: int = 0
    rejects: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The counts as a JSON object."""
        return {
            "readings": dict(sorted(self.readings.items())),
            "duplicates": self.duplicates,
            "late": self.late,
            "missing": self.missing,
            "rejects": dict(sorted(self.rejects.items())),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> InputCounts:
        """Read counts written by `to_json`."""

        def num(key: str) -> int:
            value = doc.get(key)
            return value if isinstance(value, int) else 0

        return cls(
            readings=_counts(doc.get("readings")),
            duplicates=num("duplicates"),
            late=num("late"),
            missing=num("missing"),
            rejects=_counts(doc.get("rejects")),
        )


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Everything a run guarantees about the alerts a correct engine raises on it."""

    name: str
    seed: str
    start_ms: int
    end_ms: int
    cars: tuple[CarTruth, ...]
    required: tuple[Expectation, ...]
    allowed: tuple[Expectation, ...]
    counts: InputCounts

    @property
    def quiet_device_ids(self) -> frozenset[str]:
        """Trackers of background cars: they must raise no alert at all."""
        return frozenset(d for c in self.cars if c.role is Role.QUIET for d in c.device_ids)

    @property
    def quiet_loan_ids(self) -> frozenset[str]:
        """Loans of background cars: they must raise no alert at all."""
        return frozenset(ln for c in self.cars if c.role is Role.QUIET for ln in c.loan_ids)

    def to_json(self) -> dict[str, object]:
        """The ground truth as a JSON object (`ground_truth.json`)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "start": iso_utc(self.start_ms),
            "end": iso_utc(self.end_ms),
            "cars": [c.to_json() for c in self.cars],
            "required": [e.to_json() for e in self.required],
            "allowed": [e.to_json() for e in self.allowed],
            "input": self.counts.to_json(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> GroundTruth:
        """Read a ground truth written by `to_json`."""

        def objs(key: str) -> list[Mapping[str, object]]:
            value = doc.get(key)
            return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

        counts = doc.get("input")
        return cls(
            name=str(doc["name"]),
            seed=str(doc["seed"]),
            start_ms=parse_iso_ms(str(doc["start"])),
            end_ms=parse_iso_ms(str(doc["end"])),
            cars=tuple(CarTruth.from_json(c) for c in objs("cars")),
            required=tuple(Expectation.from_json(e) for e in objs("required")),
            allowed=tuple(Expectation.from_json(e) for e in objs("allowed")),
            counts=InputCounts.from_json(counts if isinstance(counts, dict) else {}),
        )


def check(truth: GroundTruth, alerts: Sequence[Mapping[str, object]]) -> list[str]:
    """Problems with `alerts` against the ground truth: misses, wrong counts, extras."""
    problems: list[str] = []
    for exp in truth.required:
        matching = [a for a in alerts if exp.matches(a)]
        if not any(exp.in_window(a) for a in matching):
            got = ", ".join(str(a.get("ts")) for a in matching) or "none"
            problems.append(f"missing: {exp.describe()} (matching alerts at: {got})")
        if exp.count is not None and len(matching) != exp.count:
            problems.append(f"count: {exp.describe()} matched {len(matching)} alerts")
    quiet_devices, quiet_loans = truth.quiet_device_ids, truth.quiet_loan_ids
    expected = truth.required + truth.allowed
    for alert in alerts:
        summary = (
            f"{alert.get('type')} device={alert.get('device_id')} loan={alert.get('loan_id')} "
            f"fence={alert.get('fence_id')} at {alert.get('ts')}"
        )
        if alert.get("device_id") in quiet_devices or alert.get("loan_id") in quiet_loans:
            problems.append(f"background car alerted: {summary}")
        elif not any(exp.matches(alert) for exp in expected):
            problems.append(f"unexpected: {summary}")
    return problems


def count_types(alerts: Sequence[Mapping[str, object]]) -> dict[str, int]:
    """How many alerts of each type, for summaries."""
    return dict(sorted(Counter(str(a.get("type")) for a in alerts).items()))
