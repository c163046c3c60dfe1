"""The lending parameter file: the shipped file is the defaults; errors name the setting."""

from __future__ import annotations

from dataclasses import fields

import pytest

from lending.params import (
    REASON_CODES,
    TIERS,
    LendingParams,
    ParamsError,
    RiskParams,
    default_params_text,
    parse_params,
)


def test_the_shipped_file_states_exactly_the_defaults() -> None:
    assert parse_params(default_params_text()) == LendingParams()


def test_the_shipped_file_names_every_setting() -> None:
    """Every setting of every section is written out in the documented file."""
    import tomllib

    doc = tomllib.loads(default_params_text())
    defaults = LendingParams()
    for f in fields(defaults):
        assert f.name in doc, f.name
        value = getattr(defaults, f.name)
        if hasattr(value, "__dataclass_fields__"):
            section = doc[f.name]
            assert {g.name for g in fields(value)} == set(section), f.name
    assert set(doc["risk"]["points"]) == set(REASON_CODES)
    assert set(doc["price"]["base_apr"]) == set(TIERS)
    assert set(doc["price"]["max_ltv"]) == set(TIERS)


def test_every_reason_code_has_points_by_default() -> None:
    assert set(RiskParams().points) == set(REASON_CODES)
    assert all(RiskParams().points[code] > 0 for code in REASON_CODES)


def test_an_empty_file_is_the_defaults() -> None:
    assert parse_params("") == LendingParams()


def test_overriding_one_setting_keeps_the_rest() -> None:
    params = parse_params("[risk]\nhalf_life_days = 7\n")
    assert params.risk.half_life_days == 7.0
    assert isinstance(params.risk.half_life_days, float)  # an integer is read as a float
    defaults = LendingParams()
    assert params.risk.points == defaults.risk.points
    assert params.risk.high_from == defaults.risk.high_from
    assert params.places == defaults.places
    assert params.currency == defaults.currency


def test_overriding_one_point_keeps_the_other_points() -> None:
    params = parse_params("[risk.points]\ntow = 45.5\n")
    assert params.risk.points["tow"] == 45.5
    defaults = RiskParams().points
    assert {k: v for k, v in params.risk.points.items() if k != "tow"} == {
        k: v for k, v in defaults.items() if k != "tow"
    }


def test_overriding_one_tier_of_a_table_keeps_the_others() -> None:
    params = parse_params("[price.max_ltv]\nlow = 0.75\n")
    assert params.price.max_ltv["low"] == 0.75
    assert params.price.max_ltv["medium"] == LendingParams().price.max_ltv["medium"]


def test_a_file_applies_over_a_given_base() -> None:
    base = parse_params('currency = "USD"\n')
    params = parse_params("[sites]\nmin_loans = 4\n", base)
    assert (params.currency, params.sites.min_loans) == ("USD", 4)


def test_the_parameters_are_immutable() -> None:
    params = LendingParams()
    with pytest.raises(TypeError):
        params.risk.points["tow"] = 1.0  # type: ignore[index]  # that is the point


@pytest.mark.parametrize(
    ("text", "setting"),
    [
        ("colour = 1\n", "colour"),
        ("[risk]\nhalf_life = 7\n", "risk.half_life"),
        ("[risk.points]\nspeeding = 5\n", "risk.points.speeding"),
        ("[price.base_apr]\nsevere = 0.5\n", "price.base_apr.severe"),
        ("[nope]\nx = 1\n", "nope"),
        ("[risk]\nhysteresis_points = 2.5\n", "risk.hysteresis_points"),
        ('[risk]\nhalf_life_days = "two weeks"\n', "risk.half_life_days"),
        ("[places]\nmax_clusters = true\n", "places.max_clusters"),
        ("[sites]\nskip_home_work = 1\n", "sites.skip_home_work"),
        ("currency = 5\n", "currency"),
        ('[risk.points]\ntow = "high"\n', "risk.points.tow"),
        ("[risk]\nhysteresis_points = -1\n", "risk.hysteresis_points"),
        ("[collateral]\nannual_depreciation = -0.1\n", "collateral.annual_depreciation"),
        ("[risk.points]\nzone_left = -35\n", "risk.points.zone_left"),
        ("risk = 3\n", "risk"),
        ("[risk]\npoints = 3\n", "risk.points"),
        ('default_tz = "Mars/Olympus_Mons"\n', "default_tz"),
        ('default_tz = "../../etc/passwd"\n', "default_tz"),
        ("[risk]\nmedium_from = 60\n", "medium_from"),
        ("[risk]\ncritical_from = 101\n", "critical_from"),
        ("[risk]\nmedium_from = 0\n", "medium_from"),
        ("[risk]\nhigh_from = 75\n", "high_from"),
        ("[risk]\nhalf_life_days = 0\n", "risk.half_life_days"),
        ("[places]\nnight_start_h = 24\n", "places hours"),
        ("[places]\nwork_start_h = 17\n", "work_start_h"),
        ("[places]\nmax_clusters = 0\n", "places.max_clusters"),
        ("[sites]\nmin_loans = 0\n", "sites.min_loans"),
        ("[sites]\nradius_m = 0\n", "sites.radius_m"),
        ("[risk]\nledger_per_code = 0\n", "risk.ledger_per_code"),
    ],
)
def test_a_bad_setting_is_an_error_naming_it(text: str, setting: str) -> None:
    with pytest.raises(ParamsError, match=rf"lending parameters: .*{setting}"):
        parse_params(text)


def test_a_file_that_is_not_toml_is_an_error() -> None:
    with pytest.raises(ParamsError, match="not TOML"):
        parse_params("[risk\n")


def test_a_valid_time_zone_is_accepted() -> None:
    assert parse_params('default_tz = "America/New_York"\n').default_tz == "America/New_York"


def test_lower_edges_follow_the_bands() -> None:
    risk = parse_params("[risk]\nmedium_from = 20\nhigh_from = 40\ncritical_from = 90\n").risk
    assert [risk.lower_edge(t) for t in range(len(TIERS))] == [0, 20, 40, 90]
