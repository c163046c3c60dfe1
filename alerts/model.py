"""Alerts: the contract of DESIGN §4, produced by the core and delivered by the outbox."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache

Detail = str | int | float | bool | None | list[str] | list[dict[str, object]]
"""A value in an alert's `details` object (a list of objects: `risk.tier_changed` reasons)."""


class AlertType(StrEnum):
    """Alert types of DESIGN §4."""

    GEOFENCE_ENTER = "geofence.enter"
    GEOFENCE_EXIT = "geofence.exit"
    ZONE_LEFT = "zone.left"
    ZONE_RETURNED = "zone.returned"
    RISK_SITE_DWELL = "pledge.risk_site_dwell"
    VIN_CONFLICT = "pledge.vin_conflict"
    TRACKER_SEPARATION = "pledge.tracker_separation"
    IMPOSSIBLE_TRAVEL = "gps.impossible_travel"
    SHOCK = "shock"
    TOW_SUSPECTED = "tow.suspected"
    POWER_DISCONNECTED = "power.disconnected"
    TAMPER = "tamper"
    DEVICE_OFFLINE = "device.offline"
    DEVICE_ONLINE = "device.online"
    DEVICE_CLOCK_SKEW = "device.clock_skew"
    RISK_TIER_CHANGED = "risk.tier_changed"


class Severity(StrEnum):
    """How urgently an operator should look."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY: dict[AlertType, Severity] = {
    AlertType.GEOFENCE_ENTER: Severity.INFO,
    AlertType.GEOFENCE_EXIT: Severity.INFO,
    AlertType.ZONE_LEFT: Severity.CRITICAL,
    AlertType.ZONE_RETURNED: Severity.INFO,
    AlertType.RISK_SITE_DWELL: Severity.CRITICAL,
    AlertType.VIN_CONFLICT: Severity.CRITICAL,
    AlertType.TRACKER_SEPARATION: Severity.CRITICAL,
    AlertType.IMPOSSIBLE_TRAVEL: Severity.WARNING,
    AlertType.SHOCK: Severity.WARNING,
    AlertType.TOW_SUSPECTED: Severity.CRITICAL,
    AlertType.POWER_DISCONNECTED: Severity.CRITICAL,
    AlertType.TAMPER: Severity.CRITICAL,
    AlertType.DEVICE_OFFLINE: Severity.WARNING,
    AlertType.DEVICE_ONLINE: Severity.INFO,
    AlertType.DEVICE_CLOCK_SKEW: Severity.WARNING,
    AlertType.RISK_TIER_CHANGED: Severity.WARNING,
}


def alert_id(
    subject: str, type_: AlertType, fence_id: str | None, ts_ms: int, extra: str = ""
) -> str:
    """Derive an alert id from what raised it, so a replay after a crash yields the same id."""
    key = f"{subject}\x1f{type_.value}\x1f{fence_id or ''}\x1f{ts_ms}\x1f{extra}"
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def iso_ms(ts_ms: int) -> str:
    """Format epoch milliseconds as ISO-8601 UTC with a `Z`, keeping milliseconds when present."""
    # Two per alert on the hot path: the date and time down to the minute come from a cache.
    seconds = ts_ms // 1000 % 60
    if ts_ms % 1000:
        return f"{_minute(ts_ms // 60_000)}{seconds:02d}.{ts_ms % 1000:03d}Z"
    return f"{_minute(ts_ms // 60_000)}{seconds:02d}Z"


@lru_cache(maxsize=4096)
def _minute(minutes: int) -> str:
    """`YYYY-MM-DDTHH:MM:` of a minute since the epoch."""
    return datetime.fromtimestamp(minutes * 60, tz=UTC).strftime("%Y-%m-%dT%H:%M:")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert. `ts_ms` is the event time it is about; `detected_ms` when the engine saw it."""

    id: str
    type: AlertType
    ts_ms: int
    detected_ms: int
    device_id: str | None
    loan_id: str | None
    vin: str | None
    fence_id: str | None
    lat: float | None
    lon: float | None
    details: dict[str, Detail] = field(default_factory=dict)

    @property
    def severity(self) -> Severity:
        """The severity of this alert's type."""
        return SEVERITY[self.type]

    def to_json(self) -> dict[str, object]:
        """The alert as the JSON object of DESIGN §4."""
        return {
            "id": self.id,
            "type": self.type.value,
            "severity": self.severity.value,
            "ts": iso_ms(self.ts_ms),
            "detected_at": iso_ms(self.detected_ms),
            "device_id": self.device_id,
            "loan_id": self.loan_id,
            "vin": self.vin,
            "fence_id": self.fence_id,
            "lat": self.lat,
            "lon": self.lon,
            "details": self.details,
        }


def parse_iso_ms(text: str) -> int:
    """Epoch milliseconds of an ISO-8601 time with offset (the `ts` of `Alert.to_json`)."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def alert_from_json(doc: dict[str, object]) -> Alert:
    """An alert back from the JSON of `Alert.to_json` (a stored alert). ValueError if it is
    not one."""
    details, ts, detected = doc.get("details"), doc.get("ts"), doc.get("detected_at")
    type_, lat, lon = doc.get("type"), doc.get("lat"), doc.get("lon")
    if (
        not isinstance(details, dict)
        or not isinstance(ts, str)
        or not isinstance(detected, str)
        or not isinstance(type_, str)
        or "id" not in doc
    ):
        msg = f"not an alert document: {str(doc)[:200]}"
        raise ValueError(msg)
    return Alert(
        id=str(doc["id"]),
        type=AlertType(type_),
        ts_ms=parse_iso_ms(ts),
        detected_ms=parse_iso_ms(detected),
        device_id=_opt_str(doc.get("device_id")),
        loan_id=_opt_str(doc.get("loan_id")),
        vin=_opt_str(doc.get("vin")),
        fence_id=_opt_str(doc.get("fence_id")),
        lat=float(lat) if isinstance(lat, int | float) else None,
        lon=float(lon) if isinstance(lon, int | float) else None,
        details=details,
    )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)
