"""The JT/T 808 protocol layer: framing, headers, messages, replies, reassembly, mapping.

Frames come from two places. Real ones, published in the test suites of open-source
JT/T 808 servers (each constant names its source; their checksums were verified here, and
one of them is inconsistent on purpose of this file's tests). And frames built byte by byte
with the small builders below, written from the standard's layouts and independent of the
code under test: they pack with `struct`, XOR with a loop and escape byte by byte.
"""

from __future__ import annotations

import itertools
import random
import struct
from datetime import datetime
from functools import reduce
from operator import xor
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.decode import decode
from devices.jt808.frame import (
    MAX_ESCAPED_BYTES,
    MAX_FRAME_BYTES,
    FrameError,
    FrameErrorKind,
    FrameReader,
    checksum,
    escape,
    unescape,
)
from devices.jt808.header import (
    Edition,
    Frame,
    Header,
    Package,
    decode_frame,
    device_id,
    encode_frame,
    peek_header,
)
from devices.jt808.mapping import (
    DEFAULT_COLLISION_G,
    DEFAULT_CONFIG,
    Fault,
    FaultReason,
    Mapped,
    MappingConfig,
    Payload,
    bcd_time_ms,
    map_batch,
    map_location,
)
from devices.jt808.messages import (
    Authentication,
    Heartbeat,
    LocationBatch,
    LocationReport,
    MessageError,
    Registration,
    TerminalResponse,
    Unsupported,
    parse_location,
    parse_message,
)
from devices.jt808.replies import (
    RegistrationResult,
    ResultCode,
    general_response,
    registration_response,
)
from devices.jt808.subpackage import Reassembler, ReassemblyError
from engine.core.config import Config

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- real frames -------------------------------------------------------------------------

# traccar/traccar src/test/java/org/traccar/protocol/HuabaoProtocolDecoderTest.java
TRACCAR_0100_2013 = (
    "7E0100002D013511221122000500000000373031303748422D5230334742440000000000000000000000"
    "3233363631303402CBD5424136383630387E"
)
TRACCAR_0100_2013_GD = (
    "7e0100002d0141305678720024002c012f373031313142534a2d41362d42440000000000000000000000"
    "3035363738373201d4c14238383838386d7e"
)
TRACCAR_0100_2011_BINARY_ID = (
    "7e010000190940278494700012000000000000000000000000000000000000094027849470000a7e"
)
TRACCAR_0102_2013 = "7E0102000E013511221122000661757468656E7469636174696F6E3F7E"
TRACCAR_0002 = "7e0002000004304832546500b7ca7e"
# Its length field says 50 body bytes where 40 follow, and its check byte is 0xd0 where the
# XOR is 0xf0 (Traccar does not check): a real damaged frame.
TRACCAR_0200_DAMAGED = (
    "7E02000032013511221122000700000000000C000301578CC006CA3A5C0047000000001407231720150104"
    "0000000030011631010BD07E"
)
TRACCAR_0704_BLIND = (
    "7E0704014301356777777707F5000801002600000000000000030159741206CBFD50017200000001160527"
    "09062401040000001D03020000002600000000000000030159746606CBFD50016B00000001160527090653"
    "01040000001D0302000000260000000000000003015975E406CBFE58013F00000001160527090727010400"
    "00001D0302000000260000000000000003015976DE06CBFF10012E0000000116052709075601040000001D"
    "0302000000260000000000000003015976BC06CBFED0012D0000000116052709083001040000001D030200"
    "0000260000000000000003015976FE06CBFEC001080000000116052709090001040000001D030200000026"
    "0000000000000003015976FE06CBFE7800FC0000000116052709093301040000001D030200000026000000"
    "0000000003015977A606CBFF3001080000000116052709100201040000001D030200001F7E"
)
# traccar/traccar src/test/java/org/traccar/protocol/HuabaoFrameDecoderTest.java
TRACCAR_ESCAPED, TRACCAR_UNESCAPED = "307d02087d0155", "307e087d55"

# cuteLittleDevil/go-jt808 protocol/model/reply_test.go (terminal and platform serials 0)
GO_0002_2013 = "7e000200000123456789017fff0a7e"
GO_0002_2019 = "7e000240000100000000017299841738ffff027e"
GO_8001_TO_0002_2013 = "7e8001000501234567890100007fff0002008e7e"
GO_8001_TO_0002_2019 = "7e8001400501000000000172998417380000ffff000200867e"
GO_0001_2013 = "7e000100050123456789017fff007b01c803bd7e"
GO_0102_2013 = "7e0102000b01234567890100003137323939383431373338b57e"
GO_8001_TO_0102_2013_FAILED = "7e80010005012345678901000000000102010e7e"
GO_0102_2019 = (
    "7e0102402f010000000001729984173800000b313732393938343137333831323334353637383930313233"
    "3435332e372e31350000000000000000000000000000227e"
)
GO_8001_TO_0102_2019 = "7e80014005010000000001729984173800000000010200877e"
GO_0100_2011 = (
    "7e010000200123456789010000001f007363640000007777772e3830382e3736353433323101b2e24131323334a17e"
)
GO_0100_2013 = (
    "7e0100002c0123456789010000001f007363640000007777772e3830382e636f6d00000000000000000037"
    "36353433323101b2e24131323334cc7e"
)
GO_0100_2019 = (
    "7e0100405301000000000172998417380000001f007363640000000000000000007777772e3830382e636f"
    "6d0000000000000000000000000000000000000037363534333231000000000000000000000000000000000"
    "000000000000001b2e241313233343b7e"
)
GO_8100_2013 = "7e8100000e01234567890100000000003132333435363738393031377e"
GO_8100_2019 = "7e8100400e010000000001729984173800000000003137323939383431373338ba7e"
GO_0200_2013 = (
    "7e0200007c0123456789017fff000004000000080006eeb6ad02633df70138000300632007071923590104"
    "0000000b02020016030200210402002c051e37373700000000000000000000000000000000000000000000"
    "00000000001105420000004212064d0000004d4d1307000000580058582504000000632a02000a2b040000"
    "001430011e3101286b7e"
)
GO_0704_2019 = (
    "7e0704405d0100000000017299841738ffff000301001c000004000000080006eeb6ad02633df701380003"
    "0063200707192359001c000004000000080006eeb6ad02633df7013800030063200707192359001c000004"
    "000000080006eeb6ad02633df70138000300632007071923590e7e"
)

# hylexus/jt-framework jt-808-server-support/src/test/java/io/github/hylexus/jt/jt808/
# spec/builtin/msg/req/BuiltinMsg0100Test.java and BuiltinMsg0102Test.java
HYLEXUS_0100_2019 = (
    "7E010040560100000000013912344329007B000B0002696439383736353433323174797065303031323334"
    "353637383132333435363738383736353433323149443030303031323334353637383132333435363738"
    "383736353433323101B8CA4A2D313233343539257E"
)
HYLEXUS_0100_2011 = (
    "7E01000023013912344321007B000B0002696431323361626364656667684944313233343501B8CA4A2D31"
    "3233343531317E"
)
HYLEXUS_0102_2013 = "7E0102000C013912344321007B61646D696E2D3132333435364D7E"

# Hand-written from the 2013 layout: a car in Shanghai with its main power cut.
HAND_0200_2013 = (
    "7e"
    "0200"  # message id
    "0025"  # body properties: 2013, no package, 37-byte body
    "013800138000"  # terminal phone number BCD[6]
    "007d02"  # serial 0x007e, escaped
    "00000100"  # alarm: bit 8, main power off
    "00000003"  # status: bit 0 ACC on, bit 1 positioned
    "01dc89d0"  # latitude 31.230416 N
    "073d8aa5"  # longitude 121.473701 E
    "000c"  # altitude 12 m
    "028d"  # speed 65.3 km/h
    "010e"  # direction 270 degrees
    "240131200000"  # 2024-01-31 20:00:00 UTC+8
    "01040001e240"  # item 0x01 mileage: 123456 tenths of a km
    "310109"  # item 0x31: 9 satellites
    "47"  # checksum
    "7e"
)

PHONE_2013 = "013800138000"
PHONE_2019 = "00000000013800138000"

# --- builders, from the standard's layouts -----------------------------------------------


def xor_all(data: bytes) -> int:
    out = 0
    for byte in data:
        out ^= byte
    return out


def on_wire(content: bytes) -> bytes:
    framed = bytearray(b"\x7e")
    for byte in content + bytes([xor_all(content)]):
        if byte == 0x7E:
            framed += b"\x7d\x02"
        elif byte == 0x7D:
            framed += b"\x7d\x01"
        else:
            framed.append(byte)
    framed.append(0x7E)
    return bytes(framed)


def content_of(
    msg_id: int,
    body: bytes,
    *,
    phone: str = PHONE_2013,
    serial: int = 1,
    edition: int = 2013,
    package: tuple[int, int] | None = None,
) -> bytes:
    props = len(body) | (0x2000 if package else 0)
    if edition == 2013:
        head = struct.pack(">HH", msg_id, props) + bytes.fromhex(phone)
    else:
        head = struct.pack(">HHB", msg_id, props | 0x4000, 1) + bytes.fromhex(phone)
    head += struct.pack(">H", serial)
    if package:
        head += struct.pack(">HH", *package)
    return head + body


def message(msg_id: int, body: bytes, **kw: Any) -> bytes:
    return on_wire(content_of(msg_id, body, **kw))


def location_body(
    *,
    alarm: int = 0,
    status: int = 0b11,
    lat_e6: int = 31_230_416,
    lon_e6: int = 121_473_701,
    altitude_m: int = 12,
    speed: int = 0,
    direction: int = 0,
    time: str = "240131200000",
    items: bytes = b"",
) -> bytes:
    fixed = struct.pack(">IIIIHHH", alarm, status, lat_e6, lon_e6, altitude_m, speed, direction)
    return fixed + bytes.fromhex(time) + items


def item(item_id: int, value: bytes) -> bytes:
    return bytes([item_id, len(value)]) + value


def read_one(wire: bytes | str) -> Frame:
    data = bytes.fromhex(wire) if isinstance(wire, str) else wire
    out = FrameReader().feed(data)
    assert len(out) == 1, out
    assert isinstance(out[0], bytes), out
    frame = decode_frame(out[0])
    assert isinstance(frame, Frame), frame
    return frame


def parse(wire: bytes | str) -> object:
    return parse_message(read_one(wire))


def mapped(
    wire: bytes | str, config: MappingConfig = DEFAULT_CONFIG, previous_alarm: int | None = None
) -> Mapped:
    frame = read_one(wire)
    report = parse_message(frame)
    assert isinstance(report, LocationReport), report
    return map_location(frame.header.device_id, report, config, previous_alarm)


def streams(result: Mapped) -> list[str]:
    return [topic.rsplit("/", 1)[1] for topic, _ in result.publications]


def payload(result: Mapped, stream: str) -> Payload:
    found = [p for t, p in result.publications if t.endswith("/" + stream)]
    assert len(found) == 1, result
    return dict(found[0])


# --- framing -----------------------------------------------------------------------------


def test_escape_matches_the_traccar_frame_decoder_sample() -> None:
    assert unescape(bytes.fromhex(TRACCAR_ESCAPED)) == bytes.fromhex(TRACCAR_UNESCAPED)
    assert escape(bytes.fromhex(TRACCAR_UNESCAPED)) == bytes.fromhex(TRACCAR_ESCAPED)


@FAST
@given(st.binary(max_size=600))
def test_escape_round_trips_and_hides_every_delimiter(data: bytes) -> None:
    escaped = escape(data)
    assert 0x7E not in escaped
    assert unescape(escaped) == data
    assert len(escaped) == len(data) + data.count(0x7E) + data.count(0x7D)


@FAST
@given(st.binary(max_size=2100))
def test_checksum_is_the_xor_of_all_bytes(data: bytes) -> None:
    assert checksum(data) == reduce(xor, data, 0)


@pytest.mark.parametrize("bad", ["7d", "307d", "7d03", "7d7d01", "01027d00"])
def test_unescape_refuses_a_lone_or_unknown_escape(bad: str) -> None:
    with pytest.raises(ValueError, match="0x7d at offset"):
        unescape(bytes.fromhex(bad))


REAL_FRAMES = [
    TRACCAR_0100_2013,
    TRACCAR_0100_2013_GD,
    TRACCAR_0100_2011_BINARY_ID,
    TRACCAR_0102_2013,
    TRACCAR_0002,
    TRACCAR_0704_BLIND,
    GO_0002_2013,
    GO_0002_2019,
    GO_0001_2013,
    GO_0102_2013,
    GO_0102_2019,
    GO_0100_2011,
    GO_0100_2013,
    GO_0100_2019,
    GO_0200_2013,
    GO_0704_2019,
    HYLEXUS_0100_2019,
    HYLEXUS_0100_2011,
    HYLEXUS_0102_2013,
    HAND_0200_2013,
]


@pytest.mark.parametrize("wire", REAL_FRAMES)
def test_real_frames_pass_framing_and_header(wire: str) -> None:
    frame = read_one(wire)
    assert isinstance(
        parse_message(frame),
        (Registration, Authentication, Heartbeat, LocationReport, LocationBatch, TerminalResponse),
    )


def test_a_damaged_real_frame_is_a_bad_checksum_whose_header_still_reads() -> None:
    (err,) = FrameReader().feed(bytes.fromhex(TRACCAR_0200_DAMAGED))
    assert isinstance(err, FrameError)
    assert err.kind == FrameErrorKind.BAD_CHECKSUM
    assert "0xd0" in err.detail
    assert err.content is not None
    header = peek_header(err.content)  # enough to answer 0x8001 result 2
    assert header == Header(0x0200, "013511221122", 7)
    reply = general_response(header, 9, ResultCode.MESSAGE_ERROR)
    assert read_one(reply).body == bytes.fromhex("0007020002")


def test_one_flipped_bit_costs_one_frame_and_the_next_still_reads() -> None:
    good = message(0x0002, b"", serial=5)
    bad = bytearray(message(0x0002, b"", serial=6))
    bad[5] ^= 0x01
    out = FrameReader().feed(bytes(bad) + good)
    assert [type(o) for o in out] == [FrameError, bytes]
    assert isinstance(out[0], FrameError)
    assert out[0].kind == FrameErrorKind.BAD_CHECKSUM
    assert isinstance(out[1], bytes)
    frame = decode_frame(out[1])
    assert isinstance(frame, Frame)
    assert frame.header.serial == 5


def test_garbage_before_between_and_inside_frames_is_reported_and_skipped() -> None:
    first = message(0x0002, b"", serial=1)
    second = message(0x0002, b"", serial=2)
    bad_escape = on_wire(content_of(0x0002, b"", serial=3))[:-1] + b"\x7d\x03\x7e"
    stream = b"\x00\x01GET / HTTP/1.1\r\n" + first + b"\r\n" + bad_escape + second
    reader = FrameReader()
    out = reader.feed(stream)
    kinds = [o.kind if isinstance(o, FrameError) else "frame" for o in out]
    assert kinds == [
        FrameErrorKind.GARBAGE,  # before the first delimiter
        "frame",
        FrameErrorKind.GARBAGE,  # \r\n between two frames
        FrameErrorKind.BAD_ESCAPE,
        "frame",
    ]
    assert isinstance(out[0], FrameError)
    assert out[0].raw == b"\x00\x01GET / HTTP/1.1\r\n"
    assert reader.pending_bytes == 0
    assert reader.finish() == []


def test_an_overlong_run_is_reported_once_and_memory_stays_bounded() -> None:
    reader = FrameReader()
    out = reader.feed(b"\x7e" + b"\x55" * (MAX_ESCAPED_BYTES + 10))
    assert [o.kind for o in out if isinstance(o, FrameError)] == [FrameErrorKind.TOO_LONG]
    for _ in range(5):
        assert reader.feed(b"\x55" * 4096) == []
        assert reader.pending_bytes <= MAX_ESCAPED_BYTES
    out = reader.feed(message(0x0002, b"", serial=4))
    assert len(out) == 1
    assert isinstance(out[0], bytes)


def test_a_frame_over_the_size_limit_unescaped_is_too_long() -> None:
    (err,) = FrameReader().feed(b"\x7e" + b"\x01" * (MAX_FRAME_BYTES + 1) + b"\x7e")
    assert isinstance(err, FrameError)
    assert err.kind == FrameErrorKind.TOO_LONG


def test_garbage_with_no_delimiter_at_all_is_bounded_and_reported() -> None:
    reader = FrameReader()
    out = reader.feed(b"\x00" * (MAX_ESCAPED_BYTES + 1))
    assert [o.kind for o in out if isinstance(o, FrameError)] == [FrameErrorKind.GARBAGE]
    assert reader.pending_bytes == 0


def test_finish_reports_a_frame_cut_off_by_the_end_of_the_stream() -> None:
    reader = FrameReader()
    wire = message(0x0002, b"")
    assert reader.feed(wire[:-3]) == []
    (err,) = reader.finish()
    assert err.kind == FrameErrorKind.TRUNCATED
    assert reader.pending_bytes == 0


def _stream() -> bytes:
    body = location_body(items=item(0x01, b"\x7e\x7d\x7e\x7d"))
    return (
        b"junk"
        + message(0x0200, body, serial=0x7D7E)
        + b"\x7e\x7e"
        + message(0x0002, b"", phone=PHONE_2019, edition=2019)
        + b"\x7e\x7d\x7e"  # a bad escape cut by a delimiter
        + bytes.fromhex(TRACCAR_0200_DAMAGED)
        + message(0x0102, b"code-\x7d", serial=0x7E)
        + b"\x7e\x01\x02"  # left pending
    )


def test_every_split_of_the_stream_in_two_and_byte_by_byte_gives_the_same_output() -> None:
    stream = _stream()
    whole = FrameReader().feed(stream)
    assert sum(isinstance(o, bytes) for o in whole) == 3
    for cut in range(len(stream) + 1):
        reader = FrameReader()
        assert reader.feed(stream[:cut]) + reader.feed(stream[cut:]) == whole, cut
    reader = FrameReader()
    one_by_one = list(itertools.chain.from_iterable(reader.feed(bytes([b])) for b in stream))
    assert one_by_one == whole
    assert reader.pending_bytes == 2


@FAST
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.binary(max_size=60).map(lambda b: message(0x0900, b, serial=len(b))),
            st.binary(max_size=60).map(
                lambda b: message(0x0900, b, phone=PHONE_2019, edition=2019)
            ),
        ),
        max_size=8,
    ),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_chunking_of_any_stream_gives_the_same_frames_and_errors(
    parts: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(parts)
    whole = FrameReader().feed(stream)
    reader = FrameReader()
    got: list[bytes | FrameError] = []
    edges = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    for start, end in itertools.pairwise(edges):
        got += reader.feed(stream[start:end])
    assert got == whole


@FAST
@given(st.binary(max_size=3000), st.binary(max_size=200))
def test_a_good_frame_after_any_garbage_is_always_recovered(junk: bytes, body: bytes) -> None:
    wire = message(0x0900, body, serial=77)
    out = FrameReader().feed(junk + wire)
    last = out[-1]
    assert isinstance(last, bytes)
    frame = decode_frame(last)
    assert isinstance(frame, Frame)
    assert frame.body == body


# --- header ------------------------------------------------------------------------------


def test_2013_and_2019_numbers_of_one_sim_give_one_device_id() -> None:
    old = read_one(message(0x0002, b"", phone=PHONE_2013))
    new = read_one(message(0x0002, b"", phone=PHONE_2019, edition=2019))
    assert old.header.edition == Edition.V2013
    assert new.header.edition == Edition.V2019
    assert new.header.version == 1
    assert old.header.device_id == new.header.device_id == "jt808-13800138000"
    assert device_id("000000000000") == "jt808-0"


def test_sub_package_item_is_read_in_both_editions() -> None:
    for edition, phone in ((2013, PHONE_2013), (2019, PHONE_2019)):
        frame = read_one(
            message(0x0801, b"abc", phone=phone, edition=edition, serial=9, package=(3, 2))
        )
        assert frame.header.package == Package(total=3, index=2)
        assert frame.body == b"abc"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\x00\x02\x00", "too short for a message id"),
        (content_of(0x0002, b"")[:-1], "shorter than the 12-byte 2013 header"),
        (content_of(0x0002, b"", edition=2019, phone=PHONE_2019)[:-2], "17-byte 2019"),
        (content_of(0x0002, b"", phone="01380013800a"), "is not BCD"),
        (content_of(0x0200, b"xyz")[:-1], "say 3 body bytes, the frame has 2"),
        (content_of(0x0801, b"x", package=(2, 3)), "package index 3 of 2"),
        (content_of(0x0801, b"x", package=(0, 0)), "package index 0 of 0"),
    ],
)
def test_malformed_headers_are_named(content: bytes, words: str) -> None:
    err = decode_frame(content)
    assert isinstance(err, FrameError)
    assert err.kind == FrameErrorKind.BAD_HEADER
    assert words in err.detail


@FAST
@given(
    msg_id=st.integers(0, 0xFFFF),
    serial=st.integers(0, 0xFFFF),
    digits=st.text("0123456789", min_size=20, max_size=20),
    version=st.none() | st.integers(0, 255),
    package=st.none() | st.tuples(st.integers(1, 0xFFFF), st.integers(1, 0xFFFF)),
    body=st.binary(max_size=1023),
)
def test_encode_frame_round_trips_through_the_reader(
    msg_id: int,
    serial: int,
    digits: str,
    version: int | None,
    package: tuple[int, int] | None,
    body: bytes,
) -> None:
    phone = digits if version is not None else digits[:12]
    pkg = Package(max(package), min(package)) if package else None
    header = Header(msg_id, phone, serial, version, package=pkg)
    frame = read_one(encode_frame(header, body))
    assert frame == Frame(header, body)


def test_encode_frame_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(ValueError, match="at most 1023"):
        encode_frame(Header(0x8001, PHONE_2013, 1), b"\x00" * 1024)
    with pytest.raises(ValueError, match="12-digit phone"):
        encode_frame(Header(0x8001, PHONE_2019, 1), b"")


# --- messages ----------------------------------------------------------------------------


def test_registration_2013_from_traccar() -> None:
    assert parse(TRACCAR_0100_2013) == Registration(
        0, 0, "70107", "HB-R03GBD", "2366104", 2, "苏BA6860", 2013
    )
    assert parse(TRACCAR_0100_2013_GD) == Registration(
        44, 303, "70111", "BSJ-A6-BD", "0567872", 1, "粤B88888", 2013
    )


def test_registration_2019_from_hylexus_and_go_jt808() -> None:
    assert parse(HYLEXUS_0100_2019) == Registration(
        11,
        2,
        "id987654321",
        "type00123456781234567887654321",
        "ID0000123456781234567887654321",
        1,
        "甘J-123459",
        2019,
    )
    reg = parse(GO_0100_2019)
    assert reg == Registration(31, 115, "cd", "www.808.com", "7654321", 1, "测A1234", 2019)


def test_registration_2011_layout_is_read_from_a_short_2013_body() -> None:
    assert parse(HYLEXUS_0100_2011) == Registration(
        11, 2, "id123", "abcdefgh", "ID12345", 1, "甘J-123451", 2011
    )
    assert parse(GO_0100_2011) == Registration(
        31, 115, "cd", "www.808.", "7654321", 1, "测A1234", 2011
    )
    reg = parse(TRACCAR_0100_2011_BINARY_ID)
    assert isinstance(reg, Registration)
    assert reg.terminal_id == "094027849470"  # binary in a text field comes back as hex


def test_registration_hand_built_2019_with_a_vin_for_an_unplated_car() -> None:
    body = (
        struct.pack(">HH", 31, 115)
        + b"MAKER".ljust(11, b"\x00")
        + b"PW-1".ljust(30, b"\x00")
        + b"T0001".ljust(30, b"\x00")
        + b"\x00"
        + b"LSVAB4182E2123456"
    )
    reg = parse(message(0x0100, body, phone=PHONE_2019, edition=2019))
    assert isinstance(reg, Registration)
    assert (reg.manufacturer_id, reg.model, reg.terminal_id) == ("MAKER", "PW-1", "T0001")
    assert reg.vin == "LSVAB4182E2123456"
    short = parse(message(0x0100, body[:70], phone=PHONE_2019, edition=2019))
    assert isinstance(short, MessageError)
    assert "at least 76" in short.detail


def test_authentication_2013_is_the_whole_body() -> None:
    assert parse(TRACCAR_0102_2013) == Authentication("authentication")
    assert parse(HYLEXUS_0102_2013) == Authentication("admin-123456")
    assert parse(GO_0102_2013) == Authentication("17299841738")


def test_authentication_2019_has_length_code_imei_and_version() -> None:
    assert parse(GO_0102_2019) == Authentication("17299841738", "123456789012345", "3.7.15")
    code = "这不是Bug".encode("gbk")
    body = bytes([len(code)]) + code + b"860000000000001" + b"v1.2.3".ljust(20, b"\x00")
    auth = parse(message(0x0102, body, phone=PHONE_2019, edition=2019))
    assert auth == Authentication("这不是Bug", "860000000000001", "v1.2.3")
    bad = parse(message(0x0102, body[:-1], phone=PHONE_2019, edition=2019))
    assert isinstance(bad, MessageError)
    assert "make 45" in bad.detail


def test_heartbeat_and_terminal_response() -> None:
    assert parse(TRACCAR_0002) == Heartbeat()
    assert parse(GO_0002_2019) == Heartbeat()
    assert parse(GO_0001_2013) == TerminalResponse(0x007B, 0x01C8, 3)


def test_location_report_reads_every_standard_additional_item() -> None:
    report = parse(GO_0200_2013)
    assert isinstance(report, LocationReport)
    assert (report.alarm, report.status) == (0x400, 0x800)
    assert (report.altitude_m, report.speed_tenths_kmh, report.direction_deg) == (312, 3, 99)
    info = report.info
    assert info.mileage_tenths_km == 11
    assert (info.fuel_tenths_l, info.tacho_speed_tenths_kmh, info.alarm_event_id) == (22, 33, 44)
    assert (info.ext_signal_status, info.io_status, info.analog) == (99, 10, 20)
    assert (info.signal_strength, info.satellites) == (30, 40)
    assert [i for i, _ in report.raw_items] == [0x05, 0x11, 0x12, 0x13]
    assert report.tail == b""


def test_unknown_odd_and_cut_additional_items_never_cost_the_report() -> None:
    items = (
        item(0xE1, b"\x01\x02") + item(0x01, b"\x00\x01") + item(0x31, b"\x07") + b"\x30\x05\x01"
    )
    report = parse_location(location_body(items=items))
    assert isinstance(report, LocationReport)
    assert report.raw_items == ((0xE1, b"\x01\x02"), (0x01, b"\x00\x01"))
    assert report.info.mileage_tenths_km is None  # wrong length: kept raw, not guessed
    assert report.info.satellites == 7
    assert report.tail == b"\x30\x05\x01"
    assert isinstance(parse_location(b"\x00" * 27), MessageError)


def test_location_batch_from_traccar_and_go_jt808() -> None:
    batch = parse(TRACCAR_0704_BLIND)
    assert isinstance(batch, LocationBatch)
    assert batch.kind == 1
    assert len(batch.items) == 8
    assert all(isinstance(i, LocationReport) for i in batch.items)
    go = parse(GO_0704_2019)
    assert isinstance(go, LocationBatch)
    assert len(go.items) == 3


def test_location_batch_judges_each_item_and_checks_its_structure() -> None:
    good = location_body()
    body = struct.pack(">HB", 3, 0) + b"".join(
        struct.pack(">H", len(b)) + b for b in (good, good[:20], good)
    )
    batch = parse(message(0x0704, body))
    assert isinstance(batch, LocationBatch)
    assert [type(i) for i in batch.items] == [LocationReport, MessageError, LocationReport]
    wrong_count = parse(message(0x0704, b"\x00\x04" + body[2:]))
    assert isinstance(wrong_count, MessageError)
    assert "count says 4" in wrong_count.detail
    overrun = parse(message(0x0704, body[:-1]))
    assert isinstance(overrun, MessageError)
    assert "claims 28 bytes" in overrun.detail


def test_unsupported_encrypted_and_sub_packaged_messages() -> None:
    unknown = parse(message(0x0900, b"\x01"))
    assert isinstance(unknown, Unsupported)
    assert unknown.msg_id == 0x0900
    rsa = content_of(0x0200, location_body())
    rsa = rsa[:2] + struct.pack(">H", struct.unpack(">H", rsa[2:4])[0] | 0x0400) + rsa[4:]
    encrypted = parse(on_wire(rsa))
    assert isinstance(encrypted, Unsupported)
    assert "encrypted" in encrypted.detail
    part = parse(message(0x0200, b"x", package=(2, 1)))
    assert isinstance(part, MessageError)
    assert "reassemble" in part.detail


# --- replies -----------------------------------------------------------------------------


def test_0x8001_is_byte_exact_with_go_jt808_in_both_editions() -> None:
    h13 = read_one(GO_0002_2013).header
    h19 = read_one(GO_0002_2019).header
    assert general_response(h13, 0, ResultCode.OK).hex() == GO_8001_TO_0002_2013
    assert general_response(h19, 0, ResultCode.OK).hex() == GO_8001_TO_0002_2019
    auth13 = read_one(GO_0102_2013).header
    auth19 = read_one(GO_0102_2019).header
    assert general_response(auth13, 0, ResultCode.FAILURE).hex() == GO_8001_TO_0102_2013_FAILED
    assert general_response(auth19, 0, ResultCode.OK).hex() == GO_8001_TO_0102_2019


def test_0x8001_is_byte_exact_with_the_hand_builder_and_escapes() -> None:
    request = Header(0x0200, PHONE_2013, 0x7E7D)
    expected = on_wire(content_of(0x8001, bytes.fromhex("7e7d020004"), serial=0x7D))
    assert general_response(request, 0x7D, ResultCode.ALARM_ACK) == expected
    assert b"\x7d\x02\x7d\x01" in expected


def test_0x8100_is_byte_exact_with_go_jt808_in_both_editions() -> None:
    h13 = read_one(GO_0100_2013).header
    h19 = read_one(GO_0100_2019).header
    ok = RegistrationResult.OK
    assert registration_response(h13, 0, ok, "12345678901").hex() == GO_8100_2013
    assert registration_response(h19, 0, ok, "17299841738").hex() == GO_8100_2019


def test_0x8100_failure_carries_no_code() -> None:
    request = Header(0x0100, PHONE_2019, 0x0102, version=1)
    wire = registration_response(request, 7, RegistrationResult.TERMINAL_REGISTERED)
    expected = on_wire(
        content_of(0x8100, bytes.fromhex("010203"), phone=PHONE_2019, edition=2019, serial=7)
    )
    assert wire == expected
    with pytest.raises(ValueError, match="carries no auth code"):
        registration_response(request, 7, RegistrationResult.NO_TERMINAL, "x")
    with pytest.raises(ValueError, match="needs an auth code"):
        registration_response(request, 7, RegistrationResult.OK)
    with pytest.raises(ValueError, match="not a WORD"):
        general_response(request, 70_000, ResultCode.OK)


# --- sub-packages ------------------------------------------------------------------------


def _packages(body: bytes, total: int, first_serial: int, phone: str = PHONE_2013) -> list[Frame]:
    size = -(-len(body) // total)
    return [
        read_one(
            message(
                0x0704,
                body[i * size : (i + 1) * size],
                phone=phone,
                serial=(first_serial + i) % 0x10000,
                package=(total, i + 1),
            )
        )
        for i in range(total)
    ]


@FAST
@given(
    st.binary(min_size=4, max_size=3000),
    st.integers(2, 6),
    st.integers(0, 0xFFFF),
    st.randoms(use_true_random=False),
)
def test_packages_in_any_order_reassemble_to_the_message(
    body: bytes, total: int, first_serial: int, rnd: random.Random
) -> None:
    parts = _packages(body, total, first_serial)
    rnd.shuffle(parts)
    assembler = Reassembler()
    results = [assembler.add(p) for p in [*parts[:1], *parts]]  # one duplicate too
    done = [r for r in results if isinstance(r, Frame)]
    assert len(done) == 1
    assert done[0].body == body
    assert done[0].header == Header(0x0704, PHONE_2013, first_serial)
    assert all(r is None for r in results if not isinstance(r, Frame))
    assert assembler.pending_groups == 0
    assert assembler.pending_bytes == 0


def test_a_whole_message_passes_through_and_a_full_batch_parses() -> None:
    assembler = Reassembler()
    frame = read_one(message(0x0002, b""))
    assert assembler.add(frame) is frame
    body = parse(TRACCAR_0704_BLIND)
    assert isinstance(body, LocationBatch)
    raw = read_one(TRACCAR_0704_BLIND).body
    out = [assembler.add(p) for p in _packages(raw, 3, 0xFFFF)]
    whole = out[-1]
    assert isinstance(whole, Frame)
    assert parse_message(whole) == body


def test_reassembly_is_bounded_and_refuses_inconsistent_packages() -> None:
    assembler = Reassembler(max_groups=2, max_message_bytes=100, max_packages=4)
    firsts = [_packages(b"x" * 20, 2, serial)[0] for serial in (10, 20, 30)]
    assert [assembler.add(f) for f in firsts] == [None, None, None]
    assert assembler.pending_groups == 2
    assert assembler.evicted == 1
    assert assembler.drop(PHONE_2013) == 2
    assert assembler.pending_bytes == 0
    too_many = assembler.add(_packages(b"x" * 10, 5, 1)[0])
    assert isinstance(too_many, ReassemblyError)
    big = _packages(b"y" * 120, 2, 40)
    assert assembler.add(big[0]) is None
    assert isinstance(assembler.add(big[1]), ReassemblyError)
    assert assembler.pending_groups == 0
    a = _packages(b"z" * 20, 2, 50)[0]
    b = read_one(message(0x0704, b"zz", serial=51, package=(3, 2)))
    assert assembler.add(a) is None
    clash = assembler.add(b)
    assert isinstance(clash, ReassemblyError)
    assert "earlier ones said 2" in clash.detail


# --- mapping -----------------------------------------------------------------------------

SHANGHAI = {"lat": 31.230416, "lon": 121.473701}
TS_2024_01_31_12Z = 1_706_702_400_000  # 2024-01-31 20:00:00 in UTC+8


def test_hand_written_2013_report_maps_to_gps_and_power_cut() -> None:
    result = mapped(HAND_0200_2013)
    assert result.faults == []
    assert result.publications == [
        (
            "telematics/jt808-13800138000/gps",
            {
                "ts": TS_2024_01_31_12Z,
                **SHANGHAI,
                "speed_kmh": 65.3,
                "heading_deg": 270,
                "ignition": True,
                "odometer_km": 12345.6,
                "sats": 9,
            },
        ),
        (
            "telematics/jt808-13800138000/status",
            {"ts": TS_2024_01_31_12Z, "ext_power": False, "tamper": False},
        ),
    ]
    assert result.alarm == 0x100


def test_acc_bit_is_ignition_and_hemisphere_bits_sign_the_coordinates() -> None:
    off = mapped(message(0x0200, location_body(status=0b0010)))
    assert payload(off, "gps")["ignition"] is False
    south_west = payload(mapped(message(0x0200, location_body(status=0b1111))), "gps")
    assert (south_west["lat"], south_west["lon"]) == (-31.230416, -121.473701)
    assert south_west["ignition"] is True
    south = payload(mapped(message(0x0200, location_body(status=0b0110))), "gps")
    assert (south["lat"], south["lon"]) == (-31.230416, 121.473701)


def test_bcd_time_is_read_as_utc_plus_8() -> None:
    assert bcd_time_ms(bytes.fromhex("240101073000")) == 1_704_065_400_000  # 2023-12-31 23:30Z
    assert bcd_time_ms(bytes.fromhex("240229235959")) == 1_709_222_399_000  # leap day
    result = mapped(message(0x0200, location_body(time="160527090624")))
    assert payload(result, "gps")["ts"] == 1_464_311_184_000  # 2016-05-27T01:06:24Z


@pytest.mark.parametrize(
    ("time", "words"),
    [
        ("000000000000", "month 0"),
        ("241301000000", "month 13"),
        ("230229120000", "day 29 is not 1..28"),
        ("240431120000", "day 31 is not 1..30"),
        ("240101240000", "24:00:00"),
        ("2401011260aa", "not BCD"),
        ("000101070000", "before 2000-01-01"),
    ],
)
def test_impossible_bcd_times_publish_nothing(time: str, words: str) -> None:
    result = mapped(message(0x0200, location_body(time=time, alarm=1 << 8)), previous_alarm=0)
    assert result.publications == []
    (fault,) = result.faults
    assert fault.reason == FaultReason.BAD_TIMESTAMP
    assert words in fault.detail
    assert result.alarm == 0  # nothing published: the last published alarm stands


def test_collision_and_rollover_bits_are_a_shock_above_the_threshold() -> None:
    assert Config().shock_g <= DEFAULT_COLLISION_G
    for bit in (29, 30):
        result = mapped(message(0x0200, location_body(alarm=1 << bit, status=0b10)))
        vib = payload(result, "vib")
        assert vib == {"ts": TS_2024_01_31_12Z, "g": 3.0, "ignition": False}
        assert "status" not in streams(result)
    custom = mapped(
        message(0x0200, location_body(alarm=1 << 29)), config=MappingConfig(collision_g=4.5)
    )
    assert payload(custom, "vib")["g"] == 4.5


@pytest.mark.parametrize("bit", [5, 26, 27, 28, 31])
def test_tamper_like_alarm_bits_raise_tamper(bit: int) -> None:
    result = mapped(message(0x0200, location_body(alarm=1 << bit)))
    assert payload(result, "status") == {
        "ts": TS_2024_01_31_12Z,
        "ext_power": True,
        "tamper": True,
    }


@pytest.mark.parametrize("bit", [0, 1, 4, 6, 7, 9, 19, 20, 25])
def test_other_alarm_bits_publish_only_the_fix(bit: int) -> None:
    assert streams(mapped(message(0x0200, location_body(alarm=1 << bit)))) == ["gps"]


def test_with_the_previous_alarm_status_and_shock_follow_edges() -> None:
    wire = message(0x0200, location_body(alarm=(1 << 8) | (1 << 29)))
    first = mapped(wire, previous_alarm=0)
    assert streams(first) == ["gps", "status", "vib"]
    again = mapped(wire, previous_alarm=first.alarm)
    assert streams(again) == ["gps"]
    restored = mapped(message(0x0200, location_body()), previous_alarm=again.alarm)
    assert streams(restored) == ["gps", "status"]
    assert payload(restored, "status")["ext_power"] is True
    quiet = mapped(message(0x0200, location_body()), previous_alarm=restored.alarm)
    assert streams(quiet) == ["gps"]


def test_coordinates_out_of_range_cost_the_fix_but_not_the_alarm() -> None:
    result = mapped(message(0x0200, location_body(lat_e6=90_000_001, alarm=1 << 28)))
    assert streams(result) == ["status"]
    assert result.faults == [Fault(FaultReason.OUT_OF_RANGE, "lat: 90.000001 is over 90 degrees")]
    for body in (
        location_body(lon_e6=180_000_001),
        location_body(speed=10_001),
        location_body(direction=361),
    ):
        (fault,) = mapped(message(0x0200, body)).faults
        assert fault.reason == FaultReason.OUT_OF_RANGE
    edge = mapped(
        message(
            0x0200,
            location_body(lat_e6=90_000_000, lon_e6=180_000_000, speed=10_000, direction=360),
        )
    )
    assert edge.faults == []


def test_a_report_without_a_fix_publishes_no_position_unless_configured() -> None:
    result = mapped(GO_0200_2013)  # status bit 1 clear (and a latitude of 116)
    assert result.publications == []
    assert [f.reason for f in result.faults] == [FaultReason.NOT_POSITIONED]
    body = location_body(status=0b01)
    allowed = mapped(message(0x0200, body), config=MappingConfig(publish_unpositioned=True))
    assert streams(allowed) == ["gps"]
    encrypted = mapped(message(0x0200, location_body(status=0b100011)))
    assert "encrypted" in encrypted.faults[0].detail


def test_the_traccar_blind_area_batch_maps_to_eight_fixes() -> None:
    frame = read_one(TRACCAR_0704_BLIND)
    batch = parse_message(frame)
    assert isinstance(batch, LocationBatch)
    result = map_batch(frame.header.device_id, batch)
    assert result.faults == []
    assert streams(result) == ["gps"] * 8
    first = result.publications[0]
    assert first == (
        "telematics/jt808-13567777777/gps",
        {
            "ts": 1_464_311_184_000,
            "lat": 22.639634,
            "lon": 114.031952,
            "speed_kmh": 0.0,
            "heading_deg": 1,
            "ignition": True,
            "odometer_km": 2.9,
        },
    )


def test_batch_items_are_judged_alone_and_alarms_carry_between_them() -> None:
    bodies = [
        location_body(alarm=1 << 8, time="240131200000"),
        location_body(alarm=1 << 8, time="240131200100"),
        location_body(time="249931200200"),
        location_body(time="240131200300"),
    ]
    raw = struct.pack(">HB", 5, 0) + b"".join(
        struct.pack(">H", len(b)) + b for b in [*bodies, b"short"]
    )
    batch = parse(message(0x0704, raw))
    assert isinstance(batch, LocationBatch)
    result = map_batch("jt808-13800138000", batch)
    assert streams(result) == ["gps", "status", "gps", "gps", "status"]
    assert [(f.reason, f.index) for f in result.faults] == [
        (FaultReason.BAD_TIMESTAMP, 2),
        (FaultReason.MALFORMED, 4),
    ]
    assert result.alarm == 0


def test_mapping_refuses_a_bad_device_id_and_a_bad_config() -> None:
    report = parse_location(location_body())
    assert isinstance(report, LocationReport)
    with pytest.raises(ValueError, match="well-formed"):
        map_location("jt808/1", report)
    with pytest.raises(ValueError, match="positive"):
        MappingConfig(collision_g=0.0)
    with pytest.raises(ValueError, match="not bits of a DWORD"):
        MappingConfig(tamper_bits=frozenset({32}))


def _decodes_cleanly(result: Mapped) -> None:
    for topic, body in result.publications:
        decoded = decode(topic, orjson.dumps(body), None)
        assert decoded.rejects == [], decoded.rejects
        assert len(decoded.readings) == 1
        assert decoded.readings[0].ts_ms == body["ts"]


def test_mapped_payloads_pass_the_engine_decoder() -> None:
    for result in (
        mapped(HAND_0200_2013),
        mapped(message(0x0200, location_body(alarm=(1 << 29) | (1 << 28), status=0b1111))),
    ):
        _decodes_cleanly(result)


@FAST
@given(
    alarm=st.integers(0, 2**32 - 1),
    status=st.integers(0, 2**32 - 1),
    lat_e6=st.integers(0, 90_000_000),
    lon_e6=st.integers(0, 180_000_000),
    speed=st.integers(0, 10_000),
    direction=st.integers(0, 360),
    when=st.datetimes(
        # naive on purpose: the BCD field holds a wall-clock time in UTC+8
        min_value=datetime(2000, 1, 2),  # noqa: DTZ001
        max_value=datetime(2099, 12, 31, 23, 59, 59),  # noqa: DTZ001
    ),
    mileage=st.none() | st.integers(0, 2**32 - 1),
)
def test_any_valid_report_maps_to_payloads_the_decoder_accepts(
    alarm: int,
    status: int,
    lat_e6: int,
    lon_e6: int,
    speed: int,
    direction: int,
    when: datetime,
    mileage: int | None,
) -> None:
    time = when.strftime("%y%m%d%H%M%S")
    items = item(0x01, struct.pack(">I", mileage)) if mileage is not None else b""
    body = location_body(
        alarm=alarm,
        status=status,
        lat_e6=lat_e6,
        lon_e6=lon_e6,
        speed=speed,
        direction=direction,
        time=time,
        items=items,
    )
    result = mapped(message(0x0200, body))
    assert all(f.reason == FaultReason.NOT_POSITIONED for f in result.faults)
    _decodes_cleanly(result)
