"""Real parts for end-to-end tests: the engine as a process, a webhook receiver, a publisher.

The engine and the receiver are the shared harness's (`simulator.harness`); this module
gives them the tests' token, secret and fixtures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.signing import verify
from simulator.harness.engine_process import EngineProcess
from simulator.harness.receiver import ReceivedWebhook, Refusal, WebhookReceiver
from tests.brokers import REPO, Broker, free_port

TOKEN = "test-token-1"
SECRET = "whsec-test"


@dataclass
class Received:
    """One accepted webhook POST as the receiver saw it."""

    alert: dict[str, object]
    headers: dict[str, str]
    signature_ok: bool  # its signature verified again here, over the raw body, with SECRET
    at: float


class Receiver:
    """The shared webhook receiver (`simulator.harness.receiver`) as the end-to-end tests use it.

    `behave(n)` decides the response to the n-th request (1-based): a status code, or a
    number of seconds to stall (a timeout for the sender) then 200. A POST with a bad
    signature is answered 401 and counted in `refused`, never recorded.
    """

    def __init__(self) -> None:
        self.behave: Callable[[int], int | float] = lambda _n: 200
        # A lambda, not `self.behave`: tests replace `behave` after the receiver is made.
        respond = lambda n: self.behave(n)  # noqa: E731, PLW0108
        self.hook = WebhookReceiver(SECRET, respond=respond, port=free_port())

    @property
    def port(self) -> int:
        return self.hook.port

    @property
    def url(self) -> str:
        return self.hook.url

    @property
    def requests(self) -> int:
        return self.hook.counts.requests

    @property
    def refused(self) -> int:
        return self.hook.counts.refused

    @property
    def refusals(self) -> list[Refusal]:
        return self.hook.refusals()

    @property
    def received(self) -> list[Received]:
        return [_received(d) for d in self.hook.deliveries()]

    def start(self) -> None:
        self.hook.start()

    def stop(self) -> None:
        self.hook.stop()

    def ids(self) -> list[str]:
        return self.hook.ids()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float) -> bool:
        """Poll until `predicate(received)` holds; False at once when a POST is refused (the
        engines of these tests sign with SECRET: a refusal is a failure, not a slow run)."""
        done = self.hook.wait_for(
            lambda ds: self.refused > 0 or predicate([_received(d) for d in ds]), timeout_s
        )
        return done and self.refused == 0


def _received(d: ReceivedWebhook) -> Received:
    stamp = d.headers.get("X-Pledgewatch-Timestamp", "")
    signature = d.headers.get("X-Pledgewatch-Signature", "")
    ok = stamp.isdigit() and verify(SECRET, int(stamp), d.body, signature, d.received_s)
    return Received(d.alert, d.headers, signature_ok=ok, at=d.received_s)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def engines(broker: Broker, tmp_path: Path) -> Iterator[Callable[[str], EngineProcess]]:
    """Make engine processes (the harness launcher) on the test's broker, with the tests'
    token; any still running when the test ends is killed."""
    made: list[EngineProcess] = []

    def make(db_url: str) -> EngineProcess:
        engine = EngineProcess(
            broker.url,
            db_url,
            token=TOKEN,
            log_path=tmp_path / f"engine-{len(made)}.log",
            client_id=f"pw-e2e-{len(made)}",
            cwd=REPO,
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        if engine.running():
            engine.kill9()


class Publisher:
    """A tracker fleet's side: QoS 1 publishes to the broker, confirmed."""

    def __init__(self, broker: Broker) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"pub-{time.time_ns()}"
        )
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def send(self, topic: str, payload: object) -> None:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        info = self.client.publish(topic, data, qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
