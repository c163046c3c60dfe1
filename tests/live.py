"""Real parts for end-to-end tests: the engine as a process, a webhook receiver, a publisher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulator.harness.receiver import Delivery, WebhookReceiver
from tests.brokers import REPO, Broker, free_port, wait_port

TOKEN = "test-token-1"
SECRET = "whsec-test"


@dataclass
class Received:
    """One accepted webhook POST as the receiver saw it."""

    alert: dict[str, object]
    headers: dict[str, str]
    signature_ok: bool  # always True: the shared receiver refuses (401) a bad signature
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
    def received(self) -> list[Received]:
        return [_received(d) for d in self.hook.deliveries()]

    def start(self) -> None:
        self.hook.start()

    def stop(self) -> None:
        self.hook.stop()

    def ids(self) -> list[str]:
        return self.hook.ids()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float) -> bool:
        return self.hook.wait_for(lambda ds: predicate([_received(d) for d in ds]), timeout_s)


def _received(d: Delivery) -> Received:
    return Received(d.alert, d.headers, signature_ok=True, at=d.received_s)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


class EngineProcess:
    """`pledgewatch run` as a child process, killable with SIGKILL."""

    def __init__(
        self, broker: Broker, db_url: str, workdir: Path, client_id: str = "pw-e2e"
    ) -> None:
        self.broker = broker
        self.db_url = db_url
        self.port = free_port()
        self.client_id = client_id
        self.log = workdir / "engine.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "PLEDGEWATCH_API_TOKEN": TOKEN}
        cmd = [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            "--mqtt-url",
            self.broker.url,
            "--db-url",
            self.db_url,
            "--http",
            f"127.0.0.1:{self.port}",
            "--client-id",
            self.client_id,
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
        try:
            wait_port(self.port, timeout_s=30)
        except TimeoutError:
            self.proc.kill()
            raise AssertionError("engine did not start:\n" + self.log.read_text()[-3000:]) from None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )


@pytest.fixture
def engines(broker: Broker, tmp_path: Path) -> Iterator[Callable[[str], EngineProcess]]:
    """Make engine processes; any still running when the test ends is killed."""
    made: list[EngineProcess] = []

    def make(db_url: str) -> EngineProcess:
        engine = EngineProcess(broker, db_url, tmp_path)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        if engine.proc is not None and engine.proc.poll() is None:
            engine.proc.kill()
            engine.proc.wait(10)


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
