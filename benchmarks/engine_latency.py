"""The engine benchmark's latency run: paced single-reading messages, and every geofence
enter/exit alert they raise as a signed webhook to a receiver in this process, checked
against an in-process replay of the same readings."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import httpx
import orjson

from alerts.model import Alert, AlertType
from benchmarks.common import log, percentile, rate
from benchmarks.engine_publishers import HelperPool
from benchmarks.engine_runs import CpuMark, counter_delta, cpu_split, engine_check, rounded
from benchmarks.engine_workload import Msg, read_messages, shifted
from benchmarks.replay_workload import T0_MS, Inputs
from engine.core.config import Config
from engine.runtime.replay import Replay
from geofence.fence import load_fences
from geofence.index import FenceIndex
from simulator.harness.engine_process import EngineProcess
from simulator.harness.receiver import WebhookReceiver

SECRET = "bench-webhook-secret"  # noqa: S105  # the benchmark's own receiver checks it
HOOK_TYPES = (AlertType.GEOFENCE_ENTER.value, AlertType.GEOFENCE_EXIT.value)


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


def pacing(sent_at: Sequence[float], due: Sequence[float], start_s: float) -> dict[str, object]:
    """How a paced publish went: readings, their rate and span, and how late the publisher
    was against the schedule (`due`: seconds after `start_s`) at p99."""
    span = sent_at[-1] - sent_at[0] if len(sent_at) > 1 else math.nan
    lag = [s - (start_s + d) for s, d in zip(sent_at, due, strict=True)]
    return {
        "readings_paced": len(sent_at),
        "paced_rate_per_s": rounded(rate(len(sent_at) - 1, span), 1),
        "paced_seconds": rounded(span, 2),
        "publish_lag_ms_p99": rounded(percentile(lag, 99) * 1000, 2),
    }


def _stats(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": rounded(percentile(values, 50), 2),
        "p95": rounded(percentile(values, 95), 2),
        "p99": rounded(percentile(values, 99), 2),
        "max": rounded(max(values) if values else math.nan, 2),
    }


def run_latency(
    pool: HelperPool,
    engine: EngineProcess,
    http: httpx.Client,
    fences_path: Path,
    fleet: Inputs,
    interval_s: int,
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
        r = http.put(
            "/v1/webhooks/bench",
            content=orjson.dumps({"url": receiver.url, "secret": SECRET, "types": HOOK_TYPES}),
        )
        r.raise_for_status()
        before = engine.metrics(http)
        log(f"latency: warm-up, the first fix of {len(warm)} devices")
        pubs = pool.start_publishers(warm, "latency-warm", publishers=1)
        pool.ready(pubs)
        pool.go(pubs)
        _, warm_check = pool.finish_publishers(pubs)
        engine.wait_handled(before.handled() + len(warm), http)
        # The paced part starts once its publisher is surely ready: a short lead from now.
        start_s = time.time() + 2.0 + len(paced) / 20_000
        start_ms = round(start_s * 1000)
        paced = shifted(paced, start_ms - warm_until_ms)
        due = [(m.ts_ms - start_ms) / 1000 for m in paced]
        pubs = pool.start_publishers(paced, "latency-paced", publishers=1, due_s=due)
        pool.ready(pubs)
        if time.time() > start_s:
            log("latency: WARNING the publisher was ready after the planned start")
        rate_s = len(paced) / (due[-1] - due[0]) if len(due) > 1 else math.nan
        log(f"latency: {len(paced)} readings paced over {due[-1]:.0f} s ({rate_s:.0f}/s)")
        mark0 = CpuMark.take(engine, pool.broker)
        base = engine.metrics(http)
        pool.go(pubs, start_s)
        results, pub_check = pool.finish_publishers(pubs)
        sent_at: list[float] = results[0]["sent_at"]
        # The reference is computed afterwards; until then, wait for webhooks to stop coming.
        quiet_since, count = time.time(), -1
        while time.time() - quiet_since < 1.0:
            n = receiver.counts.requests
            if n != count:
                quiet_since, count = time.time(), n
            time.sleep(0.1)
        mark1 = CpuMark.take(engine, pool.broker)
        after = engine.metrics(http)
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
    return {
        "devices": len(warm),
        **pacing(sent_at, due, start_s),
        "alerts_expected": len(want_ids),
        "alerts_received": len(got),
        "alerts_by_type": dict(Counter(a.type.value for a in want)),
        "readings_raising_alerts": len({(a.device_id, a.ts_ms) for a in want}),
        "latency_ms": _stats(total),
        "publish_to_engine_ms": _stats(to_engine),
        "engine_to_webhook_ms": _stats(to_hook),
        "cpu": cpu_split(mark0, mark1, float(results[0]["cpu_s"])),
        "engine_cpu_us_per_reading": rounded(
            (mark1.engine - mark0.engine) / len(paced) * 1e6 if paced else math.nan, 2
        ),
        "counters": delta,
        "check": "ok" if not problems else "WRONG: " + "; ".join(problems),
    }
