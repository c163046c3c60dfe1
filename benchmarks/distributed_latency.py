"""The distributed benchmark's latency run: paced single-reading MQTT messages through
`pledgewatch bridge` and a `pledgewatch worker --http` (API, outbox, dispatcher), every
geofence enter/exit they raise as a signed webhook to a receiver in this process, checked
against an in-process replay of the same readings with the same loans."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from alerts.model import Alert
from benchmarks.common import log, percentile
from benchmarks.distributed_cluster import (
    KafkaProbe,
    bridge,
    fleet_changes,
    kafka_cpu_s,
    private_kafka,
    process_cpu_s,
    worker,
)
from benchmarks.distributed_throughput import RECORDS, Marks, cpu_between
from benchmarks.engine_latency import HOOK_TYPES, SECRET, pacing
from benchmarks.engine_publishers import HelperPool
from benchmarks.engine_runs import rounded
from benchmarks.engine_workload import Msg, read_messages, shifted
from benchmarks.replay_workload import T0_MS, Inputs
from engine.core.config import Config
from engine.distributed.settings import READINGS
from engine.runtime.replay import Replay
from geofence.fence import load_fences
from geofence.index import FenceIndex
from lending.model import parse_loan
from simulator.harness.broker import PrivateBroker
from simulator.harness.cluster_process import ClusterProcess
from simulator.harness.receiver import ReceivedWebhook, WebhookReceiver

FAUST_FETCH_MAX_WAIT_MS = 1500
"""What Faust's consumer asks a fetch to wait for data (faust-streaming 0.15.3 hard-codes it in
`faust/transport/drivers/aiokafka.py`)."""


def broker_hop(work: Path, wait_ms: Sequence[int], samples: int) -> dict[str, Any]:
    """One Kafka hop on a fresh tansu: a record produced (acks=all) to the moment a consumer
    already waiting on the topic has it, by the consumer's fetch wait. A broker that answers a
    waiting fetch when data comes (Apache Kafka with fetch.min.bytes 1) makes this a few ms
    whatever the wait; one that holds the fetch for its whole wait adds up to it per hop."""

    async def hop(bootstrap: str, topic: str, wait: int) -> list[float]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        await producer.send_and_wait(topic, b"0", partition=0)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="latest",
            fetch_max_wait_ms=wait,
        )
        await consumer.start()
        out: list[float] = []
        try:
            await asyncio.sleep(1.0)
            for i in range(samples):
                sent = time.perf_counter()
                await producer.send_and_wait(topic, str(i).encode(), partition=0)
                await consumer.getone()
                out.append((time.perf_counter() - sent) * 1000)
                await asyncio.sleep(0.137)  # out of step with any fetch cycle
        finally:
            await consumer.stop()
            await producer.stop()
        return out

    doc: dict[str, Any] = {"samples": samples}
    with private_kafka(work / "hop") as kafka:
        for wait in wait_ms:
            ms = asyncio.run(hop(kafka.bootstrap, f"hop-{wait}", wait))
            doc[f"fetch_max_wait_{wait}ms"] = {
                "p50": rounded(percentile(ms, 50), 1),
                "max": rounded(max(ms), 1),
            }
    return doc


def _iso_ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def expected_alerts(fleet: Inputs, lines: Sequence[Msg]) -> list[Alert]:
    """The enter/exit alerts the core raises for these messages with the fleet's loans, by an
    in-process replay: the reference the webhooks are checked against."""
    index = FenceIndex.build(load_fences(fleet.fences))
    loans = [parse_loan(str(d["loan_id"]), d) for d in orjson.loads(fleet.loans.read_bytes())]
    alerts: list[Alert] = []
    replay = Replay(index, loans, Config(), on_alert=alerts.append)
    replay.feed(orjson.dumps({"topic": m.topic, "payload": orjson.loads(m.payload)}) for m in lines)
    replay.finish()
    return [a for a in alerts if a.type.value in HOOK_TYPES]


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "n": len(values),
        "p50": rounded(percentile(values, 50), 1),
        "p95": rounded(percentile(values, 95), 1),
        "p99": rounded(percentile(values, 99), 1),
        "max": rounded(max(values) if values else math.nan, 1),
    }


def _wait_stepped(w: ClusterProcess, want: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while w.metrics().value(RECORDS, topic=READINGS) < want:
        if time.monotonic() > deadline:
            msg = f"the worker did not step {want} readings within {timeout_s:.0f} s"
            raise TimeoutError(msg)
        time.sleep(0.1)


def _wait_quiet(receiver: WebhookReceiver, quiet_s: float = 1.0) -> None:
    quiet_since, count = time.time(), -1
    while time.time() - quiet_since < quiet_s:
        n = receiver.counts.requests
        if n != count:
            quiet_since, count = time.time(), n
        time.sleep(0.1)


def run_latency(
    work: Path,
    broker: PrivateBroker,
    pool: HelperPool,
    fleet: Inputs,
    interval_s: int,
    checkpoint_s: float,
    opts: Any,
) -> dict[str, Any]:
    """Warm-up (each device's first fix), then the fixes paced at their event times; every
    geofence enter/exit must arrive once, signed; latency from the publish of the reading
    that raised it to the webhook's arrival."""
    run_dir = work / f"latency-{checkpoint_s:g}s"
    interval_ms = interval_s * 1000
    warm_until_ms = round(time.time() * 1000)
    msgs = read_messages(fleet.readings, warm_until_ms - (T0_MS + interval_ms))
    warm = [m for m in msgs if m.ts_ms < warm_until_ms]
    paced = [m for m in msgs if m.ts_ms >= warm_until_ms]
    receiver = WebhookReceiver(SECRET).start()
    try:
        with private_kafka(run_dir) as kafka, KafkaProbe(kafka, opts.partitions) as probe:
            probe.create_topics()
            probe.produce(fleet_changes(fleet.fences, fleet.loans))
            w = worker(
                kafka,
                run_dir,
                "worker",
                partitions=opts.partitions,
                checkpoint_s=checkpoint_s,
                store=opts.store,
                lending=opts.lending,
                http=True,
            )
            b = bridge(kafka, broker.url, run_dir, f"lat-bridge-{checkpoint_s:g}", opts.partitions)
            with w, b:
                w.spawn()  # side by side: a worker's start is mostly waiting for its group
                b.spawn()
                w.wait_ready(opts.start_timeout_s)
                b.wait_ready(opts.start_timeout_s)
                with w.client() as http:
                    hook = {"url": receiver.url, "secret": SECRET, "types": HOOK_TYPES}
                    http.put("/v1/webhooks/bench", content=orjson.dumps(hook)).raise_for_status()
                log(f"latency ({checkpoint_s:g} s checkpoints): warm-up, {len(warm)} devices")
                pubs = pool.start_publishers(warm, f"lat-warm-{checkpoint_s:g}", publishers=1)
                pool.ready(pubs)
                pool.go(pubs)
                _, warm_check = pool.finish_publishers(pubs)
                _wait_stepped(w, len(warm), 120.0)
                _wait_quiet(receiver)
                start_s = time.time() + 2.0 + len(paced) / 20_000
                start_ms = round(start_s * 1000)
                paced = shifted(paced, start_ms - warm_until_ms)
                due = [(m.ts_ms - start_ms) / 1000 for m in paced]
                pubs = pool.start_publishers(
                    paced, f"lat-paced-{checkpoint_s:g}", publishers=1, due_s=due
                )
                pool.ready(pubs)
                if time.time() > start_s:
                    log("latency: WARNING the publisher was ready after the planned start")
                log(f"latency: {len(paced)} readings paced over {due[-1]:.0f} s")
                mark0 = _marks(w, b, kafka_cpu_s(kafka), broker)
                pool.go(pubs, start_s)
                results, pub_check = pool.finish_publishers(pubs)
                _wait_stepped(w, len(warm) + len(paced), 120.0)
                _wait_quiet(receiver)
                mark1 = _marks(w, b, kafka_cpu_s(kafka), broker)
                final = w.metrics()
                log(f"latency: the reference, an in-process replay of {len(msgs)} readings")
                want_ids = {a.id for a in expected_alerts(fleet, [*warm, *paced])}
                receiver.wait_for(lambda rs: {str(r.alert["id"]) for r in rs} >= want_ids, 30.0)
            deliveries = receiver.deliveries()
            refused = receiver.counts.refused
    finally:
        receiver.stop()
    sent_at: list[float] = results[0]["sent_at"]
    return _report(
        warm,
        paced,
        due,
        start_s,
        sent_at,
        deliveries,
        want_ids,
        refused,
        [warm_check, pub_check],
        final.value(RECORDS, topic=READINGS),
    ) | {
        "checkpoint_s": checkpoint_s,
        "cpu": _cpu(mark0, mark1, float(results[0]["cpu_s"])),
    }


def _marks(
    w: ClusterProcess, b: ClusterProcess, kafka: float, broker: PrivateBroker
) -> tuple[Marks, float]:
    """A CPU mark with the worker as the process under test, and the bridge's CPU."""
    return Marks.take(process_cpu_s(w), kafka, broker), process_cpu_s(b)


def _cpu(
    a: tuple[Marks, float], b: tuple[Marks, float], publisher_cpu_s: float
) -> dict[str, float]:
    """CPU seconds of the paced part by process; `others`: the machine's busy time that none
    of ours (worker, bridge, brokers, publisher, this process) used."""
    out = cpu_between(a[0], b[0])
    worker = out.pop("process_cpu_s")
    bridge = b[1] - a[1]
    others = out["others_cpu_s"] - bridge - publisher_cpu_s
    return {
        "worker_cpu_s": worker,
        "bridge_cpu_s": round(bridge, 2),
        "publisher_cpu_s": round(publisher_cpu_s, 2),
        **out,
        "others_cpu_s": round(max(0.0, others), 2),
    }


def _report(
    warm: Sequence[Msg],
    paced: Sequence[Msg],
    due: Sequence[float],
    start_s: float,
    sent_at: Sequence[float],
    deliveries: Sequence[ReceivedWebhook],
    want_ids: set[str],
    refused: int,
    checks: Sequence[str],
    stepped: float,
) -> dict[str, Any]:
    by_key = {(m.device, m.ts_ms): i for i, m in enumerate(paced)}
    total: list[float] = []
    to_bridge: list[float] = []
    to_hook: list[float] = []
    seen: Counter[str] = Counter()
    warm_alerts = 0
    for d in deliveries:
        seen[str(d.alert["id"])] += 1
        i = by_key.get((str(d.alert["device_id"]), _iso_ms(str(d.alert["ts"]))))
        if i is None:
            warm_alerts += 1  # raised by a warm-up fix: not timed
            continue
        detected = _iso_ms(str(d.alert["detected_at"])) / 1000
        total.append((d.received_s - sent_at[i]) * 1000)
        to_bridge.append((detected - sent_at[i]) * 1000)
        to_hook.append((d.received_s - detected) * 1000)
    problems = [c for c in checks if c != "ok"]
    if set(seen) - want_ids:
        problems.append(f"{len(set(seen) - want_ids)} alerts the reference did not raise")
    if want_ids - set(seen):
        problems.append(f"{len(want_ids - set(seen))} of {len(want_ids)} alerts never arrived")
    if any(n > 1 for n in seen.values()):
        problems.append(f"{sum(n > 1 for n in seen.values())} alerts arrived more than once")
    if refused:
        problems.append(f"{refused} webhooks with a bad signature")
    if not total:
        problems.append("no paced reading raised an enter/exit alert: nothing was measured")
    if stepped != len(warm) + len(paced):
        problems.append(f"{stepped:.0f} readings stepped, {len(warm) + len(paced)} published")
    return {
        "devices": len(warm),
        **pacing(sent_at, due, start_s),
        "alerts_expected": len(want_ids),
        "alerts_received": len(deliveries),
        "alerts_timed": len(total),
        "alerts_from_warm_up": warm_alerts,
        "latency_ms": _stats(total),
        "publish_to_bridge_ms": _stats(to_bridge),
        "bridge_to_webhook_ms": _stats(to_hook),
        "check": "ok" if not problems else "WRONG: " + "; ".join(problems),
    }
