"""JT/T 808 message header, 2013 and 2019 editions, and the terminal's device id.

2013 (and 2011): message id WORD, body properties WORD, terminal phone number BCD[6],
serial number WORD, then the package item (total WORD, index WORD) when bit 13 is set.
2019: the same with a protocol version BYTE after the properties, a BCD[10] phone number,
and bit 14 of the properties set. Body properties: bits 0-9 body length, bits 10-12
encryption (bit 10 RSA), bit 13 sub-package, bit 14 the 2019 version flag.

All multi-byte integers are big-endian. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from devices.jt808.frame import MAX_BODY_BYTES, FrameError, FrameErrorKind, seal

DEVICE_ID_PREFIX: Final = "jt808-"

PHONE_DIGITS_2013: Final = 12
PHONE_DIGITS_2019: Final = 20

_LENGTH_MASK: Final = 0x03FF
_ENCRYPTION_SHIFT: Final = 10
_ENCRYPTION_MASK: Final = 0x07
_SUBPACKAGE_BIT: Final = 1 << 13
_VERSION_BIT: Final = 1 << 14

_WORDS: Final = struct.Struct(">HH")
_WORD: Final = struct.Struct(">H")


class Edition(IntEnum):
    """Which layout a header uses; 2011 terminals share the 2013 header."""

    V2013 = 2013
    V2019 = 2019


@dataclass(frozen=True, slots=True)
class Package:
    """Where a sub-package sits: `index` counts from 1 up to `total`."""

    total: int
    index: int


@dataclass(frozen=True, slots=True)
class Header:
    """A decoded header. `phone` is the BCD digits as sent (12 in 2013, 20 in 2019).

    `version` is the 2019 protocol version byte, None for a 2013 header. `encryption` is
    the 3-bit field (0 none, 1 RSA).
    """

    msg_id: int
    phone: str
    serial: int
    version: int | None = None
    encryption: int = 0
    package: Package | None = None

    @property
    def edition(self) -> Edition:
        """The edition this header was sent in."""
        return Edition.V2013 if self.version is None else Edition.V2019

    @property
    def device_id(self) -> str:
        """The terminal's pledgewatch device_id (DESIGN §9)."""
        return device_id(self.phone)


@dataclass(frozen=True, slots=True)
class Frame:
    """One checked message: its header and its body (still encrypted if `encryption`)."""

    header: Header
    body: bytes


def device_id(phone: str) -> str:
    """`jt808-` and the BCD digits without leading zeros: one SIM, one id in both editions."""
    return DEVICE_ID_PREFIX + (phone.lstrip("0") or "0")


def bcd_digits(raw: bytes) -> str | None:
    """The decimal digits of packed BCD `raw`, or None when a nibble is not 0-9."""
    text = raw.hex()
    return text if text.isdigit() else None


def bcd_bytes(digits: str) -> bytes:
    """Pack an even number of decimal digits as BCD; raises ValueError otherwise."""
    if len(digits) % 2 or not (digits.isascii() and digits.isdigit()):
        msg = f"BCD needs an even number of decimal digits, got {digits!r}"
        raise ValueError(msg)
    return bytes.fromhex(digits)


def decode_frame(content: bytes) -> Frame | FrameError:
    """Split checked frame content (from `FrameReader`) into its header and body."""
    size = len(content)
    if size < 4:
        return _bad(f"{size} bytes, too short for a message id and body properties", content)
    msg_id, props = _WORDS.unpack_from(content, 0)
    body_length = props & _LENGTH_MASK
    encryption = (props >> _ENCRYPTION_SHIFT) & _ENCRYPTION_MASK
    if props & _VERSION_BIT:
        fixed, phone_at, phone_len, version = 17, 5, 10, content[4] if size > 4 else 0
    else:
        fixed, phone_at, phone_len, version = 12, 4, 6, None
    sub = bool(props & _SUBPACKAGE_BIT)
    header_len = fixed + (4 if sub else 0)
    edition = "2013" if version is None else "2019"
    if size < header_len:
        detail = f"{size} bytes, shorter than the {header_len}-byte {edition} header"
        return _bad(detail, content)
    phone = bcd_digits(content[phone_at : phone_at + phone_len])
    if phone is None:
        raw_phone = content[phone_at : phone_at + phone_len].hex()
        return _bad(f"terminal number {raw_phone} is not BCD", content)
    (serial,) = _WORD.unpack_from(content, fixed - 2)
    package = None
    if sub:
        total, index = _WORDS.unpack_from(content, fixed)
        if not 1 <= index <= total:
            detail = f"package index {index} of {total}: expected 1 <= index <= total"
            return _bad(detail, content)
        package = Package(total, index)
    body = content[header_len:]
    if len(body) != body_length:
        detail = f"body properties say {body_length} body bytes, the frame has {len(body)}"
        return _bad(detail, content)
    header = Header(msg_id, phone, serial, version, encryption, package)
    return Frame(header, body)


def peek_header(content: bytes) -> Header | None:
    """The header of content whose body length or checksum is wrong, when it reads at all.

    For answering a damaged frame with 0x8001 result 2, which needs its id and serial.
    """
    if len(content) < 4:
        return None
    props = _WORD.unpack_from(content, 2)[0] & ~_LENGTH_MASK
    sub = bool(props & _SUBPACKAGE_BIT)
    fixed = 17 if props & _VERSION_BIT else 12
    header_len = fixed + (4 if sub else 0)
    if len(content) < header_len:
        return None
    # Rewrite the length field to what is there, so only header defects can fail.
    length = min(len(content) - header_len, _LENGTH_MASK)
    patched = content[:2] + _WORD.pack(props | length) + content[4 : header_len + length]
    frame = decode_frame(patched)
    return frame.header if isinstance(frame, Frame) else None


def encode_frame(header: Header, body: bytes) -> bytes:
    """The wire bytes of one message: header, body, checksum, escaped and delimited.

    Raises ValueError when the body is over 1023 bytes or the phone number does not fit
    the header's edition.
    """
    if len(body) > MAX_BODY_BYTES:
        msg = f"body of {len(body)} bytes; a frame carries at most {MAX_BODY_BYTES}"
        raise ValueError(msg)
    if not 0 <= header.encryption <= _ENCRYPTION_MASK:
        msg = f"encryption {header.encryption} does not fit 3 bits"
        raise ValueError(msg)
    props = len(body) | (header.encryption << _ENCRYPTION_SHIFT)
    if header.package is not None:
        props |= _SUBPACKAGE_BIT
    digits = PHONE_DIGITS_2013 if header.version is None else PHONE_DIGITS_2019
    if len(header.phone) != digits:
        msg = f"{header.edition} header needs a {digits}-digit phone, got {header.phone!r}"
        raise ValueError(msg)
    parts = [_WORD.pack(header.msg_id)]
    if header.version is None:
        parts.append(_WORD.pack(props))
    else:
        parts.append(_WORD.pack(props | _VERSION_BIT))
        parts.append(bytes((header.version,)))
    parts.append(bcd_bytes(header.phone))
    parts.append(_WORD.pack(header.serial))
    if header.package is not None:
        parts.append(_WORDS.pack(header.package.total, header.package.index))
    parts.append(body)
    return seal(b"".join(parts))


def _bad(detail: str, content: bytes) -> FrameError:
    return FrameError(FrameErrorKind.BAD_HEADER, detail, raw=content, content=content)
