"""The lending parameters (DESIGN §8): one documented file, `lending/lending.toml`.

The dataclasses below hold the defaults; the shipped file states the same values with
their meaning (a test keeps the two equal). A deployment's file replaces settings section
by section; a name this build does not know is an error naming it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from types import MappingProxyType
from typing import Any

from lending.model import known_tz

TIERS = ("low", "medium", "high", "critical")
"""Risk tiers, least risky first."""

REASON_CODES = (
    "zone_left",
    "risk_site_dwell",
    "vin_conflict",
    "tracker_separation",
    "tamper",
    "power_cut",
    "tow",
    "impossible_travel",
    "offline",
    "shock",
    "home_mismatch",
    "night_parking_drift",
    "mileage_high",
    "risk_site_candidate",
)
"""Every reason code a risk score may carry."""


def _frozen(values: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(values))


_POINTS = {
    "zone_left": 35.0,
    "risk_site_dwell": 30.0,
    "vin_conflict": 50.0,
    "tracker_separation": 30.0,
    "tamper": 30.0,
    "power_cut": 20.0,
    "tow": 40.0,
    "impossible_travel": 10.0,
    "offline": 5.0,
    "shock": 5.0,
    "home_mismatch": 25.0,
    "night_parking_drift": 25.0,
    "mileage_high": 25.0,
    "risk_site_candidate": 25.0,
}


@dataclass(frozen=True, slots=True)
class RiskParams:
    """Scoring: points per reason code, decay, bands and hysteresis."""

    half_life_days: float = 14.0
    code_cap_factor: float = 2.0
    critical_floor_days: float = 7.0
    hysteresis_points: int = 5
    medium_from: int = 25
    high_from: int = 50
    critical_from: int = 75
    top_reasons: int = 3
    reevaluate_every_s: int = 3600
    ledger_per_code: int = 8
    points: Mapping[str, float] = field(default_factory=lambda: _frozen(_POINTS))

    def lower_edge(self, tier: int) -> int:
        """The lowest score of tier number `tier` (0 = low)."""
        return (0, self.medium_from, self.high_from, self.critical_from)[tier]


@dataclass(frozen=True, slots=True)
class PlacesParams:
    """Learned places: stays, clusters, nights and workdays."""

    stay_radius_m: float = 150.0
    parked_max_speed_kmh: float = 3.0
    max_gap_s: int = 10800
    min_visit_s: int = 300
    cluster_radius_m: float = 200.0
    max_clusters: int = 16
    window_days: int = 30
    min_night_parked_s: int = 3600
    min_work_parked_s: int = 3600
    min_nights_for_home: int = 5
    home_mismatch_m: float = 2000.0
    drift_m: float = 2000.0
    drift_nights: int = 3
    drift_window_nights: int = 7
    frequent_min_visits: int = 3
    night_start_h: int = 22
    night_end_h: int = 6
    work_start_h: int = 9
    work_end_h: int = 17


@dataclass(frozen=True, slots=True)
class SitesParams:
    """Risk-site discovery across the fleet."""

    min_loans: int = 3
    min_stay_s: int = 1800
    radius_m: float = 150.0
    keep_days: int = 90
    skip_home_work: bool = True
    full_points_stay_s: int = 7200


@dataclass(frozen=True, slots=True)
class CollateralParams:
    """Depreciation and mileage."""

    annual_depreciation: float = 0.12
    depreciation_per_10k_km: float = 0.015
    floor_fraction: float = 0.10
    mileage_high_km_per_day: float = 250.0
    mileage_min_days: float = 3.0
    max_speed_kmh: float = 250.0


@dataclass(frozen=True, slots=True)
class PriceParams:
    """APR and maximum principal from tier and LTV."""

    ltv_knee: float = 0.6
    ltv_apr_slope: float = 0.15
    base_apr: Mapping[str, float] = field(
        default_factory=lambda: _frozen(
            {"low": 0.12, "medium": 0.16, "high": 0.22, "critical": 0.30}
        )
    )
    max_ltv: Mapping[str, float] = field(
        default_factory=lambda: _frozen(
            {"low": 0.80, "medium": 0.70, "high": 0.55, "critical": 0.0}
        )
    )


@dataclass(frozen=True, slots=True)
class LendingParams:
    """Every lending parameter."""

    currency: str = "CNY"
    default_tz: str = "Asia/Shanghai"
    risk: RiskParams = field(default_factory=RiskParams)
    places: PlacesParams = field(default_factory=PlacesParams)
    sites: SitesParams = field(default_factory=SitesParams)
    collateral: CollateralParams = field(default_factory=CollateralParams)
    price: PriceParams = field(default_factory=PriceParams)


class ParamsError(ValueError):
    """A lending parameter file that cannot be used; the message names the setting."""


def default_params_text() -> str:
    """The shipped, documented parameter file."""
    return resources.files("lending").joinpath("lending.toml").read_text(encoding="utf-8")


def parse_params(text: str, base: LendingParams | None = None) -> LendingParams:
    """Parameters from TOML text over `base` (default: the built-in defaults)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"lending parameters: not TOML: {exc}"
        raise ParamsError(msg) from None
    params: LendingParams = _merge(base or LendingParams(), doc, "")
    _check(params)
    return params


_MAPPING_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"points": REASON_CODES, "base_apr": TIERS, "max_ltv": TIERS}
)


def _merge(obj: Any, doc: Mapping[str, object], where: str) -> Any:  # a dataclass above
    names = {f.name for f in fields(obj)}
    unknown = sorted(set(doc) - names)
    if unknown:
        msg = f"lending parameters: unknown setting {where}{unknown[0]} (known: {sorted(names)})"
        raise ParamsError(msg)
    changes: dict[str, object] = {}
    for name, value in doc.items():
        path = f"{where}{name}"
        current = getattr(obj, name)
        if name in _MAPPING_KEYS:
            changes[name] = _mapping(current, value, path, _MAPPING_KEYS[name])
        elif hasattr(current, "__dataclass_fields__"):
            if not isinstance(value, dict):
                msg = f"lending parameters: {path} must be a table"
                raise ParamsError(msg)
            changes[name] = _merge(current, value, f"{path}.")
        else:
            changes[name] = _scalar(current, value, path)
    return replace(obj, **changes)


def _mapping(
    current: Mapping[str, float], value: object, path: str, keys: tuple[str, ...]
) -> Mapping[str, float]:
    if not isinstance(value, dict):
        msg = f"lending parameters: {path} must be a table"
        raise ParamsError(msg)
    merged = dict(current)
    for key, number in value.items():
        if key not in keys:
            msg = f"lending parameters: unknown key {path}.{key} (known: {list(keys)})"
            raise ParamsError(msg)
        checked = _scalar(0.0, number, f"{path}.{key}")
        merged[key] = checked if isinstance(checked, float) else 0.0
    return _frozen(merged)


def _scalar(current: object, value: object, path: str) -> object:
    if isinstance(current, bool):
        ok = isinstance(value, bool)
    elif isinstance(current, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(current, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value  # type: ignore[arg-type]  # a number when ok
    else:
        ok = isinstance(value, str)
    if not ok:
        msg = f"lending parameters: {path} must be of type {type(current).__name__}, got {value!r}"
        raise ParamsError(msg)
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        msg = f"lending parameters: {path} must not be negative, got {value!r}"
        raise ParamsError(msg)
    return value


def _check(params: LendingParams) -> None:
    risk = params.risk
    if not 0 < risk.medium_from < risk.high_from < risk.critical_from <= 100:
        msg = (
            "lending parameters: risk bands must rise: "
            "0 < medium_from < high_from < critical_from <= 100"
        )
        raise ParamsError(msg)
    if risk.half_life_days <= 0:
        msg = "lending parameters: risk.half_life_days must be positive"
        raise ParamsError(msg)
    if not known_tz(params.default_tz):
        msg = f"lending parameters: default_tz {params.default_tz!r} is not an IANA time zone"
        raise ParamsError(msg)
    p = params.places
    hours = (p.night_start_h, p.night_end_h, p.work_start_h, p.work_end_h)
    if not all(0 <= h <= 23 for h in hours) or p.work_start_h >= p.work_end_h:
        msg = "lending parameters: places hours must be 0-23, work_start_h before work_end_h"
        raise ParamsError(msg)
    if p.max_clusters < 1 or params.sites.min_loans < 1 or risk.ledger_per_code < 1:
        msg = (
            "lending parameters: places.max_clusters, sites.min_loans and "
            "risk.ledger_per_code must be at least 1"
        )
        raise ParamsError(msg)
    if params.sites.radius_m <= 0:
        msg = "lending parameters: sites.radius_m must be positive (it sizes the grid cells)"
        raise ParamsError(msg)


DEFAULT_PARAMS = LendingParams()
