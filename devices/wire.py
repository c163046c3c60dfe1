"""Other trackers' documents as messages of our MQTT wire format (DESIGN §2, §9 "Other inputs").

The HTTP inputs (Traccar forwarding in `devices.traccar`, OsmAnd and Traccar Client in
`devices.osmand`) judge no reading themselves: a mapper turns each document into the
`(topic, payload)` the tracker would have published over MQTT, and the engine decodes those
with `devices.decode.decode`, so the rules, reject reasons, details and counters are those
of MQTT input. Only what has no MQTT equivalent is refused by the mapper: a body that is
not a document of the protocol at all, or a device id that cannot make a topic. Such a
reject carries the pseudo-topic `http/{protocol}` naming the input it came from.

Payloads are written with the stdlib encoder and `allow_nan`, so a NaN or an infinity that
reached a mapper stays visible to the decoder (which refuses it as out of range) instead of
turning into null.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from devices.decode import MAX_ARRAY_ELEMENTS, decode
from devices.details import clip, json_type, show
from devices.readings import RAW_KEEP_BYTES, Reading, Reject, RejectReason, Stream
from devices.topics import DEVICE_ID_RE, NATIVE_PREFIX, is_device_id


@dataclass(frozen=True, slots=True)
class WireMessage:
    """One message in the MQTT wire format, and which document of the request it came from."""

    topic: str
    payload: bytes
    document: int | None = None  # index in the request's array; None for a lone document


@dataclass(frozen=True, slots=True)
class Mapped:
    """What a request maps to: messages for the decoder, and what could not become one."""

    messages: tuple[WireMessage, ...] = ()
    rejects: tuple[Reject, ...] = ()  # `index`: the document's index in the request's array


@dataclass(frozen=True, slots=True)
class Fault:
    """Why a document could not become messages; a `Reject` once its origin is known."""

    reason: RejectReason
    detail: str


class MappedBuilder:
    """Collects the messages and rejects of one request, in document order."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self._messages: list[WireMessage] = []
        self._rejects: list[Reject] = []

    def add(
        self, device_id: str, stream: Stream, doc: Mapping[str, object], index: int | None
    ) -> None:
        """Add one reading's payload for `device_id` on `stream`."""
        self._messages.append(WireMessage(topic_for(device_id, stream), encode(doc), index))

    def refuse(
        self, fault: Fault, raw: bytes, index: int | None = None, device_id: str | None = None
    ) -> None:
        """Add a reject of a whole document (or body), keeping its raw bytes truncated."""
        raw = raw[:RAW_KEEP_BYTES]
        self._rejects.append(Reject(self.origin, fault.reason, fault.detail, raw, device_id, index))

    def build(self) -> Mapped:
        """The request's messages and rejects."""
        return Mapped(tuple(self._messages), tuple(self._rejects))


def topic_for(device_id: str, stream: Stream) -> str:
    """The native topic of a device's stream: `telematics/{device_id}/{stream}`."""
    return f"{NATIVE_PREFIX}/{device_id}/{stream.value}"


def encode(doc: Mapping[str, object]) -> bytes:
    """A payload object as JSON bytes (ASCII; NaN and infinities kept for the decoder)."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=True).encode("ascii")


def parse_json(body: bytes) -> tuple[object, str | None]:
    """Parse a body as JSON: (value, error); the stdlib fallback admits NaN and 1e999."""
    try:
        return orjson.loads(body), None
    except orjson.JSONDecodeError:
        pass
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"body is not UTF-8: {exc.reason} at byte {exc.start}"
    try:
        return json.loads(text), None
    except (ValueError, RecursionError) as exc:
        return None, f"body is not JSON: {clip(str(exc))}"


def documents(value: object, what: str) -> list[tuple[int | None, object]] | Fault:
    """A lone object as `[(None, it)]`, an array of 1 to 1000 elements as `[(index, it)]`."""
    if isinstance(value, dict):
        return [(None, value)]
    if not isinstance(value, list):
        detail = f"{what} is a JSON {json_type(value)}; expected an object or an array of objects"
        return Fault(RejectReason.NOT_OBJECT, detail)
    if not value:
        detail = f"{what} is an empty array; expected 1 to {MAX_ARRAY_ELEMENTS} objects"
        return Fault(RejectReason.NOT_OBJECT, detail)
    if len(value) > MAX_ARRAY_ELEMENTS:
        detail = f"{what} is an array of {len(value)} elements; at most {MAX_ARRAY_ELEMENTS}"
        return Fault(RejectReason.TOO_MANY_ELEMENTS, detail)
    return list(enumerate(value))


def element_raw(value: object) -> bytes:
    """The kept bytes of one document of an array, re-serialised; never raises."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")[:RAW_KEEP_BYTES]
    except (TypeError, ValueError, RecursionError):
        return show(value).encode("utf-8", "backslashreplace")[:RAW_KEEP_BYTES]


def as_device_id(value: object, name: str) -> str | Fault:
    """`value`, found at `name`, as a device_id, or why it cannot be one."""
    if value is None:
        return Fault(RejectReason.MISSING_FIELD, f"{name}: required field is missing or null")
    if type(value) is not str:
        return Fault(RejectReason.WRONG_TYPE, f"{name}: expected a string, got {json_type(value)}")
    if not is_device_id(value):
        detail = f"{name} {show(value)} does not match {DEVICE_ID_RE.pattern}: it is the device_id"
        return Fault(RejectReason.BAD_TOPIC, detail)
    return value


def scaled(value: object, factor: float) -> object:
    """A number times `factor`; anything else as it came, for the decoder to judge."""
    if type(value) is int or type(value) is float:
        try:
            return value * factor
        except OverflowError:  # an integer too large for a float: out of range either way
            return value
    return value


def judge(mapped: Mapped, now_ms: int | None) -> tuple[list[Reading], list[Reject]]:
    """Decode a request's messages as the engine does: its readings and all its rejects."""
    readings: list[Reading] = []
    rejects: list[Reject] = list(mapped.rejects)
    for message in mapped.messages:
        decoded = decode(message.topic, message.payload, now_ms)
        readings += decoded.readings
        rejects += decoded.rejects
    return readings, rejects
