"""The risk fold: bands and hysteresis, the critical floor, decay, caps, reasons, snapshots.

The clock is the alerts' event time: `evaluate(state, at_ms, ...)` is told when "now" is.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.model import Alert, AlertType, Severity, alert_id
from lending.model import Loan
from lending.params import TIERS, RiskParams
from lending.risk import (
    DAY_MS,
    Condition,
    RiskState,
    add_alert,
    evaluate,
    reason_code,
    risk_from_json,
    risk_to_json,
    score_at,
    set_conditions,
    tier_changed,
    tier_for,
)
from tests.factories import property_settings

P = RiskParams()
T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
HOUR_MS = 3_600_000
LOAN = Loan("L-1", "LSVAB4182E2123456", ("trk-1",), ("home",))
LOW, MEDIUM, HIGH, CRITICAL = range(4)

PROPS = property_settings(60)


def make_alert(
    type_: AlertType, ts_ms: int, n: int = 0, details: dict[str, object] | None = None
) -> Alert:
    """An alert of the loan's tracker with a derived id (`n` tells apart same-time twins)."""
    return Alert(
        id=alert_id("trk-1", type_, "home", ts_ms, str(n)),
        type=type_,
        ts_ms=ts_ms,
        detected_ms=ts_ms + 100,
        device_id="trk-1",
        loan_id="L-1",
        vin=LOAN.vin,
        fence_id="home",
        lat=31.23,
        lon=121.47,
        details=dict(details or {}),  # type: ignore[arg-type]  # test details are JSON
    )


def fold(alerts: list[Alert], params: RiskParams = P) -> RiskState:
    """Add each alert and judge the state at the latest event time, as the consumer does."""
    state = RiskState()
    clock = -1
    for a in alerts:
        clock = max(clock, a.ts_ms)
        state, _ = evaluate(add_alert(state, a, params), clock, params)
    return state


# -- bands and hysteresis


@pytest.mark.parametrize(
    ("score", "tier"),
    [(0, LOW), (24, LOW), (25, MEDIUM), (49, MEDIUM), (50, HIGH), (74, HIGH), (75, CRITICAL)],
)
def test_bands_from_low(score: int, tier: int) -> None:
    assert tier_for(score, LOW, 0, P) == tier
    assert tier_for(100, LOW, 0, P) == CRITICAL


@pytest.mark.parametrize("score", [25, 50, 75, 100])
def test_up_at_once(score: int) -> None:
    band = max(t for t in range(4) if score >= P.lower_edge(t))
    for current in range(band + 1):
        assert tier_for(score, current, 0, P) == band


@pytest.mark.parametrize(
    ("current", "score", "expected"),
    [
        (HIGH, 49, HIGH),
        (HIGH, 46, HIGH),
        (HIGH, 45, MEDIUM),
        (HIGH, 30, MEDIUM),
        (MEDIUM, 21, MEDIUM),
        (MEDIUM, 20, LOW),
        (CRITICAL, 71, CRITICAL),
        (CRITICAL, 70, HIGH),
        (CRITICAL, 46, HIGH),  # below critical's edge - 5, inside high's hysteresis
        (CRITICAL, 45, MEDIUM),  # two tiers at once
        (CRITICAL, 0, LOW),  # three tiers at once
        (HIGH, 60, HIGH),
        (MEDIUM, 80, CRITICAL),
    ],
)
def test_down_only_five_points_below_the_lower_edge(
    current: int, score: int, expected: int
) -> None:
    assert tier_for(score, current, 0, P) == expected


def test_the_floor_holds_a_tier_up() -> None:
    assert tier_for(0, LOW, HIGH, P) == HIGH
    assert tier_for(0, CRITICAL, HIGH, P) == HIGH
    assert tier_for(80, LOW, HIGH, P) == CRITICAL


@given(
    st.integers(0, 100),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 10),
)
def test_tier_for_is_the_band_or_higher_only_inside_the_hysteresis(
    score: int, current: int, floor: int, hysteresis: int
) -> None:
    params = RiskParams(hysteresis_points=hysteresis)
    raw = max(t for t in range(4) if score >= params.lower_edge(t))
    unfloored = tier_for(score, current, 0, params)
    # never below the band, never above where it was (or the band, going up)
    assert raw <= unfloored <= max(current, raw)
    # above the band only while the score is within the hysteresis under the tier's edge
    if unfloored > raw:
        assert score > params.lower_edge(unfloored) - hysteresis
    # it stopped going down as soon as it could: the tier above would have been left
    if unfloored < max(current, raw):
        assert score <= params.lower_edge(unfloored + 1) - hysteresis
    assert tier_for(score, current, floor, params) == max(unfloored, floor)


# -- points: decay, cap, duplicates


def test_a_new_state_is_low_with_no_reasons() -> None:
    state, old = evaluate(RiskState(), T0, P)
    assert (state.score, state.tier_name, state.reasons, old) == (0, "low", (), LOW)
    assert state.as_of_ms == T0
    assert state.next_eval_ms == T0 + P.reevaluate_every_s * 1000


@pytest.mark.parametrize(("days", "points"), [(0, 40), (14, 20), (28, 10), (42, 5), (7, 28)])
def test_points_halve_every_half_life(days: int, points: int) -> None:
    state = add_alert(RiskState(), make_alert(AlertType.TOW_SUSPECTED, T0), P)
    score, reasons = score_at(state, T0 + days * DAY_MS, P)
    assert score == points
    assert [(r.code, r.points) for r in reasons] == [("tow", points)]


def test_the_half_life_is_a_parameter() -> None:
    params = RiskParams(half_life_days=7.0)
    state = add_alert(RiskState(), make_alert(AlertType.TOW_SUSPECTED, T0), params)
    assert score_at(state, T0 + 7 * DAY_MS, params)[0] == 20


def test_points_fade_to_nothing_and_leave_the_ledger() -> None:
    state = fold([make_alert(AlertType.SHOCK, T0)])
    assert state.score == 5
    faded, _ = evaluate(state, T0 + 5 * 14 * DAY_MS, P)  # 5 / 32 rounds to nothing
    assert (faded.score, faded.reasons) == (0, ())
    gone, _ = evaluate(state, T0 + 10 * 14 * DAY_MS, P)  # under the 0.05 trace
    assert gone.ledger == ()
    assert gone.alert_ids == frozenset()


def test_repeated_alerts_of_one_code_add_up_to_the_cap() -> None:
    two = fold([make_alert(AlertType.POWER_DISCONNECTED, T0, n) for n in range(2)])
    assert two.score == 40
    five = fold([make_alert(AlertType.POWER_DISCONNECTED, T0, n) for n in range(5)])
    assert five.score == round(P.code_cap_factor * P.points["power_cut"]) == 40
    params = RiskParams(code_cap_factor=3.0)
    assert (
        fold([make_alert(AlertType.POWER_DISCONNECTED, T0, n) for n in range(5)], params).score
        == 60
    )


def test_the_cap_is_per_code() -> None:
    alerts = [make_alert(AlertType.SHOCK, T0, n) for n in range(4)]
    alerts += [make_alert(AlertType.DEVICE_OFFLINE, T0, n) for n in range(4)]
    assert fold(alerts).score == 20  # each code capped at 10, two codes


def test_the_score_is_at_most_100() -> None:
    codes = [
        AlertType.VIN_CONFLICT,
        AlertType.TOW_SUSPECTED,
        AlertType.ZONE_LEFT,
        AlertType.TAMPER,
    ]
    state = fold([make_alert(t, T0, n) for t in codes for n in range(3)])
    assert state.score == 100
    assert state.tier_name == "critical"


def test_the_same_alert_twice_counts_once() -> None:
    a = make_alert(AlertType.TAMPER, T0)
    once = add_alert(RiskState(), a, P)
    twice = add_alert(once, a, P)
    assert twice == once
    assert fold([a, a]) == fold([a])
    assert fold([a, a]).score == 30


def test_the_ledger_keeps_the_newest_per_code() -> None:
    alerts = [make_alert(AlertType.SHOCK, T0 + n * 1000, n) for n in range(12)]
    state = fold(alerts)
    assert len(state.ledger) == P.ledger_per_code
    assert {c.alert_id for c in state.ledger} == {a.id for a in alerts[-P.ledger_per_code :]}
    # the oldest, seen again, is dropped again: no change
    assert add_alert(state, alerts[0], P) == state


def test_a_faded_alert_seen_again_adds_nothing() -> None:
    shock = make_alert(AlertType.SHOCK, T0)
    state = fold([shock, make_alert(AlertType.TAMPER, T0 + 200 * DAY_MS)])
    assert shock.id not in state.alert_ids  # faded under a trace: forgotten
    assert add_alert(state, shock, P) == state


def test_an_alert_without_risk_adds_nothing() -> None:
    entered = make_alert(AlertType.GEOFENCE_ENTER, T0)
    assert reason_code(entered) is None
    assert add_alert(RiskState(), entered, P) == RiskState()
    assert reason_code(make_alert(AlertType.ZONE_LEFT, T0)) == "zone_left"
    assert reason_code(make_alert(AlertType.POWER_DISCONNECTED, T0)) == "power_cut"


# -- the critical floor


def test_a_critical_alert_keeps_the_loan_high_for_seven_days() -> None:
    state = fold([make_alert(AlertType.ZONE_LEFT, T0)])
    assert make_alert(AlertType.ZONE_LEFT, T0).severity is Severity.CRITICAL
    assert state.score == 35  # a medium score ...
    assert state.tier_name == "high"  # ... floored at high
    almost, _ = evaluate(state, T0 + 7 * DAY_MS - 1, P)
    assert almost.tier_name == "high"
    after, old = evaluate(state, T0 + 7 * DAY_MS, P)
    assert old == HIGH
    # 35 * 2**-0.5 = 24.7 rounds to 25: medium, under high's edge by more than 5
    assert (after.score, after.tier_name) == (25, "medium")


def test_a_warning_alert_sets_no_floor() -> None:
    state = fold([make_alert(AlertType.IMPOSSIBLE_TRAVEL, T0)])
    assert state.critical_ms is None
    assert state.tier_name == "low"


def test_the_floor_follows_the_latest_critical_alert() -> None:
    early = make_alert(AlertType.TAMPER, T0)
    late = make_alert(AlertType.TAMPER, T0 + 5 * DAY_MS)
    state = fold([late, early])  # out of order: the later one counts
    assert state.critical_ms == T0 + 5 * DAY_MS
    judged, _ = evaluate(state, T0 + 11 * DAY_MS, P)
    assert judged.tier_name == "high"
    judged, _ = evaluate(state, T0 + 12 * DAY_MS, P)
    # 30 * 2**(-12/14) + 30 * 2**(-7/14) = 37.8: the floor is gone, down to medium
    assert (judged.score, judged.tier_name) == (38, "medium")


# -- reasons and the alert


def test_reasons_are_sorted_by_points_with_their_evidence() -> None:
    alerts = [
        make_alert(AlertType.SHOCK, T0, 0, {"g": 3.1}),
        make_alert(AlertType.VIN_CONFLICT, T0, 1, {"reported_vin": "LFV2A21K8D4000001"}),
        make_alert(AlertType.RISK_SITE_DWELL, T0, 2, {"dwell_s": 1500, "category": "pawnshop"}),
        make_alert(AlertType.RISK_SITE_DWELL, T0 + 1000, 3, {"dwell_s": 1800, "junk": "x"}),
    ]
    state = fold(alerts)
    assert [(r.code, r.points) for r in state.reasons] == [
        ("risk_site_dwell", 60),
        ("vin_conflict", 50),
        ("shock", 5),
    ]
    points = [r.points for r in state.reasons]
    assert points == sorted(points, reverse=True)
    site = state.reasons[0]
    assert site.alert_id == alerts[3].id  # the strongest: the newest of equal points
    assert site.evidence == {
        "fence_id": "home",
        "device_id": "trk-1",
        "dwell_s": 1800,
        "alerts": 2,
    }
    assert state.reasons[1].evidence["reported_vin"] == "LFV2A21K8D4000001"
    assert state.reasons[2].to_json() == {
        "code": "shock",
        "points": 5,
        "alert_id": alerts[0].id,
        "evidence": {"fence_id": "home", "device_id": "trk-1", "g": 3.1},
    }


def test_conditions_hold_their_points_without_decay() -> None:
    cond = Condition("home_mismatch", 25.0, {"distance_m": 5400})
    state = set_conditions(RiskState(), [cond])
    for days in (0, 30, 300):
        judged, _ = evaluate(state, T0 + days * DAY_MS, P)
        assert (judged.score, judged.tier_name) == (25, "medium")
        assert judged.reasons[0].to_json() == {
            "code": "home_mismatch",
            "points": 25,
            "alert_id": None,
            "evidence": {"distance_m": 5400},
        }
    cleared, old = evaluate(set_conditions(judged, []), T0, P)
    assert (cleared.score, cleared.tier_name, old) == (0, "low", MEDIUM)


def test_tier_changed_alert_is_deterministic_and_carries_the_top_reasons() -> None:
    alerts = [
        make_alert(AlertType.ZONE_LEFT, T0, 0),
        make_alert(AlertType.SHOCK, T0, 1),
        make_alert(AlertType.TAMPER, T0, 2),
        make_alert(AlertType.DEVICE_OFFLINE, T0, 3),
    ]
    state = fold(alerts)
    first = tier_changed(LOAN, state, LOW, T0 + 5000, P, (31.2, 121.4))
    again = tier_changed(LOAN, fold(alerts), LOW, T0 + 9000, P, (31.2, 121.4))
    assert first.id == again.id  # the detection time is not part of the id
    assert first.type is AlertType.RISK_TIER_CHANGED
    assert (first.ts_ms, first.detected_ms, first.loan_id, first.vin) == (
        T0,
        T0 + 5000,
        "L-1",
        LOAN.vin,
    )
    assert (first.lat, first.lon) == (31.2, 121.4)
    assert first.details["from"] == "low"
    assert first.details["to"] == "critical"
    assert first.details["score"] == state.score == 75
    reasons = first.details["reasons"]
    assert isinstance(reasons, list)
    assert [r["code"] for r in reasons] == ["zone_left", "tamper", "offline"]  # type: ignore[index]
    assert len(reasons) == P.top_reasons
    other = tier_changed(LOAN, state, MEDIUM, T0, P, None)
    assert other.id != first.id
    assert (other.lat, other.lon) == (None, None)
    later = tier_changed(
        LOAN, fold([*alerts, make_alert(AlertType.SHOCK, T0 + 1)]), LOW, T0, P, None
    )
    assert later.id != first.id


def test_snapshot_round_trip() -> None:
    alerts = [
        make_alert(AlertType.ZONE_LEFT, T0, 0, {"distance_m": 3200.5}),
        make_alert(AlertType.VIN_CONFLICT, T0 + HOUR_MS, 1, {"other_loan_ids": ["L-2", "L-3"]}),
        make_alert(AlertType.SHOCK, T0 + 2 * HOUR_MS, 2, {"g": 2.6}),
    ]
    state = set_conditions(fold(alerts), [Condition("mileage_high", 15.0, {"km_per_day": 301.5})])
    state, _ = evaluate(state, T0 + 3 * HOUR_MS, P)
    restored = risk_from_json(orjson.loads(orjson.dumps(risk_to_json(state))))
    assert restored == state
    assert restored.to_json() == state.to_json()
    assert state.to_json()["as_of"] == "2026-03-02T03:00:00Z"
    with pytest.raises(ValueError, match="expected an object"):
        risk_from_json([])


# -- properties over random alert streams

RISKY = [t for t in AlertType if t is not AlertType.RISK_TIER_CHANGED]


@st.composite
def alert_streams(draw: st.DrawFn) -> list[Alert]:
    """Alerts of random types, mostly forward in event time, with a few repeats."""
    n = draw(st.integers(1, 40))
    t = T0
    out: list[Alert] = []
    for i in range(n):
        t += draw(st.sampled_from([0, 1000, HOUR_MS, 6 * HOUR_MS, DAY_MS, 5 * DAY_MS]))
        back = draw(st.sampled_from([0, 0, 0, HOUR_MS]))  # now and then a late one
        out.append(make_alert(draw(st.sampled_from(RISKY)), t - back, i))
        if out and draw(st.integers(0, 9)) == 0:
            out.append(draw(st.sampled_from(out)))
    return out


@PROPS
@given(alert_streams())
def test_score_bounds_floor_and_snapshots_hold_at_every_step(alerts: list[Alert]) -> None:
    state = RiskState()
    clock = -1
    for a in alerts:
        clock = max(clock, a.ts_ms)
        state, _ = evaluate(add_alert(state, a, P), clock, P)
        assert 0 <= state.score <= 100
        assert state.tier >= tier_for(state.score, LOW, 0, P)  # at least the band
        if state.critical_ms is not None and clock - state.critical_ms < 7 * DAY_MS:
            assert state.tier >= HIGH
        assert 0 <= state.tier < len(TIERS)
        assert [r.points for r in state.reasons] == sorted(
            (r.points for r in state.reasons), reverse=True
        )
        assert len({r.code for r in state.reasons}) == len(state.reasons)
        for code in {c.code for c in state.ledger}:
            assert sum(c.code == code for c in state.ledger) <= P.ledger_per_code
        assert risk_from_json(orjson.loads(orjson.dumps(risk_to_json(state)))) == state


@PROPS
@given(alert_streams())
def test_the_fold_is_deterministic_and_deaf_to_repeats(alerts: list[Alert]) -> None:
    once = fold(alerts)
    assert fold(list(alerts)) == once
    unique: list[Alert] = []
    for a in alerts:
        if a not in unique:
            unique.append(a)
    assert fold(unique) == once
