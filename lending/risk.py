"""A loan's risk score, tier and reasons (DESIGN §8): a pure fold over its events.

Alerts add points to their reason code; the points decay with event time (a half-life);
repeated alerts of one code add up to a cap. Conditions (a learned home far from the
declared one, night drift, high mileage) hold their points while they hold. The tier
follows the score's band, moves down only `hysteresis_points` below the band's lower edge,
and stays at least `high` while a critical alert is under `critical_floor_days` old.

Everything is judged at event time (the loan's latest event), never by a clock, so the same
events give the same tiers, and `risk.tier_changed` the same ids, in a replay and live.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from alerts.model import SEVERITY, Alert, AlertType, Detail, Severity, alert_id
from lending.model import Loan, iso_instant
from lending.params import TIERS, RiskParams

DAY_MS = 86_400_000
_TRACE = 0.05  # points under this leave the ledger
FINDING_PREFIX = "finding:"
"""Starts the source id of points that no alert gave (a discovered place): their reason's
`alert_id` is null and the evidence says what was found."""
_REASON_OF: Mapping[AlertType, str] = MappingProxyType(
    {
        AlertType.ZONE_LEFT: "zone_left",
        AlertType.RISK_SITE_DWELL: "risk_site_dwell",
        AlertType.VIN_CONFLICT: "vin_conflict",
        AlertType.TRACKER_SEPARATION: "tracker_separation",
        AlertType.TAMPER: "tamper",
        AlertType.POWER_DISCONNECTED: "power_cut",
        AlertType.TOW_SUSPECTED: "tow",
        AlertType.IMPOSSIBLE_TRAVEL: "impossible_travel",
        AlertType.DEVICE_OFFLINE: "offline",
        AlertType.SHOCK: "shock",
    }
)
RISK_ALERT_TYPES: frozenset[AlertType] = frozenset(
    {*_REASON_OF, *(t for t, severity in SEVERITY.items() if severity is Severity.CRITICAL)}
)
"""The alerts a risk score folds: those with a reason code, and the critical ones."""
_EVIDENCE_KEYS = (
    "category",
    "dwell_s",
    "distance_m",
    "other_device_id",
    "other_loan_ids",
    "reason",
    "g",
    "speed_kmh",
    "implied_speed_kmh",
    "silent_s",
    "reported_vin",
)


@dataclass(frozen=True, slots=True)
class Contribution:
    """Points an alert gave its reason code, at the alert's event time."""

    code: str
    points: float
    ts_ms: int
    alert_id: str
    evidence: Mapping[str, Detail]


@dataclass(frozen=True, slots=True)
class Condition:
    """Points a standing condition gives while it holds (places, mileage)."""

    code: str
    points: float
    evidence: Mapping[str, Detail]


@dataclass(frozen=True, slots=True)
class Reason:
    """One line of a score: a reason code, its points now, and its evidence."""

    code: str
    points: int
    alert_id: str | None
    evidence: Mapping[str, Detail]

    def to_json(self) -> dict[str, object]:
        """The reason as the JSON object of DESIGN §8."""
        return {
            "code": self.code,
            "points": self.points,
            "alert_id": self.alert_id,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class RiskState:
    """A loan's risk as of `as_of_ms` (event time); `tier` indexes `TIERS`."""

    ledger: tuple[Contribution, ...] = ()
    conditions: tuple[Condition, ...] = ()
    critical_ms: int | None = None  # event time of the latest critical alert
    tier: int = 0
    score: int = 0
    reasons: tuple[Reason, ...] = ()
    as_of_ms: int | None = None
    next_eval_ms: int = 0
    alert_ids: frozenset[str] = field(default_factory=frozenset)  # ledger ids: no alert twice

    @property
    def idle(self) -> bool:
        """Nothing to judge: no points, no condition, no floor, tier `low` (a clean loan)."""
        return (
            not self.ledger and not self.conditions and self.critical_ms is None and not self.tier
        )

    def with_ledger(self, ledger: tuple[Contribution, ...]) -> RiskState:
        """This state with another ledger (and its ids)."""
        return RiskState(
            ledger,
            self.conditions,
            self.critical_ms,
            self.tier,
            self.score,
            self.reasons,
            self.as_of_ms,
            self.next_eval_ms,
            frozenset(c.alert_id for c in ledger),
        )

    @property
    def tier_name(self) -> str:
        """`low`, `medium`, `high` or `critical`."""
        return TIERS[self.tier]

    def to_json(self) -> dict[str, object]:
        """The `risk` object of `GET /v1/loans/{id}`."""
        return {
            "score": self.score,
            "tier": self.tier_name,
            "as_of": None if self.as_of_ms is None else iso_instant(self.as_of_ms),
            "reasons": [r.to_json() for r in self.reasons],
        }


def reason_code(alert: Alert) -> str | None:
    """The reason code an alert counts for, or None if it carries no risk."""
    return _REASON_OF.get(alert.type)


def evidence_of(alert: Alert) -> dict[str, Detail]:
    """What an alert shows as a reason's evidence: where, which tracker, the numbers."""
    out: dict[str, Detail] = {}
    if alert.fence_id is not None:
        out["fence_id"] = alert.fence_id
    if alert.device_id is not None:
        out["device_id"] = alert.device_id
    for key in _EVIDENCE_KEYS:
        value = alert.details.get(key)
        if value is not None:
            out[key] = value
    return out


def add_alert(state: RiskState, alert: Alert, params: RiskParams) -> RiskState:
    """The state with an alert's points and its critical floor; unchanged for an alert
    seen before or one that carries no risk."""
    code = reason_code(alert)
    critical_ms = state.critical_ms
    if alert.severity is Severity.CRITICAL and alert.id not in state.alert_ids:
        critical_ms = alert.ts_ms if critical_ms is None else max(critical_ms, alert.ts_ms)
    if critical_ms != state.critical_ms:
        state = replace(state, critical_ms=critical_ms)
    if code is None:
        return state
    return add_points(state, code, alert.ts_ms, alert.id, evidence_of(alert), params)


def add_points(
    state: RiskState,
    code: str,
    ts_ms: int,
    source_id: str,
    evidence: Mapping[str, Detail],
    params: RiskParams,
    weight: float = 1.0,
) -> RiskState:
    """The state with `weight` times the points of `code` at event time `ts_ms`, from
    `source_id` (an alert's id, or the id of another finding); unchanged for a source seen
    before, one faded already, or one older than the newest `ledger_per_code` of its code."""
    if source_id in state.alert_ids:
        return state
    points = params.points.get(code, 0.0) * weight
    if state.as_of_ms is not None and (
        points * math.pow(0.5, (state.as_of_ms - ts_ms) / (params.half_life_days * DAY_MS)) < _TRACE
    ):
        # faded already (perhaps seen, and forgotten, before): it would leave at once
        return state
    entry = Contribution(code, points, ts_ms, source_id, evidence)
    same = [c for c in state.ledger if c.code == code]
    others = [c for c in state.ledger if c.code != code]
    kept = sorted([*same, entry], key=lambda c: (c.ts_ms, c.alert_id))[-params.ledger_per_code :]
    if not any(c is entry for c in kept):  # older than the newest kept of its code
        return state
    ledger = tuple(sorted([*others, *kept], key=lambda c: (c.code, c.ts_ms, c.alert_id)))
    return state.with_ledger(ledger)


def set_conditions(state: RiskState, conditions: Sequence[Condition]) -> RiskState:
    """The state with the standing conditions replaced."""
    return replace(state, conditions=tuple(sorted(conditions, key=lambda c: c.code)))


def score_at(state: RiskState, at_ms: int, params: RiskParams) -> tuple[int, tuple[Reason, ...]]:
    """The score (0-100) and its reasons, strongest first, at event time `at_ms`."""
    score, reasons, _ = _judge(state, at_ms, params)
    return score, reasons


def _judge(
    state: RiskState, at_ms: int, params: RiskParams
) -> tuple[int, tuple[Reason, ...], tuple[Contribution, ...]]:
    """The score, its reasons, and the ledger without the contributions decayed to a trace."""
    by_code: dict[str, list[tuple[float, Contribution]]] = {}
    kept: list[Contribution] = []
    half_life_ms = params.half_life_days * DAY_MS
    for c in state.ledger:
        points = c.points * math.pow(0.5, max(0, at_ms - c.ts_ms) / half_life_ms)
        if points >= _TRACE:  # under it: forgotten
            kept.append(c)
        by_code.setdefault(c.code, []).append((points, c))
    reasons: list[tuple[float, Reason]] = []
    for code, items in by_code.items():
        cap = params.code_cap_factor * params.points.get(code, 0.0)
        total = min(cap, sum(p for p, _ in items))
        if total < 0.5:  # rounds to no points
            continue
        _, strongest = max(items, key=lambda item: (item[0], item[1].ts_ms))
        evidence: dict[str, Detail] = dict(strongest.evidence)
        if len(items) > 1:
            evidence["alerts"] = len(items)
        source = strongest.alert_id
        alert = None if source.startswith(FINDING_PREFIX) else source
        reasons.append((total, Reason(code, round(total), alert, evidence)))
    reasons.extend(
        (cond.points, Reason(cond.code, round(cond.points), None, cond.evidence))
        for cond in state.conditions
    )
    total_points = sum(p for p, _ in reasons)
    ordered = tuple(r for _, r in sorted(reasons, key=lambda pr: (-pr[0], pr[1].code)))
    ledger = state.ledger if len(kept) == len(state.ledger) else tuple(kept)
    return min(100, round(total_points)), ordered, ledger


def tier_for(score: int, current: int, floor: int, params: RiskParams) -> int:
    """The tier after a score: up at once, down only `hysteresis_points` below the band's
    lower edge, never under `floor`."""
    raw = max(t for t in range(len(TIERS)) if score >= params.lower_edge(t))
    tier = current
    tier = max(tier, raw)
    while tier > raw and score <= params.lower_edge(tier) - params.hysteresis_points:
        tier -= 1
    return max(tier, floor)


def evaluate(state: RiskState, at_ms: int, params: RiskParams) -> tuple[RiskState, int]:
    """The state judged at event time `at_ms`, and the tier it had before."""
    score, reasons, ledger = _judge(state, at_ms, params)
    floor = 0
    if (
        state.critical_ms is not None
        and at_ms - state.critical_ms < params.critical_floor_days * DAY_MS
    ):
        floor = TIERS.index("high")
    tier = tier_for(score, state.tier, floor, params)
    alert_ids = state.alert_ids if ledger is state.ledger else frozenset(c.alert_id for c in ledger)
    new = RiskState(
        ledger,
        state.conditions,
        state.critical_ms,
        tier,
        score,
        reasons,
        at_ms,
        at_ms + params.reevaluate_every_s * 1000,
        alert_ids,
    )
    return new, state.tier


def tier_changed(
    loan: Loan,
    state: RiskState,
    old_tier: int,
    now_ms: int,
    params: RiskParams,
    where: tuple[float, float] | None,
    device_id: str | None = None,
) -> Alert:
    """`risk.tier_changed` for a loan whose tier moved from `old_tier` to `state.tier`."""
    at_ms = state.as_of_ms if state.as_of_ms is not None else 0
    old, new = TIERS[old_tier], state.tier_name
    top: list[dict[str, object]] = [r.to_json() for r in state.reasons[: params.top_reasons]]
    return Alert(
        id=alert_id(loan.loan_id, AlertType.RISK_TIER_CHANGED, None, at_ms, f"{old}>{new}"),
        type=AlertType.RISK_TIER_CHANGED,
        ts_ms=at_ms,
        detected_ms=now_ms,
        device_id=device_id,  # the tracker whose event moved the tier; not part of the id
        loan_id=loan.loan_id,
        vin=loan.vin,
        fence_id=None,
        lat=None if where is None else where[0],
        lon=None if where is None else where[1],
        details={"from": old, "to": new, "score": state.score, "reasons": top},
    )


def risk_to_json(state: RiskState) -> dict[str, object]:
    """A JSON-able snapshot of the durable risk state."""
    return {
        "ledger": [[c.code, c.points, c.ts_ms, c.alert_id, dict(c.evidence)] for c in state.ledger],
        "conditions": [[c.code, c.points, dict(c.evidence)] for c in state.conditions],
        "critical_ms": state.critical_ms,
        "tier": state.tier,
        "score": state.score,
        "reasons": [r.to_json() for r in state.reasons],
        "as_of_ms": state.as_of_ms,
        "next_eval_ms": state.next_eval_ms,
    }


def risk_from_json(doc: object) -> RiskState:
    """Restore a snapshot of `risk_to_json`."""
    if not isinstance(doc, dict):
        msg = f"risk snapshot: expected an object, got {doc!r}"
        raise ValueError(msg)  # noqa: TRY004  # a malformed document
    ledger = tuple(
        Contribution(str(code), float(points), int(ts), str(aid), dict(ev))
        for code, points, ts, aid, ev in doc["ledger"]
    )
    return RiskState(
        ledger=ledger,
        conditions=tuple(
            Condition(str(code), float(points), dict(ev)) for code, points, ev in doc["conditions"]
        ),
        critical_ms=doc["critical_ms"],
        tier=int(doc["tier"]),
        score=int(doc["score"]),
        reasons=tuple(
            Reason(r["code"], int(r["points"]), r["alert_id"], dict(r["evidence"]))
            for r in doc["reasons"]
        ),
        as_of_ms=doc["as_of_ms"],
        next_eval_ms=int(doc["next_eval_ms"]),
        alert_ids=frozenset(c.alert_id for c in ledger),
    )
