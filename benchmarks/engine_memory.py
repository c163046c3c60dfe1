"""The engine benchmark's memory run: a second engine's RSS as devices gain state, for the
bytes a tracked device costs and whether more readings grow it."""

from __future__ import annotations

import argparse
import time

from benchmarks.common import log, rate
from benchmarks.engine_publishers import HelperPool
from benchmarks.engine_runs import counter_delta, engine_check, rounded
from benchmarks.engine_side import API_TIMEOUT_S, START_TIMEOUT_S, database, engine_process, load
from benchmarks.engine_workload import (
    Msg,
    Sizes,
    Workload,
    as_arrays,
    make_fleet,
    read_messages,
    split_by_device_count,
)
from benchmarks.replay_workload import T0_MS
from simulator.harness.prometheus import DEVICES


def run_memory(
    pool: HelperPool, args: argparse.Namespace, sz: Sizes, now_ms: int
) -> dict[str, object]:
    """RSS of a second engine (no loans) as devices gain state: half the devices with
    `mem_fixes` readings each, then the other half, then `mem_more_fixes` more for all (one
    array message per device and round). The second round gives the marginal bytes per
    device (the same batches, twice the devices); the third, whether more readings grow it."""
    m = sz.mem_devices
    fleet = make_fleet(
        pool.work / "memory",
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
        database(args, pool.work, "memory") as (db_url, count_rows),
        engine_process(pool.broker, db_url, pool.work, "pw-bench-memory") as engine,
    ):
        engine.start(START_TIMEOUT_S)
        with engine.client(API_TIMEOUT_S) as http:
            setup = load(http, fleet.fences, None)
            time.sleep(1.0)
            rows.append({"state": "fences loaded", "devices": 0, "rss_bytes": engine.rss()})
            published = 0
            per_device = 0
            for i, (label, part, size) in enumerate(rounds, 1):
                w = Workload(f"memory_round_{i}", label, as_arrays(part, size))
                before = engine.metrics(http)
                pubs = pool.start_publishers(w.messages, w.name)
                pool.ready(pubs)
                cpu0 = engine.cpu_s()
                pool.go(pubs)
                results, pub_check = pool.finish_publishers(pubs)
                ended, after = engine.wait_handled(before.handled() + w.readings, http)
                started = min(r["first_s"] for r in results)
                delta = counter_delta(before, after)
                checks.append(engine_check(delta, w.readings, pub_check))
                published += w.readings
                per_device = sz.mem_fixes if i < len(rounds) else sz.mem_fixes + size
                rss_now = engine.rss()
                cpu_us = (engine.cpu_s() - cpu0) / w.readings * 1e6
                rows.append(
                    {
                        "state": f"after {label}",
                        "devices": int(after.total(DEVICES)),
                        "readings_per_device": per_device,
                        "rss_bytes": rss_now,
                        "messages": len(w.messages),
                        "readings": w.readings,
                        "readings_per_s": rounded(rate(w.readings, ended - started), 1),
                        "engine_cpu_us_per_reading": rounded(cpu_us, 2),
                    }
                )
                log(f"memory: after {label}: {rows[-1]}")
        peak = engine.peak_rss()
        status = engine.terminate()
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
        "setup": {k: rounded(v, 3) for k, v in setup.items()},
        "rows": rows,
        "marginal_bytes_per_device": rounded((rss[2] - rss[1]) / (m - half), 0)
        if m > half
        else None,
        "growth_bytes_more_readings": rss[3] - rss[2],
        "peak_rss_bytes": peak,
        "check": "ok" if not bad else "; ".join(bad),
    }
