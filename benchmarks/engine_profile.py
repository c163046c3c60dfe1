"""Where the engine's time goes: `Engine.process` in the benchmark's own process (no MQTT,
API or dispatcher) on the live runs' messages, timed, then under cProfile."""

from __future__ import annotations

import argparse
import cProfile
import math
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from benchmarks.common import rate
from benchmarks.engine_runs import ThroughputRun, rounded
from benchmarks.engine_side import database
from benchmarks.engine_workload import Msg, Workload
from benchmarks.replay_report import profile_text
from benchmarks.replay_workload import Inputs
from devices.mqtt_source import Message
from engine.runtime.gc_policy import tune_gc
from engine.runtime.live import Engine
from engine.store.factory import open_store
from geofence.fence import load_fences
from lending.model import parse_loans


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
        "seconds": rounded(seconds, 3),
        "readings_per_s": rounded(rate(readings, seconds), 1),
        "cpu_us_per_reading": rounded(cpu / readings * 1e6 if readings else math.nan, 2),
        "alerts_per_reading": rounded(alerts / readings if readings else math.nan, 3),
        "profiled_readings": profiled_readings,
        "profiled_readings_per_s": rounded(rate(profiled_readings, profiled_s), 1),
        "profile": text,
    }


def profile_engine(
    args: argparse.Namespace,
    work: Path,
    fleet: Inputs,
    devices: int,
    single: Workload,
    arrays: Workload,
    runs: Sequence[ThroughputRun],
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
