"""`pledgewatch replay`: the core run offline over recorded readings, by event time.

Input lines are `{"topic": ..., "payload": <object | array | string of raw bytes>,
"received_at"?: <epoch ms>}`. The runtime clock of a replay is the largest event time seen
so far (the watermark): `device.offline` and the timers of silent devices run on it.

A reading is judged "more than 5 minutes in the future" (DESIGN §2) against its line's
`received_at`, when the line has one, and not judged otherwise: the watermark is no clock
to judge by, since a car parked and reporting every 15 minutes is always ahead of it. A
`received_at` that is not an integer refuses the whole line (`wrong_type`), and one that is
not epoch ms in 2000..2099 too (`out_of_range`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import orjson

from alerts.model import Alert
from devices.columnar import ColumnarDecoder
from devices.decode import (
    MAX_PAYLOAD_BYTES,
    MAX_TS_MS,
    MIN_TS_MS,
    Decoded,
    decode,
    decode_value,
)
from devices.readings import RAW_KEEP_BYTES, Reading, Reject, RejectReason
from devices.topics import parse_topic
from engine.core.config import Config
from engine.runtime.consumers import ConsumerStage
from engine.runtime.pipeline import Pipeline
from geofence.index import FenceIndex
from lending.consumer import LendingConsumer
from lending.model import Loan

BATCH_LINES = 4096
"""Lines decoded before one vectorized fence lookup; any size gives the same alerts."""
STEP_BATCHES = 16
"""Without a lending consumer a batch is this many times `BATCH_LINES`: the batch step then
finds more of a car's quiet fixes together. (The consumer's `detected_at` is the batch's
watermark, so with one the batches stay at `BATCH_LINES`.)"""
_SHOWN = 40  # characters of a bad `received_at` named in a reject's detail


def decode_line(line: bytes, lineno: int) -> Decoded:
    """Decode one replay line (1-based `lineno`): its payload as the MQTT message it stands for,
    received at the line's `received_at` (a line without one is not judged "in the future")."""
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
    now_ms = _received_at(doc) if "received_at" in doc else None
    if isinstance(now_ms, _BadClock):
        detail = f"line {lineno}: {now_ms.detail}"
        device_id = parse_topic(topic).device_id
        reject = Reject(topic, now_ms.reason, detail, line[:RAW_KEEP_BYTES], device_id)
        return Decoded([], [reject])
    payload = doc["payload"]
    if isinstance(payload, str):  # raw bytes, as the tracker sent them
        return decode(topic, payload.encode("utf-8", "surrogateescape"), now_ms)
    if len(line) > MAX_PAYLOAD_BYTES:  # only then can the payload be too large: measure it
        dumps = json.dumps if lenient else orjson.dumps
        encoded = dumps(payload)
        return decode(topic, encoded.encode() if isinstance(encoded, str) else encoded, now_ms)
    return decode_value(topic, payload, now_ms, lenient=lenient)


@dataclass(frozen=True, slots=True)
class _BadClock:
    """Why a line's `received_at` was refused."""

    reason: RejectReason
    detail: str


def _received_at(doc: dict[str, object]) -> int | _BadClock:
    """The line's `received_at`: epoch milliseconds (an integer, not a bool) in 2000..2099."""
    value = doc["received_at"]
    shown = repr(value)[:_SHOWN]
    if type(value) is not int:
        return _BadClock(RejectReason.WRONG_TYPE, f"received_at {shown} is not an integer (ms)")
    if MIN_TS_MS <= value < MAX_TS_MS:
        return value
    hint = " (seconds?)" if MIN_TS_MS // 1000 <= value < MAX_TS_MS // 1000 else ""
    detail = f"received_at {shown} is not epoch ms in 2000..2099{hint}"
    return _BadClock(RejectReason.OUT_OF_RANGE, detail)


def _add_line(decoder: ColumnarDecoder, line: bytes, lineno: int) -> None:
    """Add one replay line to a columnar decoder: a plain line's payload goes in as a value,
    any other line as `decode_line` decodes it (the same rules, in the same order)."""
    full = partial(decode_line, line, lineno)
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        decoder.add_decoded(full(), 0)  # not JSON, or JSON only the stdlib takes
        return
    topic = doc.get("topic") if type(doc) is dict else None
    if type(topic) is not str or "payload" not in doc or len(line) > MAX_PAYLOAD_BYTES:
        decoder.add_decoded(full(), 0)
        return
    now_ms = None
    if "received_at" in doc:
        now_ms = doc["received_at"]
        if type(now_ms) is not int or not MIN_TS_MS <= now_ms < MAX_TS_MS:
            decoder.add_decoded(full(), 0)
            return
    payload = doc["payload"]
    if type(payload) is str:  # raw bytes, as the tracker sent them
        decoder.add_decoded(full(), 0)
        return
    decoder.add_value(topic, payload, now_ms, 0, full)


class Replay:
    """Feeds lines through a pipeline in arrival order with the watermark as the clock of
    its timers; each line is judged "in the future" by its own `received_at`, if any."""

    def __init__(
        self,
        index: FenceIndex,
        loans: Sequence[Loan],
        config: Config | None = None,
        on_alert: Callable[[Alert], None] = lambda _: None,
        on_reject: Callable[[Reject], None] = lambda _: None,
        consumer: LendingConsumer | None = None,
    ) -> None:
        self.pipeline = Pipeline(index, config)
        self.stage = None if consumer is None else ConsumerStage(self.pipeline, consumer)
        self._pending_loans = list(loans)
        self.on_alert = on_alert
        self.on_reject = on_reject
        self.watermark: int | None = None
        self.lines = 0
        self.columnar = self.pipeline.fast  # decode as columns (`devices.columnar`)

    def feed(self, lines: Iterable[bytes]) -> None:
        """Process lines, in batches of `BATCH_LINES` (times `STEP_BATCHES` without a consumer)."""
        size = BATCH_LINES if self.stage is not None else BATCH_LINES * STEP_BATCHES
        batch: list[bytes] = []
        for line in lines:
            if line.strip():
                batch.append(line)
            if len(batch) >= size:
                self._batch(batch)
                batch = []
        if batch:
            self._batch(batch)

    def _batch(self, lines: list[bytes]) -> None:
        if not self.columnar:
            self._batch_by_line(lines)
            return
        decoder = ColumnarDecoder()
        for line in lines:
            self.lines += 1
            _add_line(decoder, line, self.lines)
        readings, _, rejects = decoder.finish()
        for reject in rejects:
            self._reject(reject)
        if not len(readings):
            self._emit(self.pipeline.process(readings, []))
            return
        # the watermark: the largest event time so far
        ts = readings.columns.ts_ms
        start = ts[:1] if self.watermark is None else np.array([self.watermark])
        marks = np.maximum.accumulate(np.concatenate([start, ts]))[1:]
        clocks: list[int] = marks.tolist()
        self.watermark = clocks[-1]
        if self._pending_loans:
            self._load_loans(readings.columns.ts_list[0], clocks[0])
        self._emit(self.pipeline.process(readings, clocks))

    def _batch_by_line(self, lines: list[bytes]) -> None:
        readings: list[Reading] = []
        clocks: list[int] = []
        for line in lines:
            self.lines += 1
            decoded = decode_line(line, self.lines)
            for reject in decoded.rejects:
                self._reject(reject)
            for reading in decoded.readings:
                if self.watermark is None or reading.ts_ms > self.watermark:
                    self.watermark = reading.ts_ms
                readings.append(reading)
                clocks.append(self.watermark)
        if self._pending_loans and readings:
            self._load_loans(readings[0].ts_ms, clocks[0])
        self._emit(self.pipeline.process(readings, clocks))

    def _emit(self, alerts: list[Alert]) -> None:
        """Hand out the alerts the core raised; with a consumer, as its stage orders them:
        each event's alerts, then what the consumer raised on it."""
        if self.stage is not None:
            alerts = self.stage.feed(self.watermark if self.watermark is not None else 0)
            self.stage.consumer.forget_dirty()  # nothing is stored
        for alert in alerts:
            self.on_alert(alert)

    def _load_loans(self, ts_ms: int, now_ms: int) -> None:
        # Loans are taken as PUT in file order at the first reading's event time, so a VIN
        # that is already on an earlier active loan raises `pledge.vin_conflict` there.
        alerts: list[Alert] = []
        for loan in self._pending_loans:
            alerts += self.pipeline.put_loan(loan, ts_ms, now_ms)
        self._pending_loans = []
        self._emit(alerts)

    def _reject(self, reject: Reject) -> None:
        self.pipeline.count_rejects([reject.reason.value])
        self.on_reject(reject)

    def finish(self) -> None:
        """End of input: loans of a replay without readings still get their VIN check."""
        if self._pending_loans:
            self._load_loans(0, 0)
