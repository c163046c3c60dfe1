"""Decoded tracker readings: what the wire formats turn into and the core consumes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar


class Stream(StrEnum):
    """The reading streams of DESIGN §2 (the last topic segment)."""

    GPS = "gps"
    VIB = "vib"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class GpsFix:
    """A position report. `lat`/`lon` are WGS84 degrees; `ts_ms` is epoch milliseconds."""

    stream: ClassVar[Stream] = Stream.GPS
    device_id: str
    ts_ms: int
    lat: float
    lon: float
    speed_kmh: float | None = None
    heading_deg: float | None = None
    hdop: float | None = None
    sats: int | None = None
    ignition: bool | None = None
    odometer_km: float | None = None
    seq: int | None = None
    accuracy_m: float | None = None


@dataclass(frozen=True, slots=True)
class Vibration:
    """A vibration report: `g` is the peak acceleration in g."""

    stream: ClassVar[Stream] = Stream.VIB
    device_id: str
    ts_ms: int
    g: float
    duration_ms: int | None = None
    ignition: bool | None = None


@dataclass(frozen=True, slots=True)
class StatusReport:
    """A device status report. `vin` is 17 characters as read from the car, upper-cased."""

    stream: ClassVar[Stream] = Stream.STATUS
    device_id: str
    ts_ms: int
    ext_power: bool | None = None
    battery_v: float | None = None
    tamper: bool | None = None
    vin: str | None = None


Reading = GpsFix | Vibration | StatusReport


class RejectReason(StrEnum):
    """Why an input was refused (DESIGN §2); the label of `pledgewatch_rejected_total`."""

    BAD_TOPIC = "bad_topic"  # not a known topic shape, unknown stream, or malformed device_id
    TOO_LARGE = "too_large"  # payload over 256 KiB
    NOT_JSON = "not_json"  # payload does not parse as JSON
    NOT_OBJECT = "not_object"  # payload (or array element) is not a JSON object
    TOO_MANY_ELEMENTS = "too_many_elements"  # array of more than 1000 readings
    MISSING_FIELD = "missing_field"  # a required field is absent or null
    WRONG_TYPE = "wrong_type"  # a field has the wrong JSON type
    OUT_OF_RANGE = "out_of_range"  # lat/lon/speed/... outside its range, NaN or Inf
    BAD_TIMESTAMP = "bad_timestamp"  # ts is not epoch ms nor ISO-8601 with an offset
    FUTURE_TIMESTAMP = "future_timestamp"  # ts more than 5 minutes ahead of the reference clock
    UNSUPPORTED_MESSAGE = "unsupported_message"  # e.g. an OwnTracks message that is not a location
    DECODER_ERROR = "decoder_error"  # the decoder itself failed (a bug): input kept for a retry


RAW_KEEP_BYTES = 4096
"""How many bytes of a rejected input are kept in the dead-letter record."""


@dataclass(frozen=True, slots=True)
class Reject:
    """One refused input: the reason, a human detail naming the field, and the raw bytes kept."""

    topic: str
    reason: RejectReason
    detail: str
    raw: bytes
    device_id: str | None = None
    index: int | None = None  # position in an array payload, None for a single object

    def to_json(self) -> dict[str, object]:
        """The reject as a JSON object (`--rejects` lines, `GET /v1/rejects`)."""
        return {
            "topic": self.topic,
            "reason": self.reason.value,
            "detail": self.detail,
            "device_id": self.device_id,
            "index": self.index,
            "raw": self.raw.decode("utf-8", "backslashreplace"),
        }
