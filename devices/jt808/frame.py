"""JT/T 808 framing: delimiters, escapes, checksum, and a streaming frame reader.

On the wire a message is `0x7e | escaped(header + body + checksum) | 0x7e`. The checksum
is the XOR of every header and body byte; escaping comes last, so `0x7e` becomes
`0x7d 0x02` and `0x7d` becomes `0x7d 0x01`. Nothing here does I/O or reads a clock.

`FrameReader` is fed the chunks a socket delivers, in any split, and hands back each
frame's unescaped content (header + body, checksum verified and removed) or a
`FrameError`. Every `0x7e` is a boundary: the bytes between two of them are one candidate
frame, an empty candidate (`7e 7e`, one frame's end and the next one's start) is nothing,
and a broken candidate costs only itself, so the reader is back in step at the next
delimiter whatever came before. Output depends only on the byte stream, never on how it
was cut into chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

FLAG: Final = 0x7E
ESCAPE: Final = 0x7D

MAX_BODY_BYTES: Final = 0x3FF
"""The body length field has 10 bits."""

MAX_HEADER_BYTES: Final = 21
"""2019 header with a package item: id 2, properties 2, version 1, BCD[10], serial 2, item 4."""

MIN_HEADER_BYTES: Final = 12
"""2013 header without a package item: id 2, properties 2, BCD[6], serial 2."""

MAX_FRAME_BYTES: Final = MAX_HEADER_BYTES + MAX_BODY_BYTES + 1
"""Largest unescaped content between two delimiters (header, body, checksum): 1045 bytes."""

MIN_FRAME_BYTES: Final = MIN_HEADER_BYTES + 1
"""Smallest unescaped content that can be a frame: a bare 2013 header and its checksum."""

MAX_ESCAPED_BYTES: Final = 2 * MAX_FRAME_BYTES
"""Largest escaped run between delimiters; the reader never buffers more than this."""

_PAIR_7E: Final = b"\x7d\x02"
_PAIR_7D: Final = b"\x7d\x01"


class FrameErrorKind(StrEnum):
    """Why a run of bytes between delimiters is not a frame."""

    GARBAGE = "garbage"  # bytes before the first 0x7e, or a run too short to be a frame
    BAD_ESCAPE = "bad_escape"  # 0x7d not followed by 0x01 or 0x02
    BAD_CHECKSUM = "bad_checksum"  # XOR of header and body differs from the check byte
    TOO_LONG = "too_long"  # more than MAX_FRAME_BYTES (unescaped) without a closing 0x7e
    TRUNCATED = "truncated"  # the stream ended inside a frame (`FrameReader.finish`)
    BAD_HEADER = "bad_header"  # checksum fine, header malformed (see `header.decode_frame`)


@dataclass(frozen=True, slots=True)
class FrameError:
    """A run of bytes that is not a frame: why, a detail for the reject, and what was kept.

    `raw` holds the escaped bytes of the run (at most `MAX_ESCAPED_BYTES`); for a bad
    header, the unescaped content. `content` is set for a bad checksum or header: the
    unescaped header and body, so the caller may still read the header with
    `header.peek_header` and answer 0x8001 result 2.
    """

    kind: FrameErrorKind
    detail: str
    raw: bytes = b""
    content: bytes | None = None


def checksum(data: bytes) -> int:
    """XOR of all bytes of `data` (0 for no bytes)."""
    n = len(data)
    if n == 0:
        return 0
    # Folding the number onto itself keeps the XOR of its bytes and runs in C, which is
    # far quicker than a Python loop over a 1 KiB body.
    value = int.from_bytes(data, "big")
    while n > 1:
        half = (n + 1) // 2
        shift = 8 * half
        value = (value >> shift) ^ (value & ((1 << shift) - 1))
        n = half
    return value


def escape(data: bytes) -> bytes:
    """Escape `data` for the wire: 0x7d → 0x7d 0x01, then 0x7e → 0x7d 0x02."""
    return data.replace(b"\x7d", _PAIR_7D).replace(b"\x7e", _PAIR_7E)


def escape_is_valid(data: bytes) -> bool:
    """Tell whether every 0x7d in `data` starts a 0x7d 0x01 or 0x7d 0x02 pair."""
    marks = data.count(ESCAPE)
    return marks == 0 or marks == data.count(_PAIR_7D) + data.count(_PAIR_7E)


def unescape(data: bytes) -> bytes:
    """Undo `escape`; raises ValueError on a 0x7d that starts no valid pair."""
    if ESCAPE not in data:
        return bytes(data)
    if not escape_is_valid(data):
        msg = f"0x7d at offset {_bad_escape_at(data)} is not followed by 0x01 or 0x02"
        raise ValueError(msg)
    # In valid input the byte after 0x7d is 0x01 or 0x02, never 0x7d, so the pairs
    # cannot overlap and the order of the two replacements does not matter.
    return data.replace(_PAIR_7E, b"\x7e").replace(_PAIR_7D, b"\x7d")


def seal(content: bytes) -> bytes:
    """Wrap header + body for the wire: append the checksum, escape, add both delimiters."""
    return b"\x7e" + escape(content + bytes((checksum(content),))) + b"\x7e"


class FrameReader:
    """Split a byte stream into checked frame contents, resynchronising after any error.

    Memory is bounded by `MAX_ESCAPED_BYTES`. Not thread-safe: one reader per connection.
    """

    __slots__ = ("_run", "_skipping", "_synced")

    def __init__(self) -> None:
        self._run = bytearray()
        self._synced = False  # a 0x7e has been seen; before that every byte is garbage
        self._skipping = False  # an over-long run was reported; drop bytes up to the next 0x7e

    @property
    def pending_bytes(self) -> int:
        """Bytes held since the last delimiter (a frame in progress)."""
        return len(self._run)

    def feed(self, chunk: bytes) -> list[bytes | FrameError]:
        """Take the next chunk of the stream; return the frames and errors it completes."""
        out: list[bytes | FrameError] = []
        view = memoryview(chunk)
        pos = 0
        size = len(chunk)
        while pos < size:
            flag_at = chunk.find(FLAG, pos)
            end = size if flag_at < 0 else flag_at
            if end > pos and not self._skipping:
                room = MAX_ESCAPED_BYTES - len(self._run)
                if end - pos > room:
                    self._run += view[pos : pos + room]
                    out.append(self._too_long())
                    self._run.clear()
                    self._skipping = True
                else:
                    self._run += view[pos:end]
            if flag_at < 0:
                break
            if self._run:
                out.append(self._close())
                self._run.clear()
            self._skipping = False
            self._synced = True
            pos = flag_at + 1
        return out

    def finish(self) -> list[FrameError]:
        """End of stream: report what was left in the buffer, if anything, and reset."""
        if not self._run:
            return []
        raw = bytes(self._run)
        self._run.clear()
        if not self._synced:
            return [FrameError(FrameErrorKind.GARBAGE, _garbage_detail(raw), raw)]
        detail = f"stream ended {len(raw)} bytes into a frame, before its closing 0x7e"
        return [FrameError(FrameErrorKind.TRUNCATED, detail, raw)]

    def _too_long(self) -> FrameError:
        raw = bytes(self._run)
        if not self._synced:
            return FrameError(FrameErrorKind.GARBAGE, _garbage_detail(raw, over=True), raw)
        detail = (
            f"no closing 0x7e within {MAX_ESCAPED_BYTES} bytes; a frame holds at most "
            f"{MAX_FRAME_BYTES} bytes unescaped; skipping to the next 0x7e"
        )
        return FrameError(FrameErrorKind.TOO_LONG, detail, raw)

    def _close(self) -> bytes | FrameError:
        """Judge the run between two delimiters."""
        raw = bytes(self._run)
        if not self._synced:
            return FrameError(FrameErrorKind.GARBAGE, _garbage_detail(raw), raw)
        if len(raw) < MIN_FRAME_BYTES:
            detail = (
                f"{len(raw)} bytes between two 0x7e, fewer than the {MIN_FRAME_BYTES} "
                "of the smallest frame"
            )
            return FrameError(FrameErrorKind.GARBAGE, detail, raw)
        if not escape_is_valid(raw):
            detail = f"0x7d at offset {_bad_escape_at(raw)} is not followed by 0x01 or 0x02"
            return FrameError(FrameErrorKind.BAD_ESCAPE, detail, raw)
        content = unescape(raw)
        if len(content) > MAX_FRAME_BYTES:
            detail = f"{len(content)} bytes unescaped, over the {MAX_FRAME_BYTES} of a frame"
            return FrameError(FrameErrorKind.TOO_LONG, detail, raw)
        if len(content) < MIN_FRAME_BYTES:
            detail = (
                f"{len(content)} bytes unescaped, fewer than the {MIN_FRAME_BYTES} "
                "of the smallest frame"
            )
            return FrameError(FrameErrorKind.GARBAGE, detail, raw)
        body = content[:-1]
        expected = checksum(body)
        if expected != content[-1]:
            detail = f"check byte 0x{content[-1]:02x}, XOR of header and body is 0x{expected:02x}"
            return FrameError(FrameErrorKind.BAD_CHECKSUM, detail, raw, content=body)
        return body


def _garbage_detail(raw: bytes, *, over: bool = False) -> str:
    size = f"over {len(raw)}" if over else str(len(raw))
    return f"{size} bytes before the first 0x7e: not a frame"


def _bad_escape_at(data: bytes) -> int:
    """Offset of the first 0x7d that starts no valid escape pair (-1 when there is none)."""
    at = data.find(ESCAPE)
    while at >= 0:
        if at + 1 >= len(data) or data[at + 1] not in (0x01, 0x02):
            return at
        at = data.find(ESCAPE, at + 2)
    return -1
