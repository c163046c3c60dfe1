"""The outbox dispatcher against a real HTTP server and both real stores: signed POSTs in
order per loan, kept-alive connections (and a server that drops them), retries, dead letters."""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson
import pytest

from alerts.address_policy import AddressPolicy, parse_allow
from alerts.dispatcher import RESPONSE_KEEP_BYTES, RESPONSE_READ_BYTES, Dispatcher, Endpoint
from alerts.outbox import Delivery, DeliveryState, Webhook
from alerts.retry import RetryPolicy
from alerts.signing import headers, verify
from engine.store.port import Batch, Store
from tests.conftest import OpenStore
from tests.factories import alert

SECRET = "whsec-dispatch"
LOOPBACK = AddressPolicy(parse_allow("127.0.0.0/8"))  # the test servers are local
FAST = RetryPolicy(base_s=0.05, cap_s=0.2, max_age_s=60.0, timeout_s=2.0)


@dataclass
class Hit:
    """One request as the server saw it."""

    alert_id: str
    loan_id: str | None
    signature_ok: bool
    client_port: int


@dataclass
class Server:
    """An HTTP/1.1 server with keep-alive. `behave(n)` answers the n-th request (1-based):
    a status, or "drop" for a 200 after which the server silently closes the connection
    (as an idle timeout on a real server does), so the sender's next use of it fails."""

    behave: Callable[[int], int | str] = lambda _n: 200
    answer: Callable[[int], bytes] = lambda _status: b""  # the response body, by status
    hits: list[Hit] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with server.lock:
                    server.requests += 1
                    n = server.requests
                action = server.behave(n)
                status = 200 if action == "drop" else int(action)
                if 200 <= status < 300:
                    ok = verify(
                        SECRET,
                        int(self.headers["X-Pledgewatch-Timestamp"]),
                        body,
                        self.headers["X-Pledgewatch-Signature"],
                        time.time(),
                    )
                    doc = orjson.loads(body)
                    assert doc["id"] == self.headers["X-Pledgewatch-Id"]
                    hit = Hit(doc["id"], doc["loan_id"], ok, self.client_address[1])
                    with server.lock:
                        server.hits.append(hit)
                answer = server.answer(status)
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                if action == "drop":
                    self.close_connection = True

            def log_message(self, *_args: object) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/hooks/pledge?src=test"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def until(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def raise_alerts(store: Store, loans: dict[str, int]) -> list[str]:
    """Commit alerts in turn over the loans (`loan id: how many`); their ids, raised order."""
    ids = []
    n = 0
    queues = {loan: list(range(count)) for loan, count in loans.items()}
    while any(queues.values()):
        for loan, left in queues.items():
            if left:
                left.pop()
                n += 1
                a = alert(n, loan_id=loan, device=f"trk-{loan}")
                store.commit_batch(Batch(now_ms=int(time.time() * 1000), alerts=[a]))
                ids.append(a.id)
    return ids


def run(store: Store, policy: RetryPolicy = FAST) -> Dispatcher:
    d = Dispatcher(store, policy, poll_s=0.05, addresses=LOOPBACK)
    d.start()
    return d


def deliver_all(
    store: Store,
    behave: Callable[[int], int | str],
    loans: dict[str, int],
    policy: RetryPolicy = FAST,
) -> tuple[Server, Dispatcher, list[str]]:
    """Raise alerts for one webhook on a server that answers by `behave`; run the dispatcher
    until the outbox is empty. The server (closed), dispatcher (stopped) and alert ids."""
    server = Server(behave=behave)
    try:
        store.put_webhook(Webhook("ops", server.url, SECRET))
        ids = raise_alerts(store, loans)
        d = run(store, policy)
        try:
            until(lambda: store.outbox_pending() == 0, "every delivery recorded")
        finally:
            d.stop()
    finally:
        server.close()
    return server, d, ids


def per_loan(ids: list[str], hits: list[Hit]) -> dict[str | None, list[str]]:
    order: dict[str | None, list[str]] = {}
    for hit in sorted(hits, key=lambda h: ids.index(h.alert_id)):
        order.setdefault(hit.loan_id, []).append(hit.alert_id)
    return order


def test_signed_posts_in_order_per_loan_over_kept_alive_connections(
    store: Store, server: Server
) -> None:
    store.put_webhook(Webhook("ops", server.url, SECRET))
    ids = raise_alerts(store, {"L-1": 8, "L-2": 8, "L-3": 4})
    d = run(store)
    try:
        until(lambda: store.outbox_pending() == 0, "every delivery recorded")
    finally:
        d.stop()
    assert sorted(h.alert_id for h in server.hits) == sorted(ids)  # each once
    assert all(h.signature_ok for h in server.hits)
    arrival: dict[str | None, list[str]] = {}
    for h in server.hits:
        arrival.setdefault(h.loan_id, []).append(h.alert_id)
    assert arrival == per_loan(ids, server.hits)  # arrival order = raised order, per loan
    assert d.counters.snapshot() == {"delivered": len(ids)}
    # Kept alive: far fewer connections than requests (at most one per sending thread).
    assert len({h.client_port for h in server.hits}) <= FAST.parallel < len(ids)


def test_two_dispatchers_on_one_outbox_deliver_each_alert_once_in_order_per_loan(
    open_store: OpenStore,
) -> None:
    """Two processes' worth of dispatchers (each with its own store on one database) claim
    what they send: every alert reaches the webhook once, and each loan's in order."""
    first, second = open_store(), open_store()

    def slowly(_n: int) -> int:
        time.sleep(0.01)  # both dispatchers find the same heads due meanwhile
        return 200

    server = Server(behave=slowly)
    try:
        first.put_webhook(Webhook("ops", server.url, SECRET))
        ids = raise_alerts(first, {f"L-{k:02d}": 3 for k in range(16)})
        # Rounds of 8 heads (parallel 2): neither dispatcher can claim all 16 at once.
        policy = RetryPolicy(base_s=0.05, cap_s=0.2, max_age_s=60.0, timeout_s=2.0, parallel=2)
        dispatchers = [run(first, policy), run(second, policy)]
        try:
            until(lambda: first.outbox_pending() == 0, "every delivery recorded")
        finally:
            for d in dispatchers:
                d.stop()
    finally:
        server.close()
    sent = Counter(h.alert_id for h in server.hits)
    assert sent == dict.fromkeys(ids, 1)
    arrival: dict[str | None, list[str]] = {}
    for h in server.hits:
        arrival.setdefault(h.loan_id, []).append(h.alert_id)
    assert arrival == per_loan(ids, server.hits)
    assert all(d.counters.snapshot().get("delivered", 0) > 0 for d in dispatchers)


def test_a_connection_the_server_dropped_is_reopened_without_a_failed_attempt(
    store: Store,
) -> None:
    server, d, ids = deliver_all(store, lambda _n: "drop", {"L-1": 5})
    assert [h.alert_id for h in server.hits] == ids
    assert d.counters.snapshot() == {"delivered": 5}  # no attempt failed
    assert len({h.client_port for h in server.hits}) == 5  # a new connection each time


def test_failures_are_retried_with_backoff_and_keep_the_loan_order(
    store: Store,
) -> None:
    server, d, ids = deliver_all(store, lambda n: 500 if n in {1, 2} else 200, {"L-1": 3})
    assert [h.alert_id for h in server.hits] == ids  # the head waited for its retries
    assert d.counters.snapshot() == {"failed": 2, "delivered": 3}


def test_an_unusable_url_goes_dead_without_stopping_other_endpoints(
    store: Store, server: Server
) -> None:
    # The API refuses such a URL; one written to the store by other means must not hurt.
    store.put_webhook(Webhook("broken", "ftp://nowhere/x", SECRET))
    store.put_webhook(Webhook("ops", server.url, SECRET))
    ids = raise_alerts(store, {"L-1": 2})
    d = run(store, RetryPolicy(base_s=0.05, cap_s=0.1, max_age_s=0.0, timeout_s=2.0))
    try:
        until(lambda: store.outbox_pending() == 0, "every delivery recorded")
    finally:
        d.stop()
    assert [h.alert_id for h in server.hits] == ids
    dead = store.list_dead(None, 10).items
    assert sorted(x.alert_id for x in dead) == sorted(ids)
    assert all(x.hook_id == "broken" and x.state is DeliveryState.DEAD for x in dead)
    assert all("not an http:// or https:// URL" in (x.last_error or "") for x in dead)
    assert d.counters.snapshot() == {"delivered": 2, "dead": 2}


def test_a_stalled_endpoint_times_out_and_is_retried(store: Store) -> None:
    stall = threading.Event()

    def behave(n: int) -> int:
        if n == 1:
            stall.wait(3.0)  # longer than the sender's timeout, which has given up by then
            return 504
        return 200

    slow = RetryPolicy(base_s=0.05, cap_s=0.1, max_age_s=60.0, timeout_s=0.5)
    try:
        server, d, ids = deliver_all(store, behave, {"L-1": 2}, slow)
    finally:
        stall.set()
    assert [h.alert_id for h in server.hits] == ids
    counts = d.counters.snapshot()
    assert counts["delivered"] == 2
    assert counts["failed"] >= 1


def test_a_permanent_refusal_is_dead_at_once_with_the_response_and_the_loan_moves_on(
    store: Store,
) -> None:
    """A 422 to one alert must not hold the loan's next alert until the first one is old."""
    patient = RetryPolicy(base_s=30.0, cap_s=60.0, max_age_s=86_400.0, timeout_s=2.0)
    refused = "the shock alert is not a type we take"
    server = Server(behave=lambda n: 422 if n == 1 else 200)
    server.answer = lambda status: refused.encode() if status == 422 else b""
    try:
        store.put_webhook(Webhook("ops", server.url, SECRET))
        ids = raise_alerts(store, {"L-1": 3})
        d = run(store, patient)
        try:
            until(lambda: store.outbox_pending() == 0, "every delivery recorded", timeout_s=10)
        finally:
            d.stop()
    finally:
        server.close()
    assert [h.alert_id for h in server.hits] == ids[1:]  # the rest went on, in order
    (dead,) = store.list_dead(None, 10).items
    assert dead.alert_id == ids[0]
    assert dead.attempts == 1
    assert dead.last_status == 422
    assert dead.last_error == f"HTTP 422: {refused}"
    assert d.counters.snapshot() == {"dead": 1, "delivered": 2}


@pytest.mark.parametrize("status", [408, 429, 503])
def test_timeouts_rate_limits_and_5xx_are_retried(store: Store, status: int) -> None:
    server, d, ids = deliver_all(store, lambda n: status if n == 1 else 200, {"L-1": 2})
    assert [h.alert_id for h in server.hits] == ids
    assert d.counters.snapshot() == {"failed": 1, "delivered": 2}
    assert store.list_dead(None, 10).items == []


def test_a_huge_response_body_is_read_only_up_to_the_cap(store: Store) -> None:
    huge = b"x" * (RESPONSE_READ_BYTES * 40)
    server = Server(behave=lambda n: 500 if n == 1 else 200)
    server.answer = lambda status: huge if status == 500 else b""
    try:
        store.put_webhook(Webhook("ops", server.url, SECRET))
        ids = raise_alerts(store, {"L-1": 2})
        d = run(store)
        try:
            until(lambda: store.outbox_pending() == 0, "every delivery recorded")
        finally:
            d.stop()
    finally:
        server.close()
    assert [h.alert_id for h in server.hits] == ids
    assert d.counters.snapshot() == {"failed": 1, "delivered": 2}


def test_a_post_reads_at_most_the_cap_and_drops_the_connection_after_a_long_body() -> None:
    sizes = {1: RESPONSE_READ_BYTES * 40, 2: 10}
    server = Server()
    server.answer = lambda _status: b"y" * sizes[server.requests]
    try:
        endpoint = Endpoint(server.url, 2.0, LOOPBACK)
        body = orjson.dumps({"id": "a-1", "loan_id": "L-1"})
        sent = headers(SECRET, int(time.time()), body, "a-1", "shock")
        status, head = endpoint.post(body, sent)
        assert status == 200
        assert head == b"y" * RESPONSE_KEEP_BYTES
        assert endpoint._local.conn is None  # the unread rest made the connection unusable
        status, head = endpoint.post(body, sent)
        assert (status, head) == (200, b"y" * 10)
        assert endpoint._local.conn is not None  # a short body leaves it open for reuse
        endpoint.close()
    finally:
        server.close()


def test_a_host_that_cannot_be_encoded_fails_its_deliveries_not_the_worker(
    store: Store, server: Server
) -> None:
    # IDNA cannot encode a label of 64+ characters: a UnicodeError, not an OSError
    store.put_webhook(Webhook("bad-host", "http://h\u00e4" + "a" * 70 + ".example/x", SECRET))
    store.put_webhook(Webhook("ops", server.url, SECRET))
    ids = raise_alerts(store, {"L-1": 2})
    d = run(store, RetryPolicy(base_s=0.05, cap_s=0.1, max_age_s=0.0, timeout_s=2.0))
    try:
        until(lambda: store.outbox_pending() == 0, "every delivery recorded")
    finally:
        d.stop()
    assert [h.alert_id for h in server.hits] == ids
    dead = store.list_dead(None, 10).items
    assert sorted(x.alert_id for x in dead) == sorted(ids)
    assert all(x.hook_id == "bad-host" for x in dead)


def test_a_worker_whose_round_raises_is_kept_going(
    store: Store, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unforeseen error in a round is logged and retried; deliveries still happen."""
    real = store.due_deliveries
    calls = {"n": 0}

    def flaky(hook_id: str, now_ms: int, limit: int, claim_ms: int = 0) -> list[Delivery]:
        calls["n"] += 1
        if calls["n"] <= 2:
            msg = "a bug nobody foresaw"
            raise RuntimeError(msg)
        return real(hook_id, now_ms, limit, claim_ms)

    monkeypatch.setattr(store, "due_deliveries", flaky)
    store.put_webhook(Webhook("ops", server.url, SECRET))
    ids = raise_alerts(store, {"L-1": 2})
    d = run(store)
    try:
        until(lambda: store.outbox_pending() == 0, "every delivery recorded")
    finally:
        d.stop()
    assert [h.alert_id for h in server.hits] == ids
    assert calls["n"] > 2


def test_the_address_policy_is_checked_again_when_connecting(store: Store, server: Server) -> None:
    """A webhook that reached the store by other means (or whose name now resolves
    elsewhere) is dead with the reason, and nothing is sent to the refused address."""
    store.put_webhook(Webhook("ops", server.url, SECRET))
    ids = raise_alerts(store, {"L-1": 2})
    d = Dispatcher(store, FAST, poll_s=0.05)  # the default policy: loopback refused
    d.start()
    try:
        until(lambda: store.outbox_pending() == 0, "every delivery recorded")
    finally:
        d.stop()
    assert server.requests == 0
    dead = store.list_dead(None, 10).items
    assert sorted(x.alert_id for x in dead) == sorted(ids)
    assert all(x.attempts == 1 for x in dead)
    assert all("127.0.0.1 is a loopback address" in (x.last_error or "") for x in dead)
    assert d.counters.snapshot() == {"dead": 2}
