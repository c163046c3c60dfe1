"""Small builders for core tests: fences, loans, readings and a fleet driven by a fake clock."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence

from hypothesis import HealthCheck, settings

from alerts.model import Alert, AlertType
from devices.readings import GpsFix, Reading, StatusReport, Vibration
from engine.core.config import Config
from engine.runtime.pipeline import Pipeline
from geofence.fence import Fence, parse_fence
from geofence.geo import EARTH_RADIUS_M
from geofence.index import FenceIndex
from lending.model import Loan, LoanStatus

T0 = 1_796_000_000_000  # 2026-11-30T00:53:20Z, epoch ms
HOME = (31.2300, 121.4700)
VIN = "LSVAB4182E2123456"
OTHER_VIN = "LFV2A21K8D4000001"


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point `north_m` north and `east_m` east of (lat, lon), on the sphere."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def offset_point(at: tuple[float, float], north_m: float, east_m: float) -> tuple[float, float]:
    """The point `north_m` north and `east_m` east of `at` (lat, lon)."""
    return offset(at[0], at[1], north_m, east_m)


def property_settings(default_examples: int) -> settings:
    """Hypothesis settings: `PW_EXAMPLES` examples (default `default_examples`), no deadline."""
    return settings(
        max_examples=int(os.environ.get("PW_EXAMPLES", str(default_examples))),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def circle(
    fence_id: str,
    center: tuple[float, float],
    radius_m: float,
    kind: str = "zone",
    category: str | None = None,
    dwell_s: int | None = None,
) -> Fence:
    """A geodesic circle fence."""
    props: dict[str, object] = {"name": fence_id, "kind": kind, "radius_m": radius_m}
    if category is not None:
        props["category"] = category
    if dwell_s is not None:
        props["dwell_s"] = dwell_s
    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [center[1], center[0]]},
        "properties": props,
    }
    return parse_fence(fence_id, feature)


def loan(
    loan_id: str = "L-1",
    devices: Sequence[str] = ("trk-1",),
    zones: Sequence[str] = ("home",),
    vin: str = VIN,
    status: LoanStatus = LoanStatus.ACTIVE,
) -> Loan:
    """An active loan."""
    return Loan(loan_id, vin, tuple(devices), tuple(zones), status)


def fix(
    t_s: float,
    at: tuple[float, float],
    device: str = "trk-1",
    **kw: object,
) -> GpsFix:
    """A gps fix `t_s` seconds after T0."""
    return GpsFix(device, T0 + round(t_s * 1000), at[0], at[1], **kw)  # type: ignore[arg-type]  # test kwargs


def vib(t_s: float, g: float, device: str = "trk-1", **kw: object) -> Vibration:
    """A vibration reading `t_s` seconds after T0."""
    return Vibration(device, T0 + round(t_s * 1000), g, **kw)  # type: ignore[arg-type]  # test kwargs


def status(t_s: float, device: str = "trk-1", **kw: object) -> StatusReport:
    """A status reading `t_s` seconds after T0."""
    return StatusReport(device, T0 + round(t_s * 1000), **kw)  # type: ignore[arg-type]  # test kwargs


class Fleet:
    """A pipeline fed reading by reading with the replay clock (largest event time seen)."""

    def __init__(
        self, fences: Iterable[Fence] = (), loans: Iterable[Loan] = (), config: Config | None = None
    ) -> None:
        self.pipeline = Pipeline(FenceIndex.build(fences), config)
        self.clock = T0
        self.alerts: list[Alert] = []
        for ln in loans:
            self.alerts += self.pipeline.put_loan(ln, T0, T0)

    def feed(self, *readings: Reading) -> list[Alert]:
        """Process readings in order; returns (and records) the alerts they raised."""
        out: list[Alert] = []
        for r in readings:
            self.clock = max(self.clock, r.ts_ms)
            out += self.pipeline.process([r], [self.clock])
        self.alerts += out
        return out

    def advance_to(self, t_s: float) -> list[Alert]:
        """Move the runtime clock to T0 + t_s and fire what is due."""
        self.clock = max(self.clock, T0 + round(t_s * 1000))
        out = self.pipeline.advance(self.clock)
        self.alerts += out
        return out


def alert(
    n: int,
    *,
    loan_id: str | None = "L-1",
    device: str | None = "trk-1",
    type_: AlertType = AlertType.ZONE_LEFT,
    ts_ms: int | None = None,
) -> Alert:
    """Alert number `n`, `n` seconds after T0 unless `ts_ms` says otherwise."""
    ts = T0 + n * 1000 if ts_ms is None else ts_ms
    return Alert(
        id=f"alert-{n:04d}",
        type=type_,
        ts_ms=ts,
        detected_ms=ts + 120,
        device_id=device,
        loan_id=loan_id,
        vin=VIN,
        fence_id="home",
        lat=HOME[0],
        lon=HOME[1],
        details={"n": n, "why": "test"},
    )


def types(alerts: Iterable[Alert]) -> list[str]:
    """The alert types, in order."""
    return [a.type.value for a in alerts]


def of_type(alerts: Iterable[Alert], type_: AlertType) -> list[Alert]:
    """The alerts of one type."""
    return [a for a in alerts if a.type is type_]
