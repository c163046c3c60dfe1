"""What a simulated JT/T 808 terminal writes (DESIGN §9): message bodies in the 2013 layouts.

- `registration_body`: a 0x0100 body (province, city, maker, model, terminal id, plate).
- `Fix` and `location_body`: one 0x0200 body, which is also one 0x0704 item: the alarm and
  status DWORDs, millionths of a degree (south and west by status bits 2 and 3), altitude,
  speed in 1/10 km/h, heading, BCD[6] time in UTC+8, then the additional items 0x01
  (mileage, 1/10 km) and 0x31 (satellites) when known.
- `batch_bodies`: 0x0704 bodies of fixes, as many as keep each within a frame's 1023 bytes.
- `status_word` and `alarm_word`: the bits DESIGN §9 maps back to readings: status bit 0
  ACC (`ignition`), alarm bit 8 main power off (`ext_power=false`), bit 5 GNSS antenna cut
  (`tamper`: what opening a tracker's case does), bit 29 collision (a `vib` shock).
- `terminal_numbers`: distinct 12-digit terminal numbers (a 2013 BCD[6]), seeded.

The gateway's side of the same bytes is `devices.jt808` (messages, mapping): the tests check
that every body here reads back there. Pure: no I/O, no clock.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from devices.jt808.frame import MAX_BODY_BYTES
from devices.jt808.mapping import (
    ALARM_MAIN_POWER_OFF,
    STATUS_ACC,
    STATUS_POSITIONED,
    STATUS_SOUTH,
    STATUS_WEST,
    UTC8_OFFSET_S,
)

ALARM_TAMPER: Final = 5  # GNSS antenna missing or cut: one of the mapping's tamper bits
ALARM_COLLISION: Final = 29  # collision warning: the mapping's shock bit
BLIND_AREA: Final = 1  # 0x0704 type 1: a catch-up after a dead zone
NORMAL_BATCH: Final = 0

_REGISTRATION: Final = struct.Struct(">HH5s20s7sB")
_LOCATION: Final = struct.Struct(">IIIIHHH6s")
_MILEAGE: Final = struct.Struct(">BBI")
_SATELLITES: Final = struct.Struct(">BBB")
_WORD: Final = struct.Struct(">H")
_BATCH_HEAD: Final = struct.Struct(">HB")


@dataclass(frozen=True, slots=True)
class Fix:
    """One location report in reading units: WGS84 degrees, km/h, compass degrees, km.

    `alarm` is the alarm DWORD as sent (see `alarm_word`); `positioned` False sends the
    report without a fix (status bit 1 clear), which the gateway publishes no `gps` for.
    """

    ts_ms: int
    lat: float
    lon: float
    speed_kmh: float = 0.0
    heading_deg: float = 0.0
    ignition: bool = False
    alarm: int = 0
    positioned: bool = True
    odometer_km: float | None = None
    sats: int | None = None
    altitude_m: int = 0


def registration_body(
    terminal_id: str = "0000001",
    *,
    maker: str = "PWSIM",
    model: str = "FLEET",
    province_id: int = 31,
    city_id: int = 100,
) -> bytes:
    """A 0x0100 body in the 2013 layout, without a plate (colour 0, nothing after it)."""
    return _REGISTRATION.pack(
        province_id, city_id, maker.encode(), model.encode(), terminal_id.encode(), 0
    )


def bcd_time(ts_ms: int) -> bytes:
    """BCD[6] YYMMDDhhmmss of `ts_ms` in UTC+8, the whole second it falls in."""
    stamp = time.gmtime(ts_ms // 1000 + UTC8_OFFSET_S)
    return bytes.fromhex(time.strftime("%y%m%d%H%M%S", stamp))


def status_word(*, ignition: bool, positioned: bool, lat: float, lon: float) -> int:
    """The status DWORD: ACC, positioned, and the hemispheres."""
    word = int(ignition) << STATUS_ACC | int(positioned) << STATUS_POSITIONED
    return word | int(lat < 0) << STATUS_SOUTH | int(lon < 0) << STATUS_WEST


def alarm_word(*, ext_power: bool = True, tamper: bool = False, shock: bool = False) -> int:
    """The alarm DWORD of a tracker's state: main power off, tamper, a collision."""
    word = int(not ext_power) << ALARM_MAIN_POWER_OFF | int(tamper) << ALARM_TAMPER
    return word | int(shock) << ALARM_COLLISION


def location_body(fix: Fix) -> bytes:
    """A 0x0200 body (and a 0x0704 item) of `fix`."""
    status = status_word(ignition=fix.ignition, positioned=fix.positioned, lat=fix.lat, lon=fix.lon)
    body = _LOCATION.pack(
        fix.alarm,
        status,
        round(abs(fix.lat) * 1e6),
        round(abs(fix.lon) * 1e6),
        fix.altitude_m,
        round(fix.speed_kmh * 10),
        round(fix.heading_deg) % 360,
        bcd_time(fix.ts_ms),
    )
    if fix.odometer_km is not None:
        body += _MILEAGE.pack(0x01, 4, round(fix.odometer_km * 10))
    if fix.sats is not None:
        body += _SATELLITES.pack(0x31, 1, fix.sats)
    return body


def batch_bodies(fixes: Sequence[Fix], kind: int = BLIND_AREA) -> list[bytes]:
    """0x0704 bodies holding `fixes` in order, each within a frame's 1023 bytes."""
    bodies: list[bytes] = []
    items: list[bytes] = []
    size = _BATCH_HEAD.size

    def close() -> None:
        bodies.append(_BATCH_HEAD.pack(len(items), kind) + b"".join(items))

    for fix in fixes:
        body = location_body(fix)
        item = _WORD.pack(len(body)) + body
        if items and size + len(item) > MAX_BODY_BYTES:
            close()
            items, size = [], _BATCH_HEAD.size
        items.append(item)
        size += len(item)
    if items:
        close()
    return bodies


def terminal_numbers(n: int, seed: str) -> list[str]:
    """`n` distinct 12-digit terminal numbers `014xxxxxxxxx` (a 2013 BCD[6]), drawn with
    `seed`: their device ids are `jt808-14xxxxxxxxx` (DESIGN §9)."""
    numbers = random.Random(f"{seed}:jt808-numbers").sample(range(10**9), n)
    return [f"014{x:09d}" for x in numbers]
