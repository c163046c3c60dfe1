"""The records of the distributed runtime's topics, as bytes: pure, no Kafka here.

- `pledgewatch.readings`, keyed by device_id: one decoded reading and the bridge's clock
  when its MQTT message arrived (`at`, the runtime clock its step runs at, as the local
  engine's `arrived_ms`). A JSON array: `["g", at, device_id, ts_ms, lat, lon, ...]`, the
  reading's fields in declaration order (orjson writes floats that read back exactly).
- `pledgewatch.rejects`, keyed by device_id (or the topic): a refused input, `Reject.to_json`
  with `raw` in base64 so that any bytes survive.
- `pledgewatch.loan-events`, partitioned by loan_id (`loan_partition`): what the device
  stage hands the per-loan stage, in order: an accepted reading with the alerts it raised
  and the fix that moved the car, or timer alerts. A record holds the events of one batch for
  one partition (a JSON array, at most `LOAN_EVENTS_PER_RECORD`): one produce and one
  consume per batch, not per reading. `src` is the reading record's (partition, offset): the
  per-loan stage feeds a device's readings once, however often a restarted device stage
  steps them again.
- `pledgewatch.alerts`, keyed by loan_id (device_id without a loan): `Alert.to_json`.
- `pledgewatch.changes` (compacted), keyed `fence:{id}` or `loan:{id}`: the fence's GeoJSON
  (null: deleted) or the loan's JSON, as the API takes them: how every worker learns them.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from alerts.model import Alert, alert_from_json
from devices.readings import GpsFix, Reading, Reject, RejectReason, StatusReport, Vibration
from engine.core.state import Position
from geofence.fence import Fence, fence_to_feature, parse_fence, parse_fences
from lending.model import Loan, loan_to_json, parse_loan

_KIND = {GpsFix: "g", Vibration: "v", StatusReport: "s"}
_CLASS: dict[str, type[GpsFix | Vibration | StatusReport]] = {v: k for k, v in _KIND.items()}


class RecordError(ValueError):
    """A record that is not one of ours (a foreign producer, a version we do not read)."""


def reading_record(reading: Reading, at_ms: int) -> bytes:
    """A reading and the runtime clock of its arrival as a `pledgewatch.readings` value."""
    return orjson.dumps([_KIND[type(reading)], at_ms, *_fields(reading)])


def _fields(reading: Reading) -> list[object]:
    return [getattr(reading, name) for name in type(reading).__slots__]


def _reading(doc: Sequence[object]) -> Reading:
    cls = _CLASS.get(str(doc[0]))
    if cls is None:
        msg = f"unknown reading kind {doc[0]!r}"
        raise RecordError(msg)
    try:
        return cls(*doc[2:])  # type: ignore[arg-type]
    except TypeError as exc:
        msg = f"a {cls.__name__} record with {len(doc) - 2} fields: {exc}"
        raise RecordError(msg) from exc


def read_reading(value: bytes) -> tuple[Reading, int]:
    """The reading and its arrival clock back from `reading_record`."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        msg = f"not a reading record: {exc}"
        raise RecordError(msg) from exc
    if not isinstance(doc, list) or len(doc) < 4 or type(doc[1]) is not int:
        msg = "not a reading record: expected [kind, at_ms, device_id, ts_ms, ...]"
        raise RecordError(msg)
    return _reading(doc), doc[1]


def reject_record(reject: Reject) -> bytes:
    """A refused input as a `pledgewatch.rejects` value."""
    doc = reject.to_json()
    doc["raw"] = base64.b64encode(reject.raw).decode()
    return orjson.dumps(doc)


def read_reject(value: bytes) -> Reject:
    """The reject back from `reject_record`."""
    try:
        doc = orjson.loads(value)
        index = doc.get("index")
        device_id = doc.get("device_id")
        return Reject(
            str(doc["topic"]),
            RejectReason(doc["reason"]),
            str(doc["detail"]),
            base64.b64decode(doc["raw"]),
            None if device_id is None else str(device_id),
            None if index is None else int(index),
        )
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        msg = f"not a reject record: {exc}"
        raise RecordError(msg) from exc


@dataclass(frozen=True, slots=True)
class LoanEvent:
    """What the per-loan stage takes, in order: an accepted `reading` (with the `alerts` it
    raised, the fix that `moved` the car and its record's `src`), or timer `alerts` alone;
    `at_ms` is the device stage's runtime clock."""

    loan_id: str
    at_ms: int
    reading: Reading | None = None
    alerts: tuple[Alert, ...] = ()
    moved: Position | None = None
    src: tuple[int, int] | None = None  # the reading record's partition and offset


LOAN_EVENTS_PER_RECORD = 500
"""Events per `pledgewatch.loan-events` record at most (~150 KB: under Kafka's 1 MB)."""


def _event_doc(event: LoanEvent) -> dict[str, object]:
    r = event.reading
    return {
        "loan": event.loan_id,
        "at": event.at_ms,
        "r": None if r is None else [_KIND[type(r)], 0, *_fields(r)],
        "a": [a.to_json() for a in event.alerts],
        "m": None if event.moved is None else list(event.moved),
        "src": None if event.src is None else list(event.src),
    }


def loan_event_records(events: Sequence[LoanEvent]) -> list[bytes]:
    """`pledgewatch.loan-events` values holding `events` in order (none for none)."""
    n = LOAN_EVENTS_PER_RECORD
    return [
        orjson.dumps([_event_doc(e) for e in events[i : i + n]]) for i in range(0, len(events), n)
    ]


def _event(doc: Any) -> LoanEvent:  # parsed JSON: the caller turns errors into RecordError
    r, m, src = doc["r"], doc["m"], doc["src"]
    return LoanEvent(
        str(doc["loan"]),
        int(doc["at"]),
        None if r is None else _reading(r),
        tuple(alert_from_json(a) for a in doc["a"]),
        None if m is None else Position(int(m[0]), float(m[1]), float(m[2])),
        None if src is None else (int(src[0]), int(src[1])),
    )


def read_loan_events(value: bytes) -> list[LoanEvent]:
    """The events back from a `loan_event_records` value."""
    try:
        docs = orjson.loads(value)
        if not isinstance(docs, list):
            msg = "expected a JSON array of events"
            raise TypeError(msg)  # noqa: TRY301  # one message for every malformed record
        return [_event(doc) for doc in docs]
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, IndexError) as exc:
        msg = f"not a loan-events record: {exc}"
        raise RecordError(msg) from exc


def alert_record(alert: Alert) -> bytes:
    """A `pledgewatch.alerts` value: the alert's JSON, as the webhooks carry it."""
    return orjson.dumps(alert.to_json())


def read_alert(value: bytes) -> Alert:
    """The alert back from `alert_record`."""
    try:
        return alert_from_json(orjson.loads(value))
    except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
        msg = f"not an alert record: {exc}"
        raise RecordError(msg) from exc


def alert_key(alert: Alert) -> bytes:
    """The key of an alert record: its loan, else its tracker, else its id."""
    return (alert.loan_id or alert.device_id or alert.id).encode()


def fence_change(fence_id: str, fence: Fence | None) -> tuple[bytes, bytes | None]:
    """A `pledgewatch.changes` record of a fence: key, and its GeoJSON (None: deleted)."""
    value = None if fence is None else orjson.dumps(fence_to_feature(fence))
    return f"fence:{fence_id}".encode(), value


def loan_change(loan: Loan) -> tuple[bytes, bytes]:
    """A `pledgewatch.changes` record of a loan: key, and its JSON as the API shows it."""
    return f"loan:{loan.loan_id}".encode(), orjson.dumps(loan_to_json(loan))


def read_changes(
    records: Sequence[tuple[bytes, bytes | None]],
) -> list[Fence | Loan | str | RecordError]:
    """`read_change` of each (key, value), in order, the error in place of a record that is
    not one of ours; the fences' geometry is built in one batch (`parse_fences`)."""
    out: list[Fence | Loan | str | RecordError | None] = []
    puts: list[tuple[int, str, object]] = []  # fence puts: position in `out`, id, feature
    for key, value in records:
        kind, _, ident = key.decode("utf-8", "replace").partition(":")
        if kind == "fence" and value is not None:
            with contextlib.suppress(orjson.JSONDecodeError):
                puts.append((len(out), ident, orjson.loads(value)))
                out.append(None)
                continue
        try:
            out.append(read_change(key, value))
        except RecordError as exc:
            out.append(exc)
    try:
        fences: list[Fence] | None = parse_fences([(ident, doc) for _, ident, doc in puts])
    except ValueError:
        fences = None  # one is bad: each alone, for its own error
    for k, (pos, _, _) in enumerate(puts):
        if fences is not None:
            out[pos] = fences[k]
            continue
        key, value = records[pos]
        try:
            out[pos] = read_change(key, value)
        except RecordError as exc:
            out[pos] = exc
    return [change for change in out if change is not None]


def read_change(key: bytes, value: bytes | None) -> Fence | Loan | str:
    """A change: the fence or loan put, or the id of the fence deleted (RecordError if it is
    not one of ours)."""
    kind, _, ident = key.decode("utf-8", "replace").partition(":")
    try:
        if kind == "fence":
            return ident if value is None else parse_fence(ident, orjson.loads(value))
        if kind == "loan" and value is not None:
            return parse_loan(ident, orjson.loads(value))
    except (orjson.JSONDecodeError, ValueError) as exc:
        msg = f"not a {kind} change: {exc}"
        raise RecordError(msg) from exc
    msg = f"not a change record: key {key[:80]!r}"
    raise RecordError(msg)
