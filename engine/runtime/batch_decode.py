"""A live batch's input decoded: MQTT messages and submitted input, in the engine's order.

With the batch step (`Pipeline.fast`), MQTT messages are decoded as columns
(`devices.columnar`): plain gps readings are judged as arrays and their fixes built only
when needed; everything else, and submitted input (whose callers get each message's
`Decoded`), goes through `devices.inputs.decode_message` as without it. Either way the
readings, their clocks and the rejects are the same, in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from devices.columnar import ColumnarDecoder
from devices.decode import Decoded
from devices.inputs import decode_message
from devices.mqtt_source import Message
from devices.readings import Reading, Reject
from engine.runtime.submitted import Outcome, Submission


def decode_batch(
    messages: Sequence[Message], submitted: Sequence[Submission], columnar: bool
) -> tuple[Sequence[Reading], list[int], list[Reject], list[Outcome]]:
    """The batch's readings (MQTT first, then submitted, each in order), their clocks
    (arrival), the rejects, and what became of each submission."""
    outcomes: list[Outcome] = []
    if not columnar:
        readings: list[Reading] = []
        clocks: list[int] = []
        rejects: list[Reject] = []
        for m in messages:
            decoded = decode_message(m.topic, m.payload, m.arrived_ms)
            readings += decoded.readings
            clocks += [m.arrived_ms] * len(decoded.readings)
            rejects += decoded.rejects
        for s in submitted:
            each = tuple(
                decode_message(topic, payload, s.arrived_ms) for topic, payload in s.messages
            )
            for decoded in each:
                readings += decoded.readings
                clocks += [s.arrived_ms] * len(decoded.readings)
                rejects += decoded.rejects
            rejects += s.rejects
            outcomes.append(Outcome(each, s.rejects))
        return readings, clocks, rejects, outcomes
    decoder = ColumnarDecoder()
    for m in messages:
        full = partial(decode_message, m.topic, m.payload, m.arrived_ms)
        decoder.add_bytes(m.topic, m.payload, m.arrived_ms, m.arrived_ms, full)
    for s in submitted:
        each = tuple(decode_message(topic, payload, s.arrived_ms) for topic, payload in s.messages)
        for decoded in each:
            decoder.add_decoded(decoded, s.arrived_ms)
        decoder.add_decoded(Decoded([], list(s.rejects)), s.arrived_ms)
        outcomes.append(Outcome(each, s.rejects))
    batch, clocks, rejects = decoder.finish()
    return batch, clocks, rejects, outcomes
