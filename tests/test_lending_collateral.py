"""Collateral value, mileage (odometer, else GPS distance), LTV and price."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.geo import EARTH_RADIUS_M
from lending.collateral import (
    DAY_MS,
    YEAR_MS,
    Odometer,
    collateral_json,
    collateral_value,
    price_json,
)
from lending.model import Vehicle
from lending.params import CollateralParams, LendingParams

P = CollateralParams()
LP = LendingParams()
T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
START = (31.2300, 121.4700)
CAR = Vehicle(
    make="VW", model="Lavida", year=2019, mileage_km=50_000, value=100_000, valued_at_ms=T0
)


def east(km: float) -> tuple[float, float]:
    """The point `km` kilometres east of START."""
    dlon = math.degrees(km * 1000 / (EARTH_RADIUS_M * math.cos(math.radians(START[0]))))
    return START[0], START[1] + dlon


# -- value


@pytest.mark.parametrize(
    ("years", "factor"), [(0, 1.0), (0.5, 0.88**0.5), (1, 0.88), (2, 0.88**2), (5, 0.88**5)]
)
def test_value_depreciates_with_age(years: float, factor: float) -> None:
    value = collateral_value(CAR, 50_000, T0 + round(years * YEAR_MS), P)
    assert value == pytest.approx(100_000 * factor)


@pytest.mark.parametrize(("driven_km", "factor"), [(0, 1.0), (10_000, 0.985), (20_000, 0.97)])
def test_value_depreciates_with_mileage(driven_km: float, factor: float) -> None:
    assert collateral_value(CAR, 50_000 + driven_km, T0, P) == pytest.approx(100_000 * factor)


def test_age_and_mileage_multiply() -> None:
    value = collateral_value(CAR, 70_000, T0 + round(YEAR_MS), P)
    assert value == pytest.approx(100_000 * 0.88 * 0.97)


def test_value_never_falls_under_the_floor() -> None:
    assert collateral_value(CAR, 50_000, T0 + round(30 * YEAR_MS), P) == pytest.approx(10_000)
    assert collateral_value(CAR, 2_000_000, T0, P) == pytest.approx(10_000)
    assert collateral_value(CAR, 2_000_000, T0, CollateralParams(floor_fraction=0.0)) == 0.0


def test_no_appreciation_before_the_assessment_or_below_its_mileage() -> None:
    assert collateral_value(CAR, 40_000, T0 - round(YEAR_MS), P) == pytest.approx(100_000)


def test_unknowns_do_not_depreciate() -> None:
    assert collateral_value(None, 50_000, T0, P) is None
    assert collateral_value(Vehicle(make="VW"), 50_000, T0, P) is None
    undated = Vehicle(value=100_000, mileage_km=50_000)
    assert collateral_value(undated, 50_000, T0 + round(3 * YEAR_MS), P) == 100_000
    assert collateral_value(CAR, None, T0, P) == 100_000
    assert collateral_value(CAR, 60_000, None, P) == pytest.approx(98_500)
    unmetered = Vehicle(value=100_000, valued_at_ms=T0)
    assert collateral_value(unmetered, 60_000, T0, P) == 100_000


@given(
    st.floats(0, 40),
    st.floats(0, 1_000_000),
    st.floats(0, 40),
    st.floats(0, 1_000_000),
)
def test_value_falls_with_age_and_mileage_and_stays_in_bounds(
    years: float, km: float, more_years: float, more_km: float
) -> None:
    now = collateral_value(CAR, 50_000 + km, T0 + round(years * YEAR_MS), P)
    later = collateral_value(
        CAR, 50_000 + km + more_km, T0 + round((years + more_years) * YEAR_MS), P
    )
    assert now is not None
    assert later is not None
    assert 10_000 - 1e-6 <= later <= now + 1e-6 <= 100_000 + 1e-6


# -- LTV and price


def test_collateral_json_has_value_ltv_currency_and_mileage() -> None:
    doc = collateral_json(CAR, 68_000, 70_123.4, T0 + round(YEAR_MS), LP)
    value = 100_000 * 0.88 * (1 - 0.015 * 20_123.4 / 10_000)
    assert doc == {
        "value": round(value),
        "currency": "CNY",
        "mileage_km": 70_123,
        "ltv": round(68_000 / value, 3),
    }


def test_collateral_json_with_unknowns_is_null() -> None:
    assert collateral_json(None, 68_000, None, None, LP) == {
        "value": None,
        "currency": "CNY",
        "mileage_km": None,
        "ltv": None,
    }
    assert collateral_json(CAR, None, 50_000, T0, LP)["ltv"] is None
    worthless = Vehicle(value=0, mileage_km=0)
    assert collateral_json(worthless, 10, 0, T0, LP)["ltv"] is None  # not a division by zero


@pytest.mark.parametrize(
    ("tier", "ltv", "apr"),
    [
        ("low", None, 0.12),
        ("low", 0.5, 0.12),
        ("low", 0.6, 0.12),
        ("low", 0.8, 0.15),
        ("medium", 0.8, 0.19),
        ("high", 0.8, 0.25),
        ("critical", 1.0, 0.36),
    ],
)
def test_apr_from_tier_and_ltv(tier: str, ltv: float | None, apr: float) -> None:
    assert price_json(tier, ltv, 100_000, LP)["apr"] == pytest.approx(apr)


@pytest.mark.parametrize(
    ("tier", "max_principal"),
    [("low", 80_000), ("medium", 70_000), ("high", 55_000), ("critical", 0)],
)
def test_max_principal_from_tier_and_value(tier: str, max_principal: int) -> None:
    assert price_json(tier, 0.5, 100_000, LP)["max_principal"] == max_principal
    assert price_json(tier, 0.5, None, LP)["max_principal"] is None


@given(st.floats(0, 3), st.floats(0, 3))
def test_apr_never_falls_as_ltv_or_tier_rises(ltv: float, more: float) -> None:
    aprs = [price_json(t, ltv, 1.0, LP)["apr"] for t in ("low", "medium", "high", "critical")]
    assert aprs == sorted(aprs)  # type: ignore[type-var]
    higher = price_json("low", ltv + more, 1.0, LP)["apr"]
    assert higher >= aprs[0]  # type: ignore[operator]


# -- the odometer


def test_the_odometer_increase_wins_over_gps() -> None:
    odo = Odometer()
    for i, reading in enumerate([61_000.0, 61_010.0, 61_050.5]):
        odo.observe(T0 + i * 3_600_000, *east(i * 100), reading, P)  # GPS says 200 km
    assert odo.driven_km() == pytest.approx(50.5)
    # the tracker may count from its installation: the assessed mileage gains its increase
    assert odo.mileage_km(CAR) == pytest.approx(50_050.5)
    assert odo.mileage_km(None) == 61_050.5  # no assessed mileage: the reading itself
    assert odo.gps_km == pytest.approx(200, rel=1e-3)  # kept, but not used


def test_an_odometer_going_backwards_keeps_the_highest() -> None:
    odo = Odometer()
    for i, reading in enumerate([61_000.0, 61_020.0, 10.0, 61_030.0]):
        odo.observe(T0 + i * 60_000, *START, reading, P)
    assert odo.driven_km() == 30.0
    assert odo.mileage_km(CAR) == 50_030.0


def test_without_an_odometer_gps_distance_counts() -> None:
    odo = Odometer()
    for i in range(11):  # 1 km every 2 minutes: 30 km/h
        odo.observe(T0 + i * 120_000, *east(i), None, P)
    assert odo.driven_km() == pytest.approx(10, rel=1e-6)
    assert odo.mileage_km(CAR) == pytest.approx(50_010, rel=1e-9)
    assert odo.mileage_km(Vehicle(value=1)) is None
    assert odo.mileage_km(None) is None


def test_gps_distance_skips_jumps_faster_than_250_kmh() -> None:
    odo = Odometer()
    odo.observe(T0, *east(0), None, P)
    odo.observe(T0 + 60_000, *east(1), None, P)  # 60 km/h
    odo.observe(T0 + 120_000, *east(51), None, P)  # 50 km in a minute: spoofed
    odo.observe(T0 + 180_000, *east(1), None, P)  # and back: also a jump
    odo.observe(T0 + 240_000, *east(2), None, P)
    assert odo.gps_km == pytest.approx(2, rel=1e-6)
    just = Odometer()
    just.observe(T0, *east(0), None, P)
    just.observe(T0 + 3_600_000, *east(249), None, P)  # under 250 km/h
    assert just.gps_km == pytest.approx(249, rel=1e-4)  # the great circle, a little shorter
    over = Odometer()
    over.observe(T0, *east(0), None, P)
    over.observe(T0 + 3_600_000, *east(260), None, P)
    assert over.gps_km == 0.0


def test_an_older_fix_adds_no_distance() -> None:
    odo = Odometer()
    odo.observe(T0 + 60_000, *east(1), None, P)
    odo.observe(T0, *east(0), None, P)
    odo.observe(T0 + 60_000, *east(5), None, P)  # same time, elsewhere
    assert odo.gps_km == 0.0
    assert odo.last_fix == (T0 + 60_000, *east(1))


def test_km_per_day_waits_for_mileage_min_days() -> None:
    odo = Odometer()
    odo.observe(T0, *START, 1_000.0, P)
    odo.observe(T0 + 2 * DAY_MS, *START, 1_900.0, P)
    assert odo.km_per_day(T0 + 2 * DAY_MS, P) is None
    assert odo.km_per_day(T0 + 3 * DAY_MS - 1, P) is None
    assert odo.km_per_day(T0 + 3 * DAY_MS, P) == pytest.approx(300)
    assert odo.km_per_day(T0 + 9 * DAY_MS, P) == pytest.approx(100)
    assert Odometer().km_per_day(T0, P) is None
    assert odo.km_per_day(T0 + DAY_MS, CollateralParams(mileage_min_days=1)) == pytest.approx(900)


def test_odometer_snapshot_round_trip() -> None:
    for odo in (Odometer(), Odometer(61_000.0, 61_050.0, 12.5, (T0, 31.2, 121.4), T0 - 5)):
        doc = orjson.loads(orjson.dumps(odo.to_json()))
        assert Odometer.from_json(doc) == odo
