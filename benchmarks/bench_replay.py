"""The whole replay against "just decode those lines and look them up", side by side.

    python -m benchmarks.bench_replay [--devices 10000] [--fences 10000] [--readings 200000]
                                      [--seed S]

Generates (seeded, into a temp dir) a readings JSONL in the DESIGN §7 format, a fences
GeoJSON and a loans JSON, then times (f) the floor: read, orjson-parse, raw STRtree lookup
in batches; (a) the baseline: the same with the validating `decode`; (b)
`engine.runtime.replay.Replay` in-process; (c) `pledgewatch replay` as a subprocess; (b-)
and (c-) the same with the batch step off (the fold alone), whose alerts and states must
equal (b)'s. Then profiles (b) once. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from shapely import STRtree

from alerts.model import Alert
from benchmarks.common import RESULTS_DIR, exit_status, log, machine_info, write_json
from benchmarks.replay_methods import (
    Timing,
    baseline,
    check_replay,
    floor,
    run_cli,
    run_replay,
    run_replay_preloaded,
    same_run,
)
from benchmarks.replay_report import (
    PROFILE_TOP,
    TARGET_FLOOR_RATIO,
    TARGET_RATIO,
    profile_text,
    report,
    time_ratio,
    top_cumulative,
)
from benchmarks.replay_workload import Inputs, generate
from engine.core.config import Config
from engine.runtime.gc_policy import THRESHOLDS, tune_gc
from engine.runtime.replay import BATCH_LINES
from geofence.fence import load_fences
from geofence.index import FenceIndex


def profile_replays(
    inputs: Inputs, index: FenceIndex, config: Config, want: list[Alert]
) -> tuple[str, str]:
    """cProfile (b) as timed, then the feed of (b') alone: two reports."""
    whole = cProfile.Profile()
    _, alerts, seconds = run_replay(inputs, index, config, whole)
    same = [a.id for a in alerts] == [a.id for a in want]
    first = profile_text(
        whole,
        f"=== (b) Replay in-process, as timed (loans taken in its first batch): "
        f"{inputs.lines} lines in {seconds:.2f} s under cProfile; alerts as timed: {same}",
    )
    feed = cProfile.Profile()
    _, alerts, _, seconds = run_replay_preloaded(inputs, index, config, feed)
    same = [a.id for a in alerts] == [a.id for a in want]
    second = profile_text(
        feed,
        f"=== (b') the feed alone, loans put beforehand (not profiled): "
        f"{inputs.lines} lines in {seconds:.2f} s under cProfile; alerts as timed: {same}",
    )
    return first, second


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_replay", description=__doc__)
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--fences", type=int, default=10_000)
    p.add_argument("--readings", type=int, default=200_000, help="gps fixes in all")
    p.add_argument("--seed", type=int, default=20261130)
    p.add_argument("--interval-s", type=int, default=30, help="seconds between a car's fixes")
    p.add_argument(
        "--standing",
        type=float,
        default=0.2,
        help="share of cars that stand all along (pledged cars mostly do: try 0.95)",
    )
    p.add_argument("--coverage", type=float, default=0.6, help="expected fences per point")
    p.add_argument("--vib-share", type=float, default=0.005, help="vib lines per gps line")
    p.add_argument("--status-share", type=float, default=0.002, help="status lines per gps line")
    p.add_argument("--no-cli", action="store_true", help="skip the subprocess run")
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    p.add_argument("--work-dir", type=Path, help="keep the generated files here (default: temp)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write `<out-dir>/bench_replay.json`."""
    args = parse_args(argv)
    started = time.perf_counter()
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="pledgewatch-bench-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        inputs = generate(args, work)
        doc = measure(args, inputs, work, info)
    doc["elapsed_s"] = round(time.perf_counter() - started, 1)
    write_json(args.out_dir / "bench_replay.json", doc)
    return exit_status(doc["checks_passed"], "check")


def measure(
    args: argparse.Namespace, inputs: Inputs, work: Path, info: dict[str, object]
) -> dict[str, object]:
    """Time every side, profile the replay, print the report; the JSON document."""
    config = Config()
    log("loading fences and building the indexes (not timed as part of the runs)")
    load_start = time.perf_counter()
    fences = load_fences(inputs.fences)
    load_s = time.perf_counter() - load_start
    build_start = time.perf_counter()
    index = FenceIndex.build(fences)
    index_s = time.perf_counter() - build_start
    tree = STRtree(np.array([f.geometry for f in fences], dtype=object))
    tune_gc()  # what `pledgewatch replay` does; every side below runs under it

    log(f"(f) floor over {inputs.lines} lines")
    low = floor(inputs, tree)
    log(f"(a) baseline over {inputs.lines} lines")
    base = baseline(inputs, tree)

    log(f"(b) in-process replay over {inputs.lines} lines")
    replay, alerts, seconds = run_replay(inputs, index, config)
    inproc = Timing(
        "replay",
        seconds,
        sum(replay.pipeline.counters.readings.values()),
        check_replay(replay, inputs),
        note="engine.runtime.replay.Replay(index, loans, ...).feed(file); finish()",
    )
    by_type = dict(sorted(Counter(a.type.value for a in alerts).items()))
    inproc.extra = {"alerts": len(alerts), "alerts_by_type": by_type}

    log(f"(b') the same with the {args.devices} loans put beforehand, feed timed apart")
    replay2, alerts2, loans_s, feed_s = run_replay_preloaded(inputs, index, config)
    feed = Timing(
        "replay_feed",
        feed_s,
        sum(replay2.pipeline.counters.readings.values()),
        check_replay(replay2, inputs),
        note="Replay(index, [], ...) after pipeline.put_loan for every loan; feed timed",
    )
    if feed.ok and [a.id for a in alerts2] != [a.id for a in alerts]:
        feed.check = f"WRONG: {len(alerts2)} alerts, (b) raised {len(alerts)} (ids or order)"
    feed.extra = {"loan_loading_s": round(loans_s, 4)}

    log(f"(b-) in-process replay over {inputs.lines} lines, the batch step off")
    replay3, alerts3, seconds3 = run_replay(inputs, index, config, fast=False)
    fold = Timing(
        "replay_fold",
        seconds3,
        sum(replay3.pipeline.counters.readings.values()),
        check_replay(replay3, inputs),
        note="as (b) with pipeline.fast = replay.columnar = False: the fold, per-line decode",
    )
    if fold.ok:
        fold.check = same_run(replay3, alerts3, replay, alerts)
    inproc.extra["quiet_readings"] = replay.pipeline.quiet_readings
    del replay3, alerts3

    timings = [low, base, inproc, feed, fold]
    if not args.no_cli:
        log("(c) pledgewatch replay as a subprocess")
        timings.append(run_cli(inputs, work, alerts))
        log("(c-) pledgewatch replay as a subprocess, PLEDGEWATCH_FAST_PATH=0")
        timings.append(run_cli(inputs, work, alerts, fast=False))
    profiles: tuple[str, str] | None = None
    if not args.no_profile:
        log("profiling (b), then the feed of (b'), with cProfile")
        profiles = profile_replays(inputs, index, config, alerts)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "replay_profile.txt").write_text("\n\n".join(profiles))

    text = report(timings, inputs, by_type, args, loans_s)
    print(text)
    if profiles is not None:
        for label, prof in zip(("(b) as timed", "the feed of (b')"), profiles, strict=True):
            print(f"\nprofile of {label}, top {PROFILE_TOP} by cumulative time (cProfile):")
            print(top_cumulative(prof).strip("\n"))
    base_rps, replay_rps, feed_rps = base.readings_per_s, inproc.readings_per_s, feed.readings_per_s
    by = {t.method: t.readings_per_s for t in timings}
    return {
        "benchmark": "bench_replay",
        "checks_passed": all(t.ok for t in timings),
        "machine": info,
        "parameters": {
            "devices": args.devices,
            "fences": args.fences,
            "readings_requested": args.readings,
            "seed": args.seed,
            "interval_s": args.interval_s,
            "standing_share": args.standing,
            "coverage_target": args.coverage,
            "vib_share": args.vib_share,
            "status_share": args.status_share,
            "batch_lines": BATCH_LINES,
            "config": "engine defaults (Config())",
            "gc": f"engine.runtime.gc_policy.tune_gc: freeze, thresholds {THRESHOLDS}",
        },
        "input": {
            "lines": inputs.lines,
            "by_stream": inputs.by_stream,
            "event_span_s": inputs.event_span_s,
            "region_side_km": round(inputs.region_side_km, 1),
        },
        "setup_s": {"load_fences": round(load_s, 3), "build_fenceindex": round(index_s, 3)},
        "timings": [t.as_json() for t in timings],
        "ratio_replay_time_over_baseline": time_ratio(base_rps, replay_rps),
        "ratio_feed_time_over_baseline": time_ratio(base_rps, feed_rps),
        "target_ratio": TARGET_RATIO,
        "ratio_cli_time_over_floor": time_ratio(low.readings_per_s, by.get("cli")),
        "ratio_cli_fold_time_over_floor": time_ratio(low.readings_per_s, by.get("cli_fold")),
        "ratio_replay_fold_time_over_replay": time_ratio(replay_rps, by.get("replay_fold")),
        "target_floor_ratio": TARGET_FLOOR_RATIO,
        "alerts_by_type": by_type,
        "table": text,
    }


if __name__ == "__main__":
    sys.exit(main())
