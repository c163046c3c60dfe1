"""Platform replies to a terminal: 0x8001 general response and 0x8100 registration response.

A reply goes out in the terminal's own edition: a 2013 header with its BCD[6] number, or
a 2019 header with its version byte and BCD[10] number, so the terminal reads it in the
layout it speaks. The platform's serial number is the caller's (one counter per
connection). Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

from devices.jt808.frame import MAX_BODY_BYTES
from devices.jt808.header import Header, encode_frame
from devices.jt808.messages import MsgId

_GENERAL: Final = struct.Struct(">HHB")
_REGISTRATION: Final = struct.Struct(">HB")
_SERIAL_MAX: Final = 0xFFFF


class ResultCode(IntEnum):
    """0x8001 results."""

    OK = 0
    FAILURE = 1
    MESSAGE_ERROR = 2
    UNSUPPORTED = 3
    ALARM_ACK = 4


class RegistrationResult(IntEnum):
    """0x8100 results."""

    OK = 0
    VEHICLE_REGISTERED = 1  # the vehicle is already registered
    NO_VEHICLE = 2  # no such vehicle in the database
    TERMINAL_REGISTERED = 3  # the terminal is already registered
    NO_TERMINAL = 4  # no such terminal in the database


def general_response(request: Header, platform_serial: int, result: ResultCode) -> bytes:
    """0x8001 answering `request`: reply serial, reply id, result."""
    body = _GENERAL.pack(request.serial, request.msg_id, result)
    return encode_frame(_reply_header(request, MsgId.PLATFORM_RESPONSE, platform_serial), body)


def registration_response(
    request: Header, platform_serial: int, result: RegistrationResult, auth_code: str = ""
) -> bytes:
    """0x8100 answering a 0x0100: reply serial, result, and the auth code on success only.

    Raises ValueError for a code with a failed result, a missing code on success, or a
    code that does not fit one frame.
    """
    if result != RegistrationResult.OK and auth_code:
        msg = f"registration result {result.name} carries no auth code"
        raise ValueError(msg)
    if result == RegistrationResult.OK and not auth_code:
        msg = "a successful registration needs an auth code"
        raise ValueError(msg)
    code = auth_code.encode("gbk")
    if _REGISTRATION.size + len(code) > MAX_BODY_BYTES:
        msg = f"auth code of {len(code)} bytes does not fit one frame"
        raise ValueError(msg)
    body = _REGISTRATION.pack(request.serial, result) + code
    header = _reply_header(request, MsgId.REGISTRATION_RESPONSE, platform_serial)
    return encode_frame(header, body)


def _reply_header(request: Header, msg_id: int, platform_serial: int) -> Header:
    if not 0 <= platform_serial <= _SERIAL_MAX:
        msg = f"platform serial {platform_serial} is not a WORD (0..65535)"
        raise ValueError(msg)
    return Header(msg_id, request.phone, platform_serial, request.version)
