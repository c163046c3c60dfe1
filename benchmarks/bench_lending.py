"""The lending consumer (DESIGN §8): does its risk score rank risky cars above quiet ones, what
does it cost a replay, and how big does its state get?

    python -m benchmarks.bench_lending [--only eval,speed,size] [--loans 200] [--days 14]
        [--seed 7] [--rounds 3] [--site-sizes 25000,50000,100000,200000]

1. eval: a simulated fleet's lives (`simulator.lives`, seeded, in memory) replayed with the
   consumer: AUC of the risk score (risky against quiet), tiers by behaviour, reason codes,
   risk-site candidates and learned homes against the truth (`lending_eval.py`).
2. speed: `bench_replay`'s 200k-reading fleet replayed without and with the consumer
   (`lending_speed.py`): the budget is 1.25x.
3. size: the consumer's memory per loan after the replay of part 1, and the risk-site search
   over up to 200k synthetic stays (`lending_size.py`).

Prints the tables, writes `<out-dir>/bench_lending.json`; exits 1 when a check fails (the
AUC and the speed budget included). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import bench_replay
from benchmarks.common import RESULTS_DIR, exit_status, log, machine_info, write_json
from benchmarks.lending_eval import TARGET_AUC, evaluate, make_lives, replay_lives
from benchmarks.lending_report import checks_text, evaluation_text, size_text, speed_text
from benchmarks.lending_size import memory_per_loan, site_scaling
from benchmarks.lending_speed import TARGET_RATIO, measure_speed, speed_inputs
from engine.runtime.gc_policy import THRESHOLDS, tune_gc

PARTS = ("eval", "speed", "size")


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        msg = f"{text!r}: give one or more of {', '.join(PARTS)}, comma-separated"
        raise argparse.ArgumentTypeError(msg)
    return parts


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        msg = f"{text!r}: give stay counts, comma-separated (25000,50000)"
        raise argparse.ArgumentTypeError(msg)
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_lending", description=__doc__)
    p.add_argument("--only", type=_parts, default=PARTS, help="parts: eval,speed,size (all)")
    g = p.add_argument_group("1. eval (and the memory of 3)")
    g.add_argument("--loans", type=int, default=200)
    g.add_argument("--days", type=int, default=14)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--no-noise", action="store_true", help="perfectly quiet commuters")
    g.add_argument("--target-auc", type=float, default=TARGET_AUC)
    g = p.add_argument_group("2. speed")
    replay_defaults = bench_replay.parse_args([])
    g.add_argument("--speed-devices", type=int, default=replay_defaults.devices)
    g.add_argument("--speed-fences", type=int, default=replay_defaults.fences)
    g.add_argument("--speed-readings", type=int, default=replay_defaults.readings)
    g.add_argument("--speed-seed", type=int, default=replay_defaults.seed)
    g.add_argument("--rounds", type=int, default=3, help="timed runs per side")
    g.add_argument("--target-ratio", type=float, default=TARGET_RATIO)
    g = p.add_argument_group("3. size")
    g.add_argument("--site-sizes", type=_sizes, default=[25_000, 50_000, 100_000, 200_000])
    g.add_argument("--site-lots", type=int, default=20, help="planted lots per size")
    g.add_argument("--site-repeat", type=int, default=3, help="candidate searches per size")
    p.add_argument("--work-dir", type=Path, help="keep the speed part's files here")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the parts asked for, print the report, write `<out-dir>/bench_lending.json`."""
    args = parse_args(argv)
    started = time.perf_counter()
    doc: dict[str, Any] = {"benchmark": "bench_lending", "checks_passed": False}
    doc["machine"] = machine_info()
    doc["parameters"] = parameters(args)
    checks: dict[str, str] = {}
    texts: list[str] = []
    size: dict[str, Any] = {}
    if "eval" in args.only or "size" in args.only:
        lives = make_lives(args.loans, args.days, args.seed, noise=not args.no_noise)
        tune_gc()  # what `pledgewatch replay` does
        log(f"replaying {len(lives.lines):,} lines with the lending consumer")
        run = replay_lives(lives)
        if "eval" in args.only:
            ev = evaluate(lives, run)
            doc["evaluation"] = ev
            auc_final = ev["ranking"]["auc_final"]
            checks["eval_auc_final"] = (
                "ok"
                if auc_final is not None and auc_final >= args.target_auc
                else f"WRONG: AUC of the final score {auc_final}, the target is "
                f">= {args.target_auc}"
            )
            texts.append(evaluation_text(ev))
        if "size" in args.only:
            log("measuring the consumer's state")
            size["memory"] = memory_per_loan(run.consumer, len(lives.loans))
            b = size["memory"]["bounds"]
            checks["size_bounded"] = (
                "ok"
                if b["places_max"] <= b["places_bound"]
                and max(b["nights_max"], b["workdays_max"]) <= b["nights_bound"]
                and b["ledger_max_per_code"] <= b["ledger_bound_per_code"]
                else f"WRONG: {b}"
            )
        del lives, run
    if "speed" in args.only:
        with tempfile.TemporaryDirectory(prefix="pledgewatch-bench-lending-") as tmp:
            work = args.work_dir or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            replay_args = bench_replay.parse_args(
                [
                    "--devices",
                    str(args.speed_devices),
                    "--fences",
                    str(args.speed_fences),
                    "--readings",
                    str(args.speed_readings),
                    "--seed",
                    str(args.speed_seed),
                ]
            )
            data = speed_inputs(replay_args, work)
        tune_gc()
        speed = measure_speed(data, args.rounds, args.target_ratio)
        del data
        checks.update(speed["checks"])
        doc["speed"] = speed
        texts.append(speed_text(speed))
    if "size" in args.only:
        tune_gc()
        log(f"risk-site search over {args.site_sizes} synthetic stays")
        size["sites"] = site_scaling(args.site_sizes, args.seed, args.site_lots, args.site_repeat)
        checks.update(size["sites"]["checks"])
        doc["size"] = size
        texts.append(size_text(size))
    texts.append(checks_text(checks))
    text = "\n\n".join(texts)
    print(text)
    doc["checks"] = checks
    doc["checks_passed"] = all(v == "ok" for v in checks.values())
    doc["table"] = text
    doc["elapsed_s"] = round(time.perf_counter() - started, 1)
    write_json(args.out_dir / "bench_lending.json", doc)
    return exit_status(doc["checks_passed"])


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The options, as the JSON records them."""
    return {
        "parts": list(args.only),
        "eval": {
            "loans": args.loans,
            "days": args.days,
            "seed": args.seed,
            "noise": not args.no_noise,
            "target_auc": args.target_auc,
        },
        "speed": {
            "devices": args.speed_devices,
            "fences": args.speed_fences,
            "readings": args.speed_readings,
            "seed": args.speed_seed,
            "rounds": args.rounds,
            "target_ratio": args.target_ratio,
        },
        "size": {
            "site_sizes": args.site_sizes,
            "site_lots": args.site_lots,
            "site_repeat": args.site_repeat,
            "seed": args.seed,
        },
        "gc": f"engine.runtime.gc_policy.tune_gc: freeze, thresholds {THRESHOLDS}",
    }


if __name__ == "__main__":
    sys.exit(main())
