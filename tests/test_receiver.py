"""The shared webhook receiver over real HTTP: signed POSTs are recorded, bad ones refused."""

from __future__ import annotations

import time

import httpx
import orjson

from alerts.signing import headers, verify
from simulator.harness.receiver import ReceivedWebhook, RefusalReason, WebhookReceiver

SECRET = "whsec-receiver-test"


def _alert(alert_id: str = "a-1") -> bytes:
    return orjson.dumps({"id": alert_id, "type": "shock", "ts": "2026-11-29T08:15:00Z"})


def _post(url: str, body: bytes, secret: str = SECRET, ts: int | None = None) -> int:
    sent = headers(secret, int(time.time()) if ts is None else ts, body, "a-1", "shock")
    return httpx.post(url, content=body, headers=sent, timeout=5).status_code


def test_signed_post_is_recorded_and_handed_on() -> None:
    handed: list[ReceivedWebhook] = []
    with WebhookReceiver(SECRET, on_delivery=handed.append) as rx:
        assert _post(rx.url, _alert()) == 200
        assert _post(rx.url, _alert()) == 200  # a redelivery: recorded, not first seen
    assert rx.ids() == ["a-1", "a-1"]
    assert [d.first_seen for d in handed] == [True, False]
    assert handed[0].alert["type"] == "shock"
    assert handed[0].headers["X-Pledgewatch-Id"] == "a-1"
    assert abs(handed[0].received_s - time.time()) < 10
    assert (rx.counts.accepted, rx.counts.unique, rx.counts.refused) == (2, 1, 0)


def test_bad_signatures_are_refused_counted_and_never_recorded() -> None:
    handed: list[ReceivedWebhook] = []
    with WebhookReceiver(SECRET, on_delivery=handed.append) as rx:
        body = _alert()
        assert _post(rx.url, body, secret="not-the-secret") == 401
        assert _post(rx.url, body, ts=int(time.time()) - 3600) == 401  # stale timestamp
        tampered = headers(SECRET, int(time.time()), body, "a-1", "shock")
        assert httpx.post(rx.url, content=_alert("a-2"), headers=tampered).status_code == 401
        assert httpx.post(rx.url, content=body).status_code == 401  # no headers at all
        assert _post(rx.url, b"not json") == 401  # signed, but not an alert
        assert _post(rx.url, body) == 200
    assert rx.counts.refused == 5
    assert [r.reason for r in rx.refusals()] == [
        RefusalReason.BAD_SIGNATURE,
        RefusalReason.STALE_TIMESTAMP,
        RefusalReason.BAD_SIGNATURE,
        RefusalReason.MISSING_HEADERS,
        RefusalReason.NOT_AN_ALERT,
    ]
    assert rx.ids() == ["a-1"]
    assert len(handed) == 1


def test_a_delivery_keeps_the_body_its_signature_covers() -> None:
    with WebhookReceiver(SECRET) as rx:
        body = _alert()
        assert _post(rx.url, body) == 200
    (d,) = rx.deliveries()
    assert d.body == body
    stamp = int(d.headers["X-Pledgewatch-Timestamp"])
    assert verify(SECRET, stamp, d.body, d.headers["X-Pledgewatch-Signature"], d.received_s)
    assert not verify("another", stamp, d.body, d.headers["X-Pledgewatch-Signature"], d.received_s)


def test_respond_rule_answers_errors_without_recording() -> None:
    rx = WebhookReceiver(SECRET, respond=lambda n: 503 if n == 1 else 200).start()
    try:
        assert _post(rx.url, _alert()) == 503
        assert _post(rx.url, _alert()) == 200
    finally:
        rx.stop()
    assert rx.counts.answered_error == 1
    assert rx.counts.requests == 2
    assert rx.ids() == ["a-1"]
