"""Every MQTT input the engine subscribes to, decoded alike.

`telematics/{device_id}/{stream}` and `owntracks/{user}/{device}` go to `decode`;
`traccar/...` carries Traccar's MQTT forwarding (`forward.type=mqtt`, positions and events
as the JSON of its HTTP forwarding), mapped by `devices.traccar` to our wire format and then
decoded the same way, so its rules, reasons and counters are those of every other input.
"""

from __future__ import annotations

from devices.decode import Decoded, decode
from devices.topics import TRACCAR_PREFIX
from devices.traccar import map_traccar
from devices.wire import judge


def decode_message(topic: str, payload: bytes, now_ms: int | None) -> Decoded:
    """Decode one MQTT message of any input the engine takes; never raises."""
    if topic.startswith(TRACCAR_PREFIX):
        readings, rejects = judge(map_traccar(payload, topic), now_ms)
        return Decoded(readings, rejects)
    return decode(topic, payload, now_ms)
