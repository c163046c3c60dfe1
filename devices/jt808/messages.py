"""JT/T 808 terminal messages: parse the bodies the gateway understands.

Covered: 0x0001 terminal general response, 0x0002 heartbeat, 0x0003 logout,
0x0100 registration (2011, 2013 and 2019 layouts), 0x0102 authentication (2013 and 2019),
0x0200 location report with its additional items, 0x0704 batch location upload. Any other
id, and any encrypted body, is `Unsupported` (answer 0x8001 result 3); a body that does not
fit its layout is a `MessageError` (answer result 2). Strings are GBK (read as GB18030,
its superset); fixed-width byte fields are padded with 0x00, which is stripped, and one
that holds binary rather than text is given as hex.

Choices where the standard leaves room:

- Registration with a 2013 header and a body shorter than the 37 fixed bytes of the 2013
  layout is read in the 2011 layout (model BYTE[8]), which many terminals still send.
- Additional items of 0x0200 are read while they fit. A known id with an unexpected length
  is kept raw, like an unknown id; bytes left over that cannot hold an item are kept in
  `tail` and do not cost the report.
- In 0x0704 each item is judged on its own: one short item is a `MessageError` among the
  items, its siblings still count. A count that disagrees with the items present, or an
  item length running past the body, makes the whole batch a `MessageError`.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from devices.jt808.header import Edition, Frame


class MsgId(IntEnum):
    """Message ids used by the gateway."""

    TERMINAL_RESPONSE = 0x0001
    HEARTBEAT = 0x0002
    LOGOUT = 0x0003
    REGISTRATION = 0x0100
    AUTHENTICATION = 0x0102
    LOCATION = 0x0200
    LOCATION_BATCH = 0x0704
    PLATFORM_RESPONSE = 0x8001
    REGISTRATION_RESPONSE = 0x8100


LOCATION_BASE_BYTES: Final = 28
"""Alarm, status, lat, lon (DWORDs), altitude, speed, direction (WORDs), BCD[6] time."""

_LOCATION: Final = struct.Struct(">IIIIHHH6s")
_RESPONSE: Final = struct.Struct(">HHB")
_WORD: Final = struct.Struct(">H")
_WORDS: Final = struct.Struct(">HH")

# Registration layouts: manufacturer id, terminal model and terminal id widths.
_REG_2011: Final = (5, 8, 7)
_REG_2013: Final = (5, 20, 7)
_REG_2019: Final = (11, 30, 30)
_AUTH_IMEI_BYTES: Final = 15
_AUTH_SOFTWARE_BYTES: Final = 20


@dataclass(frozen=True, slots=True)
class MessageError:
    """A body that does not fit its message's layout (answer 0x8001 result 2)."""

    detail: str


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A message the gateway does not read (answer 0x8001 result 3)."""

    msg_id: int
    detail: str


@dataclass(frozen=True, slots=True)
class TerminalResponse:
    """0x0001: the terminal answers a platform message. `result` 0 ok, 1 failed, ..."""

    reply_serial: int
    reply_id: int
    result: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """0x0002: the terminal is alive; the body is empty."""


@dataclass(frozen=True, slots=True)
class Logout:
    """0x0003: the terminal logs out."""


@dataclass(frozen=True, slots=True)
class Registration:
    """0x0100. `plate_colour` follows JT/T 415 (0: no plate yet, `plate` then holds the VIN).

    `layout` is the year of the body layout: 2011, 2013 or 2019.
    """

    province_id: int
    city_id: int
    manufacturer_id: str
    model: str
    terminal_id: str
    plate_colour: int
    plate: str
    layout: int

    @property
    def vin(self) -> str | None:
        """The VIN when the car has no plate yet and the terminal sent 17 characters."""
        text = self.plate.strip().upper()
        if self.plate_colour == 0 and len(text) == 17 and text.isascii() and text.isalnum():
            return text
        return None


@dataclass(frozen=True, slots=True)
class Authentication:
    """0x0102. `imei` and `software_version` come only in the 2019 edition."""

    code: str
    imei: str | None = None
    software_version: str | None = None


@dataclass(frozen=True, slots=True)
class AdditionalInfo:
    """The additional items of a 0x0200 that have a meaning here, in their wire units."""

    mileage_tenths_km: int | None = None  # 0x01 DWORD, 1/10 km
    fuel_tenths_l: int | None = None  # 0x02 WORD, 1/10 L
    tacho_speed_tenths_kmh: int | None = None  # 0x03 WORD, 1/10 km/h, from the tachograph
    alarm_event_id: int | None = None  # 0x04 WORD, alarm needing a manual confirmation
    ext_signal_status: int | None = None  # 0x25 DWORD, extended vehicle signal bits
    io_status: int | None = None  # 0x2A WORD
    analog: int | None = None  # 0x2B DWORD: AD0 in bits 0-15, AD1 in bits 16-31
    signal_strength: int | None = None  # 0x30 BYTE, wireless network signal
    satellites: int | None = None  # 0x31 BYTE, GNSS satellites in use


@dataclass(frozen=True, slots=True)
class LocationReport:
    """0x0200, or one item of 0x0704, in wire units; `mapping.py` turns it into readings.

    `lat_e6`/`lon_e6` are millionths of a degree, unsigned (the hemisphere is in status
    bits 2 and 3). `time_bcd` is the raw BCD[6] YYMMDDhhmmss in UTC+8, not yet checked.
    `raw_items` keeps (id, value) of the additional items not read into `info`, in order.
    """

    alarm: int
    status: int
    lat_e6: int
    lon_e6: int
    altitude_m: int
    speed_tenths_kmh: int
    direction_deg: int
    time_bcd: bytes
    info: AdditionalInfo = AdditionalInfo()
    raw_items: tuple[tuple[int, bytes], ...] = ()
    tail: bytes = b""  # trailing bytes too short for an item, kept for the record


@dataclass(frozen=True, slots=True)
class LocationBatch:
    """0x0704. `kind` 0 is a normal batch, 1 a blind-area (dead zone) catch-up."""

    kind: int
    items: tuple[LocationReport | MessageError, ...]


TerminalMessage = (
    TerminalResponse
    | Heartbeat
    | Logout
    | Registration
    | Authentication
    | LocationReport
    | LocationBatch
)

# Additional items read into `AdditionalInfo`: id -> (field, expected length).
_ITEMS: Final[dict[int, tuple[str, int]]] = {
    0x01: ("mileage_tenths_km", 4),
    0x02: ("fuel_tenths_l", 2),
    0x03: ("tacho_speed_tenths_kmh", 2),
    0x04: ("alarm_event_id", 2),
    0x25: ("ext_signal_status", 4),
    0x2A: ("io_status", 2),
    0x2B: ("analog", 4),
    0x30: ("signal_strength", 1),
    0x31: ("satellites", 1),
}


def parse_message(frame: Frame) -> TerminalMessage | Unsupported | MessageError:
    """Read the body of a whole (not sub-packaged) frame by its message id."""
    header = frame.header
    msg_id = header.msg_id
    if header.package is not None:
        detail = (
            f"package {header.package.index} of {header.package.total}; "
            "reassemble the packages first"
        )
        return MessageError(detail)
    if header.encryption:
        return Unsupported(msg_id, f"encrypted body (encryption bits {header.encryption:03b})")
    body = frame.body
    if msg_id == MsgId.LOCATION:
        return parse_location(body)
    if msg_id == MsgId.HEARTBEAT:
        return Heartbeat()
    if msg_id == MsgId.LOCATION_BATCH:
        return parse_batch(body)
    if msg_id == MsgId.AUTHENTICATION:
        return parse_authentication(body, header.edition)
    if msg_id == MsgId.REGISTRATION:
        return parse_registration(body, header.edition)
    if msg_id == MsgId.TERMINAL_RESPONSE:
        if len(body) != _RESPONSE.size:
            return MessageError(f"0x0001 body of {len(body)} bytes, expected {_RESPONSE.size}")
        return TerminalResponse(*_RESPONSE.unpack(body))
    if msg_id == MsgId.LOGOUT:
        return Logout()
    return Unsupported(msg_id, f"message id 0x{msg_id:04x} is not handled by the gateway")


def parse_registration(body: bytes, edition: Edition) -> Registration | MessageError:
    """Read a 0x0100 body in the layout of `edition` (2011 when a 2013 body is short)."""
    if edition == Edition.V2019:
        widths, layout = _REG_2019, 2019
    elif len(body) >= _fixed_registration(_REG_2013):
        widths, layout = _REG_2013, 2013
    else:
        widths, layout = _REG_2011, 2011
    fixed = _fixed_registration(widths)
    if len(body) < fixed:
        detail = f"0x0100 body of {len(body)} bytes, the {layout} layout needs at least {fixed}"
        return MessageError(detail)
    province_id, city_id = _WORDS.unpack_from(body, 0)
    at = 4
    fields: list[str] = []
    for width in widths:
        fields.append(_padded_text(body[at : at + width]))
        at += width
    plate_colour = body[at]
    plate = _gbk(body[at + 1 :]).rstrip("\x00").strip()
    manufacturer_id, model, terminal_id = fields
    return Registration(
        province_id, city_id, manufacturer_id, model, terminal_id, plate_colour, plate, layout
    )


def parse_authentication(body: bytes, edition: Edition) -> Authentication | MessageError:
    """Read a 0x0102 body: the whole body is the code in 2013; 2019 adds IMEI and version."""
    if edition == Edition.V2013:
        return Authentication(_gbk(body).rstrip("\x00"))
    if not body:
        return MessageError("0x0102 (2019) body is empty; expected the auth code length")
    code_len = body[0]
    expected = 1 + code_len + _AUTH_IMEI_BYTES + _AUTH_SOFTWARE_BYTES
    if len(body) != expected:
        detail = (
            f"0x0102 (2019) body of {len(body)} bytes; a {code_len}-byte code, IMEI[15] "
            f"and software version[20] make {expected}"
        )
        return MessageError(detail)
    code = _gbk(body[1 : 1 + code_len])
    imei_at = 1 + code_len
    imei = _padded_text(body[imei_at : imei_at + _AUTH_IMEI_BYTES])
    software = _padded_text(body[imei_at + _AUTH_IMEI_BYTES :])
    return Authentication(code, imei, software)


def parse_location(body: bytes) -> LocationReport | MessageError:
    """Read a 0x0200 body: the 28 fixed bytes, then (id, length, value) additional items."""
    if len(body) < LOCATION_BASE_BYTES:
        return MessageError(
            f"location body of {len(body)} bytes, shorter than the {LOCATION_BASE_BYTES} fixed"
        )
    alarm, status, lat_e6, lon_e6, altitude_m, speed, direction, time_bcd = _LOCATION.unpack_from(
        body, 0
    )
    known: dict[str, int] = {}
    raw_items: list[tuple[int, bytes]] = []
    at = LOCATION_BASE_BYTES
    end = len(body)
    while at + 2 <= end:
        item_id, item_len = body[at], body[at + 1]
        if at + 2 + item_len > end:
            break
        value = body[at + 2 : at + 2 + item_len]
        at += 2 + item_len
        spec = _ITEMS.get(item_id)
        if spec is not None and spec[1] == item_len and spec[0] not in known:
            known[spec[0]] = int.from_bytes(value, "big")
        else:
            raw_items.append((item_id, value))
    return LocationReport(
        alarm,
        status,
        lat_e6,
        lon_e6,
        altitude_m,
        speed,
        direction,
        time_bcd,
        AdditionalInfo(**known),
        tuple(raw_items),
        body[at:],
    )


def parse_batch(body: bytes) -> LocationBatch | MessageError:
    """Read a 0x0704 body: count WORD, kind BYTE, then items of WORD length + 0x0200 body."""
    if len(body) < 3:
        return MessageError(f"0x0704 body of {len(body)} bytes; count and type need 3")
    (count,) = _WORD.unpack_from(body, 0)
    kind = body[2]
    items: list[LocationReport | MessageError] = []
    at = 3
    while at < len(body):
        if at + 2 > len(body):
            return MessageError(f"0x0704 item {len(items)}: length cut off at byte {at}")
        (item_len,) = _WORD.unpack_from(body, at)
        at += 2
        if at + item_len > len(body):
            detail = (
                f"0x0704 item {len(items)} claims {item_len} bytes, "
                f"{len(body) - at} remain in the body"
            )
            return MessageError(detail)
        item = parse_location(body[at : at + item_len])
        if isinstance(item, MessageError):
            item = MessageError(f"0x0704 item {len(items)}: {item.detail}")
        items.append(item)
        at += item_len
    if len(items) != count:
        return MessageError(f"0x0704 count says {count} items, the body holds {len(items)}")
    return LocationBatch(kind, tuple(items))


def _fixed_registration(widths: tuple[int, int, int]) -> int:
    """Bytes before the plate: province, city, the three fields, plate colour."""
    return 4 + sum(widths) + 1


def _gbk(raw: bytes) -> str:
    return raw.decode("gb18030", "replace")


def _padded_text(raw: bytes) -> str:
    """A fixed-width BYTE[n] text field without its 0x00 (or space) padding.

    Some terminals put binary (often BCD) in fields meant for letters and digits; those
    come back as hex rather than as control characters.
    """
    trimmed = raw.strip(b"\x00")
    try:
        text = trimmed.decode("gb18030")
    except UnicodeDecodeError:
        return trimmed.hex()
    return text.strip(" ") if text.isprintable() else trimmed.hex()
