"""A webhook receiver for pledgewatch alerts: an HTTP server that checks DESIGN §5 signatures.

The demo prints what it receives, the tests record it, the load test times it. A POST whose
signature (or timestamp) does not verify is refused with 401, counted in `refused`, kept with
its reason in `refusals` (the last few), and never recorded as a delivery or handed on.
ReceivedWebhook is at least once: `deliveries` keeps every accepted POST with its raw body, and
`first_seen` tells a hook whether an alert id is new (receivers deduplicate on it).
"""

from __future__ import annotations

import http.server
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

import orjson

from alerts.signing import verify

Respond = Callable[[int], "int | float"]
"""The response to the n-th request (1-based): a status code, or seconds to stall then 200."""


REFUSALS_KEPT = 100


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    """One accepted webhook POST: the alert, its headers, and when it arrived (unix seconds)."""

    alert: dict[str, Any]
    headers: dict[str, str]
    received_s: float
    first_seen: bool  # False for a redelivery of an alert id already received
    body: bytes = b""  # as it arrived: what the signature covers


class RefusalReason(StrEnum):
    """Why a POST was answered 401."""

    MISSING_HEADERS = "missing_headers"  # no timestamp or signature header
    STALE_TIMESTAMP = "stale_timestamp"  # more than `tolerance_s` from our clock
    BAD_SIGNATURE = "bad_signature"  # another secret, or a body changed on the way
    NOT_AN_ALERT = "not_an_alert"  # signed, but not a JSON object


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused POST: why, its headers, and when it arrived (unix seconds)."""

    reason: RefusalReason
    headers: dict[str, str]
    received_s: float


@dataclass(slots=True)
class ReceiverCounts:
    """What the receiver has seen so far."""

    requests: int = 0
    accepted: int = 0
    unique: int = 0
    refused: int = 0  # bad or missing signature, stale timestamp, or a body that is not JSON
    answered_error: int = 0  # a `respond` rule answered non-2xx on purpose


@dataclass(eq=False)
class WebhookReceiver:
    """Serve on 127.0.0.1 (a free port by default) on a thread; `start`, then `url`."""

    secret: str
    on_delivery: Callable[[ReceivedWebhook], None] | None = None
    respond: Respond | None = None
    keep: bool = True  # keep every accepted ReceivedWebhook in `deliveries`
    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/hook"
    tolerance_s: int = 300
    counts: ReceiverCounts = field(default_factory=ReceiverCounts, init=False)
    lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _deliveries: list[ReceivedWebhook] = field(default_factory=list, init=False)
    _refusals: deque[Refusal] = field(
        default_factory=lambda: deque(maxlen=REFUSALS_KEPT), init=False
    )
    _seen: set[str] = field(default_factory=set, init=False)
    _server: http.server.ThreadingHTTPServer | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """Where the engine should POST (after `start`)."""
        return f"http://{self.host}:{self.port}{self.path}"

    def start(self) -> Self:
        """Listen and serve on a daemon thread; returns self."""
        server = http.server.ThreadingHTTPServer((self.host, self.port), _handler(self))
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def deliveries(self) -> list[ReceivedWebhook]:
        """A copy of the accepted deliveries so far, in arrival order."""
        with self.lock:
            return list(self._deliveries)

    def refusals(self) -> list[Refusal]:
        """The last refused POSTs (up to REFUSALS_KEPT), in arrival order; `counts.refused`
        counts them all."""
        with self.lock:
            return list(self._refusals)

    def ids(self) -> list[str]:
        """The alert ids of the accepted deliveries, in arrival order (repeats included)."""
        return [str(d.alert.get("id")) for d in self.deliveries()]

    def wait_for(
        self, predicate: Callable[[list[ReceivedWebhook]], bool], timeout_s: float
    ) -> bool:
        """Poll until `predicate(deliveries)` holds or `timeout_s` passes; its last value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self.deliveries()):
                return True
            time.sleep(0.05)
        return predicate(self.deliveries())

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        """Judge one POST and record it; the status to answer. Public for the handler only."""
        with self.lock:
            self.counts.requests += 1
            n = self.counts.requests
        action = self.respond(n) if self.respond is not None else 200
        if isinstance(action, float):
            time.sleep(action)  # a stall: the sender times out (or not) and retries
            action = 200
        if not 200 <= action < 300:
            with self.lock:
                self.counts.answered_error += 1
            return action
        now = time.time()
        alert = _verified(self.secret, headers, body, now, self.tolerance_s)
        if isinstance(alert, RefusalReason):
            with self.lock:
                self.counts.refused += 1
                self._refusals.append(Refusal(alert, headers, now))
            return 401
        alert_id = str(alert.get("id"))
        with self.lock:
            first = alert_id not in self._seen
            self._seen.add(alert_id)
            self.counts.accepted += 1
            self.counts.unique += first
            delivery = ReceivedWebhook(alert, headers, now, first, body)
            if self.keep:
                self._deliveries.append(delivery)
        if self.on_delivery is not None:
            self.on_delivery(delivery)
        return action


def _verified(
    secret: str, headers: dict[str, str], body: bytes, now_s: float, tolerance_s: int
) -> dict[str, Any] | RefusalReason:
    """The alert if the signature and timestamp verify and the body is a JSON object; else
    why not."""
    lower = {k.lower(): v for k, v in headers.items()}
    stamp = lower.get("x-pledgewatch-timestamp", "")
    signature = lower.get("x-pledgewatch-signature", "")
    if not stamp.isdigit() or not signature:
        return RefusalReason.MISSING_HEADERS
    if abs(now_s - int(stamp)) > tolerance_s:
        return RefusalReason.STALE_TIMESTAMP
    if not verify(secret, int(stamp), body, signature, now_s, tolerance_s):
        return RefusalReason.BAD_SIGNATURE
    try:
        alert = orjson.loads(body)
    except orjson.JSONDecodeError:
        return RefusalReason.NOT_AN_ALERT
    return alert if isinstance(alert, dict) else RefusalReason.NOT_AN_ALERT


def _handler(receiver: WebhookReceiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the dispatcher's client expects

        def do_POST(self) -> None:  # the http.server API
            length = self.headers.get("Content-Length", "")
            body = self.rfile.read(int(length)) if length.isdigit() else b""
            headers = dict(self.headers.items())  # names as the sender spelled them
            status = receiver.handle(headers, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

        def handle_one_request(self) -> None:
            # A sender that timed out has closed the socket we answer on: that is its choice.
            try:
                super().handle_one_request()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler
