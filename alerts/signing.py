"""Webhook signatures (DESIGN §5): `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`."""

from __future__ import annotations

import hashlib
import hmac


def signature(secret: str, timestamp_s: int, body: bytes) -> str:
    """The `X-Pledgewatch-Signature` value for a body sent at `timestamp_s` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp_s}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    timestamp_s: int,
    body: bytes,
    signature_header: str,
    now_s: float,
    tolerance_s: int = 300,
) -> bool:
    """What a receiver should check: the signature matches and the timestamp is recent."""
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp_s, body), signature_header)


def headers(
    secret: str, timestamp_s: int, body: bytes, alert_id: str, alert_type: str
) -> dict[str, str]:
    """Every header of a webhook POST."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "pledgewatch-webhooks/1",
        "X-Pledgewatch-Id": alert_id,
        "X-Pledgewatch-Type": alert_type,
        "X-Pledgewatch-Timestamp": str(timestamp_s),
        "X-Pledgewatch-Signature": signature(secret, timestamp_s, body),
    }
