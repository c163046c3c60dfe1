"""The engine benchmark's helper processes: publishers (and the bare subscriber of
`engine_bare`), each `python -m benchmarks.bench_engine _publish|_subscribe ...`, speaking
JSON lines on stdout and taking commands on stdin.

A publisher loads its file of messages, connects, says it is ready, then waits for
`go <epoch seconds>` and publishes at QoS 1, as fast as the broker acknowledges or at the
file's offsets from that time; its last line is what it did."""

from __future__ import annotations

import argparse
import math
import os
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from benchmarks.common import REPO
from benchmarks.engine_workload import Msg, publisher_files
from simulator.harness.broker import PrivateBroker

# -- inside a helper process


def say(doc: Mapping[str, object]) -> None:
    """One JSON line to the parent."""
    sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    sys.stdout.flush()


def cpu_self() -> float:
    """CPU seconds (user + system) this process has used."""
    t = os.times()
    return t.user + t.system


def wait_while_parent(event: threading.Event, timeout_s: float) -> bool:
    """`event.wait`, but give up as soon as the parent process is gone."""
    parent = os.getppid()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and os.getppid() == parent:
        if event.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
            return True
    return event.is_set()


def mqtt_client(client_id: str) -> mqtt.Client:
    """A paho client, MQTT v5, callback API 2."""
    return mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )


def start_client(client: mqtt.Client, port: int, ready: threading.Event, failure: str) -> bool:
    """Connect `client` to the broker on 127.0.0.1:`port` and start its network loop; False,
    having told the parent `failure`, unless `ready` is set within 10 s."""
    client.connect("127.0.0.1", port)
    client.loop_start()
    if ready.wait(10):
        return True
    say({"error": failure})
    return False


def publish_worker(argv: Sequence[str]) -> int:
    """Publish a file of messages at QoS 1, as fast as the broker takes them or at given
    offsets (`due_s`) from the start time the parent sends as `go <epoch seconds>`."""
    p = argparse.ArgumentParser(prog="bench_engine _publish")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--file", type=Path, required=True)
    p.add_argument("--client-id", required=True)
    # paho keeps unacknowledged QoS 1 messages in a dict keyed by packet id: more than 65,535
    # outstanding overwrite each other and stall the client (paho.mqtt.python issue #377),
    # and each PUBACK scans the in-flight ones. So: a window of outstanding messages, and a
    # modest in-flight count (100 measured fastest here, ~11k msg/s per publisher).
    p.add_argument("--inflight", type=int, default=100)
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--timeout-s", type=float, default=900.0)
    a = p.parse_args(argv)
    doc = orjson.loads(a.file.read_bytes())
    topics: list[str] = doc["topics"]
    payloads: list[str] = doc["payloads"]
    due: list[float] | None = doc.get("due_s")
    n = len(topics)
    acked = 0
    last_ack = math.nan
    done = threading.Event()
    connected = threading.Event()

    window = threading.BoundedSemaphore(a.window)

    def on_publish(*_: object) -> None:
        nonlocal acked, last_ack
        acked += 1
        window.release()
        if acked == n:
            last_ack = time.time()
            done.set()

    client = mqtt_client(a.client_id)
    client.max_inflight_messages_set(a.inflight)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.on_connect = lambda *_: connected.set()
    if not start_client(client, a.port, connected, "could not connect to the broker"):
        return 1
    say({"ready": True, "messages": n})
    base = float(sys.stdin.readline().split()[1])
    cpu0 = cpu_self()
    sent_at: list[float] = []
    refused = 0
    if due is None:
        first = time.time()
        for topic, payload in zip(topics, payloads, strict=True):
            window.acquire()
            refused += client.publish(topic, payload, qos=1).rc != 0
    else:
        first = math.nan
        for topic, payload, offset in zip(topics, payloads, due, strict=True):
            wait = base + offset - time.time()
            if wait > 0:
                time.sleep(wait)
            window.acquire()
            now = time.time()
            sent_at.append(now)
            refused += client.publish(topic, payload, qos=1).rc != 0
        first = sent_at[0] if sent_at else math.nan
    last_call = time.time()
    ok = wait_while_parent(done, a.timeout_s) if n else True
    result: dict[str, object] = {
        "messages": n,
        "acked": acked,
        "refused": refused,
        "ok": ok and not refused,
        "first_s": first,
        "last_call_s": last_call,
        "last_ack_s": last_ack,
        "cpu_s": cpu_self() - cpu0,
    }
    if due is not None:
        result["sent_at"] = sent_at
    client.loop_stop()
    client.disconnect()
    say(result)
    return 0 if ok else 1


# -- in the benchmark process


class HelperProcess:
    """A helper process of this benchmark, speaking JSON lines on stdout, commands on stdin."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as err:
            self.proc = subprocess.Popen(  # noqa: S603  # this module, our own arguments
                [sys.executable, "-m", "benchmarks.bench_engine", name, *args],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self._buf = b""

    def read(self, timeout_s: float) -> dict[str, Any]:
        """The next JSON line; TimeoutError or RuntimeError (with its log) if none comes."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                msg = f"{self.name}: no answer within {timeout_s} s"
                raise TimeoutError(msg)
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    tail = self.log_path.read_text(errors="replace")[-2000:]
                    msg = f"{self.name} exited with {self.proc.wait()}: {tail}"
                    raise RuntimeError(msg)
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        doc = orjson.loads(line)
        if not isinstance(doc, dict) or "error" in doc:
            msg = f"{self.name}: {doc}"
            raise RuntimeError(msg)
        return doc

    def send(self, line: str) -> None:
        """Write one command line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        """Wait for the child to exit (killing it after 10 s) and close its pipes."""
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class HelperPool:
    """The helper processes of one benchmark run, on its private broker, logging in `work`."""

    def __init__(self, work: Path, broker: PrivateBroker, publishers: int) -> None:
        self.work = work
        self.broker = broker
        self.publishers = publishers  # processes per workload unless told otherwise
        self.children: list[HelperProcess] = []
        self._n = 0

    def kill_children(self) -> None:
        """Kill any helper process still running (after an error)."""
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.kill()
            child.close()

    def spawn(self, name: str, what: str, args: Sequence[str]) -> HelperProcess:
        """Start helper `name` (`_publish`, `_subscribe`) with a fresh MQTT client id
        (`--client-id`, also its log's name) and `args`."""
        self._n += 1
        cid = f"{what}-{self._n}-{uuid.uuid4().hex[:6]}"
        child = HelperProcess(name, [*args, "--client-id", cid], self.work / f"{cid}.log")
        self.children.append(child)
        return child

    def start_publishers(
        self,
        messages: Sequence[Msg],
        name: str,
        prefix: str = "",
        publishers: int | None = None,
        due_s: Sequence[float] | None = None,
    ) -> list[HelperProcess]:
        """Publisher processes, started; `ready` reads their answer once they are connected."""
        n = publishers or self.publishers
        return [
            self.spawn("_publish", "pub", ["--port", str(self.broker.port), "--file", str(path)])
            for path in publisher_files(messages, n, self.work, name, prefix, due_s)
        ]

    @staticmethod
    def ready(children: Sequence[HelperProcess]) -> None:
        """Wait until every child has said it is ready (connected, loaded, subscribed)."""
        for child in children:
            child.read(120)

    @staticmethod
    def go(children: Sequence[HelperProcess], at_s: float | None = None) -> None:
        """Tell the publishers to start (now, or at the planned `at_s` for paced ones)."""
        for child in children:
            child.send(f"go {time.time() if at_s is None else at_s}")

    @staticmethod
    def finish_publishers(
        children: Sequence[HelperProcess],
    ) -> tuple[list[dict[str, Any]], str]:
        """Their results, and 'ok' if every message was acknowledged by the broker."""
        results = [c.read(900) for c in children]
        for c in children:
            c.close()
        bad = [r for r in results if not r["ok"] or r["acked"] != r["messages"]]
        check = "ok" if not bad else f"WRONG: publishers not acked: {bad}"
        return results, check
