"""The outbox dispatcher: signed webhooks, at least once, in order per loan (DESIGN §5).

One worker thread per webhook endpoint, so a slow or dead endpoint delays only itself, and
never the engine, which only writes the outbox. A worker asks the store for the heads of its
per-loan queues that are due, POSTs them (a few at once: different loans never wait for each
other), and records each result: delivered, or failed with the next attempt after an
exponential backoff with jitter, or, past the maximum age, dead (the API lists dead
deliveries and can redeliver them).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from alerts.signing import headers
from engine.metrics import DeliveryCounters
from engine.store import Delivery, Store, StoreError, Webhook

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try again, and when to give up. Seconds."""

    base_s: float = 1.0
    cap_s: float = 300.0
    max_age_s: float = 24 * 3600.0
    timeout_s: float = 5.0
    parallel: int = 8  # deliveries in flight per endpoint (each to a different loan)

    def retry_delay_s(self, attempts: int) -> float:
        """Exponential backoff with equal jitter after `attempts` failed attempts."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(attempts - 1, 30))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311  # jitter, not crypto


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one POST."""

    ok: bool
    status: int | None
    error: str


def post(client: httpx.Client, hook: Webhook, delivery: Delivery, now_s: float) -> Outcome:
    """POST one delivery, signed; any non-2xx, timeout or connection error is a failure."""
    ts = int(now_s)
    sent = headers(hook.secret, ts, delivery.body, delivery.alert_id, delivery.alert_type)
    try:
        response = client.post(hook.url, content=delivery.body, headers=sent)
    except httpx.HTTPError as exc:
        return Outcome(ok=False, status=None, error=f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= response.status_code < 300:
        return Outcome(ok=True, status=response.status_code, error="")
    return Outcome(ok=False, status=response.status_code, error=f"HTTP {response.status_code}")


class _Worker:
    """Delivers to one endpoint."""

    def __init__(self, dispatcher: Dispatcher, hook: Webhook) -> None:
        self.d = dispatcher
        self.hook = hook
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.client = httpx.Client(timeout=dispatcher.policy.timeout_s)
        self.pool = ThreadPoolExecutor(dispatcher.policy.parallel, f"webhook-{hook.hook_id}")
        self.thread = threading.Thread(target=self.run, name=f"webhook-{hook.hook_id}", daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                sent = self.round()
            except StoreError as exc:
                _log.warning("webhook %s: store unavailable (%s)", self.hook.hook_id, exc)
                sent = 0
            if not sent:
                self.wake.wait(self.d.poll_s)
                self.wake.clear()
        self.pool.shutdown(wait=True)
        self.client.close()

    def round(self) -> int:
        """Send every due head once; returns how many were sent."""
        now_ms = self.d.now_ms()
        due = self.d.store.due_deliveries(self.hook.hook_id, now_ms, self.d.policy.parallel * 4)
        if not due:
            return 0
        for _ in self.pool.map(self.deliver, due):
            pass
        return len(due)

    def deliver(self, delivery: Delivery) -> None:
        outcome = post(self.client, self.hook, delivery, self.d.now_ms() / 1000)
        now_ms = self.d.now_ms()
        store = self.d.store
        if outcome.ok:
            store.mark_delivered(delivery.delivery_id, now_ms, outcome.status or 200)
            self.d.counters.add("delivered")
            return
        policy = self.d.policy
        age_s = (now_ms - delivery.created_ms) / 1000
        if age_s >= policy.max_age_s:
            store.mark_failed(delivery.delivery_id, now_ms, outcome.error, outcome.status, None)
            self.d.counters.add("dead")
            _log.error(
                "webhook %s: gave up on %s after %.0f s: %s",
                self.hook.hook_id,
                delivery.alert_id,
                age_s,
                outcome.error,
            )
            return
        retry_at = now_ms + int(policy.retry_delay_s(delivery.attempts + 1) * 1000)
        store.mark_failed(delivery.delivery_id, now_ms, outcome.error, outcome.status, retry_at)
        self.d.counters.add("failed")


class Dispatcher:
    """Keeps one worker per registered webhook, reading the store's outbox."""

    def __init__(
        self,
        store: Store,
        policy: RetryPolicy | None = None,
        poll_s: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy or RetryPolicy()
        self.poll_s = poll_s
        self._clock = clock
        self.counters = DeliveryCounters()
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def now_ms(self) -> int:
        """The wall clock, epoch milliseconds."""
        return int(self._clock() * 1000)

    def start(self) -> None:
        """Start the supervisor that keeps workers in line with the registered webhooks."""
        self.sync()
        self._thread = threading.Thread(target=self._supervise, name="dispatcher", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.sync()
            except StoreError as exc:
                _log.warning("dispatcher: store unavailable (%s)", exc)

    def sync(self) -> None:
        """Start workers for new or changed webhooks, stop those of deleted ones."""
        hooks = {h.hook_id: h for h in self.store.list_webhooks()}
        with self._lock:
            for hook_id, worker in list(self._workers.items()):
                if hooks.get(hook_id) != worker.hook:
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
