"""Collateral value, LTV and price (DESIGN §8), from the loan's vehicle, mileage and tier.

Value starts at `vehicle.value` as assessed at `vehicle.valued_at`, loses
`annual_depreciation` a year of event time after it and `depreciation_per_10k_km` per
10,000 km driven after it, and never falls under `floor_fraction` of the assessed value.
Mileage is the assessed mileage plus the distance driven since the loan's first fix: the
trackers' odometer increase when they report one, else the GPS distance. The price (APR,
maximum principal) comes from the tier and the LTV. Pure arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from geofence.geo import METRES_PER_DEGREE, haversine_m
from lending.model import Vehicle
from lending.params import CollateralParams, LendingParams

YEAR_MS = 365.25 * 86_400_000
_RADIANS = math.pi / 180.0
_SHORT_M = 100_000.0  # below this, the equirectangular distance is good to 0.1 %
DAY_MS = 86_400_000


@dataclass(slots=True)
class Odometer:
    """What the trackers say about distance: odometer readings and the GPS track."""

    first_odometer_km: float | None = None
    last_odometer_km: float | None = None
    gps_km: float = 0.0
    last_fix: tuple[int, float, float] | None = None  # (ts_ms, lat, lon) of the primary tracker
    first_ms: int | None = None

    def observe(
        self,
        ts_ms: int,
        lat: float,
        lon: float,
        odometer_km: float | None,
        params: CollateralParams,
    ) -> None:
        """Fold a fix of the loan's primary tracker (in event-time order)."""
        # A hot path (a call per fix). Fixes a few seconds apart: the equirectangular
        # distance, under 0.1 % off below 100 km and a third of haversine's cost.
        if odometer_km is not None:
            if self.first_odometer_km is None:
                self.first_odometer_km = odometer_km
            if self.last_odometer_km is None or odometer_km > self.last_odometer_km:
                self.last_odometer_km = odometer_km
        last = self.last_fix
        if last is None:
            self.first_ms = ts_ms
        else:
            last_ts, last_lat, last_lon = last
            if ts_ms <= last_ts:
                return
            dlat = lat - last_lat
            dlon = (lon - last_lon) * math.cos(lat * _RADIANS)
            metres = math.sqrt(dlat * dlat + dlon * dlon) * METRES_PER_DEGREE
            if metres >= _SHORT_M:
                metres = haversine_m(last_lat, last_lon, lat, lon)
            if metres * 3600.0 <= params.max_speed_kmh * (ts_ms - last_ts):  # else: spoofing
                self.gps_km += metres / 1000.0
        self.last_fix = (ts_ms, lat, lon)

    def driven_km(self) -> float:
        """Distance driven since the first fix: by odometer when reported, else by GPS."""
        if self.first_odometer_km is not None and self.last_odometer_km is not None:
            return max(0.0, self.last_odometer_km - self.first_odometer_km)
        return self.gps_km

    def mileage_km(self, vehicle: Vehicle | None) -> float | None:
        """The car's mileage now: the assessed mileage plus the distance driven since the
        first fix (by odometer when reported, else by GPS); without an assessed mileage,
        the odometer's own reading. Many trackers count from their installation, so the
        odometer's increase, not its reading, is what the assessed mileage gains."""
        if vehicle is None or vehicle.mileage_km is None:
            return self.last_odometer_km
        return vehicle.mileage_km + self.driven_km()

    def km_per_day(self, at_ms: int, params: CollateralParams) -> float | None:
        """The average distance a day, once `mileage_min_days` have been observed."""
        if self.first_ms is None:
            return None
        days = (at_ms - self.first_ms) / DAY_MS
        if days < params.mileage_min_days:
            return None
        return self.driven_km() / days

    def to_json(self) -> list[object]:
        """A JSON-able snapshot."""
        return [
            self.first_odometer_km,
            self.last_odometer_km,
            self.gps_km,
            None if self.last_fix is None else list(self.last_fix),
            self.first_ms,
        ]

    @classmethod
    def from_json(cls, doc: list[object]) -> Odometer:
        """Restore a snapshot of `to_json`."""
        first, last, gps_km, fix, first_ms = doc
        return cls(
            None if first is None else float(first),  # type: ignore[arg-type]  # a number
            None if last is None else float(last),  # type: ignore[arg-type]  # a number
            float(gps_km),  # type: ignore[arg-type]  # a number
            None if not isinstance(fix, list) else (int(fix[0]), float(fix[1]), float(fix[2])),
            None if first_ms is None else int(first_ms),  # type: ignore[call-overload]  # an int
        )


def collateral_value(
    vehicle: Vehicle | None, mileage_km: float | None, at_ms: int | None, params: CollateralParams
) -> float | None:
    """The car's value at event time `at_ms`, or None without an assessed value."""
    if vehicle is None or vehicle.value is None:
        return None
    value = vehicle.value
    age_years = 0.0
    if vehicle.valued_at_ms is not None and at_ms is not None:
        age_years = max(0.0, (at_ms - vehicle.valued_at_ms) / YEAR_MS)
    driven = 0.0
    if mileage_km is not None and vehicle.mileage_km is not None:
        driven = max(0.0, mileage_km - vehicle.mileage_km)
    factor = math.pow(1.0 - params.annual_depreciation, age_years)
    factor *= max(0.0, 1.0 - params.depreciation_per_10k_km * driven / 10_000)
    return value * max(params.floor_fraction, factor)


def collateral_json(
    vehicle: Vehicle | None,
    principal: float | None,
    mileage_km: float | None,
    at_ms: int | None,
    params: LendingParams,
) -> dict[str, object]:
    """The `collateral` object: value, currency, mileage and LTV (nulls where unknown)."""
    value = collateral_value(vehicle, mileage_km, at_ms, params.collateral)
    ltv = None if value is None or principal is None or value <= 0 else principal / value
    return {
        "value": None if value is None else round(value),
        "currency": params.currency,
        "mileage_km": None if mileage_km is None else round(mileage_km),
        "ltv": None if ltv is None else round(ltv, 3),
    }


def price_json(
    tier: str, ltv: float | None, value: float | None, params: LendingParams
) -> dict[str, object]:
    """The `price` object: APR from tier and LTV, the largest principal from tier and value."""
    p = params.price
    apr = p.base_apr[tier] + p.ltv_apr_slope * max(0.0, (ltv or 0.0) - p.ltv_knee)
    return {
        "apr": round(apr, 4),
        "max_principal": None if value is None else round(value * p.max_ltv[tier]),
    }
