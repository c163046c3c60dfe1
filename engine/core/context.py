"""What the core reads besides a device's own state: rules, fences and loans, as plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from alerts.model import Alert, AlertType, Detail, alert_id
from engine.core.config import Config
from engine.core.state import DeviceState
from geofence.fence import Fence
from lending.model import Loan


@dataclass(frozen=True, slots=True)
class Context:
    """The read-only world a step runs in. Swapped as a whole when fences or loans change."""

    config: Config
    fences: Mapping[str, Fence]
    loans_by_device: Mapping[str, Loan] = field(default_factory=dict)

    def loan_for(self, device_id: str) -> Loan | None:
        """The loan a tracker belongs to, active or closed, or None."""
        return self.loans_by_device.get(device_id)


class Outcome(StrEnum):
    """What became of a reading."""

    ACCEPTED = "accepted"
    LATE = "late"  # older than the device's last processed reading of that stream
    DUPLICATE = "duplicate"  # same device, stream and ts as one already processed
    CLOCK_SKEW = "clock_skew"  # far behind the device's clock, arriving fresh: held back


def make_alert(
    type_: AlertType,
    state: DeviceState,
    ctx: Context,
    ts_ms: int,
    now_ms: int,
    *,
    fence_id: str | None = None,
    details: dict[str, Detail] | None = None,
    lat: float | None = None,
    lon: float | None = None,
    extra: str = "",
) -> Alert:
    """An alert about a device, positioned at its last fix unless told otherwise."""
    loan = ctx.loan_for(state.device_id)
    if lat is None and state.fix is not None:
        lat, lon = state.fix.lat, state.fix.lon
    return Alert(
        id=alert_id(state.device_id, type_, fence_id, ts_ms, extra),
        type=type_,
        ts_ms=ts_ms,
        detected_ms=now_ms,
        device_id=state.device_id,
        loan_id=loan.loan_id if loan else None,
        vin=loan.vin if loan else None,
        fence_id=fence_id,
        lat=lat,
        lon=lon,
        details=details or {},
    )
