"""Property tests of the decoder: it never raises, accounts for every element, and round-trips."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.decode import (
    FUTURE_TOLERANCE_MS,
    MAX_ARRAY_ELEMENTS,
    MAX_PAYLOAD_BYTES,
    Decoded,
    decode,
)
from devices.readings import (
    RAW_KEEP_BYTES,
    GpsFix,
    Reject,
    RejectReason,
    StatusReport,
    Vibration,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000
NOW = 1_795_940_100_000

KEYS = [
    "ts",
    "lat",
    "lon",
    "speed_kmh",
    "heading_deg",
    "hdop",
    "sats",
    "ignition",
    "odometer_km",
    "seq",
    "g",
    "duration_ms",
    "ext_power",
    "battery_v",
    "tamper",
    "vin",
    "_type",
    "tst",
    "vel",
    "cog",
    "acc",
    "batt",
]

device_ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
valid_topics = st.one_of(
    st.builds(
        lambda d, s: f"telematics/{d}/{s}", device_ids, st.sampled_from(["gps", "vib", "status"])
    ),
    st.builds(
        lambda u, d: f"owntracks/{u}/{d}",
        st.from_regex(r"[A-Za-z0-9_.-]{1,31}", fullmatch=True),
        st.from_regex(r"[A-Za-z0-9_.-]{1,32}", fullmatch=True),
    ),
)
topics = st.one_of(
    valid_topics,
    st.text(max_size=80),
    st.builds(
        "/".join,
        st.lists(st.sampled_from(["telematics", "owntracks", "gps", "x", "", "a b"]), max_size=5),
    ),
)
reference_clocks = st.one_of(st.none(), st.integers(-(2**70), 2**70), st.just(NOW))

surrogates = st.sampled_from(["\ud800", "\udfff", "\ud83d"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(MIN_TS_MS - 10, MAX_TS_MS + 10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-200, 200),
    st.text(max_size=20),
    surrogates,
    st.sampled_from(["2026-11-29T08:15:00Z", "2026-11-29T08:15:00", "LSVAB4182E2123456"]),
    st.sampled_from(["location", "transition"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=5)), children, max_size=6
        ),
    ),
    max_leaves=20,
)
reading_like = st.dictionaries(st.sampled_from(KEYS), scalars, max_size=len(KEYS))


def to_json(value: object) -> bytes:
    """JSON text as a sloppy tracker might send it: NaN, Infinity, huge ints, lone surrogates."""
    return json.dumps(value, allow_nan=True).encode()


def assert_well_formed(out: Decoded, topic: object) -> None:
    assert isinstance(out, Decoded)
    for reject in out.rejects:
        assert isinstance(reject, Reject)
        assert isinstance(reject.reason, RejectReason)
        assert isinstance(reject.detail, str)
        assert reject.detail
        assert isinstance(reject.raw, bytes)
        assert len(reject.raw) <= RAW_KEEP_BYTES
        if isinstance(topic, str):
            assert reject.topic == topic
    for reading in out.readings:
        assert isinstance(reading, GpsFix | Vibration | StatusReport)
        assert MIN_TS_MS <= reading.ts_ms < MAX_TS_MS


@FAST
@given(topics, st.binary(max_size=300), reference_clocks)
def test_arbitrary_bytes_never_raise(topic: str, payload: bytes, now_ms: int | None) -> None:
    assert_well_formed(decode(topic, payload, now_ms), topic)


@FAST
@given(valid_topics, json_values, reference_clocks)
def test_arbitrary_json_never_raises(topic: str, value: object, now_ms: int | None) -> None:
    assert_well_formed(decode(topic, to_json(value), now_ms), topic)


@FAST
@given(topics, st.one_of(reading_like, st.lists(reading_like, max_size=5)), reference_clocks)
def test_reading_like_objects_never_raise(topic: str, value: object, now_ms: int | None) -> None:
    out = decode(topic, to_json(value), now_ms)
    assert_well_formed(out, topic)
    if isinstance(value, dict):
        assert len(out.readings) + len(out.rejects) == 1


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([None, 1, "x", b"x", 3.5, object()]))
def test_wrong_argument_types_never_raise(payload: bytes, topic: object) -> None:
    out = decode(topic, payload, NOW)  # type: ignore[arg-type]  # callers may break the contract
    assert_well_formed(out, topic)
    out = decode("telematics/x/gps", topic, NOW)  # type: ignore[arg-type]  # likewise
    assert_well_formed(out, "telematics/x/gps")


@st.composite
def arrays(draw: st.DrawFn) -> list[object]:
    """Arrays of 1..1000 elements, built by repeating a short drawn pattern to stay fast."""
    pattern = draw(st.lists(st.one_of(reading_like, json_values), min_size=1, max_size=8))
    length = draw(st.one_of(st.integers(1, 20), st.integers(1, MAX_ARRAY_ELEMENTS)))
    return (pattern * (length // len(pattern) + 1))[:length]


@settings(max_examples=100, deadline=None)
@given(valid_topics, arrays(), reference_clocks)
def test_every_array_element_is_accounted_for_once(
    topic: str, array: list[object], now_ms: int | None
) -> None:
    payload = to_json(array)
    out = decode(topic, payload, now_ms)
    assert_well_formed(out, topic)
    if len(payload) > MAX_PAYLOAD_BYTES:  # long strings repeated: refused whole, and kept
        assert [(r.reason, r.index) for r in out.rejects] == [(RejectReason.TOO_LARGE, None)]
        assert out.readings == []
        return
    assert len(out.readings) + len(out.rejects) == len(array)
    indices = [reject.index for reject in out.rejects]
    assert all(index is not None and 0 <= index < len(array) for index in indices)
    assert indices == sorted(set(indices))  # type: ignore[type-var]  # None ruled out above


# round trips of valid readings

offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.datetimes(
    min_value=datetime(2000, 1, 2),  # noqa: DTZ001 - hypothesis wants naive bounds
    max_value=datetime(2099, 12, 30),  # noqa: DTZ001
    timezones=offsets,
)


def epoch_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[object, int]:
    """A valid `ts` as sent (epoch ms or ISO-8601 with offset) and the epoch ms it means."""
    if draw(st.booleans()):
        ts_ms = draw(st.integers(MIN_TS_MS, MAX_TS_MS - 1))
        return ts_ms, ts_ms
    moment = draw(moments)
    spec = draw(st.sampled_from(["minutes", "seconds", "milliseconds", "microseconds"]))
    text = moment.isoformat(timespec=spec)
    if text.endswith("+00:00") and draw(st.booleans()):
        text = text[:-6] + "Z"
    truncated = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    if spec == "minutes":
        truncated = truncated.replace(second=0, microsecond=0)
    elif spec == "seconds":
        truncated = truncated.replace(microsecond=0)
    return text, epoch_ms(truncated)


def maybe(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(st.just(None), strategy)


def finite(lo: float, hi: float) -> st.SearchStrategy[object]:
    return st.one_of(st.floats(lo, hi), st.integers(int(lo), int(hi)))


NON_NEGATIVE = 1e12
INT64 = 2**63 - 1


@settings(max_examples=200, deadline=None)
@given(
    device_ids,
    timestamps(),
    finite(-90, 90),
    finite(-180, 180),
    st.fixed_dictionaries(
        {},
        optional={
            "speed_kmh": maybe(finite(0, 1000)),
            "heading_deg": maybe(finite(0, 360)),
            "hdop": maybe(finite(0, NON_NEGATIVE)),
            "sats": maybe(st.integers(0, INT64)),
            "ignition": maybe(st.booleans()),
            "odometer_km": maybe(finite(0, NON_NEGATIVE)),
            "seq": maybe(st.integers(0, INT64)),
            "unknown": json_values,
        },
    ),
)
def test_gps_round_trip(
    device_id: str,
    ts: tuple[object, int],
    lat: float,
    lon: float,
    optional: dict[str, object],
) -> None:
    sent, ts_ms = ts
    body = {"ts": sent, "lat": lat, "lon": lon, **optional}
    out = decode(f"telematics/{device_id}/gps", to_json(body), ts_ms)
    assert out.rejects == []
    (reading,) = out.readings
    assert isinstance(reading, GpsFix)
    assert (reading.device_id, reading.ts_ms, reading.lat, reading.lon) == (
        device_id,
        ts_ms,
        lat,
        lon,
    )
    for field in ("speed_kmh", "heading_deg", "hdop", "odometer_km"):
        value = optional.get(field)
        assert getattr(reading, field) == value
        assert value is None or type(getattr(reading, field)) is float
    for field in ("sats", "seq", "ignition"):
        assert getattr(reading, field) == optional.get(field)
    assert reading.accuracy_m is None


@FAST
@given(
    device_ids,
    timestamps(),
    finite(0, NON_NEGATIVE),
    maybe(st.integers(0, INT64)),
    maybe(st.booleans()),
)
def test_vibration_round_trip(
    device_id: str,
    ts: tuple[object, int],
    g: float,
    duration_ms: int | None,
    ignition: bool | None,
) -> None:
    sent, ts_ms = ts
    body = {"ts": sent, "g": g, "duration_ms": duration_ms, "ignition": ignition}
    out = decode(f"telematics/{device_id}/vib", orjson.dumps(body), None)
    assert out.readings == [Vibration(device_id, ts_ms, g, duration_ms, ignition)]


@FAST
@given(
    device_ids,
    timestamps(),
    maybe(st.booleans()),
    maybe(finite(0, 100)),
    maybe(st.booleans()),
    maybe(st.from_regex(r"[A-Za-z0-9]{17}", fullmatch=True)),
)
def test_status_round_trip(
    device_id: str,
    ts: tuple[object, int],
    ext_power: bool | None,
    battery_v: float | None,
    tamper: bool | None,
    vin: str | None,
) -> None:
    sent, ts_ms = ts
    body = {"ts": sent, "ext_power": ext_power, "battery_v": battery_v, "tamper": tamper}
    if vin is not None:
        body["vin"] = vin
    out = decode(f"telematics/{device_id}/status", orjson.dumps(body), None)
    expected_vin = vin.upper() if vin is not None else None
    assert out.readings == [
        StatusReport(device_id, ts_ms, ext_power, battery_v, tamper, expected_vin)
    ]


@FAST
@given(
    st.from_regex(r"[A-Za-z0-9_.-]{1,31}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_.-]{1,32}", fullmatch=True),
    st.integers(MIN_TS_MS // 1000, MAX_TS_MS // 1000 - 1),
    finite(-90, 90),
    finite(-180, 180),
    maybe(finite(0, 1000)),
    maybe(finite(0, 360)),
    maybe(finite(0, NON_NEGATIVE)),
)
def test_owntracks_round_trip(
    user: str,
    device: str,
    tst: int,
    lat: float,
    lon: float,
    vel: float | None,
    cog: float | None,
    acc: float | None,
) -> None:
    body = {"_type": "location", "tst": tst, "lat": lat, "lon": lon, "batt": 50}
    body |= {"vel": vel, "cog": cog, "acc": acc}
    out = decode(f"owntracks/{user}/{device}", orjson.dumps(body), tst * 1000)
    assert out.readings == [
        GpsFix(
            f"{user}:{device}",
            tst * 1000,
            lat,
            lon,
            speed_kmh=vel,
            heading_deg=cog,
            accuracy_m=acc,
        )
    ]


@FAST
@given(timestamps(), st.integers(-(10**6), 10**6))
def test_future_check_is_exact(ts: tuple[object, int], lead_ms: int) -> None:
    sent, ts_ms = ts
    now_ms = ts_ms - FUTURE_TOLERANCE_MS + lead_ms
    out = decode("telematics/t/gps", orjson.dumps({"ts": sent, "lat": 0, "lon": 0}), now_ms)
    if lead_ms >= 0:
        assert [r.ts_ms for r in out.readings] == [ts_ms]
    else:
        assert [r.reason for r in out.rejects] == [RejectReason.FUTURE_TIMESTAMP]


@FAST
@given(st.lists(st.tuples(st.booleans(), timestamps()), min_size=1, max_size=30))
def test_valid_siblings_survive_bad_ones(elements: list[tuple[bool, tuple[object, int]]]) -> None:
    array = [{"ts": sent, "lat": 0 if good else 91, "lon": 0} for good, (sent, _) in elements]
    out = decode("telematics/t/gps", orjson.dumps(array), None)
    assert [r.ts_ms for r in out.readings] == [ms for good, (_, ms) in elements if good]
    assert [r.index for r in out.rejects] == [i for i, (good, _) in enumerate(elements) if not good]
