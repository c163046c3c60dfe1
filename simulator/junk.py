"""Malformed input a real fleet sends, injected on purpose: each kind names its reject reason.

The kinds (`Junk`): truncated JSON, swapped lat/lon, NaN (raw bytes), an ISO time without
offset, a missing field, a wrong type, a malformed device id, an OwnTracks non-location
message, a clock 8 h ahead (China time written as UTC), an empty array, a short VIN; plus
one bad element appended to a catch-up array (its valid siblings must still count). Whole
junk messages ride on a background device; none of it can change a device's state, since
all of it is refused.

A replay judges "in the future" only against a line's `received_at` (DESIGN §7), so the
line of the clock in the future carries its arrival time as `received_at` (`Received`): it
is refused in a replay as it is live, against the wall clock. No other kind needs a clock,
and their lines keep the plain `{"topic", "payload"}` form.
"""

from __future__ import annotations

import random
from dataclasses import replace
from enum import StrEnum

from simulator.car import Car
from simulator.trackers import JsonObject, Payload, TrackerMessage, TrackerModel, iso_cst
from simulator.truth import Role

FUTURE_MS = 8 * 3_600_000  # a tracker writing China time as if it were UTC


class Junk(StrEnum):
    """The kinds of malformed input, each named by the reject reason it must get."""

    TRUNCATED_JSON = "truncated_json"
    SWAPPED_LAT_LON = "swapped_lat_lon"
    NAN_LAT = "nan_lat"
    ISO_WITHOUT_OFFSET = "iso_without_offset"
    MISSING_LON = "missing_lon"
    STRING_FOR_BOOL = "string_for_bool"
    SPACE_IN_DEVICE_ID = "space_in_device_id"
    OWNTRACKS_TRANSITION = "owntracks_transition"
    CLOCK_IN_FUTURE = "clock_in_future"
    EMPTY_ARRAY = "empty_array"
    SHORT_VIN = "short_vin"


ALL_JUNK = tuple(Junk)


class Received(TrackerMessage):
    """A message whose replay line says when it arrived: `received_at`, its `ts_ms`."""

    __slots__ = ()

    def line(self) -> JsonObject:
        """The message as a replay input line (DESIGN §7), with `received_at`."""
        return {**TrackerMessage.line(self), "received_at": self.ts_ms}


def _topic(device_id: str, stream: str) -> str:
    return f"telematics/{device_id}/{stream}"


def _junk(device_id: str, owntracks_topic: str, at: int, kind: Junk) -> TrackerMessage:
    """One junk message of `kind`, arriving at `at`."""
    gps, status = _topic(device_id, "gps"), _topic(device_id, "status")
    reason: str
    topic = gps
    payload: Payload
    match kind:
        case Junk.TRUNCATED_JSON:
            reason, payload = "not_json", f'{{"ts": {at}, "lat": 31.2'
        case Junk.SWAPPED_LAT_LON:
            reason, payload = "out_of_range", {"ts": at, "lat": 121.4712, "lon": 31.2301}
        case Junk.NAN_LAT:
            reason, payload = "out_of_range", f'{{"ts": {at}, "lat": NaN, "lon": 121.47}}'
        case Junk.ISO_WITHOUT_OFFSET:
            naive = iso_cst(at).removesuffix("+08:00")
            reason, payload = "bad_timestamp", {"ts": naive, "lat": 31.23, "lon": 121.47}
        case Junk.MISSING_LON:
            reason, payload = "missing_field", {"ts": at, "lat": 31.2301, "speed_kmh": 0.0}
        case Junk.STRING_FOR_BOOL:
            reason, topic, payload = "wrong_type", status, {"ts": at, "ext_power": "yes"}
        case Junk.SPACE_IN_DEVICE_ID:
            reason, topic = "bad_topic", _topic(device_id.replace("-", " "), "gps")
            payload = {"ts": at, "lat": 31.23, "lon": 121.47}
        case Junk.OWNTRACKS_TRANSITION:
            reason, topic = "unsupported_message", owntracks_topic
            payload = {"_type": "transition", "event": "leave", "desc": "home", "tst": at // 1000}
        case Junk.CLOCK_IN_FUTURE:
            reason = "future_timestamp"
            payload = {"ts": at + FUTURE_MS, "lat": 31.2301, "lon": 121.4701, "speed_kmh": 0.0}
        case Junk.EMPTY_ARRAY:
            reason, payload = "not_object", []
        case Junk.SHORT_VIN:
            reason, topic, payload = "out_of_range", status, {"ts": at, "vin": "LSV1234"}
    if kind is Junk.CLOCK_IN_FUTURE:  # judged against the time it arrived
        return Received(at, topic, payload, None, (), (reason,))
    return TrackerMessage(at, topic, payload, None, (), (reason,))


def inject_junk(
    msgs: list[TrackerMessage],
    cars: tuple[Car, ...] | list[Car],
    rng: random.Random,
    kinds: tuple[Junk, ...] = ALL_JUNK,
) -> list[TrackerMessage]:
    """`msgs` with junk spread over the run and a catch-up array (if any) given a bad element."""
    background = [t for c in cars if c.role is Role.QUIET for t in c.trackers]
    wired = [t for t in background if t.model is TrackerModel.WIRED]
    phones = [t for t in background if t.model is TrackerModel.OWNTRACKS]
    if not wired:
        msg = "junk needs a background car with a wired tracker"
        raise ValueError(msg)
    device_id = wired[0].device_id
    owntracks_topic = "owntracks/" + (phones[0].device_id if phones else "fleet:probe").replace(
        ":", "/"
    )
    t0, t1 = msgs[0].ts_ms, msgs[-1].ts_ms
    step = (t1 - t0) // (len(kinds) + 2)
    junk = [
        _junk(device_id, owntracks_topic, t0 + (k + 1) * step + rng.randrange(1000), kind)
        for k, kind in enumerate(kinds)
    ]
    arrays = [m for m in msgs if isinstance(m.payload, list) and m.topic.endswith("/gps")]
    target = next((m for m in arrays if m.device_id == device_id), arrays[0] if arrays else None)
    out: list[TrackerMessage] = []
    corrupted = False
    for m in msgs:
        while junk and junk[0].ts_ms <= m.ts_ms:
            out.append(junk.pop(0))
        if not corrupted and m is target and isinstance(m.payload, list):
            last = m.payload[-1]
            bad: JsonObject = {"ts": last["ts"], "lat": last["lat"], "lon": str(last["lon"])}
            m = replace(m, payload=[*m.payload, bad], rejects=("wrong_type",))  # noqa: PLW2901
            corrupted = True
        out.append(m)
    out.extend(junk)
    return out
