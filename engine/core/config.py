"""Detection rules and their defaults (DESIGN §4); every number is configurable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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

    def dwell_s(self, category: str | None, own_dwell_s: int | None) -> int:
        """The dwell time of a risk site: its own `dwell_s`, else its category's default."""
        if own_dwell_s is not None:
            return own_dwell_s
        return self.dwell_by_category_s.get(category or "", self.dwell_default_s)
