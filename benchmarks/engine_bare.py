"""The engine benchmark's reference consumer: a bare paho-mqtt subscriber in a helper process
(`python -m benchmarks.bench_engine _subscribe ...`), fed by the same publishers as the
engine, live or as the drain of its queued session."""

from __future__ import annotations

import argparse
import math
import os
import signal
import threading
import time
from collections.abc import Sequence

import orjson
import paho.mqtt.client as mqtt

from benchmarks.engine_publishers import (
    HelperPool,
    HelperProcess,
    cpu_self,
    mqtt_client,
    say,
    start_client,
    wait_while_parent,
)
from benchmarks.engine_runs import CpuMark, ThroughputRun, cpu_split
from benchmarks.engine_workload import Workload
from simulator.harness.engine_process import EngineProcess

BARE_PREFIX = "bench/"
"""The bare subscriber's topics carry this prefix, so the idle engine never sees them."""


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

    client = mqtt_client(a.client_id)
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(a.topic, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    if not start_client(client, a.port, subscribed, "could not subscribe"):
        return 1
    cpu0 = cpu_self()
    say({"ready": True})
    ok = wait_while_parent(done, a.timeout_s)
    result = {
        "messages": count,
        "readings": readings if parse else count,
        "ok": ok,
        "first_s": first,
        "last_s": last,
        "cpu_s": cpu_self() - cpu0,
    }
    client.loop_stop()
    client.disconnect()
    say(result)
    return 0 if ok else 1


def start_subscriber(pool: HelperPool, expected: int, parse: bool) -> HelperProcess:
    """The bare subscriber on the prefixed topics, started (`ready` once subscribed)."""
    args = [
        "--port",
        str(pool.broker.port),
        "--topic",
        BARE_PREFIX + "telematics/+/+",
        "--expected",
        str(expected),
    ]
    return pool.spawn("_subscribe", "bare", [*args, "--parse"] if parse else args)


def run_bare(pool: HelperPool, w: Workload, drain: bool, engine: EngineProcess) -> ThroughputRun:
    """The bare subscriber takes the workload, live or as a drain of its queued session."""
    run = ThroughputRun(w.name, "bare", len(w.messages), w.readings)
    parse = w.per_message > 1
    sub = start_subscriber(pool, len(w.messages), parse)
    pubs = pool.start_publishers(w.messages, f"{w.name}-bare", BARE_PREFIX)
    pool.ready([sub, *pubs])
    if drain:
        os.kill(sub.proc.pid, signal.SIGSTOP)
    mark0 = CpuMark.take(engine, pool.broker)
    pool.go(pubs)
    started = math.nan
    if drain:
        results, pub_check = pool.finish_publishers(pubs)
        started = time.time()
        os.kill(sub.proc.pid, signal.SIGCONT)
    got = sub.read(900)
    mark1 = CpuMark.take(engine, pool.broker)
    if not drain:
        results, pub_check = pool.finish_publishers(pubs)
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
    return run
