"""`pledgewatch replay`: the core run offline over recorded readings, by event time.

Input lines are `{"topic": ..., "payload": <object | array | string of raw bytes>}`.
The runtime clock of a replay is the largest event time seen so far (the watermark): the
"future" check, `device.offline` and the timers of silent devices run on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence

import orjson

from alerts.model import Alert
from devices.decode import MAX_PAYLOAD_BYTES, Decoded, decode, decode_value
from devices.readings import RAW_KEEP_BYTES, Reading, Reject, RejectReason
from engine.core.config import Config
from engine.runtime.pipeline import Pipeline
from geofence.index import FenceIndex
from lending.model import Loan

BATCH_LINES = 4096
"""Lines decoded before one vectorized fence lookup; any size gives the same alerts."""


def decode_line(line: bytes, lineno: int, now_ms: int | None) -> Decoded:
    """Decode one replay line (1-based `lineno`): its payload as the MQTT message it stands for."""
    lenient = False
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            doc = json.loads(line)  # tolerates NaN and Infinity, which trackers do send
            lenient = True
        except ValueError:
            raw = line[:RAW_KEEP_BYTES]
            return Decoded([], [Reject("", RejectReason.NOT_JSON, f"line {lineno}: not JSON", raw)])
    topic = doc.get("topic") if isinstance(doc, dict) else None
    if not isinstance(topic, str) or "payload" not in doc:
        detail = f"line {lineno}: expected an object with 'topic' (string) and 'payload'"
        return Decoded([], [Reject("", RejectReason.BAD_TOPIC, detail, line[:RAW_KEEP_BYTES])])
    payload = doc["payload"]
    if isinstance(payload, str):  # raw bytes, as the tracker sent them
        return decode(topic, payload.encode("utf-8", "surrogateescape"), now_ms)
    if len(line) > MAX_PAYLOAD_BYTES:  # only then can the payload be too large: measure it
        dumps = json.dumps if lenient else orjson.dumps
        encoded = dumps(payload)
        return decode(topic, encoded.encode() if isinstance(encoded, str) else encoded, now_ms)
    return decode_value(topic, payload, now_ms, lenient=lenient)


class Replay:
    """Feeds lines through a pipeline in arrival order with the watermark as the clock."""

    def __init__(
        self,
        index: FenceIndex,
        loans: Sequence[Loan],
        config: Config | None = None,
        on_alert: Callable[[Alert], None] = lambda _: None,
        on_reject: Callable[[Reject], None] = lambda _: None,
    ) -> None:
        self.pipeline = Pipeline(index, config)
        self._pending_loans = list(loans)
        self.on_alert = on_alert
        self.on_reject = on_reject
        self.watermark: int | None = None
        self.lines = 0

    def feed(self, lines: Iterable[bytes]) -> None:
        """Process lines, in batches of `BATCH_LINES`."""
        batch: list[bytes] = []
        for line in lines:
            if line.strip():
                batch.append(line)
            if len(batch) >= BATCH_LINES:
                self._batch(batch)
                batch = []
        if batch:
            self._batch(batch)

    def _batch(self, lines: list[bytes]) -> None:
        readings: list[Reading] = []
        clocks: list[int] = []
        for line in lines:
            self.lines += 1
            decoded = decode_line(line, self.lines, self.watermark)
            for reject in decoded.rejects:
                self._reject(reject)
            for reading in decoded.readings:
                if self.watermark is None or reading.ts_ms > self.watermark:
                    self.watermark = reading.ts_ms
                readings.append(reading)
                clocks.append(self.watermark)
        if self._pending_loans and readings:
            self._load_loans(readings[0].ts_ms, clocks[0])
        for alert in self.pipeline.process(readings, clocks):
            self.on_alert(alert)

    def _load_loans(self, ts_ms: int, now_ms: int) -> None:
        # Loans are taken as PUT in file order at the first reading's event time, so a VIN
        # that is already on an earlier active loan raises `pledge.vin_conflict` there.
        for loan in self._pending_loans:
            for alert in self.pipeline.put_loan(loan, ts_ms, now_ms):
                self.on_alert(alert)
        self._pending_loans = []

    def _reject(self, reject: Reject) -> None:
        self.pipeline.count_rejects([reject.reason.value])
        self.on_reject(reject)

    def finish(self) -> None:
        """End of input: loans of a replay without readings still get their VIN check."""
        if self._pending_loans:
            self._load_loans(0, 0)
