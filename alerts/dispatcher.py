"""The outbox dispatcher: signed webhooks, at least once, in order per loan (DESIGN §5).

A webhook's URL picks its sink (`alerts.sender`): `http(s)://` POSTs here, `mqtt(s)://`
publishes to an MQTT topic (`alerts.mqtt_sink`), `kafka(s)://` produces to a Kafka topic
(`alerts.kafka_sink`); everything below applies to all three.

One worker thread per webhook endpoint, so a slow or dead endpoint delays only itself, and
never the engine, which only writes the outbox. A worker asks the store for the heads of its
per-loan queues that are due, POSTs them over kept-alive connections (a few at once:
different loans never wait for each other), and records the round's results in one
transaction: delivered, or failed with the next attempt after an exponential backoff with
jitter, or, past the maximum age, dead (the API lists dead deliveries and can redeliver them).

Several dispatchers may drain one outbox (two processes on one PostgreSQL database): a
worker claims the heads it fetches for as long as its round can take, so no other worker
sends them, nor the next delivery of the same loan, meanwhile. Recording the round ends the
claims; a dispatcher that dies leaves claims that expire, and its deliveries come back.
"""

from __future__ import annotations

import http.client
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from urllib.parse import urlsplit

from alerts.address_policy import AddressPolicy, AddressRefusedError
from alerts.kafka_sink import KAFKA_SCHEMES, KafkaEndpoint
from alerts.mqtt_sink import MQTT_SCHEMES, MqttEndpoint
from alerts.outbox import (
    Attempt,
    Delivery,
    DeliveryCounters,
    DeliveryState,
    Outbox,
    OutboxError,
    Webhook,
)
from alerts.retry import RetryPolicy, backoff_s
from alerts.sender import Answer, Sender
from alerts.signing import headers
from alerts.sink_credentials import SinkCredentials

_log = logging.getLogger(__name__)

RESPONSE_READ_BYTES = 64 * 1024  # of a response body; a longer one closes the connection
RESPONSE_KEEP_BYTES = 400  # of it, kept with a failed attempt (the dead-letter list shows it)
CLAIM_MARGIN_S = 5.0  # a claim outlasts the longest round by this much


def claim_ms(policy: RetryPolicy, limit: int) -> int:
    """How long a worker claims the `limit` deliveries of one round: every thread of the
    round POSTs its share in turn, each POST at most twice `timeout_s` (a stale kept-alive
    connection is retried once), plus a margin. A round that outlives its claim may see a
    delivery sent again by another dispatcher (at least once allows it); one that dies
    releases its claims after this long."""
    turns = math.ceil(limit / max(1, policy.parallel))
    return round((turns * 2 * policy.timeout_s + CLAIM_MARGIN_S) * 1000)


class CheckedHTTPConnection(http.client.HTTPConnection):
    """Connects only to an address the policy allows: the one it has just checked (so a
    name that resolves elsewhere a moment later gains nothing)."""

    policy = AddressPolicy()

    def connect(self) -> None:
        """Resolve, check, connect to the checked address; AddressRefusedError if refused."""
        checked = self.policy.resolve(self.host, self.port)
        self.sock = socket.create_connection((str(checked[0]), self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class CheckedHTTPSConnection(http.client.HTTPSConnection, CheckedHTTPConnection):
    """The same over TLS: the certificate is still verified against the host name."""


class Endpoint:
    """Keep-alive HTTP/1.1 connections to one webhook URL, one per sending thread.

    `http.client` rather than a full client library: a webhook POST is one request with a
    small body, and the sending cost is CPU the engine's process shares with ingestion.
    """

    def __init__(self, url: str, timeout_s: float, policy: AddressPolicy | None = None) -> None:
        self.url = url
        self.policy = policy or AddressPolicy()
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        try:
            self.port = parts.port
        except ValueError:
            self.port = -1
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # The API refuses such URLs; one in the store anyway fails its deliveries, not us.
        self.invalid = parts.scheme not in {"http", "https"} or not self.host or self.port == -1
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._all: list[CheckedHTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> CheckedHTTPConnection:
        conn: CheckedHTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            make = CheckedHTTPSConnection if self.https else CheckedHTTPConnection
            conn = make(self.host, self.port, timeout=self.timeout_s)
            conn.policy = self.policy
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def post(self, body: bytes, sent: dict[str, str]) -> tuple[int, bytes]:
        """POST `body`; the response status and the start of its body (at most
        `RESPONSE_KEEP_BYTES`). A kept-alive connection the server closed while idle is
        reopened once; any other failure raises OSError or HTTPException."""
        if self.invalid:
            msg = f"{self.url!r} is not an http:// or https:// URL with a host and port"
            raise http.client.InvalidURL(msg)
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request("POST", self.target, body, sent)
                response = conn.getresponse()
                head = response.read(RESPONSE_READ_BYTES)
                if not response.isclosed():
                    # A longer body is not read: the connection cannot be reused for it.
                    response.will_close = True
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                stale = isinstance(
                    exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError
                )
                if reused and stale and attempt == 1:
                    continue  # at least once: a resend is allowed, and ids are stable
                raise
            if response.will_close:
                self._drop()
            return response.status, head[:RESPONSE_KEEP_BYTES]
        raise AssertionError  # pragma: no cover  # the loop returns or raises

    def send(self, body: bytes, sent: dict[str, str]) -> Answer:
        """POST `body` and judge the status (the `Sender` seam): delivered on a 2xx,
        permanent on a 4xx other than 408 and 429, with the response kept."""
        status, answer = self.post(body, sent)
        if 200 <= status < 300:
            return Answer(delivered=True, status=status)
        text = answer.decode("utf-8", "replace").strip()
        error = f"HTTP {status}" + (f": {text}" if text else "")
        return Answer(delivered=False, permanent=permanent(status), status=status, error=error)

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


def permanent(status: int) -> bool:
    """A refusal that no retry will change (DESIGN §5): a 4xx other than 408 and 429."""
    return 400 <= status < 500 and status not in {408, 429}


def sender(
    url: str,
    timeout_s: float,
    policy: AddressPolicy,
    name: str = "sink",
    credentials: SinkCredentials | None = None,
) -> Sender:
    """The sink a webhook URL names: an MQTT topic for `mqtt(s)://`, a Kafka topic for
    `kafka(s)://` (both logging in with their broker's entry in `credentials`, if any), else
    HTTP POSTs."""
    scheme = urlsplit(url).scheme
    if scheme in MQTT_SCHEMES:
        return MqttEndpoint(url, timeout_s, policy, name, credentials)
    if scheme in KAFKA_SCHEMES:
        return KafkaEndpoint(url, timeout_s, policy, name, credentials)
    return Endpoint(url, timeout_s, policy)


def attempt(
    endpoint: Sender,
    hook: Webhook,
    delivery: Delivery,
    policy: RetryPolicy,
    clock: Callable[[], float],
) -> Attempt:
    """Send one delivery, signed, and judge the result: delivered when the sink took it;
    dead at once on a permanent refusal, with the response kept; otherwise a retry after
    backoff, or dead once the delivery is older than the policy's maximum age."""
    ts = int(clock())
    try:
        # Signing raises ValueError when the store could not open this webhook's secret (a
        # wrong key): this delivery fails with that reason, the worker goes on.
        sent = headers(hook.secret, ts, delivery.body, delivery.alert_id, delivery.alert_type)
        answer = endpoint.send(delivery.body, sent)
    except AddressRefusedError as exc:
        now_ms = int(clock() * 1000)
        error = f"refused by the address policy: {exc}"[:500]
        return Attempt(delivery.delivery_id, now_ms, DeliveryState.DEAD, now_ms, None, error)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # ValueError covers UnicodeError: a host name that does not encode is this delivery's
        # failure, not the worker's.
        answer = Answer(delivered=False, error=f"{type(exc).__name__}: {exc}")
    now_ms = int(clock() * 1000)
    status = answer.status
    if answer.delivered:
        return Attempt(delivery.delivery_id, now_ms, DeliveryState.DELIVERED, now_ms, status)
    error = (answer.error or "not delivered")[:500]
    too_old = (now_ms - delivery.created_ms) / 1000 >= policy.max_age_s
    if too_old or answer.permanent:
        return Attempt(delivery.delivery_id, now_ms, DeliveryState.DEAD, now_ms, status, error)
    retry_at = now_ms + int(policy.retry_delay_s(delivery.attempts + 1) * 1000)
    return Attempt(delivery.delivery_id, now_ms, DeliveryState.PENDING, retry_at, status, error)


class _Worker:
    """Delivers to one endpoint."""

    def __init__(self, dispatcher: Dispatcher, hook: Webhook) -> None:
        self.d = dispatcher
        self.hook = hook
        self.stop = threading.Event()
        self.wake = threading.Event()
        d = dispatcher
        self.endpoint = sender(
            hook.url, d.policy.timeout_s, d.addresses, hook.hook_id, d.credentials
        )
        self.pool = ThreadPoolExecutor(dispatcher.policy.parallel, f"webhook-{hook.hook_id}")
        self.thread = threading.Thread(target=self.run, name=f"webhook-{hook.hook_id}", daemon=True)

    def run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                sent = self.round()
                failures = 0
            except OutboxError as exc:
                _log.warning("webhook %s: store unavailable (%s)", self.hook.hook_id, exc)
                sent = 0
            except Exception:  # noqa: BLE001  # a worker must outlive anything; logged in full
                # A bug or an input nobody foresaw must not end this endpoint's deliveries
                # for good: log it, back off, go on (what was not recorded is sent again).
                _log.exception("webhook %s: the delivery round failed", self.hook.hook_id)
                self.stop.wait(backoff_s(failures, 0.5, 60.0))
                failures += 1
                sent = 0
            if not sent:
                self.wake.wait(self.d.poll_s)
                self.wake.clear()
        self.pool.shutdown(wait=True)
        self.endpoint.close()

    def round(self) -> int:
        """Send every due head once and record the results together; how many were sent.

        The next round fetches the heads again, so a loan's next alert is never sent before
        the result of the one ahead of it is recorded (per-loan order)."""
        d = self.d
        limit = d.policy.parallel * 4
        claim = claim_ms(d.policy, limit)
        due = d.store.due_deliveries(self.hook.hook_id, d.now_ms(), limit, claim_ms=claim)
        if not due:
            return 0
        send = partial(attempt, self.endpoint, self.hook, policy=d.policy, clock=d.clock)
        attempts = list(self.pool.map(send, due) if len(due) > 1 else map(send, due))
        d.store.record_attempts(attempts)
        for a, delivery in zip(attempts, due, strict=True):
            d.counters.add(a.state.value if a.state is not DeliveryState.PENDING else "failed")
            if a.state is DeliveryState.DEAD:
                _log.error(
                    "webhook %s: gave up on %s after %.0f s: %s",
                    self.hook.hook_id,
                    delivery.alert_id,
                    (a.at_ms - delivery.created_ms) / 1000,
                    a.error,
                )
        return len(due)


class Dispatcher:
    """Keeps one worker per registered webhook, reading the store's outbox."""

    def __init__(
        self,
        store: Outbox,
        policy: RetryPolicy | None = None,
        poll_s: float = 0.2,
        clock: Callable[[], float] = time.time,
        addresses: AddressPolicy | None = None,
        credentials: SinkCredentials | None = None,
    ) -> None:
        self.store = store
        self.policy = policy or RetryPolicy()
        self.addresses = addresses or AddressPolicy()  # which addresses webhooks may reach
        self.credentials = credentials  # logins of the broker sinks (`--sink-credentials`)
        self.poll_s = poll_s
        self.clock = clock
        self.counters = DeliveryCounters()
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def now_ms(self) -> int:
        """The wall clock, epoch milliseconds."""
        return int(self.clock() * 1000)

    def start(self) -> None:
        """Start the supervisor that keeps workers in line with the registered webhooks."""
        self.sync()
        self._thread = threading.Thread(target=self._supervise, name="dispatcher", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.sync()
            except OutboxError as exc:
                _log.warning("dispatcher: store unavailable (%s)", exc)

    def sync(self) -> None:
        """Start workers for new or changed webhooks, stop those of deleted ones."""
        hooks = {h.hook_id: h for h in self.store.list_webhooks()}
        with self._lock:
            for hook_id, worker in list(self._workers.items()):
                if hooks.get(hook_id) != worker.hook or not worker.thread.is_alive():
                    worker.stop.set()
                    worker.wake.set()
                    del self._workers[hook_id]
            for hook_id, hook in hooks.items():
                if hook_id not in self._workers:
                    worker = _Worker(self, hook)
                    self._workers[hook_id] = worker
                    worker.thread.start()

    def wake(self) -> None:
        """New outbox rows were committed: look now rather than at the next poll."""
        with self._lock:
            for worker in self._workers.values():
                worker.wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every worker after its requests in flight."""
        self._stop.set()
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.stop.set()
            worker.wake.set()
        for worker in workers:
            worker.thread.join(timeout_s)
        if self._thread is not None:
            self._thread.join(timeout_s)
