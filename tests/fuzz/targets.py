"""The fuzz targets: one input (bytes) in, the contract checked, any breach raised.

Each target is a plain function, so the same code serves the coverage-guided fuzzer
(`python -m tests.fuzz`, atheris) and the CI replay of the committed corpus. An input that
keeps the contract returns quietly; a breach raises `ContractError`, and any other exception
escaping a parser is a breach too.

- `decode`: input `topic LF payload`. `devices.decode.decode` must never raise (its own
  catch-all turning a bug into a DECODER_ERROR reject counts as a failure here); every
  element is accepted or rejected with a reason, once; readings are in range. The replay
  path `decode_value` is held to the same rules for payloads the stdlib parser reads.
- `fence`: input a JSON document. `parse_fence` / `parse_feature_collection` raise only
  `FenceError` (with `field` None or a path), and a returned fence is valid and survives
  the store's round trip (`fence_to_feature`, JSON, `parse_fence` again).
- `loan`: input a JSON document. `parse_loan` / `parse_loans` raise only `LoanError`, and a
  returned loan is valid and survives `loan_to_json` and parsing again.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import shapely

from devices.decode import (
    FUTURE_TOLERANCE_MS,
    MAX_ARRAY_ELEMENTS,
    MAX_INT,
    MAX_PAYLOAD_BYTES,
    MAX_TS_MS,
    MIN_TS_MS,
    Decoded,
    decode,
    decode_value,
)
from devices.readings import (
    RAW_KEEP_BYTES,
    GpsFix,
    Reject,
    RejectReason,
    StatusReport,
    Vibration,
)
from devices.topics import DEVICE_ID_RE, BadTopic, parse_topic
from geofence.fence import (
    FENCE_ID_RE,
    MAX_RADIUS_M,
    MAX_VERTICES,
    Fence,
    FenceError,
    FenceKind,
    fence_to_feature,
    parse_feature_collection,
    parse_fence,
)
from lending.model import (
    VIN_RE,
    Loan,
    LoanError,
    LoanStatus,
    loan_to_json,
    parse_loan,
    parse_loans,
)

NOW_MS = 1_795_940_100_000  # 2026-11-29T08:15:00Z: the reference clock of a live decode
DEFAULT_FENCE_ID = "fuzz-fence"
DEFAULT_LOAN_ID = "L-fuzz"
MAX_FEATURES_EACH = 3  # features of a collection also parsed one by one


class ContractError(AssertionError):
    """A parser broke its contract on a fuzz input."""


def expect(condition: object, message: str) -> None:
    """Raise `ContractError(message)` unless `condition` holds."""
    if not condition:
        raise ContractError(message)


# -- the decoder


def split_decode_input(data: bytes) -> tuple[str, bytes]:
    """`topic LF payload`; the topic as the replay would see it (lone bytes kept as escapes)."""
    topic, _, payload = data.partition(b"\n")
    return topic.decode("utf-8", "surrogateescape"), payload


def check_decode(data: bytes) -> None:
    """The decoder's contract on one message, with and without a reference clock."""
    topic, payload = split_decode_input(data)
    expected = _expected_outcomes(topic, payload)
    for now_ms in (None, NOW_MS):
        out = decode(topic, payload, now_ms)
        _check_decoded(out, topic, now_ms, expected)
        expect(out == decode(topic, payload, now_ms), "decoding twice gave different results")
    lenient = _stdlib_json(payload)
    if lenient is not _UNPARSED and len(payload) <= MAX_PAYLOAD_BYTES:
        # The replay path: the line's payload already parsed (NaN and huge ints included).
        out = decode_value(topic, lenient, NOW_MS, lenient=True)
        _check_decoded(out, topic, NOW_MS, _count_for(topic, lenient))


_UNPARSED = object()


def _stdlib_json(payload: bytes) -> object:
    try:
        return json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        return _UNPARSED


def _expected_outcomes(topic: str, payload: bytes) -> int:
    """How many readings plus rejects the message must yield."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return 1
    try:
        value: object = orjson.loads(payload)
    except orjson.JSONDecodeError:
        value = _stdlib_json(payload)
    return _count_for(topic, value)


def _count_for(topic: str, value: object) -> int:
    if isinstance(parse_topic(topic), BadTopic):
        return 1
    if isinstance(value, list) and 0 < len(value) <= MAX_ARRAY_ELEMENTS:
        return len(value)
    return 1


def _check_decoded(out: Decoded, topic: str, now_ms: int | None, expected: int) -> None:
    expect(isinstance(out, Decoded), f"decode returned {type(out).__name__}")
    total = len(out.readings) + len(out.rejects)
    expect(total == expected, f"{total} readings and rejects, expected {expected}")
    indices = [r.index for r in out.rejects]
    if any(i is None for i in indices):
        expect(out.rejects and total == 1, "a whole-message reject beside other outcomes")
    else:
        expect(indices == sorted(set(indices)), f"reject indices {indices} not increasing")
        in_range = all(i is not None and 0 <= i < expected for i in indices)
        expect(in_range, f"reject indices {indices} out of range")
    for reject in out.rejects:
        _check_reject(reject, topic)
    for reading in out.readings:
        _check_reading(reading, now_ms)


def _check_reject(reject: Reject, topic: str) -> None:
    expect(isinstance(reject, Reject), f"a reject is a {type(reject).__name__}")
    expect(isinstance(reject.reason, RejectReason), f"reason {reject.reason!r}")
    expect(
        reject.reason is not RejectReason.DECODER_ERROR,
        f"the decoder failed internally: {reject.detail}",
    )
    expect(isinstance(reject.detail, str) and reject.detail, "a reject without a detail")
    expect(isinstance(reject.raw, bytes), "raw is not bytes")
    expect(len(reject.raw) <= RAW_KEEP_BYTES, f"raw kept {len(reject.raw)} bytes")
    expect(reject.topic == topic, "the reject's topic is not the message's")
    if reject.device_id is not None:
        # OwnTracks devices are `{user}:{device}`, which the pattern admits too.
        well_formed = DEVICE_ID_RE.fullmatch(reject.device_id)
        expect(well_formed, f"device_id {reject.device_id!r} is malformed")


def _check_reading(reading: object, now_ms: int | None) -> None:
    expect(isinstance(reading, GpsFix | Vibration | StatusReport), f"a {type(reading)}")
    assert isinstance(reading, GpsFix | Vibration | StatusReport)
    expect(DEVICE_ID_RE.fullmatch(reading.device_id), f"device_id {reading.device_id!r}")
    expect(type(reading.ts_ms) is int, "ts_ms is not an int")
    expect(MIN_TS_MS <= reading.ts_ms < MAX_TS_MS, f"ts_ms {reading.ts_ms} out of range")
    if now_ms is not None:
        expect(reading.ts_ms <= now_ms + FUTURE_TOLERANCE_MS, "a future reading was accepted")
    if isinstance(reading, GpsFix):
        _in_range(reading.lat, -90.0, 90.0, "lat")
        _in_range(reading.lon, -180.0, 180.0, "lon")
        _in_range(reading.speed_kmh, 0.0, 1000.0, "speed_kmh")
        _in_range(reading.heading_deg, 0.0, 360.0, "heading_deg")
        _in_range(reading.hdop, 0.0, math.inf, "hdop")
        _in_range(reading.odometer_km, 0.0, math.inf, "odometer_km")
        _in_range(reading.accuracy_m, 0.0, math.inf, "accuracy_m")
        _int64(reading.sats, "sats")
        _int64(reading.seq, "seq")
        expect(reading.ignition in (None, True, False), "ignition is not a boolean")
    elif isinstance(reading, Vibration):
        _in_range(reading.g, 0.0, math.inf, "g")
        _int64(reading.duration_ms, "duration_ms")
    else:
        _in_range(reading.battery_v, 0.0, 100.0, "battery_v")
        if reading.vin is not None:
            expect(len(reading.vin) == 17 and reading.vin == reading.vin.upper(), "vin shape")


def _in_range(value: float | None, lo: float, hi: float, name: str) -> None:
    if value is None:
        return
    expect(type(value) is float, f"{name} is a {type(value).__name__}, not a float")
    expect(math.isfinite(value) and lo <= value <= hi, f"{name} {value!r} out of range")


def _int64(value: int | None, name: str) -> None:
    if value is None:
        return
    expect(type(value) is int and -MAX_INT - 1 <= value <= MAX_INT, f"{name} {value!r}")


# -- documents: fences and loans


def parsed_documents(data: bytes) -> list[tuple[object, bool]]:
    """The document as the entry points read it (orjson), and as a lenient stdlib parser
    does (NaN, Infinity, huge integers); `(doc, strict)` for each parser that accepts it."""
    docs: list[tuple[object, bool]] = []
    with contextlib.suppress(orjson.JSONDecodeError):
        docs.append((orjson.loads(data), True))
    lenient = _stdlib_json(data)
    if lenient is not _UNPARSED and (not docs or _differs(docs[0][0], lenient)):
        docs.append((lenient, False))
    return docs


def _differs(a: object, b: object) -> bool:
    try:
        return bool(a != b)
    except RecursionError:
        return True


def check_fence(data: bytes) -> None:
    """The GeoJSON parser's contract on one document."""
    for doc, strict in parsed_documents(data):
        _fence_outcome(lambda d=doc: parse_feature_collection(d), strict)
        fence_id = _fence_id_of(doc)
        _fence_outcome(lambda d=doc, f=fence_id: [parse_fence(f, d)], strict, fence_id)
        features = doc.get("features") if isinstance(doc, dict) else None
        if isinstance(features, list):
            for feature in features[:MAX_FEATURES_EACH]:
                fid = _fence_id_of(feature)
                _fence_outcome(lambda d=feature, f=fid: [parse_fence(f, d)], strict, fid)


def _fence_id_of(doc: object) -> str:
    raw = doc.get("id") if isinstance(doc, dict) else None
    return raw if isinstance(raw, str) else DEFAULT_FENCE_ID


def _fence_outcome(
    parse: Callable[[], list[Fence]], strict: bool, fence_id: str | None = None
) -> None:
    try:
        fences = parse()
    except FenceError as exc:
        expect(exc.field is None or (isinstance(exc.field, str) and exc.field), "bad field")
        expect(isinstance(exc.defect, str) and exc.defect, "a FenceError without a defect")
        expect(str(exc), "a FenceError without a message")
        return
    ids = [f.fence_id for f in fences]
    expect(len(ids) == len(set(ids)), f"duplicate fence ids {ids}")
    for fence in fences:
        if fence_id is not None:
            expect(fence.fence_id == fence_id, f"fence id {fence.fence_id!r} != {fence_id!r}")
        check_valid_fence(fence, round_trip=strict)


def check_valid_fence(fence: Fence, *, round_trip: bool) -> None:
    """A fence as `parse_fence` promises it; `round_trip`: stored and read back, it is equal."""
    expect(isinstance(fence, Fence), f"a {type(fence).__name__}")
    expect(FENCE_ID_RE.fullmatch(fence.fence_id), f"fence id {fence.fence_id!r}")
    expect(isinstance(fence.kind, FenceKind), f"kind {fence.kind!r}")
    expect(isinstance(fence.name, str) and fence.name.strip(), "an empty name")
    expect(fence.category is None or fence.category.strip(), "an empty category")
    dwell_ok = fence.dwell_s is None or (type(fence.dwell_s) is int and fence.dwell_s >= 0)
    expect(dwell_ok, f"dwell_s {fence.dwell_s!r}")
    geometry = fence.geometry
    expect(geometry.geom_type in {"Polygon", "MultiPolygon"}, f"a {geometry.geom_type}")
    expect(not geometry.is_empty and geometry.area > 0.0, "an empty or zero-area geometry")
    expect(shapely.is_valid(geometry), f"invalid: {shapely.is_valid_reason(geometry)}")
    expect(shapely.get_num_coordinates(geometry) <= MAX_VERTICES, "too many vertices")
    min_x, min_y, max_x, max_y = geometry.bounds
    in_range = -180.0 <= min_x <= max_x <= 180.0 and -90.0 <= min_y <= max_y <= 90.0
    expect(in_range, f"bounds {geometry.bounds} outside lon/lat")
    if fence.radius_m is None:
        expect(fence.center is None, "a centre without a radius")
    else:
        expect(0.0 < fence.radius_m <= MAX_RADIUS_M, f"radius_m {fence.radius_m!r}")
        expect(fence.center is not None, "a circle without a centre")
    if not round_trip:
        return
    stored = orjson.dumps(fence_to_feature(fence))
    again = parse_fence(fence.fence_id, orjson.loads(stored))
    expect(again == fence, f"the stored fence reads back different: {again!r} != {fence!r}")
    expect(orjson.dumps(fence_to_feature(again)) == stored, "the stored feature changed")


def check_loan(data: bytes) -> None:
    """The loan parser's contract on one document."""
    for doc, strict in parsed_documents(data):
        if isinstance(doc, list):
            _loan_outcome(lambda d=doc: parse_loans(d), strict)
            continue
        raw_id = doc.get("loan_id") if isinstance(doc, dict) else None
        loan_id = raw_id if isinstance(raw_id, str) else DEFAULT_LOAN_ID
        _loan_outcome(lambda d=doc, i=loan_id: [parse_loan(i, d)], strict)
        _loan_outcome(lambda d=doc: parse_loans([d]), strict)


def _loan_outcome(parse: Callable[[], list[Loan]], strict: bool) -> None:
    try:
        loans = parse()
    except LoanError as exc:
        expect(exc.field is None or (isinstance(exc.field, str) and exc.field), "bad field")
        expect(str(exc), "a LoanError without a message")
        return
    for loan in loans:
        check_valid_loan(loan, round_trip=strict)


def check_valid_loan(loan: Loan, *, round_trip: bool) -> None:
    """A loan as `parse_loan` promises it; `round_trip`: as JSON and parsed again, equal."""
    expect(isinstance(loan, Loan), f"a {type(loan).__name__}")
    expect(VIN_RE.fullmatch(loan.vin), f"vin {loan.vin!r}")
    expect(loan.device_ids, "a loan without trackers")
    expect(len(set(loan.device_ids)) == len(loan.device_ids), "a tracker listed twice")
    expect(all(DEVICE_ID_RE.fullmatch(d) for d in loan.device_ids), "a bad device id")
    expect(all(FENCE_ID_RE.fullmatch(z) for z in loan.zone_ids), "a bad zone id")
    expect(isinstance(loan.status, LoanStatus), f"status {loan.status!r}")
    numbers = [loan.principal]
    if loan.vehicle is not None:
        numbers += [loan.vehicle.mileage_km, loan.vehicle.value]
        year = loan.vehicle.year
        expect(year is None or (type(year) is int and 1900 <= year <= 2100), f"year {year!r}")
    for number in numbers:
        expect(number is None or (math.isfinite(number) and number >= 0.0), f"{number!r}")
    if round_trip:
        doc = orjson.loads(orjson.dumps(loan_to_json(loan)))
        again = parse_loan(loan.loan_id, doc)
        expect(again == loan, f"the loan reads back different: {again!r} != {loan!r}")


@dataclass(frozen=True, slots=True)
class Target:
    """A fuzz target: its name (the corpus folder) and the check of one input."""

    name: str
    check: Callable[[bytes], None]
    max_len: int  # the longest input the fuzzer builds (seeds may be longer)


TARGETS: dict[str, Target] = {
    "decode": Target("decode", check_decode, MAX_PAYLOAD_BYTES + 1024),
    "fence": Target("fence", check_fence, 256 * 1024),
    "loan": Target("loan", check_loan, 64 * 1024),
}
