"""The row codecs both store backends share.

Everything here is pure: readings, rejects, alerts, states, consumer rows and whole batches
become row tuples, rows become `Fence`, `Loan`, `Webhook`, `Delivery` and `Reject`
values and consumer docs, and page cursors are encoded and checked. The SQL both backends
run is in `sql_base.py` (the alert queue's in `console_queries.py`); each backend keeps its
own connections, transactions and bulk writes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from alerts.model import Alert
from alerts.outbox import Delivery, DeliveryState, Webhook, order_key
from devices.columns import ReadingBatch
from devices.readings import GpsFix, Reading, Reject, RejectReason, StatusReport, Vibration
from engine.core.state import DeviceState, LoanState, device_to_json, loan_to_json
from engine.store.port import Batch, ConsumerRow, Page, StoredReject
from engine.store.secret_box import SecretBox, SecretBoxError, UnreadableSecret
from geofence.fence import Fence, fence_to_feature, parse_fence, parse_fences
from lending.model import Loan, parse_loan
from lending.model import loan_to_json as loan_doc

T = TypeVar("T")

DAY_MS = 86_400_000

TELEMETRY_COLUMNS = (
    "device_id",
    "stream",
    "ts_ms",
    "lat",
    "lon",
    "speed_kmh",
    "heading_deg",
    "hdop",
    "sats",
    "ignition",
    "odometer_km",
    "seq",
    "accuracy_m",
    "g",
    "duration_ms",
    "ext_power",
    "battery_v",
    "tamper",
    "vin",
)
"""Telemetry is one wide table of nullable typed columns, one per reading field.

Measured here, binary COPY of 50k gps rows into PostgreSQL: 766k rows/s wide against 389k
for key columns plus the rest as one JSON value (orjson per row, jsonb), and 30% less disk.
A NULL costs a bit of PostgreSQL's null bitmap and a byte of SQLite's record header.
"""

REJECT_COLUMNS = ("topic", "reason", "detail", "device_id", "array_index", "raw", "received_ms")
ALERT_COLUMNS = ("id", "type", "ts_ms", "detected_ms", "device_id", "loan_id", "fence_id", "body")
DELIVERY_INSERT_COLUMNS = (
    "hook_id",
    "alert_id",
    "alert_type",
    "order_key",
    "body",
    "state",
    "attempts",
    "created_ms",
    "next_at_ms",
)
DELIVERY_COLUMNS = ("id", *DELIVERY_INSERT_COLUMNS, "last_error", "last_status")


class CursorError(ValueError):
    """A page cursor that this list did not hand out (the API answers 400)."""


def telemetry_rows(readings: Sequence[Reading]) -> list[tuple[object, ...]]:
    """Telemetry rows in `TELEMETRY_COLUMNS` order; a `ReadingBatch`'s gps rows straight
    from its columns (its fixes are not built for this)."""
    if not isinstance(readings, ReadingBatch):
        return [telemetry_row(r) for r in readings]
    c = readings.columns
    rows: list[tuple[object, ...]] = [
        (d, "gps", t, la, lo, sp, h, hd, sa, ig, od, sq, ac, None, None, None, None, None, None)
        for d, t, la, lo, sp, (h, hd, sa, od, ac), ig, sq in zip(
            c.device_ids,
            c.ts_list,
            c.lat_list,
            c.lon_list,
            c.speed_list,
            c.extra,
            c.ignition,
            c.seq,
            strict=True,
        )
    ]
    for i, r in enumerate(readings.built):
        if r is not None and type(r) is not GpsFix:
            rows[i] = telemetry_row(r)
    return rows


def telemetry_row(r: Reading) -> tuple[object, ...]:
    """One telemetry row in `TELEMETRY_COLUMNS` order."""
    if type(r) is GpsFix:
        return (
            r.device_id,
            "gps",
            r.ts_ms,
            r.lat,
            r.lon,
            r.speed_kmh,
            r.heading_deg,
            r.hdop,
            r.sats,
            r.ignition,
            r.odometer_km,
            r.seq,
            r.accuracy_m,
            None,
            None,
            None,
            None,
            None,
            None,
        )
    if type(r) is Vibration:
        return (
            r.device_id,
            "vib",
            r.ts_ms,
            None,
            None,
            None,
            None,
            None,
            None,
            r.ignition,
            None,
            None,
            None,
            r.g,
            r.duration_ms,
            None,
            None,
            None,
            None,
        )
    if type(r) is StatusReport:
        return (
            r.device_id,
            "status",
            r.ts_ms,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            r.ext_power,
            r.battery_v,
            r.tamper,
            r.vin,
        )
    msg = f"not a reading: {type(r).__name__}"
    raise TypeError(msg)


def clean_text(text: str) -> str:
    """Text that any database accepts: NUL and lone surrogates (from hostile input) escaped.

    PostgreSQL refuses NUL in `text` and both backends refuse strings that are not valid
    UTF-8; one bad topic must not make a whole batch fail forever.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode(errors="backslashreplace").decode()
    return text


def reject_row(r: Reject, received_ms: int) -> tuple[object, ...]:
    """One dead-letter row in `REJECT_COLUMNS` order."""
    device_id = None if r.device_id is None else clean_text(r.device_id)
    return (
        clean_text(r.topic),
        r.reason.value,
        clean_text(r.detail),
        device_id,
        r.index,
        bytes(r.raw),
        received_ms,
    )


def encode_alerts(alerts: Iterable[Alert]) -> list[tuple[Alert, bytes]]:
    """Each alert with its body (the exact bytes sent); an id repeated in the batch kept once."""
    seen: set[str] = set()
    out: list[tuple[Alert, bytes]] = []
    for alert in alerts:
        if alert.id not in seen:
            seen.add(alert.id)
            out.append((alert, orjson.dumps(alert.to_json())))
    return out


def alert_row(alert: Alert, body: bytes) -> tuple[object, ...]:
    """One alerts row in `ALERT_COLUMNS` order; the body as JSON text."""
    return (
        alert.id,
        alert.type.value,
        alert.ts_ms,
        alert.detected_ms,
        alert.device_id,
        alert.loan_id,
        alert.fence_id,
        body.decode(),
    )


def delivery_rows(
    new: Sequence[tuple[Alert, bytes]], hooks: Sequence[Webhook], now_ms: int
) -> list[tuple[object, ...]]:
    """Outbox rows in `DELIVERY_INSERT_COLUMNS` order: one per (new alert, webhook wanting it).

    Rows come in alert order, so ids, and with them each queue's order, follow the order in
    which the alerts were raised.
    """
    return [
        (
            hook.hook_id,
            alert.id,
            alert.type.value,
            order_key(alert),
            body,
            DeliveryState.PENDING.value,
            0,
            now_ms,
            now_ms,
        )
        for alert, body in new
        for hook in hooks
        if hook.wants(alert.type.value)
    ]


def device_state_rows(states: Iterable[DeviceState], now_ms: int) -> list[tuple[str, str, int]]:
    """Checkpoint rows (id, JSON, updated_ms); the last state of a repeated id wins."""
    docs = {s.device_id: orjson.dumps(device_to_json(s)).decode() for s in states}
    return [(key, doc, now_ms) for key, doc in docs.items()]


def loan_state_rows(states: Iterable[LoanState], now_ms: int) -> list[tuple[str, str, int]]:
    """Checkpoint rows (id, JSON, updated_ms); the last state of a repeated id wins."""
    docs = {s.loan_id: orjson.dumps(loan_to_json(s)).decode() for s in states}
    return [(key, doc, now_ms) for key, doc in docs.items()]


def _plain(doc: Mapping[str, object]) -> dict[str, object]:
    """A dict orjson encodes (it takes a dict, not any mapping)."""
    return doc if isinstance(doc, dict) else dict(doc)


def consumer_state_rows(
    rows: Iterable[ConsumerRow], now_ms: int
) -> tuple[list[tuple[str, str, str, int]], list[tuple[str, str]]]:
    """Consumer state as upserts (consumer, key, JSON, updated_ms) and deletes (consumer,
    key); the last row of a repeated (consumer, key) wins, so no key is in both lists."""
    docs = {
        (r.consumer, r.key): None if r.doc is None else orjson.dumps(_plain(r.doc)).decode()
        for r in rows
    }
    upserts = [(c, k, doc, now_ms) for (c, k), doc in docs.items() if doc is not None]
    deletes = [(c, k) for (c, k), doc in docs.items() if doc is None]
    return upserts, deletes


@dataclass(frozen=True, slots=True)
class BatchRows:
    """A `Batch` encoded: what a backend's `commit_batch` writes, in its transaction."""

    readings: list[tuple[object, ...]]  # `TELEMETRY_COLUMNS` order
    rejects: list[tuple[object, ...]]  # `REJECT_COLUMNS` order
    alerts: list[tuple[Alert, bytes]]
    devices: list[tuple[str, str, int]]
    loans: list[tuple[str, str, int]]
    evicted: list[tuple[str]]  # ids of device checkpoint rows to delete
    consumers: list[tuple[str, str, str, int]]  # consumer state upserts
    consumer_deletes: list[tuple[str, str]]  # (consumer, key) of consumer rows to delete


def batch_rows(batch: Batch) -> BatchRows:
    """Every row of a batch, encoded before the write transaction, which then holds its
    locks only for the writes."""
    consumers, consumer_deletes = consumer_state_rows(batch.consumer_rows, batch.now_ms)
    return BatchRows(
        readings=telemetry_rows(batch.readings),
        rejects=[reject_row(r, batch.now_ms) for r in batch.rejects],
        alerts=encode_alerts(batch.alerts),
        devices=device_state_rows(batch.devices, batch.now_ms),
        loans=loan_state_rows(batch.loans, batch.now_ms),
        evicted=[(device_id,) for device_id in batch.evicted],
        consumers=consumers,
        consumer_deletes=consumer_deletes,
    )


def fence_row(fence: Fence, now_ms: int) -> tuple[str, str, str, int]:
    """(id, kind, feature JSON, updated_ms)."""
    return (
        fence.fence_id,
        fence.kind.value,
        orjson.dumps(fence_to_feature(fence)).decode(),
        now_ms,
    )


def loan_row(loan: Loan, now_ms: int) -> tuple[str, str, str, str, int]:
    """(id, vin, status, doc JSON, updated_ms)."""
    doc = orjson.dumps(loan_doc(loan)).decode()
    return (loan.loan_id, loan.vin, loan.status.value, doc, now_ms)


def webhook_row(hook: Webhook, box: SecretBox) -> tuple[str, str, str, str | None]:
    """(id, url, secret sealed by `box`, types as a JSON array or None for all)."""
    types = None if hook.types is None else orjson.dumps(sorted(hook.types)).decode()
    return (hook.hook_id, hook.url, box.seal(hook.secret, hook.hook_id), types)


# rows out


def _json(text: str | bytes) -> Any:
    return orjson.loads(text)


def fence_from_row(fence_id: str, feature: str | bytes) -> Fence:
    """A stored fence, validated again (the geometry is rebuilt from its GeoJSON)."""
    return parse_fence(fence_id, _json(feature))


def fences_from_rows(rows: Sequence[tuple[str, str | bytes]]) -> list[Fence]:
    """Stored fences, as `fence_from_row` each, their geometry built in one batch."""
    return parse_fences([(fence_id, _json(feature)) for fence_id, feature in rows])


def loan_from_row(loan_id: str, doc: str | bytes) -> Loan:
    """A stored loan."""
    return parse_loan(loan_id, _json(doc))


def consumer_doc_from_row(doc: str | bytes) -> dict[str, object]:
    """A stored consumer state document."""
    value: dict[str, object] = _json(doc)
    return value


def webhook_from_row(row: Sequence[Any], box: SecretBox) -> Webhook:
    """A webhook from (id, url, sealed secret, types JSON), its secret opened by `box`.

    A secret this key cannot open becomes an `UnreadableSecret`: the webhook still gets
    its deliveries written, and each one fails saying why, rather than the whole store or
    dispatcher failing."""
    hook_id, url, stored, types = row
    try:
        secret: str = box.open(stored, hook_id)
    except SecretBoxError as exc:
        secret = UnreadableSecret(str(exc))
    return Webhook(hook_id, url, secret, None if types is None else frozenset(_json(types)))


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    """A delivery from a row in `DELIVERY_COLUMNS` order."""
    return Delivery(
        delivery_id=row[0],
        hook_id=row[1],
        alert_id=row[2],
        alert_type=row[3],
        order_key=row[4],
        body=bytes(row[5]),
        state=DeliveryState(row[6]),
        attempts=row[7],
        created_ms=row[8],
        next_at_ms=row[9],
        last_error=row[10],
        last_status=row[11],
    )


def reject_from_row(row: Sequence[Any]) -> StoredReject:
    """A dead letter from a row in `REJECT_COLUMNS` order, then `received_ms`."""
    topic, reason, detail, device_id, index, raw, received_ms = row[:7]
    reject = Reject(topic, RejectReason(reason), detail, bytes(raw), device_id, index)
    return StoredReject(reject, int(received_ms))


# paging


def encode_cursor(kind: str, *key: str | int) -> str:
    """An opaque cursor: the last sort key of a page, tagged with the list it belongs to."""
    return base64.urlsafe_b64encode(orjson.dumps([kind, *key])).rstrip(b"=").decode()


def decode_cursor(kind: str, cursor: str, types: tuple[type, ...]) -> tuple[Any, ...]:
    """The sort key in a cursor from `encode_cursor(kind, ...)`; `CursorError` otherwise."""
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        doc = None
    if (
        isinstance(doc, list)
        and len(doc) == len(types) + 1
        and doc[0] == kind
        and all(type(v) is t for v, t in zip(doc[1:], types, strict=True))
        and all(-(2**63) <= v < 2**63 for v in doc[1:] if type(v) is int)  # a 64-bit column
    ):
        return tuple(doc[1:])
    msg = f"invalid cursor {cursor[:40]!r} for this list: pass the `next` value of its last page"
    raise CursorError(msg)


def check_limit(limit: int) -> int:
    """A page size of at least one."""
    if limit < 1:
        msg = f"page limit must be at least 1, got {limit}"
        raise ValueError(msg)
    return limit


def make_page(
    rows: Sequence[Sequence[Any]],
    limit: int,
    item: Callable[[Sequence[Any]], T],
    cursor: Callable[[Sequence[Any]], str],
) -> Page[T]:
    """A page from up to `limit + 1` rows: the extra row only says that there is a next page."""
    items = [item(row) for row in rows[:limit]]
    return Page(items, cursor(rows[limit - 1]) if len(rows) > limit else None)
