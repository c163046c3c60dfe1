"""Detection rules and their defaults (DESIGN §4); every number is configurable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType

DWELL_DEFAULTS_S: Mapping[str, int] = MappingProxyType(
    {
        "impound": 0,
        "border": 0,
        "pawnshop": 600,
        "auction": 900,
        "lender": 1800,
        "used_car_market": 1800,
    }
)


@dataclass(frozen=True, slots=True)
class Config:
    """Thresholds of the detection core. Distances in metres, durations in seconds."""

    hysteresis_m: float = 25.0
    zone_grace_s: int = 300
    offline_s: int = 1800
    max_speed_kmh: float = 250.0
    reanchor_fixes: int = 3
    shock_g: float = 2.5
    tow_distance_m: float = 200.0
    tow_speed_kmh: float = 10.0
    separation_m: float = 500.0
    separation_max_age_s: int = 600
    separation_confirmations: int = 2
    dwell_default_s: int = 900
    dwell_by_category_s: Mapping[str, int] = field(default_factory=lambda: DWELL_DEFAULTS_S)
    recent_readings_kept: int = 32
    max_clock_skew_s: int = 3600  # readings this far behind the device's last event time,
    clock_skew_readings: int = 3  # this many in a row, consistently: the device's new clock
    max_clock_ahead_s: int = 5  # stamps further past their arrival, once contradicted, are capped
    evict_after_s: int = 604_800  # a device on no active loan is forgotten after this silence

    def dwell_s(self, category: str | None, own_dwell_s: int | None) -> int:
        """The dwell time of a risk site: its own `dwell_s`, else its category's default."""
        if own_dwell_s is not None:
            return own_dwell_s
        return self.dwell_by_category_s.get(category or "", self.dwell_default_s)


class ConfigError(ValueError):
    """Rule settings that do not make a `Config`; the message names the setting."""


def parse_config(doc: object) -> Config:
    """A `Config` from a JSON object of its field names (as in a `--config` file); settings
    not given keep their defaults. ConfigError on a setting that is unknown or of the wrong
    type."""
    if not isinstance(doc, Mapping):
        msg = f"expected a JSON object of rule settings, got {type(doc).__name__}"
        raise ConfigError(msg)
    defaults = Config()
    known = {f.name for f in fields(Config)}
    unknown = sorted(str(k) for k in doc if k not in known)
    if unknown:
        msg = f"unknown rule settings {unknown}; known: {sorted(known)}"
        raise ConfigError(msg)
    values: dict[str, object] = {}
    for name, value in doc.items():
        default = getattr(defaults, name)
        if isinstance(default, Mapping):
            values[name] = _int_mapping(name, value)
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                msg = f"rule setting {name!r}: expected a whole number, got {value!r}"
                raise ConfigError(msg)
            values[name] = value
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                msg = f"rule setting {name!r}: expected a number, got {value!r}"
                raise ConfigError(msg)
            values[name] = float(value)
    return replace(defaults, **values)  # type: ignore[arg-type]  # each value's type is checked above


def _int_mapping(name: str, value: object) -> Mapping[str, int]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        msg = f"rule setting {name!r}: expected an object of whole numbers, got {value!r}"
        raise ConfigError(msg)
    return MappingProxyType(dict(value))
