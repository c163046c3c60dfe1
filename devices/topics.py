"""MQTT topic routing (DESIGN §2): which device and stream a message belongs to.

Two topic shapes are accepted, each with exactly three `/`-separated segments:

- native `telematics/{device_id}/{stream}`, `stream` one of `gps`, `vib`, `status`;
- OwnTracks `owntracks/{user}/{device}`, a GPS stream under device_id `{user}:{device}`.

A device_id matches `[A-Za-z0-9_.:-]{1,64}` in full. Matching is case-sensitive: `GPS` is
not a stream and `Telematics/...` is not a topic. A native topic with missing or extra
levels (`telematics/trk-001/a/gps`) is refused but keeps its device_id when that is
well-formed, so the reject points at the tracker to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from devices.readings import Stream

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
"""A well-formed device_id; use with `fullmatch`."""

NATIVE_PREFIX = "telematics"
OWNTRACKS_PREFIX = "owntracks"
TRACCAR_PREFIX = "traccar/"
"""Topics of Traccar's MQTT forwarding (`devices.inputs`); its `forward.topic` and
`event.forward.topic` go under it."""

_STREAMS: dict[str, Stream] = {s.value: s for s in Stream}
_TOPIC_SHOWN_CHARS = 80


@dataclass(frozen=True, slots=True)
class TopicRoute:
    """Where a well-formed topic leads: the device, its stream, and the payload dialect."""

    device_id: str
    stream: Stream
    owntracks: bool = False  # payload is an OwnTracks message, not the native format


@dataclass(frozen=True, slots=True)
class BadTopic:
    """Why a topic was refused (always `RejectReason.BAD_TOPIC`)."""

    detail: str
    device_id: str | None = None  # set when the device_id was well-formed but the rest was not


def is_device_id(text: str) -> bool:
    """Tell whether `text` is a well-formed device_id."""
    return DEVICE_ID_RE.fullmatch(text) is not None


def parse_topic(topic: str) -> TopicRoute | BadTopic:
    """Route an MQTT topic to its device and stream, or say why it is not a pledgewatch topic."""
    parts = topic.split("/")
    if len(parts) != 3:
        native = (
            len(parts) > 1
            and parts[0] == NATIVE_PREFIX
            and DEVICE_ID_RE.fullmatch(parts[1]) is not None
        )
        return BadTopic(
            f"topic {_show(topic)} has {len(parts)} segments; expected "
            "telematics/{device_id}/{stream} or owntracks/{user}/{device}",
            device_id=parts[1] if native else None,
        )
    prefix, middle, last = parts
    if prefix == NATIVE_PREFIX:
        if DEVICE_ID_RE.fullmatch(middle) is None:
            return BadTopic(f"device_id {_show(middle)} does not match {DEVICE_ID_RE.pattern}")
        stream = _STREAMS.get(last)
        if stream is None:
            return BadTopic(
                f"stream {_show(last)} is not one of gps, vib, status", device_id=middle
            )
        return TopicRoute(middle, stream)
    if prefix == OWNTRACKS_PREFIX:
        if not middle or not last:
            return BadTopic(f"OwnTracks topic {_show(topic)} has an empty user or device")
        device_id = f"{middle}:{last}"
        if DEVICE_ID_RE.fullmatch(device_id) is None:
            return BadTopic(
                f"OwnTracks device_id {_show(device_id)} does not match {DEVICE_ID_RE.pattern}"
            )
        return TopicRoute(device_id, Stream.GPS, owntracks=True)
    return BadTopic(
        f"topic prefix {_show(prefix)} is neither {NATIVE_PREFIX!r} nor {OWNTRACKS_PREFIX!r}"
    )


def _show(text: str) -> str:
    """Quote a piece of a topic for a message, shortened so a huge topic cannot flood logs."""
    if len(text) > _TOPIC_SHOWN_CHARS:
        return f"{text[:_TOPIC_SHOWN_CHARS]!r}... ({len(text)} chars)"
    return repr(text)
