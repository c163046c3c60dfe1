"""The live engine with its batch step and without it (issue 12), side by side in one run:
`Engine.process` in this process (no MQTT, API or dispatcher) on the same messages, each
on a fresh store of its own (telemetry stored), in batches of the size the live engine
took, the two engines taking each batch in turn. Rates are per CPU second of the engine
(this machine is shared: wall time would count the others' load). Both must raise the
same alerts (ids) and store the same telemetry."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from benchmarks.common import rate
from benchmarks.engine_profile import feed
from benchmarks.engine_runs import ThroughputRun, rounded
from benchmarks.engine_side import database
from benchmarks.engine_workload import Msg, Workload
from benchmarks.replay_workload import Inputs
from engine.runtime.gc_policy import tune_gc
from engine.runtime.live import Engine
from engine.store.factory import open_store
from engine.store.port import Store
from geofence.fence import load_fences
from lending.model import parse_loans


def _engine(store: Store, fleet: Inputs, ids: list[str], *, fast: bool) -> Engine:
    """An engine on a fresh store with the fleet's fences and loans; its alert ids go to `ids`."""
    store.migrate()
    now = round(time.time() * 1000)
    store.put_fences(load_fences(fleet.fences))
    for loan in parse_loans(orjson.loads(fleet.loans.read_bytes())):
        store.put_loan(loan, [], now)
    engine = Engine(store, None, on_commit=lambda alerts: ids.extend(a.id for a in alerts))
    engine.load()
    engine.pipeline.fast = fast
    return engine


def _interleaved(
    engines: Sequence[Engine], parts: Sequence[tuple[str, Sequence[Msg], int]]
) -> list[dict[str, dict[str, object]]]:
    """Feed each part to every engine, batch by batch in turn (so the machine's other load
    falls on all alike): per engine and part, its CPU time per reading and rate."""
    out: list[dict[str, dict[str, object]]] = [{} for _ in engines]
    for label, messages, batch in parts:
        cpu = [0.0] * len(engines)
        alerts = [0] * len(engines)
        for i in range(0, len(messages), batch):
            chunk = messages[i : i + batch]
            for k, engine in enumerate(engines):
                cpu0 = time.process_time()
                alerts[k] += feed(engine, chunk, batch)
                cpu[k] += time.process_time() - cpu0
        readings = sum(m.readings for m in messages)
        for k in range(len(engines)):
            out[k][label] = {
                "batch_messages": batch,
                "readings": readings,
                "cpu_s": rounded(cpu[k], 3),
                "readings_per_s": rounded(rate(readings, cpu[k]), 1),  # per CPU second
                "cpu_us_per_reading": rounded(cpu[k] / readings * 1e6 if readings else math.nan, 2),
                "alerts": alerts[k],
            }
    return out


def live_batches(runs: Sequence[ThroughputRun], arrays: Workload) -> tuple[int, int]:
    """Messages per batch the live engine took: single readings, arrays (1000 if unknown)."""

    def batch_of(workload: str, per_message: float) -> int:
        run = next((r for r in runs if r.workload == workload and r.consumer == "engine"), None)
        per_batch = run.extra.get("readings_per_batch") if run is not None else None
        if not isinstance(per_batch, float):
            return 1000
        return max(1, min(1000, round(per_batch / per_message)))

    return batch_of("single_live", 1.0), batch_of("arrays_live", arrays.per_message)


def compare_fold(
    args: argparse.Namespace,
    work: Path,
    fleet: Inputs,
    devices: int,
    single: Workload,
    arrays: Workload,
    batches: tuple[int, int],
) -> dict[str, object]:
    """`Engine.process` with the batch step and the fold alone on the same messages: every
    device's first fix (untimed), then single readings, then arrays."""
    wanted = args.profile_readings or (1000 if args.quick else 20_000)
    rest = single.messages[devices:]
    n = min(wanted, len(rest))
    size = max(1, round(arrays.per_message))
    k = min(max(1, wanted // size), len(arrays.messages))
    parts = [
        ("first fixes", single.messages[:devices], batches[0]),
        ("1 reading/msg", rest[:n], batches[0]),
        (f"{size} readings/msg", arrays.messages[:k], batches[1]),
    ]
    fast_ids: list[str] = []
    fold_ids: list[str] = []
    with (
        database(args, work, "fold_fast") as (fast_url, fast_count),
        database(args, work, "fold_slow") as (fold_url, fold_count),
    ):
        stores = [open_store(fast_url), open_store(fold_url)]
        try:
            engines = [
                _engine(stores[0], fleet, fast_ids, fast=True),
                _engine(stores[1], fleet, fold_ids, fast=False),
            ]
            tune_gc()
            fast, fold = _interleaved(engines, parts)
        finally:
            for store in stores:
                store.close()
        fast_rows, fold_rows = fast_count("telemetry"), fold_count("telemetry")
    problems = []
    if sorted(fast_ids) != sorted(fold_ids):
        problems.append(f"alerts differ: {len(fast_ids)} with the batch step, {len(fold_ids)}")
    if fast_rows != fold_rows:
        problems.append(f"telemetry rows differ: {fast_rows} with the batch step, {fold_rows}")
    return {
        "batch_step": fast,
        "fold": fold,
        "telemetry_rows": fast_rows,
        "check": "ok" if not problems else "WRONG: " + "; ".join(problems),
    }


def fold_report(doc: dict[str, object]) -> list[str]:
    """The comparison as lines of text."""
    fast, fold = doc["batch_step"], doc["fold"]
    assert isinstance(fast, dict)
    assert isinstance(fold, dict)
    title = (
        "the batch step against the fold alone: Engine.process in this process, the same "
        "messages, a fresh store each (telemetry stored), batches taken in turn; "
        f"check: {doc['check']}"
    )
    header = (
        f"{'part':<20} {'batch msgs':>10} {'readings':>9} {'step rdg/cpu s':>14} "
        f"{'fold rdg/cpu s':>14} {'step µs cpu':>11} {'fold µs cpu':>11} {'speedup':>8}"
    )
    lines = [title, header]
    for label, f in fast.items():
        g = fold[label]
        speedup = f["readings_per_s"] / g["readings_per_s"] if g["readings_per_s"] else math.nan
        lines.append(
            f"{label:<20} {f['batch_messages']:>10} {f['readings']:>9,} "
            f"{f['readings_per_s']:>14,.0f} {g['readings_per_s']:>14,.0f} "
            f"{f['cpu_us_per_reading']:>11} {g['cpu_us_per_reading']:>11} {speedup:>7.2f}x"
        )
    return lines
