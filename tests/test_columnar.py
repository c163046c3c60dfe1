"""The columnar decoder equals the per-message decoder, element by element (hypothesis).

Random batches of messages, mostly plain gps but with every kind of defect near the edges
of each rule (types, ranges, a bool for a number, ISO stamps, `coord_sys`, the future,
empty and oversized arrays, non-objects, other streams and topics, bytes that are not
JSON): the batch's readings, their clocks and its rejects are exactly those of decoding
each message alone, in order. The same for replay lines against `decode_line`.
"""

from __future__ import annotations

from functools import partial

import orjson
from hypothesis import given
from hypothesis import strategies as st

from devices.columnar import ColumnarDecoder
from devices.columns import ReadingBatch, columns_of, without
from devices.decode import MAX_INT, Decoded
from devices.inputs import decode_message
from devices.readings import GpsFix, Reading, Reject
from engine.runtime.replay import Replay, decode_line
from engine.store.rows import telemetry_row, telemetry_rows
from geofence.index import FenceIndex
from tests.factories import property_settings

PROPS = property_settings(300)
NOW = 1_795_940_100_000
TOPICS = [
    "telematics/trk-1/gps",
    "telematics/trk-2/gps",
    "telematics/trk-1/vib",
    "telematics/trk-3/status",
    "owntracks/u/p",
    "telematics/bad id/gps",
    "traccar/positions",
    "elsewhere/x/gps",
]


def _edge(draw: st.DrawFn, lo: float, hi: float) -> object:
    return draw(
        st.sampled_from(
            [lo, hi, (lo + hi) / 2, lo - 1e-9, hi + 1, int(lo), True, "1", None, [], 2**63, -1]
        )
    )


@st.composite
def gps_objects(draw: st.DrawFn) -> dict[str, object]:
    """A gps element: mostly valid, with one field pushed to an edge now and then."""
    obj: dict[str, object] = {
        "ts": NOW - draw(st.integers(0, 10_000_000)),
        "lat": draw(st.floats(-90, 90)),
        "lon": draw(st.floats(-180, 180)),
    }
    for key, lo, hi in (
        ("speed_kmh", 0.0, 1000.0),
        ("heading_deg", 0.0, 360.0),
        ("hdop", 0.0, 50.0),
        ("odometer_km", 0.0, 1e6),
    ):
        if draw(st.booleans()):
            obj[key] = draw(st.one_of(st.floats(lo, hi), st.integers(int(lo), int(hi))))
    for key in ("sats", "seq"):
        if draw(st.booleans()):
            obj[key] = draw(st.integers(0, MAX_INT))
    if draw(st.booleans()):
        obj["ignition"] = draw(st.sampled_from([True, False, None]))
    if draw(st.integers(0, 4)) == 0:  # a defect
        key = draw(
            st.sampled_from(
                [
                    *("ts", "lat", "lon", "speed_kmh", "heading_deg", "hdop", "sats", "seq"),
                    *("ignition", "odometer_km", "coord_sys"),
                ]
            )
        )
        choice = draw(st.integers(0, 5))
        if key == "ts":
            obj[key] = [
                "2026-11-29T08:15:00Z",
                NOW + 400_000,
                True,
                1_795_940_100,
                None,
                4_102_444_800_000,
            ][choice]
        elif key == "coord_sys":
            obj[key] = ["wgs84", "gcj02", "bad", 3, None, "bd09"][choice]
        elif key == "ignition":
            obj[key] = [1, "true", 0, None, [], {}][choice]
        elif choice == 0:
            obj.pop(key, None)
        else:
            obj[key] = _edge(draw, -90.0, 90.0)
    return obj


def payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind <= 4:
        return orjson.dumps(draw(gps_objects()))
    if kind <= 7:
        n = draw(st.sampled_from([0, 1, 3, 1001]))
        items = [draw(gps_objects()) if draw(st.integers(0, 9)) else 7 for _ in range(min(n, 3))]
        if n == 1001:
            items = items * 334
        return orjson.dumps(items)
    if kind == 8:
        return b'{"ts": 1795940000000, "lat": NaN, "lon": 1}'
    return draw(st.sampled_from([b"", b"[", b"null", b'"x"', b'{"ts": 1795940000000}']))


@st.composite
def messages(draw: st.DrawFn) -> list[tuple[str, bytes, int | None]]:
    out = []
    for _ in range(draw(st.integers(0, 12))):
        topic = draw(st.sampled_from(TOPICS[:2] * 4 + TOPICS))
        now = draw(st.sampled_from([NOW, None, NOW - 5_000_000]))
        out.append((topic, payloads(draw), now))
    return out


def _same_rejects(got: list[Reject], want: list[Reject]) -> None:
    assert [r.to_json() for r in got] == [r.to_json() for r in want]


@PROPS
@given(messages())
def test_a_batch_decodes_as_its_messages_do(msgs: list[tuple[str, bytes, int | None]]) -> None:
    decoder = ColumnarDecoder()
    want: list[Reading] = []
    want_clocks: list[int] = []
    want_rejects: list[Reject] = []
    for k, (topic, payload, now) in enumerate(msgs):
        full = partial(decode_message, topic, payload, now)
        decoder.add_bytes(topic, payload, now, k, full)
        decoded = full()
        want += decoded.readings
        want_clocks += [k] * len(decoded.readings)
        want_rejects += decoded.rejects
    batch, clocks, rejects = decoder.finish()
    assert list(batch) == want
    assert clocks == want_clocks
    _same_rejects(rejects, want_rejects)
    cols, ref = batch.columns, columns_of(want)
    assert cols.device_ids == ref.device_ids
    assert cols.ts_list == ref.ts_list
    assert cols.seq == ref.seq
    assert cols.ignition == ref.ignition
    assert cols.gps.tolist() == ref.gps.tolist()
    assert telemetry_rows(batch) == [telemetry_row(r) for r in want]
    drop = list(range(0, len(want), 3))
    assert list(without(batch, drop)) == list(without(want, drop))


@PROPS
@given(messages())
def test_a_batch_with_decoded_parts_keeps_their_order(
    msgs: list[tuple[str, bytes, int | None]],
) -> None:
    decoder = ColumnarDecoder()
    want: list[Reading] = []
    for k, (topic, payload, now) in enumerate(msgs):
        decoded = decode_message(topic, payload, now)
        if k % 2:
            decoder.add_decoded(Decoded(decoded.readings, decoded.rejects), k)
        else:
            decoder.add_bytes(topic, payload, now, k, partial(decode_message, topic, payload, now))
        want += decoded.readings
    batch, _, _ = decoder.finish()
    assert isinstance(batch, ReadingBatch)
    assert list(batch) == want
    assert [batch[i] for i in range(len(want))] == want


@PROPS
@given(messages(), st.booleans())
def test_replay_lines_decode_as_decode_line_does(
    msgs: list[tuple[str, bytes, int | None]], raw: bool
) -> None:
    lines = []
    for topic, payload, now in msgs:
        try:
            value: object = orjson.loads(payload)
        except orjson.JSONDecodeError:
            value = payload.decode("utf-8", "replace")
        doc: dict[str, object] = {"topic": topic, "payload": payload.decode() if raw else value}
        if now is not None:
            doc["received_at"] = now
        lines.append(orjson.dumps(doc))
    lines.append(b'{"topic": "telematics/trk-1/gps", "payload": {"ts": 1, "lat": NaN}}')
    lines.append(b'{"topic": "telematics/trk-1/gps", "payload": {}, "received_at": "x"}')
    want: list[Reading] = []
    want_rejects: list[Reject] = []
    for n, line in enumerate(lines, 1):
        decoded = decode_line(line, n)
        want += decoded.readings
        want_rejects += decoded.rejects
    got_rejects: list[Reject] = []
    replay = Replay(FenceIndex(), [], on_reject=got_rejects.append)
    replay.feed(lines)
    assert replay.columnar
    assert sum(replay.pipeline.counters.readings.values()) + sum(
        replay.pipeline.counters.duplicates.values()
    ) == len(want)
    _same_rejects(got_rejects, want_rejects)


def test_plain_fixes_are_not_built_until_asked() -> None:
    decoder = ColumnarDecoder()
    payload = orjson.dumps([{"ts": NOW - k, "lat": 1, "lon": 2.5, "seq": k} for k in range(3)])
    decoder.add_bytes("telematics/t/gps", payload, NOW, NOW, lambda: Decoded([], []))
    batch, clocks, rejects = decoder.finish()
    assert batch.built == [None, None, None]
    assert clocks == [NOW] * 3
    assert rejects == []
    assert batch[1] == GpsFix("t", NOW - 1, 1.0, 2.5, seq=1)
    assert batch.built[1] is not None
