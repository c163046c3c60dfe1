"""`pledgewatch run` under load, side by side with a bare paho-mqtt subscriber, in one run.

    python -m benchmarks.bench_engine [--devices 10000] [--fences 10000] [--messages 200000]
                                      [--seed S] [--db sqlite|postgres] [--quick]

Starts a private Mosquitto (from deploy/mosquitto.conf) and `pledgewatch run` as a
subprocess, loads the fences and loans through its API, then, with the same publisher
processes feeding each consumer in turn: (1) single-reading QoS 1 messages, live and as a
drain of a queued session, into a bare paho subscriber and into the engine; (2) 50-reading
array payloads; (3) publish-to-webhook latency at a paced rate; (4) RSS per tracked device,
also at 50k devices on a second engine. Every count is checked before a rate is reported.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import math
import os
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from alerts.model import Alert, AlertType
from benchmarks.common import (
    REPO,
    RESULTS_DIR,
    fmt_rate,
    fmt_ratio,
    log,
    machine_info,
    mosquitto_version,
    percentile,
    rate,
    table,
    write_json,
)
from benchmarks.replay_methods import pledgewatch_command
from benchmarks.replay_report import PROFILE_TOP, profile_text, top_cumulative
from benchmarks.replay_workload import T0_MS, Inputs, generate
from devices.mqtt_source import Message
from engine.core.config import Config
from engine.runtime.gc_policy import tune_gc
from engine.runtime.live import Engine
from engine.runtime.replay import Replay
from engine.store.factory import open_store
from geofence.fence import load_fences
from geofence.index import FenceIndex
from lending.model import parse_loans
from simulator.harness.api_client import import_items
from simulator.harness.broker import PrivateBroker, free_port
from simulator.harness.procfs import machine_cpu_s, proc_cpu_s, tree_cpu_s, tree_memory
from simulator.harness.receiver import WebhookReceiver
from simulator.loadtest.target import Metrics as ScrapedMetrics

TOKEN = "bench-token"  # noqa: S105  # a throwaway token for a private engine on loopback
SECRET = "bench-webhook-secret"  # noqa: S105  # the benchmark's own receiver checks it
HOOK_TYPES = (AlertType.GEOFENCE_ENTER.value, AlertType.GEOFENCE_EXIT.value)
BARE_PREFIX = "bench/"
"""The bare subscriber's topics carry this prefix, so the idle engine never sees them."""

TARGET_RATIO = 0.5
"""Single-reading messages: the engine must take at least this share of the bare rate."""
TARGET_ARRAY_RPS = 200_000.0
TARGET_P99_MS = 100.0

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
MiB = 1024 * 1024
STALL_S = 60.0  # no progress for this long: the phase failed
READINGS = "pledgewatch_readings_total"
BATCHES = "pledgewatch_batch_seconds_count"


# -- helper processes: `python -m benchmarks.bench_engine _publish|_subscribe ...`


def _say(doc: Mapping[str, object]) -> None:
    sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    sys.stdout.flush()


def _cpu_self() -> float:
    t = os.times()
    return t.user + t.system


def _wait(event: threading.Event, timeout_s: float) -> bool:
    """`event.wait`, but give up as soon as the parent process is gone."""
    parent = os.getppid()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and os.getppid() == parent:
        if event.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
            return True
    return event.is_set()


def _client(client_id: str) -> mqtt.Client:
    return mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )


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

    client = _client(a.client_id)
    client.max_inflight_messages_set(a.inflight)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.on_connect = lambda *_: connected.set()
    client.connect("127.0.0.1", a.port)
    client.loop_start()
    if not connected.wait(10):
        _say({"error": "could not connect to the broker"})
        return 1
    _say({"ready": True, "messages": n})
    base = float(sys.stdin.readline().split()[1])
    cpu0 = _cpu_self()
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
    ok = _wait(done, a.timeout_s) if n else True
    result: dict[str, object] = {
        "messages": n,
        "acked": acked,
        "refused": refused,
        "ok": ok and not refused,
        "first_s": first,
        "last_call_s": last_call,
        "last_ack_s": last_ack,
        "cpu_s": _cpu_self() - cpu0,
    }
    if due is not None:
        result["sent_at"] = sent_at
    client.loop_stop()
    client.disconnect()
    _say(result)
    return 0 if ok else 1


def subscribe_worker(argv: Sequence[str]) -> int:
    """A bare paho-mqtt subscriber: MQTT v5, QoS 1, automatic acks, counting messages (and,
    with --parse, readings: `orjson.loads` of each payload)."""
    p = argparse.ArgumentParser(prog="bench_engine _subscribe")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--expected", type=int, required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--parse", action="store_true")
    p.add_argument("--timeout-s", type=float, default=900.0)
    a = p.parse_args(argv)
    count = 0
    readings = 0
    first = math.nan
    last = math.nan
    done = threading.Event()
    subscribed = threading.Event()
    parse = a.parse
    expected = a.expected

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        nonlocal count, readings, first, last
        count += 1
        if parse:
            value = orjson.loads(msg.payload)
            readings += len(value) if isinstance(value, list) else 1
        if count == 1:
            first = time.time()
        if count == expected:
            last = time.time()
            done.set()

    client = _client(a.client_id)
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(a.topic, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", a.port)
    client.loop_start()
    if not subscribed.wait(10):
        _say({"error": "could not subscribe"})
        return 1
    cpu0 = _cpu_self()
    _say({"ready": True})
    ok = _wait(done, a.timeout_s)
    result = {
        "messages": count,
        "readings": readings if parse else count,
        "ok": ok,
        "first_s": first,
        "last_s": last,
        "cpu_s": _cpu_self() - cpu0,
    }
    client.loop_stop()
    client.disconnect()
    _say(result)
    return 0 if ok else 1


WORKERS: dict[str, Callable[[Sequence[str]], int]] = {
    "_publish": publish_worker,
    "_subscribe": subscribe_worker,
}


class Child:
    """A helper process of this module, speaking JSON lines on stdout, commands on stdin."""

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


# -- workloads


@dataclass(frozen=True, slots=True)
class Msg:
    """One MQTT message to publish: its topic, payload, device, and its first reading's ts.

    The payload is kept as `str`: each `bytes` from `orjson.dumps` holds about 4 KiB of
    memory while it lives (orjson 3.13 here), a `str` copy only its length."""

    topic: str
    payload: str
    device: str
    ts_ms: int
    readings: int = 1


@dataclass(slots=True)
class Workload:
    """Messages published in one phase."""

    name: str
    label: str
    messages: list[Msg]

    @property
    def readings(self) -> int:
        """Readings in all the messages."""
        return sum(m.readings for m in self.messages)

    @property
    def per_message(self) -> float:
        """Mean readings per message."""
        return self.readings / len(self.messages) if self.messages else 0.0


def make_fleet(
    work: Path,
    seed: int,
    devices: int,
    fences: int,
    fixes_per_device: int,
    interval_s: int,
    coverage: float,
    *,
    extras: bool,
) -> Inputs:
    """The replay benchmark's seeded fleet (bench_replay.generate) written into `work`."""
    work.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(
        seed=seed,
        devices=devices,
        fences=fences,
        readings=devices * fixes_per_device,
        interval_s=interval_s,
        coverage=coverage,
        vib_share=0.005 if extras else 0.0,
        status_share=0.002 if extras else 0.0,
    )
    return generate(ns, work)


def read_messages(path: Path, shift_ms: int, rename: tuple[str, str] | None = None) -> list[Msg]:
    """The readings JSONL as one message per line, event times shifted by `shift_ms` (the
    generator's clock is fixed; the decoder refuses readings from the future) and device
    names optionally renamed (`("trk-", "lat-")`)."""
    out: list[Msg] = []
    with path.open("rb") as f:
        for line in f:
            doc = orjson.loads(line)
            topic: str = doc["topic"]
            if rename is not None:
                topic = topic.replace(rename[0], rename[1], 1)
            payload: dict[str, Any] = doc["payload"]
            ts = int(payload["ts"]) + shift_ms
            payload["ts"] = ts
            out.append(Msg(topic, orjson.dumps(payload).decode(), topic.split("/")[1], ts))
    return out


def shifted(messages: Sequence[Msg], delta_ms: int) -> list[Msg]:
    """Single-reading messages with their event times moved by `delta_ms`."""
    out = []
    for m in messages:
        payload = orjson.loads(m.payload)
        payload["ts"] = m.ts_ms + delta_ms
        out.append(Msg(m.topic, orjson.dumps(payload).decode(), m.device, m.ts_ms + delta_ms))
    return out


def as_arrays(messages: Sequence[Msg], size: int) -> list[Msg]:
    """Full arrays of `size` consecutive gps readings per device (remainders and other
    streams are dropped), ordered so that each device's arrays stay in time order."""
    by_topic: dict[str, list[Msg]] = {}
    for m in messages:
        if m.topic.endswith("/gps"):
            by_topic.setdefault(m.topic, []).append(m)
    rounds: list[list[Msg]] = []
    for topic, ms in by_topic.items():
        for i, start in enumerate(range(0, len(ms) - size + 1, size)):
            chunk = ms[start : start + size]
            if len(rounds) <= i:
                rounds.append([])
            payload = "[" + ",".join(m.payload for m in chunk) + "]"
            rounds[i].append(Msg(topic, payload, chunk[0].device, chunk[0].ts_ms, size))
    return [m for r in rounds for m in r]


def split_by_device_count(messages: Sequence[Msg], counts: Sequence[int]) -> list[list[Msg]]:
    """Split a time-ordered stream into consecutive parts by each device's reading number:
    the first `counts[0]` readings of every device go to part 0, the next to part 1, ..."""
    bounds = [sum(counts[: i + 1]) for i in range(len(counts))]
    seen: Counter[str] = Counter()
    parts: list[list[Msg]] = [[] for _ in counts]
    for m in messages:
        if not m.topic.endswith("/gps"):
            continue
        k = seen[m.device]
        seen[m.device] += 1
        for i, bound in enumerate(bounds):
            if k < bound:
                parts[i].append(m)
                break
    return parts


def publisher_files(
    messages: Sequence[Msg],
    publishers: int,
    work: Path,
    name: str,
    prefix: str = "",
    due_s: Sequence[float] | None = None,
) -> list[Path]:
    """The messages split by device over `publishers` files (a device's messages keep
    their order: one publisher sends them all)."""
    parts: list[list[int]] = [[] for _ in range(publishers)]
    for i, m in enumerate(messages):
        parts[zlib.crc32(m.device.encode()) % publishers].append(i)
    paths = []
    for k, idx in enumerate(parts):
        doc: dict[str, object] = {
            "topics": [prefix + messages[i].topic for i in idx],
            "payloads": [messages[i].payload for i in idx],
        }
        if due_s is not None:
            doc["due_s"] = [due_s[i] for i in idx]
        path = work / f"pub-{name}-{k}.json"
        path.write_bytes(orjson.dumps(doc))
        paths.append(path)
    return paths


# -- the engine as a process


class Metrics(ScrapedMetrics):
    """One scrape of `/metrics` (the load test's parser), and what the checks add to it."""

    __slots__ = ()

    def handled(self) -> float:
        """Readings accepted, duplicate or rejected: every input the engine has finished."""
        return (
            self.total(READINGS)
            + self.total("pledgewatch_duplicates_total")
            + self.total("pledgewatch_rejected_total")
        )


def counter_delta(before: Metrics, after: Metrics) -> dict[str, float]:
    """What went through between two scrapes, for the checks."""
    names = {
        "readings": READINGS,
        "rejected": "pledgewatch_rejected_total",
        "duplicates": "pledgewatch_duplicates_total",
        "late": "pledgewatch_late_total",
        "missing": "pledgewatch_readings_missing_total",
        "alerts": "pledgewatch_alerts_total",
        "batches": BATCHES,
        "batch_seconds": "pledgewatch_batch_seconds_sum",
    }
    delta = {k: after.total(n) - before.total(n) for k, n in names.items()}
    # Every turn is observed, idle ones too (each max_wait_s): count the real batches apart.
    quick = 'pledgewatch_batch_seconds_bucket{le="0.001"}'
    idle = after.values.get(quick, 0.0) - before.values.get(quick, 0.0)
    delta["batches_over_1ms"] = delta["batches"] - idle
    return delta


class EngineProcess:
    """`pledgewatch run` as a child process, with its API client."""

    def __init__(self, broker: PrivateBroker, db_url: str, work: Path, client_id: str) -> None:
        self.broker = broker
        self.db_url = db_url
        self.client_id = client_id
        self.port = free_port()
        self.log_path = work / f"{client_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )

    @property
    def pid(self) -> int:
        """The engine's process id."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the engine and wait until its API answers and MQTT is connected."""
        cmd = [
            *pledgewatch_command(),
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
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
        env["PLEDGEWATCH_API_TOKEN"] = TOKEN
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603  # our own command line
                cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                r = self.http.get("/healthz", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            if r.status_code == 200 and r.json().get("mqtt_connected"):
                return
            time.sleep(0.1)
        msg = f"the engine did not come up: {self.log_tail()}"
        raise RuntimeError(msg)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the engine's log."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def metrics(self) -> Metrics:
        """Scrape `/metrics`."""
        r = self.http.get("/metrics")
        r.raise_for_status()
        return Metrics.parse(r.text)

    def cpu_s(self) -> float:
        """CPU seconds the engine has used (every thread, and its MQTT child process)."""
        return tree_cpu_s(self.pid)

    def rss(self) -> int:
        """The engine's resident set size in bytes (with its MQTT child process)."""
        return tree_memory(self.pid)["VmRSS"]

    def load(self, fences_path: Path, loans_path: Path | None) -> dict[str, float]:
        """Fences through `POST /v1/fences:import`, loans through `POST /v1/loans:import`."""
        features = orjson.loads(fences_path.read_bytes())["features"]
        started = time.perf_counter()
        import_items(self.http, "fences", features)
        fences_s = time.perf_counter() - started
        started = time.perf_counter()
        loans = orjson.loads(loans_path.read_bytes()) if loans_path is not None else []
        import_items(self.http, "loans", loans)
        loans_s = time.perf_counter() - started
        return {
            "fences": len(features),
            "fences_s": fences_s,
            "loans": len(loans),
            "loans_s": loans_s,
        }

    def wait_handled(self, target: float, timeout_s: float = 900.0) -> tuple[float, Metrics]:
        """Poll `/metrics` until the engine has handled and committed `target` inputs in
        all; returns the wall time of the poll that saw it and that scrape.

        The reading counters move while a batch is processed, before its commit; a batch
        is observed in `pledgewatch_batch_seconds` after its commit (and every idle turn,
        each `max_wait_s`). So once the counters reach the target, one more observed batch
        means the batch that reached it is committed. Polls are frequent only near the end
        (a scrape costs the engine CPU): the end is known to a few tens of milliseconds."""
        started = time.time()
        last_change = started
        prev: tuple[float, float] | None = None
        speed = 0.0
        while True:
            m = self.metrics()
            now = time.time()
            done = m.handled()
            if done >= target:
                break
            if prev is not None and done > prev[1]:
                speed = (done - prev[1]) / (now - prev[0])
                last_change = now
            if now - last_change > STALL_S or now - started > timeout_s:
                msg = f"the engine stalled at {done:.0f} of {target:.0f} inputs"
                raise RuntimeError(msg)
            prev = (now, done)
            remaining = (target - done) / speed if speed > 0 else 0.5
            time.sleep(min(0.5, max(0.003, remaining / 2)))
        batches = m.total(BATCHES)
        while True:
            time.sleep(0.01)
            m = self.metrics()
            now = time.time()
            if m.total(BATCHES) > batches:
                return now, m
            if now - started > timeout_s:
                msg = f"the engine's last batch did not commit within {timeout_s} s"
                raise RuntimeError(msg)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()  # on an error: never leave an engine running

    def stop(self) -> int:
        """SIGTERM, and the exit status."""
        assert self.proc is not None
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the engine takes nothing; the broker queues for its session."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> float:
        """SIGCONT; returns the wall time just before."""
        at = time.time()
        os.kill(self.pid, signal.SIGCONT)
        return at


# -- CPU accounting


@dataclass(frozen=True, slots=True)
class CpuMark:
    """CPU seconds of the machine and of our long-lived processes at one moment."""

    at: float
    machine_busy: float
    interrupts: float
    engine: float
    broker: float
    bench: float

    @classmethod
    def take(cls, engine: EngineProcess | None, broker: PrivateBroker) -> CpuMark:
        """Read them all now."""
        return cls(
            time.time(),
            *machine_cpu_s(),
            engine.cpu_s() if engine is not None else 0.0,
            proc_cpu_s(broker.pid),
            _cpu_self(),
        )


def cpu_split(a: CpuMark, b: CpuMark, children_cpu_s: float) -> dict[str, float]:
    """CPU seconds between two marks: ours by process, and the rest of the machine's
    (`others`: busy time no process of ours used; irq and softirq are counted apart)."""
    engine = b.engine - a.engine
    broker = b.broker - a.broker
    bench = b.bench - a.bench
    busy = b.machine_busy - a.machine_busy
    others = busy - engine - broker - bench - children_cpu_s
    return {
        "wall_s": round(b.at - a.at, 3),
        "engine_cpu_s": round(engine, 2),
        "broker_cpu_s": round(broker, 2),
        "clients_cpu_s": round(children_cpu_s, 2),
        "bench_cpu_s": round(bench, 2),
        "machine_busy_s": round(busy, 2),
        "machine_interrupts_s": round(b.interrupts - a.interrupts, 2),
        "others_cpu_s": round(max(others, 0.0), 2),
    }


# -- runs


@dataclass(slots=True)
class Run:
    """One consumer on one workload: how long it took, and whether the counts were right."""

    workload: str
    consumer: str  # "bare" or "engine"
    messages: int
    readings: int
    seconds: float = math.nan
    publish_s: float = math.nan  # first publish to the last PUBACK, all publishers
    consumer_cpu_s: float = math.nan
    check: str = "not run"
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the checks passed."""
        return self.check == "ok"

    @property
    def msgs_per_s(self) -> float | None:
        """Messages per second, or None if the checks failed."""
        return rate(self.messages, self.seconds) if self.ok else None

    @property
    def readings_per_s(self) -> float | None:
        """Readings per second, or None if the checks failed."""
        return rate(self.readings, self.seconds) if self.ok else None

    def as_json(self) -> dict[str, object]:
        """The run as a JSON object."""
        mps, rps = self.msgs_per_s, self.readings_per_s
        return {
            "workload": self.workload,
            "consumer": self.consumer,
            "messages": self.messages,
            "readings": self.readings,
            "seconds": _r(self.seconds, 3),
            "msgs_per_s": _r(mps, 1),
            "readings_per_s": _r(rps, 1),
            "published_msgs_per_s": _r(rate(self.messages, self.publish_s), 1),
            "consumer_cpu_s": _r(self.consumer_cpu_s, 2),
            "consumer_cpu_us_per_reading": _r(self.cpu_us_per_reading, 2),
            "check": self.check,
            **self.extra,
        }

    @property
    def cpu_us_per_reading(self) -> float:
        """The consumer's CPU microseconds per reading."""
        return self.consumer_cpu_s / self.readings * 1e6 if self.readings else math.nan


def _r(value: float | None, digits: int) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, digits)


class Bench:
    """The processes of one benchmark run and the runs made so far."""

    def __init__(self, args: argparse.Namespace, work: Path, broker: PrivateBroker) -> None:
        self.args = args
        self.work = work
        self.broker = broker
        self.runs: list[Run] = []
        self.children: list[Child] = []
        self._n = 0

    def kill_children(self) -> None:
        """Kill any helper process still running (after an error)."""
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.kill()
            child.close()

    def _id(self, what: str) -> str:
        self._n += 1
        return f"{what}-{self._n}-{uuid.uuid4().hex[:6]}"

    def start_publishers(
        self,
        messages: Sequence[Msg],
        name: str,
        prefix: str = "",
        publishers: int | None = None,
        due_s: Sequence[float] | None = None,
    ) -> list[Child]:
        """Publisher processes, started; `ready` reads their answer once they are connected."""
        n = publishers or self.args.publishers
        children = []
        for path in publisher_files(messages, n, self.work, name, prefix, due_s):
            cid = self._id("pub")
            child = Child(
                "_publish",
                ["--port", str(self.broker.port), "--file", str(path), "--client-id", cid],
                self.work / f"{cid}.log",
            )
            children.append(child)
        self.children += children
        return children

    @staticmethod
    def ready(children: Sequence[Child]) -> None:
        """Wait until every child has said it is ready (connected, loaded, subscribed)."""
        for child in children:
            child.read(120)

    def finish_publishers(self, children: Sequence[Child]) -> tuple[list[dict[str, Any]], str]:
        """Their results, and 'ok' if every message was acknowledged by the broker."""
        results = [c.read(900) for c in children]
        for c in children:
            c.close()
        bad = [r for r in results if not r["ok"] or r["acked"] != r["messages"]]
        check = "ok" if not bad else f"WRONG: publishers not acked: {bad}"
        return results, check

    def start_subscriber(self, expected: int, parse: bool) -> Child:
        """The bare subscriber on the prefixed topics, started (`ready` once subscribed)."""
        cid = self._id("bare")
        args = [
            "--port",
            str(self.broker.port),
            "--topic",
            BARE_PREFIX + "telematics/+/+",
            "--expected",
            str(expected),
            "--client-id",
            cid,
        ]
        child = Child("_subscribe", [*args, "--parse"] if parse else args, self.work / f"{cid}.log")
        self.children.append(child)
        return child

    def bare(self, w: Workload, drain: bool, engine: EngineProcess) -> Run:
        """The bare subscriber takes the workload, live or as a drain of its queued session."""
        run = Run(w.name, "bare", len(w.messages), w.readings)
        parse = w.per_message > 1
        sub = self.start_subscriber(len(w.messages), parse)
        pubs = self.start_publishers(w.messages, f"{w.name}-bare", BARE_PREFIX)
        self.ready([sub, *pubs])
        if drain:
            os.kill(sub.proc.pid, signal.SIGSTOP)
        mark0 = CpuMark.take(engine, self.broker)
        for p in pubs:
            p.send(f"go {time.time()}")
        started = math.nan
        if drain:
            results, pub_check = self.finish_publishers(pubs)
            started = time.time()
            os.kill(sub.proc.pid, signal.SIGCONT)
        got = sub.read(900)
        mark1 = CpuMark.take(engine, self.broker)
        if not drain:
            results, pub_check = self.finish_publishers(pubs)
            started = min(r["first_s"] for r in results)
        sub.close()
        run.seconds = got["last_s"] - started
        run.publish_s = max(r["last_ack_s"] for r in results) - min(r["first_s"] for r in results)
        run.consumer_cpu_s = got["cpu_s"]
        pub_cpu = sum(float(r["cpu_s"]) for r in results)
        run.extra = {
            "cpu": cpu_split(mark0, mark1, pub_cpu + run.consumer_cpu_s),
            "publishers_cpu_s": round(pub_cpu, 2),
            "parsed_payloads": parse,
        }
        problems = [] if pub_check == "ok" else [pub_check]
        if got["messages"] != run.messages or got["readings"] != run.readings:
            problems.append(
                f"received {got['messages']} messages / {got['readings']} readings, "
                f"expected {run.messages} / {run.readings}"
            )
        run.check = "ok" if not problems else "WRONG: " + "; ".join(problems)
        self.runs.append(run)
        return run

    def engine(self, w: Workload, drain: bool, engine: EngineProcess) -> Run:
        """The engine takes the workload: from the first publish (or, draining, from SIGCONT)
        to every reading handled, as `/metrics` counts them."""
        run = Run(w.name, "engine", len(w.messages), w.readings)
        before = engine.metrics()
        pubs = self.start_publishers(w.messages, f"{w.name}-engine")
        self.ready(pubs)
        if drain:
            engine.pause()
        mark0 = CpuMark.take(engine, self.broker)
        for p in pubs:
            p.send(f"go {time.time()}")
        started = math.nan
        try:
            if drain:
                results, pub_check = self.finish_publishers(pubs)
                started = engine.resume()
            ended, after = engine.wait_handled(before.handled() + w.readings)
        finally:
            if drain:
                os.kill(engine.pid, signal.SIGCONT)
        mark1 = CpuMark.take(engine, self.broker)
        if not drain:
            results, pub_check = self.finish_publishers(pubs)
            started = min(r["first_s"] for r in results)
        run.seconds = ended - started
        run.publish_s = max(r["last_ack_s"] for r in results) - min(r["first_s"] for r in results)
        run.consumer_cpu_s = mark1.engine - mark0.engine
        pub_cpu = sum(float(r["cpu_s"]) for r in results)
        delta = counter_delta(before, after)
        run.extra = {
            "cpu": cpu_split(mark0, mark1, pub_cpu),
            "publishers_cpu_s": round(pub_cpu, 2),
            "counters": delta,
            "readings_per_batch": _r(rate(int(delta["readings"]), delta["batches_over_1ms"]), 1),
            "engine_busy_in_batches": _r(delta["batch_seconds"] / run.seconds, 3),
            "rss_after_bytes": engine.rss(),
        }
        run.check = engine_check(delta, w.readings, pub_check)
        self.runs.append(run)
        return run


def engine_check(delta: dict[str, float], readings: int, pub_check: str = "ok") -> str:
    """'ok' if the engine accepted exactly `readings`: no rejects, duplicates, late, gaps."""
    problems = [] if pub_check == "ok" else [pub_check]
    if delta["readings"] != readings:
        problems.append(f"{delta['readings']:.0f} readings accepted, {readings} published")
    problems += [
        f"{key} {delta[key]:.0f}"
        for key in ("rejected", "duplicates", "late", "missing")
        if delta[key]
    ]
    return "ok" if not problems else "WRONG: " + "; ".join(problems)


# -- latency: a webhook receiver in this process


def _iso_ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def expected_alerts(fences_path: Path, lines: Sequence[Msg]) -> list[Alert]:
    """The enter/exit alerts the core raises for these messages (no loans), by an
    in-process replay: the reference the webhooks are checked against."""
    index = FenceIndex.build(load_fences(fences_path))
    alerts: list[Alert] = []
    replay = Replay(index, [], Config(), on_alert=alerts.append)
    replay.feed(orjson.dumps({"topic": m.topic, "payload": orjson.loads(m.payload)}) for m in lines)
    replay.finish()
    return [a for a in alerts if a.type.value in HOOK_TYPES]


def run_latency(
    bench: Bench, engine: EngineProcess, fences_path: Path, fleet: Inputs, interval_s: int
) -> dict[str, object]:
    """Paced single-reading messages from a fresh fleet (`lat-` devices, no loans); every
    geofence enter/exit must arrive as a signed webhook; latency from the publish of the
    reading that raised it to the webhook's arrival."""
    interval_ms = interval_s * 1000
    # Event times follow the wall clock: the warm-up fixes (each device's first) lie just
    # before now, the paced ones are shifted again once the warm-up is done (see below).
    warm_until_ms = round(time.time() * 1000)
    msgs = read_messages(fleet.readings, warm_until_ms - (T0_MS + interval_ms), ("trk-", "lat-"))
    warm = [m for m in msgs if m.ts_ms < warm_until_ms]
    paced = [m for m in msgs if m.ts_ms >= warm_until_ms]
    receiver = WebhookReceiver(SECRET).start()
    try:
        r = engine.http.put(
            "/v1/webhooks/bench",
            content=orjson.dumps({"url": receiver.url, "secret": SECRET, "types": HOOK_TYPES}),
        )
        r.raise_for_status()
        before = engine.metrics()
        log(f"latency: warm-up, the first fix of {len(warm)} devices")
        pubs = bench.start_publishers(warm, "latency-warm", publishers=1)
        bench.ready(pubs)
        for p in pubs:
            p.send(f"go {time.time()}")
        _, warm_check = bench.finish_publishers(pubs)
        engine.wait_handled(before.handled() + len(warm))
        # The paced part starts once its publisher is surely ready: a short lead from now.
        start_s = time.time() + 2.0 + len(paced) / 20_000
        start_ms = round(start_s * 1000)
        paced = shifted(paced, start_ms - warm_until_ms)
        due = [(m.ts_ms - start_ms) / 1000 for m in paced]
        pubs = bench.start_publishers(paced, "latency-paced", publishers=1, due_s=due)
        bench.ready(pubs)
        if time.time() > start_s:
            log("latency: WARNING the publisher was ready after the planned start")
        rate_s = len(paced) / (due[-1] - due[0]) if len(due) > 1 else math.nan
        log(f"latency: {len(paced)} readings paced over {due[-1]:.0f} s ({rate_s:.0f}/s)")
        mark0 = CpuMark.take(engine, bench.broker)
        base = engine.metrics()
        pubs[0].send(f"go {start_s}")
        results, pub_check = bench.finish_publishers(pubs)
        sent_at: list[float] = results[0]["sent_at"]
        # The reference is computed afterwards; until then, wait for webhooks to stop coming.
        quiet_since, count = time.time(), -1
        while time.time() - quiet_since < 1.0:
            n = receiver.counts.requests
            if n != count:
                quiet_since, count = time.time(), n
            time.sleep(0.1)
        mark1 = CpuMark.take(engine, bench.broker)
        after = engine.metrics()
        # The reference runs only now: a busy main thread would delay the receiver's clock.
        log(f"latency: reference alerts by an in-process replay of {len(warm) + len(paced)}")
        want = expected_alerts(fences_path, [*warm, *paced])
        want_ids = {a.id for a in want}
        deadline = time.time() + 30
        while time.time() < deadline:
            if want_ids <= set(receiver.ids()):
                break
            time.sleep(0.1)
        got = receiver.deliveries()
        bad_sig = receiver.counts.refused
    finally:
        receiver.stop()
    by_key = {(m.device, m.ts_ms): i for i, m in enumerate(paced)}
    total: list[float] = []
    to_engine: list[float] = []
    to_hook: list[float] = []
    seen: Counter[str] = Counter()
    unmatched = 0
    for delivery in got:
        at, body = delivery.received_s, delivery.alert
        seen[str(body["id"])] += 1
        i = by_key.get((str(body["device_id"]), _iso_ms(str(body["ts"]))))
        if i is None:
            unmatched += 1
            continue
        detected = _iso_ms(str(body["detected_at"])) / 1000
        total.append((at - sent_at[i]) * 1000)
        to_engine.append((detected - sent_at[i]) * 1000)
        to_hook.append((at - detected) * 1000)
    delta = counter_delta(base, after)
    problems = [c for c in (warm_check, pub_check) if c != "ok"]
    missing = want_ids - set(seen)
    extra = set(seen) - want_ids
    if missing:
        problems.append(f"{len(missing)} of {len(want_ids)} expected alerts never arrived")
    if extra:
        problems.append(f"{len(extra)} alerts arrived that the reference did not raise")
    if any(n > 1 for n in seen.values()):
        problems.append(f"{sum(n > 1 for n in seen.values())} alerts arrived more than once")
    if bad_sig:
        problems.append(f"{bad_sig} webhooks with a bad signature")
    if unmatched:
        problems.append(f"{unmatched} webhooks matched no published reading")
    if not want_ids:
        problems.append("the readings raised no enter/exit alert: nothing was measured")
    readings_check = engine_check(delta, len(paced))
    if readings_check != "ok":
        problems.append(readings_check)
    span = sent_at[-1] - sent_at[0] if len(sent_at) > 1 else math.nan
    lag = [s - (start_s + d) for s, d in zip(sent_at, due, strict=True)]

    def stats(values: list[float]) -> dict[str, float | None]:
        return {
            "p50": _r(percentile(values, 50), 2),
            "p95": _r(percentile(values, 95), 2),
            "p99": _r(percentile(values, 99), 2),
            "max": _r(max(values) if values else math.nan, 2),
        }

    return {
        "devices": len(warm),
        "readings_paced": len(paced),
        "paced_rate_per_s": _r(rate(len(paced) - 1, span), 1),
        "paced_seconds": _r(span, 2),
        "publish_lag_ms_p99": _r(percentile(lag, 99) * 1000, 2),
        "alerts_expected": len(want_ids),
        "alerts_received": len(got),
        "alerts_by_type": dict(Counter(a.type.value for a in want)),
        "readings_raising_alerts": len({(a.device_id, a.ts_ms) for a in want}),
        "latency_ms": stats(total),
        "publish_to_engine_ms": stats(to_engine),
        "engine_to_webhook_ms": stats(to_hook),
        "cpu": cpu_split(mark0, mark1, float(results[0]["cpu_s"])),
        "engine_cpu_us_per_reading": _r(
            (mark1.engine - mark0.engine) / len(paced) * 1e6 if paced else math.nan, 2
        ),
        "counters": delta,
        "check": "ok" if not problems else "WRONG: " + "; ".join(problems),
    }


# -- the whole run


@dataclass(slots=True)
class Sizes:
    """What one run measures."""

    devices: int
    fences: int
    messages: int
    array_size: int
    arrays_per_device: int
    latency_rate: int
    latency_s: int
    latency_interval_s: int
    mem_devices: int
    mem_fences: int
    mem_fixes: int
    mem_more_fixes: int


def sizes(args: argparse.Namespace) -> Sizes:
    """The sizes from the options (`--quick` changes the defaults, not explicit values)."""
    quick = args.quick

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    return Sizes(
        devices=pick(args.devices, 10_000, 500),
        fences=pick(args.fences, 10_000, 500),
        messages=pick(args.messages, 200_000, 5_000),
        array_size=args.array_size,
        arrays_per_device=pick(args.arrays_per_device, 2, 2),
        latency_rate=pick(args.latency_rate, 2000, 200),
        latency_s=pick(args.latency_s, 30, 5),
        latency_interval_s=5,
        mem_devices=pick(args.mem_devices, 50_000, 1000),
        mem_fences=pick(args.mem_fences, 1000, 200),
        mem_fixes=pick(args.mem_fixes, 35, 35),
        mem_more_fixes=pick(args.mem_more_fixes, 10, 10),
    )


@contextmanager
def database(
    args: argparse.Namespace, work: Path, name: str
) -> Iterator[tuple[str, Callable[[str], int]]]:
    """A fresh database for one engine: its URL and a row counter (`table` -> count(*))."""
    if args.db == "sqlite":
        path = work / f"{name}.db"

        def count(table_name: str) -> int:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                return int(conn.execute(f"SELECT count(*) FROM {table_name}").fetchone()[0])  # noqa: S608  # our table names

        yield f"sqlite:///{path}", count
        return
    import psycopg
    from psycopg import sql

    schema = f"pw_bench_{name}_{uuid.uuid4().hex[:8]}".replace("-", "_")
    sep = "&" if "?" in args.pg_dsn else "?"
    url = f"{args.pg_dsn}{sep}options=-csearch_path%3D{schema}"

    def pg_count(table_name: str) -> int:
        with psycopg.connect(args.pg_dsn) as conn:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table_name)
                )
            ).fetchone()
            return int(row[0]) if row else 0

    try:
        yield url, pg_count
    finally:
        with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def measure(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], list[Run]]:
    """Generate, start, measure every part, check; the JSON document."""
    sz = sizes(args)
    now_ms = round(time.time() * 1000)
    checks: dict[str, str] = {}

    # The fleet of the throughput runs: single messages live, then drained, then arrays.
    single_steps = math.ceil(sz.messages / sz.devices)
    array_fixes = sz.array_size * sz.arrays_per_device
    fixes = 2 * single_steps + array_fixes + 1
    log(f"generating the fleet: {sz.devices} devices x {fixes} fixes, {sz.fences} fences")
    fleet = make_fleet(
        work / "fleet", args.seed, sz.devices, sz.fences, fixes, 30, 0.6, extras=True
    )
    span_ms = round(fleet.event_span_s * 1000)
    # Event times end an hour before now: in the past, as replayed history would be.
    msgs = read_messages(fleet.readings, now_ms - 3_600_000 - span_ms - T0_MS)
    live = Workload("single_live", "live, 1 reading/msg", msgs[: sz.messages])
    drain = Workload("single_drain", "drain, 1 reading/msg", msgs[sz.messages : 2 * sz.messages])
    arrays = Workload(
        "arrays_live",
        f"live, {sz.array_size} readings/msg",
        as_arrays(msgs[2 * sz.messages :], sz.array_size),
    )
    del msgs
    lat_devices = sz.latency_rate * sz.latency_interval_s
    lat_fixes = 1 + max(1, math.ceil(sz.latency_s / sz.latency_interval_s))
    log(f"generating the latency fleet: {lat_devices} devices x {lat_fixes} fixes")
    lat_fleet = make_fleet(
        work / "latency", args.seed, lat_devices, sz.fences, lat_fixes, 5, 0.6, extras=False
    )
    if lat_fleet.fences.read_bytes() != fleet.fences.read_bytes():
        msg = "the latency fleet's fences differ from the engine's: same seed and count needed"
        raise RuntimeError(msg)

    broker = PrivateBroker(work)
    broker.start()
    bench = Bench(args, work, broker)
    doc: dict[str, Any] = {}
    try:
        with (
            database(args, work, "main") as (db_url, count_rows),
            EngineProcess(broker, db_url, work, "pw-bench") as engine,
        ):
            log("starting pledgewatch run")
            engine.start()
            rss_started = engine.rss()
            log(f"loading {sz.fences} fences and {sz.devices} loans through the API")
            setup = engine.load(fleet.fences, fleet.loans)
            time.sleep(1.0)  # the engine takes API changes between batches
            rss_loaded = engine.rss()
            memory_a: list[dict[str, object]] = [
                {"state": "started (empty store)", "devices": 0, "rss_bytes": rss_started},
                {"state": "fences and loans loaded", "devices": 0, "rss_bytes": rss_loaded},
            ]
            fixes_so_far = 0
            for w, drained in ((live, False), (drain, True), (arrays, False)):
                how = "drain" if drained else "live"
                log(f"{w.label}: bare paho subscriber, {len(w.messages)} messages ({how})")
                bench.bare(w, drained, engine)
                log(f"{w.label}: pledgewatch run, {len(w.messages)} messages ({how})")
                run = bench.engine(w, drained, engine)
                log(
                    f"  bare {fmt_rate(bench.runs[-2].readings_per_s)} vs engine "
                    f"{fmt_rate(run.readings_per_s)} readings/s ({run.check})"
                )
                fixes_so_far += round(w.readings / sz.devices)
                memory_a.append(
                    {
                        "state": f"after {w.label}",
                        "devices": int(engine.metrics().total("pledgewatch_devices")),
                        "readings_per_device": fixes_so_far,
                        "rss_bytes": engine.rss(),
                    }
                )
            latency = run_latency(bench, engine, fleet.fences, lat_fleet, sz.latency_interval_s)
            log(
                f"latency: p99 {latency['latency_ms']['p99']} ms over "  # type: ignore[index]  # our dict
                f"{latency['alerts_received']} webhooks ({latency['check']})"
            )
            final = engine.metrics()
            peak = tree_memory(engine.pid)["VmHWM"]
            status = engine.stop()
            published = sum(r.readings for r in bench.runs if r.consumer == "engine")
            published += int(latency["devices"]) + int(latency["readings_paced"])  # type: ignore[call-overload]  # ints we put there
            stored = count_rows("telemetry")
            checks["engine_exit_status"] = "ok" if status == 0 else f"WRONG: exit status {status}"
            checks["telemetry_rows"] = (
                "ok" if stored == published else f"WRONG: {stored} rows, {published} published"
            )
            tail = engine.log_tail(200_000)
            checks["engine_log"] = (
                "ok"
                if "Traceback" not in tail and " ERROR " not in tail
                else "WRONG: errors in the log"
            )
            doc["setup"] = {k: _r(v, 3) for k, v in setup.items()}
            doc["engine_totals"] = {
                "readings": final.total(READINGS),
                "alerts_by_type": final.by_label("pledgewatch_alerts_total"),
                "deliveries": final.by_label("pledgewatch_deliveries_total"),
                "telemetry_rows": stored,
                "peak_rss_bytes": peak,
            }
            doc["latency"] = latency
        log(f"memory: a second engine, {sz.mem_fences} fences, {sz.mem_devices} devices, no loans")
        doc["memory_b"] = run_memory(bench, sz, now_ms)
    finally:
        bench.kill_children()
        broker.stop()
    if args.profile:
        log("profile: Engine.process in this process, the same messages, timed then cProfiled")
        lat = doc["latency"]["counters"]
        paced_batch = max(1, round(rate(int(lat["readings"]), lat["batches_over_1ms"])))
        doc["profile"] = profile_engine(
            args, work, fleet, sz.devices, live, arrays, bench.runs, paced_batch
        )
    doc["memory_a"] = memory_a
    doc["sizes"] = sz
    doc["checks"] = checks
    return doc, bench.runs


def feed(engine: Engine, messages: Sequence[Msg], batch: int) -> int:
    """Messages through `Engine.process` in batches, stamped with the wall clock as MQTT
    would; the alerts raised."""
    alerts = 0
    for i in range(0, len(messages), batch):
        now = round(time.time() * 1000)
        chunk = [
            Message(m.topic, m.payload.encode(), 1, i + j, now, 1)
            for j, m in enumerate(messages[i : i + batch])
        ]
        alerts += len(engine.process(chunk))
    return alerts


def timed_and_profiled(
    engine: Engine, timed: Sequence[Msg], profiled: Sequence[Msg], batch: int, title: str
) -> dict[str, object]:
    """Feed `timed` (wall and CPU time), then `profiled` under cProfile."""
    readings = sum(m.readings for m in timed)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    alerts = feed(engine, timed, batch)
    seconds, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    profiler = cProfile.Profile()
    wall0 = time.perf_counter()
    profiler.enable()
    feed(engine, profiled, batch)
    profiler.disable()
    profiled_s = time.perf_counter() - wall0
    profiled_readings = sum(m.readings for m in profiled)
    text = profile_text(
        profiler,
        f"=== Engine.process, {title}: {profiled_readings} readings in batches of {batch} "
        f"messages, {profiled_s:.2f} s under cProfile",
    )
    return {
        "batch_messages": batch,
        "readings": readings,
        "seconds": _r(seconds, 3),
        "readings_per_s": _r(rate(readings, seconds), 1),
        "cpu_us_per_reading": _r(cpu / readings * 1e6 if readings else math.nan, 2),
        "alerts_per_reading": _r(alerts / readings if readings else math.nan, 3),
        "profiled_readings": profiled_readings,
        "profiled_readings_per_s": _r(rate(profiled_readings, profiled_s), 1),
        "profile": text,
    }


def profile_engine(
    args: argparse.Namespace,
    work: Path,
    fleet: Inputs,
    devices: int,
    single: Workload,
    arrays: Workload,
    runs: Sequence[Run],
    paced_batch: int,
) -> dict[str, object]:
    """`Engine.process` in this process (no MQTT, no API, no dispatcher) on the messages of
    the live runs, in batches of the size the live engine took (and, for single readings,
    of the size it took in the paced latency run, `paced_batch`): what the engine thread
    costs per reading, and where that goes."""

    def batch_of(workload: str, per_message: float) -> int:
        run = next((r for r in runs if r.workload == workload and r.consumer == "engine"), None)
        per_batch = run.extra.get("readings_per_batch") if run is not None else None
        if not isinstance(per_batch, float):
            return 1000
        return max(1, min(1000, round(per_batch / per_message)))

    out: dict[str, object] = {}
    with database(args, work, "profile") as (db_url, _):
        store = open_store(db_url)
        try:
            store.migrate()
            now = round(time.time() * 1000)
            store.put_fences(load_fences(fleet.fences))
            for loan in parse_loans(orjson.loads(fleet.loans.read_bytes())):
                store.put_loan(loan, [], now)
            engine = Engine(store, None)
            engine.load()
            tune_gc()
            batch = batch_of("single_live", 1.0)
            feed(engine, single.messages[:devices], batch)  # every device's first fix, untimed
            rest = single.messages[devices:]
            wanted = args.profile_readings or (1000 if args.quick else 20_000)
            n = min(wanted, len(rest) // 4)
            out["single"] = timed_and_profiled(
                engine, rest[:n], rest[n : 2 * n], batch, "1 reading/msg"
            )
            out["single_paced"] = timed_and_profiled(
                engine,
                rest[2 * n : 3 * n],
                rest[3 * n : 4 * n],
                paced_batch,
                "1 reading/msg, batches as small as in the latency run",
            )
            size = max(1, round(arrays.per_message))
            k = min(max(1, wanted // size), len(arrays.messages) // 2)
            out["arrays"] = timed_and_profiled(
                engine,
                arrays.messages[:k],
                arrays.messages[k : 2 * k],
                batch_of("arrays_live", arrays.per_message),
                f"{size} readings/msg",
            )
        finally:
            store.close()
    return out


def run_memory(bench: Bench, sz: Sizes, now_ms: int) -> dict[str, object]:
    """RSS of a second engine (no loans) as devices gain state: half the devices with
    `mem_fixes` readings each, then the other half, then `mem_more_fixes` more for all (one
    array message per device and round). The second round gives the marginal bytes per
    device (the same batches, twice the devices); the third, whether more readings grow it."""
    args = bench.args
    m = sz.mem_devices
    fleet = make_fleet(
        bench.work / "memory",
        args.seed + 1,
        m,
        sz.mem_fences,
        sz.mem_fixes + sz.mem_more_fixes,
        30,
        0.6,
        extras=False,
    )
    span_ms = round(fleet.event_span_s * 1000)
    msgs = read_messages(fleet.readings, now_ms - 3_600_000 - span_ms - T0_MS, ("trk-", "mem-"))
    first, more = split_by_device_count(msgs, [sz.mem_fixes, sz.mem_more_fixes])
    del msgs
    half = m // 2

    def lower(msg: Msg) -> bool:
        return int(msg.device.rsplit("-", 1)[1]) < half

    rounds = [
        (f"first {half:,} devices", [x for x in first if lower(x)], sz.mem_fixes),
        (f"other {m - half:,} devices", [x for x in first if not lower(x)], sz.mem_fixes),
        (f"{sz.mem_more_fixes} more each", more, sz.mem_more_fixes),
    ]
    rows: list[dict[str, object]] = []
    checks: list[str] = []
    with (
        database(args, bench.work, "memory") as (db_url, count_rows),
        EngineProcess(bench.broker, db_url, bench.work, "pw-bench-memory") as engine,
    ):
        engine.start()
        setup = engine.load(fleet.fences, None)
        time.sleep(1.0)
        rows.append({"state": "fences loaded", "devices": 0, "rss_bytes": engine.rss()})
        published = 0
        per_device = 0
        for i, (label, part, size) in enumerate(rounds, 1):
            w = Workload(f"memory_round_{i}", label, as_arrays(part, size))
            before = engine.metrics()
            pubs = bench.start_publishers(w.messages, w.name)
            bench.ready(pubs)
            cpu0 = engine.cpu_s()
            for p in pubs:
                p.send(f"go {time.time()}")
            results, pub_check = bench.finish_publishers(pubs)
            ended, after = engine.wait_handled(before.handled() + w.readings)
            started = min(r["first_s"] for r in results)
            delta = counter_delta(before, after)
            checks.append(engine_check(delta, w.readings, pub_check))
            published += w.readings
            per_device = sz.mem_fixes if i < len(rounds) else sz.mem_fixes + size
            rows.append(
                {
                    "state": f"after {label}",
                    "devices": int(after.total("pledgewatch_devices")),
                    "readings_per_device": per_device,
                    "rss_bytes": engine.rss(),
                    "messages": len(w.messages),
                    "readings": w.readings,
                    "readings_per_s": _r(rate(w.readings, ended - started), 1),
                    "engine_cpu_us_per_reading": _r((engine.cpu_s() - cpu0) / w.readings * 1e6, 2),
                }
            )
            log(f"memory: after {label}: {rows[-1]}")
        peak = tree_memory(engine.pid)["VmHWM"]
        status = engine.stop()
        stored = count_rows("telemetry")
    if status != 0:
        checks.append(f"WRONG: exit status {status}")
    if stored != published:
        checks.append(f"WRONG: {stored} telemetry rows, {published} published")
    known = [int(r["devices"]) for r in rows[1:]]  # type: ignore[call-overload]  # ints we put there
    if known != [half, m, m]:
        checks.append(f"WRONG: the engine knew {known} devices, expected {[half, m, m]}")
    bad = [c for c in checks if c != "ok"]
    rss = [int(r["rss_bytes"]) for r in rows]  # type: ignore[call-overload]  # ints we put there
    return {
        "fences": sz.mem_fences,
        "devices": m,
        "setup": {k: _r(v, 3) for k, v in setup.items()},
        "rows": rows,
        "marginal_bytes_per_device": _r((rss[2] - rss[1]) / (m - half), 0) if m > half else None,
        "growth_bytes_more_readings": rss[3] - rss[2],
        "peak_rss_bytes": peak,
        "check": "ok" if not bad else "; ".join(bad),
    }


# -- the report


MEM_HEADER = [
    "state",
    "devices",
    "readings/device",
    "RSS MiB",
    "vs loaded MiB",
    "bytes/device",
    "vs previous MiB",
    "marginal bytes/device",
]


def per_device(rows: Sequence[dict[str, Any]], base: int) -> list[list[str]]:
    """Table rows: RSS; growth over row `base` (loaded) and bytes per device; growth over
    the previous row and, where devices were added, bytes per added device."""
    out = []
    loaded = int(rows[base]["rss_bytes"])
    prev: dict[str, Any] | None = None
    for r in rows:
        devices = int(r["devices"])
        rss = int(r["rss_bytes"])
        grown = rss - loaded
        step = rss - int(prev["rss_bytes"]) if prev is not None else None
        added = devices - int(prev["devices"]) if prev is not None else 0
        out.append(
            [
                str(r["state"]),
                f"{devices:,}",
                str(r.get("readings_per_device", "-")),
                f"{rss / MiB:,.1f}",
                f"{grown / MiB:+,.1f}" if devices else "-",
                f"{grown / devices:,.0f}" if devices else "-",
                f"{step / MiB:+,.1f}" if step is not None else "-",
                f"{step / added:,.0f}" if step is not None and added > 0 else "-",
            ]
        )
        prev = r
    return out


def report(doc: dict[str, Any], runs: Sequence[Run], args: argparse.Namespace) -> str:
    """The tables, the ratios and the verdicts against the targets."""
    sz: Sizes = doc["sizes"]
    info = doc["machine"]
    db = "SQLite" if args.db == "sqlite" else "PostgreSQL"
    title = (
        f"pledgewatch run vs a bare paho-mqtt subscriber, the same publishers, one run: "
        f"{sz.devices:,} devices ({sz.devices:,} loans), {sz.fences:,} fences, {db}"
    )
    setting = (
        f"{args.publishers} publisher processes (paho, QoS 1, MQTT v5); private "
        f"{doc['mosquitto'] or 'mosquitto'}; {info['cpu_count']} CPUs, load average at start "
        f"{info['load_average_at_start']}"
    )
    lines = [title, setting, ""]
    rows = []
    by_key = {(r.workload, r.consumer): r for r in runs}
    labels = {"single_live": "live, 1 reading/msg", "single_drain": "drain, 1 reading/msg"}
    labels["arrays_live"] = f"live, {sz.array_size} readings/msg"
    for r in runs:
        bare = by_key.get((r.workload, "bare"))
        ratio = "-"
        if r.consumer == "engine" and bare is not None:
            b, e = bare.msgs_per_s, r.msgs_per_s
            ratio = fmt_ratio(e / b) if b and e else "-"
        cpu = r.extra.get("cpu", {})
        others = cpu.get("others_cpu_s") if isinstance(cpu, dict) else None
        rows.append(
            [
                labels.get(r.workload, r.workload),
                "pledgewatch run" if r.consumer == "engine" else "bare paho",
                f"{r.messages:,}",
                f"{r.readings:,}",
                f"{r.seconds:.2f}",
                fmt_rate(r.msgs_per_s) if r.ok else "WRONG",
                fmt_rate(r.readings_per_s) if r.ok else "WRONG",
                fmt_rate(rate(r.messages, r.publish_s)),
                f"{r.cpu_us_per_reading:.1f}",
                f"{others:.1f}" if others is not None else "-",
                _alerts_per_reading(r),
                ratio,
            ]
        )
    header = [
        "workload",
        "consumer",
        "messages",
        "readings",
        "seconds",
        "msgs/s",
        "readings/s",
        "published/s",
        "cpu µs/reading",
        "others' cpu s",
        "alerts/reading",
        "engine/bare",
    ]
    lines += [table(header, rows), ""]
    lines += verdicts(doc, runs, sz)
    lat = doc["latency"]
    lines += [
        "",
        (
            f"latency, publish -> signed webhook received: {lat['readings_paced']:,} "
            f"single-reading messages paced at {fmt_rate(lat['paced_rate_per_s'])}/s for "
            f"{lat['paced_seconds']} s, {lat['devices']:,} devices (no loans); webhooks for "
            "geofence.enter/exit"
        ),
    ]
    lrows = []
    for key, label in (
        ("latency_ms", "publish -> webhook"),
        ("publish_to_engine_ms", "publish -> engine (detected_at)"),
        ("engine_to_webhook_ms", "engine (detected_at) -> webhook"),
    ):
        s = lat[key]
        lrows.append([label, *(_ms(s[q]) for q in ("p50", "p95", "p99", "max"))])
    lines += [table(["ms", "p50", "p95", "p99", "max"], lrows)]
    lines.append(
        f"alerts expected (in-process replay) {lat['alerts_expected']:,}, webhooks received "
        f"{lat['alerts_received']:,}, from {lat['readings_raising_alerts']:,} of "
        f"{lat['readings_paced']:,} readings; engine CPU {lat['engine_cpu_us_per_reading']} "
        f"µs/reading; check: {lat['check']}"
    )
    lines += [
        "",
        (
            "memory: the engine's RSS (VmRSS); per device against the loaded row, and per added "
            "device against the previous row"
        ),
        f"engine A: {sz.fences:,} fences, {sz.devices:,} loans (the runs above)",
        table(MEM_HEADER, per_device(doc["memory_a"], 1)),
    ]
    mb = doc["memory_b"]
    lines += [
        (
            f"engine B: {mb['fences']:,} fences, no loans, {mb['devices']:,} devices, one array "
            f"message per device and round; peak RSS {mb['peak_rss_bytes'] / MiB:,.1f} MiB; "
            f"check: {mb['check']}"
        ),
        table(MEM_HEADER, per_device(mb["rows"], 0)),
    ]
    prof = doc.get("profile")
    if prof:
        latency_cpu = doc["latency"].get("engine_cpu_us_per_reading")
        lines += ["", *profile_report(prof, by_key, latency_cpu)]
    failed = {k: v for k, v in doc["checks"].items() if v != "ok"}
    lines += ["", "checks: " + ("all passed" if doc["checks_passed"] else f"FAILED {failed}")]
    return "\n".join(lines)


def profile_report(
    prof: dict[str, Any], by_key: dict[tuple[str, str], Run], latency_cpu: float | None
) -> list[str]:
    """The in-process timing of `Engine.process` next to the live engine's CPU, and the
    top of each profile."""
    rows = []
    notes = []
    for key, workload, label in (
        ("single", "single_live", "1 reading/msg"),
        ("single_paced", "latency", "1 reading/msg, paced batches"),
        ("arrays", "arrays_live", "arrays"),
    ):
        p = prof.get(key)
        if not p:
            continue
        live = by_key.get((workload, "engine"))
        live_cpu = f"{live.cpu_us_per_reading:.1f}" if live is not None else "-"
        if workload == "latency":
            live_cpu = f"{latency_cpu:.1f}" if latency_cpu is not None else "-"
        rows.append(
            [
                label,
                f"{p['batch_messages']:,}",
                f"{p['readings']:,}",
                fmt_rate(p["readings_per_s"]),
                f"{p['cpu_us_per_reading']:.1f}",
                live_cpu,
                f"{p['alerts_per_reading']:.2f}",
                fmt_rate(p["profiled_readings_per_s"]),
            ]
        )
        notes.append((label, p["profile"]))
    header = [
        "Engine.process",
        "batch msgs",
        "readings",
        "readings/s",
        "cpu µs/reading",
        "live process µs/reading",
        "alerts/reading",
        "under cProfile",
    ]
    lines = [
        (
            "where the engine's time goes: Engine.process in this process (no MQTT, API or "
            "dispatcher), the live runs' messages in batches of the size the live engine took; "
            "the live process's CPU per reading adds MQTT, acks, API and dispatcher"
        ),
        table(header, rows),
    ]
    for label, text in notes:
        lines += ["", f"profile of Engine.process, {label}, top {PROFILE_TOP} by cumulative time:"]
        lines.append(top_cumulative(text).strip("\n"))
    return lines


def _alerts_per_reading(run: Run) -> str:
    counters = run.extra.get("counters")
    if not isinstance(counters, dict) or not run.readings:
        return "-"
    return f"{counters['alerts'] / run.readings:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def verdicts(doc: dict[str, Any], runs: Sequence[Run], sz: Sizes) -> list[str]:
    """One line per target: the measured value, the target, meets or MISSES."""
    by_key = {(r.workload, r.consumer): r for r in runs}
    out = []
    for workload, label in (("single_live", "live"), ("single_drain", "drain")):
        bare, eng = by_key.get((workload, "bare")), by_key.get((workload, "engine"))
        if bare is None or eng is None:
            continue
        b, e = bare.msgs_per_s, eng.msgs_per_s
        ratio = e / b if b and e else None
        verdict = "-" if ratio is None else ("meets" if ratio >= TARGET_RATIO else "MISSES")
        out.append(
            f"1 reading/msg, {label}: engine/bare {fmt_ratio(ratio)} "
            f"(target >= {TARGET_RATIO:.2f}x) -> {verdict}"
        )
    arrays = by_key.get(("arrays_live", "engine"))
    if arrays is not None:
        rps = arrays.readings_per_s
        verdict = "-" if rps is None else ("meets" if rps > TARGET_ARRAY_RPS else "MISSES")
        out.append(
            f"{sz.array_size} readings/msg: engine {fmt_rate(rps)} readings/s "
            f"(target > {fmt_rate(TARGET_ARRAY_RPS)}) -> {verdict}"
        )
    p99 = doc["latency"]["latency_ms"]["p99"]
    verdict = "-" if p99 is None else ("meets" if p99 < TARGET_P99_MS else "MISSES")
    out.append(
        f"latency p99 {_ms(p99)} ms at {fmt_rate(doc['latency']['paced_rate_per_s'])} "
        f"readings/s (target < {TARGET_P99_MS:.0f} ms) -> {verdict}"
    )
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_engine", description=__doc__)
    p.add_argument("--devices", type=int, help="devices (and loans) of the throughput runs")
    p.add_argument("--fences", type=int)
    p.add_argument("--messages", type=int, help="single-reading messages per run")
    p.add_argument("--seed", type=int, default=20261130)
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--pg-dsn", default=DEFAULT_PG_DSN, help="with --db postgres: a scratch DB")
    p.add_argument("--quick", action="store_true", help="small sizes, ~20 s (the smoke test)")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--array-size", type=int, default=50, help="readings per array payload")
    p.add_argument("--arrays-per-device", type=int)
    p.add_argument("--latency-rate", type=int, help="readings/s of the latency run")
    p.add_argument("--latency-s", type=int, help="seconds of the latency run")
    p.add_argument("--mem-devices", type=int)
    p.add_argument("--mem-fences", type=int)
    p.add_argument("--mem-fixes", type=int, help="readings per device, first two memory rounds")
    p.add_argument("--mem-more-fixes", type=int, help="readings per device, third round")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip cProfile")
    p.add_argument("--profile-readings", type=int, help="readings per timed and profiled pass")
    p.add_argument("--work-dir", type=Path, help="keep logs and files here (default: temp)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write `<out-dir>/bench_engine.json`."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in WORKERS:
        return WORKERS[args_list[0]](args_list[1:])
    args = parse_args(args_list)
    started = time.perf_counter()
    info = machine_info()
    with ExitStack() as stack:
        if args.work_dir is not None:
            work = args.work_dir
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-bench-")))
        doc, runs = measure(args, work)
    sz: Sizes = doc["sizes"]
    checks: dict[str, str] = {f"{r.workload}/{r.consumer}": r.check for r in runs}
    checks["latency"] = doc["latency"]["check"]
    checks["memory_b"] = doc["memory_b"]["check"]
    checks.update(doc["checks"])
    doc["checks"] = checks
    doc["checks_passed"] = all(v == "ok" for v in checks.values())
    doc["machine"] = info
    doc["mosquitto"] = mosquitto_version()
    text = report(doc, runs, args)
    print(text)
    by_key = {(r.workload, r.consumer): r for r in runs}
    ratios: dict[str, float | None] = {}
    for workload in ("single_live", "single_drain", "arrays_live"):
        bare, eng = by_key.get((workload, "bare")), by_key.get((workload, "engine"))
        b = bare.msgs_per_s if bare else None
        e = eng.msgs_per_s if eng else None
        ratios[f"{workload}_engine_over_bare"] = _r(e / b, 3) if b and e else None
    out: dict[str, object] = {
        "benchmark": "bench_engine",
        "checks_passed": doc["checks_passed"],
        "machine": info,
        "mosquitto": doc["mosquitto"],
        "parameters": {
            **dataclasses.asdict(sz),
            "seed": args.seed,
            "db": args.db,
            "publishers": args.publishers,
            "quick": args.quick,
            "engine": "pledgewatch run, defaults (max_batch 1000, Receive Maximum 2000)",
        },
        "setup": doc["setup"],
        "runs": [r.as_json() for r in runs],
        "ratios": ratios,
        "targets": {
            "single_live_engine_over_bare_min": TARGET_RATIO,
            "arrays_readings_per_s_min": TARGET_ARRAY_RPS,
            "latency_p99_ms_max": TARGET_P99_MS,
        },
        "latency": doc["latency"],
        "memory": {"engine_a": doc["memory_a"], "engine_b": doc["memory_b"]},
        "engine_totals": doc["engine_totals"],
        "profile": doc.get("profile"),
        "checks": checks,
        "table": text,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    write_json(args.out_dir / "bench_engine.json", out)
    if not doc["checks_passed"]:
        print("SOME CHECKS FAILED: see 'checks' in the JSON", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the engines, helpers and broker are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
