"""Real parts for end-to-end tests: the engine as a process, a webhook receiver, a publisher."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.signing import verify
from tests.brokers import REPO, Broker, free_port, wait_port

TOKEN = "test-token-1"
SECRET = "whsec-test"


@dataclass
class Received:
    """One webhook POST as the receiver saw it."""

    alert: dict[str, object]
    headers: dict[str, str]
    signature_ok: bool
    at: float


@dataclass
class Receiver:
    """An HTTP server that records webhook POSTs and verifies their signatures.

    `behave(n)` decides the response to the n-th request (1-based): a status code, or a
    number of seconds to stall (a timeout for the sender) then 200.
    """

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    requests: int = 0
    behave: Callable[[int], int | float] = lambda _n: 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests += 1
                    n = receiver.requests
                action = receiver.behave(n)
                if isinstance(action, float):
                    time.sleep(action)
                    action = 200
                if 200 <= action < 300:
                    ok = verify(
                        SECRET,
                        int(self.headers["X-Pledgewatch-Timestamp"]),
                        body,
                        self.headers["X-Pledgewatch-Signature"],
                        time.time(),
                    )
                    with receiver.lock:
                        receiver.received.append(
                            Received(orjson.loads(body), dict(self.headers), ok, time.time())
                        )
                self.send_response(action)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ids(self) -> list[str]:
        with self.lock:
            return [str(r.alert["id"]) for r in self.received]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(list(self.received)):
                    return True
            time.sleep(0.05)
        with self.lock:
            return predicate(list(self.received))


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
