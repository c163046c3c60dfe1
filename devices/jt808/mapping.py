"""JT/T 808 location reports as pledgewatch readings (DESIGN §9), ready to publish.

A 0x0200, and each item of a 0x0704, becomes (topic, payload) pairs on the topics of
DESIGN §2, so the gateway publishes them unchanged and the engine decodes them like any
tracker's:

- `gps`: `ts` (the BCD time read as UTC+8, epoch ms), `lat`/`lon` (millionths of a degree,
  south and west by status bits 2 and 3), `speed_kmh` (1/10 km/h), `heading_deg`,
  `ignition` (status bit 0, ACC), `odometer_km` (additional item 0x01, 1/10 km) and `sats`
  (item 0x31) when present.
- `status`: `ext_power` (false when alarm bit 8, main power off, is set) and `tamper`
  (true when any tamper bit is set: by default bit 5 GNSS antenna missing or cut, 26 stolen
  per the anti-theft device, 27 illegal ignition, 28 illegal movement, 31 illegal door
  opening, per the 2013 alarm table).
- `vib`: a shock of `collision_g` (default 3.0 g, above the 2.5 g shock threshold) when a
  collision or rollover bit is set (29 collision warning; 30 rollover warning, which the
  2011 edition folded into 29), with `ignition`.

Alarm bits stay set for as long as their condition lasts, so with `previous_alarm` (the
`alarm` of the last `Mapped` for the same terminal) a `status` goes out only when its bits
change, which also clears `tamper` and restores `ext_power` in the engine, and a `vib` only
when a shock bit rises. Without it every report with such a bit set yields them.

A report whose time is not a real YYMMDDhhmmss yields nothing but a fault. Coordinates out
of range, speed over 1000 km/h or a heading over 360 cost the `gps` reading only; so does a
report without a fix (status bit 1 clear, or bit 5: coordinates encrypted), unless
`publish_unpositioned` is set. Nothing here does I/O or reads a clock; whether a time is
in the future is the engine's decoder's call.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from devices.jt808.messages import LocationBatch, LocationReport, MessageError
from devices.readings import Stream
from devices.topics import NATIVE_PREFIX, is_device_id

Payload = dict[str, int | float | bool]
Publication = tuple[str, Payload]
"""(MQTT topic, JSON payload object)."""

DEFAULT_COLLISION_G: Final = 3.0

STATUS_ACC: Final = 0
STATUS_POSITIONED: Final = 1
STATUS_SOUTH: Final = 2
STATUS_WEST: Final = 3
STATUS_ENCRYPTED: Final = 5

ALARM_MAIN_POWER_OFF: Final = 8

DEFAULT_VIB_BITS: Final = frozenset({29, 30})
DEFAULT_TAMPER_BITS: Final = frozenset({5, 26, 27, 28, 31})

UTC8_OFFSET_S: Final = 8 * 3600
MIN_TS_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z, the engine decoder's floor
MAX_SPEED_KMH: Final = 1000.0
MAX_HEADING_DEG: Final = 360


class FaultReason(StrEnum):
    """Why a report, or its `gps` part, was not published (the first two as in `RejectReason`)."""

    BAD_TIMESTAMP = "bad_timestamp"  # BCD time not BCD, or not a real date and time
    OUT_OF_RANGE = "out_of_range"  # lat, lon, speed or heading outside its range
    NOT_POSITIONED = "not_positioned"  # status says no fix, or coordinates encrypted
    MALFORMED = "malformed"  # a 0x0704 item that did not parse


@dataclass(frozen=True, slots=True)
class Fault:
    """Why something was not published. `index` is the 0x0704 item, None for a 0x0200."""

    reason: FaultReason
    detail: str
    index: int | None = None


@dataclass(frozen=True, slots=True)
class MappingConfig:
    """How alarm bits become readings; every bit number is 0..31 of the alarm DWORD."""

    collision_g: float = DEFAULT_COLLISION_G
    vib_bits: frozenset[int] = DEFAULT_VIB_BITS
    tamper_bits: frozenset[int] = DEFAULT_TAMPER_BITS
    publish_unpositioned: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.collision_g) and self.collision_g > 0):
            msg = f"collision_g must be a positive number of g, got {self.collision_g!r}"
            raise ValueError(msg)
        for name, bits in (("vib_bits", self.vib_bits), ("tamper_bits", self.tamper_bits)):
            bad = sorted(b for b in bits if not 0 <= b <= 31)
            if bad:
                msg = f"{name}: {bad} are not bits of a DWORD (0..31)"
                raise ValueError(msg)

    @property
    def vib_mask(self) -> int:
        """Alarm bits that publish a `vib`."""
        return _mask(self.vib_bits)

    @property
    def status_mask(self) -> int:
        """Alarm bits that publish a `status`: main power off and the tamper bits."""
        return _mask(self.tamper_bits) | (1 << ALARM_MAIN_POWER_OFF)


DEFAULT_CONFIG: Final = MappingConfig()


@dataclass(frozen=True, slots=True)
class Mapped:
    """What one report or batch yields. Pass `alarm` as `previous_alarm` next time."""

    publications: list[Publication]
    faults: list[Fault]
    alarm: int | None


def topic(device_id: str, stream: Stream) -> str:
    """The MQTT topic of a stream of a device (DESIGN §2)."""
    return f"{NATIVE_PREFIX}/{device_id}/{stream.value}"


def bcd_time_ms(raw: bytes) -> int | str:
    """Epoch ms of a BCD[6] YYMMDDhhmmss in UTC+8 (years 2000-2099), or why it is no time."""
    digits = raw.hex()
    if len(raw) != 6 or not digits.isdigit():
        return f"time {digits} is not BCD[6] YYMMDDhhmmss"
    year, month, day, hour, minute, second = (int(digits[i : i + 2]) for i in range(0, 12, 2))
    year += 2000
    if not 1 <= month <= 12:
        return f"time {digits}: month {month} is not 1..12"
    days = calendar.monthrange(year, month)[1]
    if not 1 <= day <= days:
        return f"time {digits}: day {day} is not 1..{days} in {year}-{month:02d}"
    if hour > 23 or minute > 59 or second > 59:
        return f"time {digits}: {hour:02d}:{minute:02d}:{second:02d} is not a time of day"
    epoch_s = calendar.timegm((year, month, day, hour, minute, second)) - UTC8_OFFSET_S
    ts_ms = epoch_s * 1000
    if ts_ms < MIN_TS_MS:
        return f"time {digits} (UTC+8) is before 2000-01-01T00:00:00Z"
    return ts_ms


def map_location(
    device_id: str,
    report: LocationReport,
    config: MappingConfig = DEFAULT_CONFIG,
    previous_alarm: int | None = None,
) -> Mapped:
    """Turn one location report into readings to publish, and faults to count."""
    _check_device_id(device_id)
    return _map_one(device_id, report, config, previous_alarm, None)


def map_batch(
    device_id: str,
    batch: LocationBatch,
    config: MappingConfig = DEFAULT_CONFIG,
    previous_alarm: int | None = None,
) -> Mapped:
    """Turn a 0x0704 into readings, item by item in order, alarms carried from one to the next.

    For a blind-area batch (kind 1), whose items are older than the live reports, pass no
    `previous_alarm` and keep the live one.
    """
    _check_device_id(device_id)
    publications: list[Publication] = []
    faults: list[Fault] = []
    alarm = previous_alarm
    for index, item in enumerate(batch.items):
        if isinstance(item, MessageError):
            faults.append(Fault(FaultReason.MALFORMED, item.detail, index))
            continue
        mapped = _map_one(device_id, item, config, alarm, index)
        publications.extend(mapped.publications)
        faults.extend(mapped.faults)
        alarm = mapped.alarm
    return Mapped(publications, faults, alarm)


def _map_one(
    device_id: str,
    report: LocationReport,
    config: MappingConfig,
    previous_alarm: int | None,
    index: int | None,
) -> Mapped:
    ts_ms = bcd_time_ms(report.time_bcd)
    if isinstance(ts_ms, str):
        return Mapped([], [Fault(FaultReason.BAD_TIMESTAMP, ts_ms, index)], previous_alarm)
    publications: list[Publication] = []
    faults: list[Fault] = []
    ignition = _bit(report.status, STATUS_ACC)
    gps = _gps_payload(report, ts_ms, ignition, config)
    if isinstance(gps, Fault):
        faults.append(Fault(gps.reason, gps.detail, index))
    else:
        publications.append((topic(device_id, Stream.GPS), gps))
    alarm = report.alarm
    status_mask = config.status_mask
    status_bits = alarm & status_mask
    if (previous_alarm is None and status_bits) or (
        previous_alarm is not None and status_bits != previous_alarm & status_mask
    ):
        status: Payload = {
            "ts": ts_ms,
            "ext_power": not _bit(alarm, ALARM_MAIN_POWER_OFF),
            "tamper": bool(alarm & _mask(config.tamper_bits)),
        }
        publications.append((topic(device_id, Stream.STATUS), status))
    shock_bits = alarm & config.vib_mask
    if previous_alarm is not None:
        shock_bits &= ~previous_alarm
    if shock_bits:
        vib: Payload = {"ts": ts_ms, "g": config.collision_g, "ignition": ignition}
        publications.append((topic(device_id, Stream.VIB), vib))
    return Mapped(publications, faults, alarm)


def _gps_payload(
    report: LocationReport, ts_ms: int, ignition: bool, config: MappingConfig
) -> Payload | Fault:
    status = report.status
    if _bit(status, STATUS_ENCRYPTED):
        return Fault(FaultReason.NOT_POSITIONED, "coordinates encrypted (status bit 5)")
    if not _bit(status, STATUS_POSITIONED) and not config.publish_unpositioned:
        return Fault(FaultReason.NOT_POSITIONED, "no GNSS fix (status bit 1 clear)")
    if report.lat_e6 > 90_000_000:
        return Fault(FaultReason.OUT_OF_RANGE, f"lat: {report.lat_e6 / 1e6} is over 90 degrees")
    if report.lon_e6 > 180_000_000:
        return Fault(FaultReason.OUT_OF_RANGE, f"lon: {report.lon_e6 / 1e6} is over 180 degrees")
    speed_kmh = report.speed_tenths_kmh / 10
    if speed_kmh > MAX_SPEED_KMH:
        detail = f"speed_kmh: {speed_kmh} is over {MAX_SPEED_KMH:g}"
        return Fault(FaultReason.OUT_OF_RANGE, detail)
    if report.direction_deg > MAX_HEADING_DEG:
        detail = f"heading_deg: {report.direction_deg} is over {MAX_HEADING_DEG}"
        return Fault(FaultReason.OUT_OF_RANGE, detail)
    lat = report.lat_e6 / 1e6
    lon = report.lon_e6 / 1e6
    payload: Payload = {
        "ts": ts_ms,
        "lat": -lat if _bit(status, STATUS_SOUTH) else lat,
        "lon": -lon if _bit(status, STATUS_WEST) else lon,
        "speed_kmh": speed_kmh,
        "heading_deg": report.direction_deg,
        "ignition": ignition,
    }
    info = report.info
    if info.mileage_tenths_km is not None:
        payload["odometer_km"] = info.mileage_tenths_km / 10
    if info.satellites is not None:
        payload["sats"] = info.satellites
    return payload


def _check_device_id(device_id: str) -> None:
    if not is_device_id(device_id):
        msg = f"device_id {device_id!r} is not a well-formed device_id; use header.device_id"
        raise ValueError(msg)


def _bit(word: int, bit: int) -> bool:
    return bool(word >> bit & 1)


def _mask(bits: frozenset[int]) -> int:
    mask = 0
    for bit in bits:
        mask |= 1 << bit
    return mask
