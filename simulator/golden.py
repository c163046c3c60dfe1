"""Regenerate the golden scenarios and the demo city (on purpose only).

    python -m simulator.golden --regenerate   # tests/golden/<scenario>/ and all_scenarios/
    python -m simulator.golden --demo         # engine/examples/city/

A golden directory holds `input.jsonl`, `fences.geojson`, `loans.json`, `ground_truth.json`
and `expected_alerts.jsonl`, the replay's output (alerts as JSON lines, in raised order).
The ground truth is checked on every regeneration and its problems printed: a golden whose
alerts break its ground truth is written anyway (the test will then fail and say why) so a
fault in the engine is reported, never papered over.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from engine.core.config import Config
from engine.runtime.replay import Replay
from geofence.fence import load_fences
from geofence.index import FenceIndex
from lending.model import parse_loans
from simulator.car import ScenarioKind
from simulator.fleet import Run, RunSpec, build_run
from simulator.junk import ALL_JUNK, Junk
from simulator.truth import check, count_types
from simulator.writer import write_run

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / "tests" / "golden"
DEMO_DIR = ROOT / "engine" / "examples" / "city"
ALL_SCENARIOS = "all_scenarios"
GOLDEN_SEED = "pledgewatch-golden-1"
DEMO_SEED = "pledgewatch-demo-1"


def golden_specs() -> list[RunSpec]:
    """One run per scenario (with two background cars, one of them an OwnTracks phone), plus
    every scenario together in one city with junk input."""
    specs = [
        RunSpec(kind.value, f"{GOLDEN_SEED}:{kind.value}", (kind,), quiet=2, owntracks=1)
        for kind in ScenarioKind
    ]
    specs.append(
        RunSpec(
            ALL_SCENARIOS,
            f"{GOLDEN_SEED}:{ALL_SCENARIOS}",
            tuple(ScenarioKind),
            quiet=2,
            owntracks=1,
            duration_s=6600,
            junk=ALL_JUNK,
        )
    )
    return specs


def demo_spec() -> RunSpec:
    """The demo city: every scenario once plus three background cars, two hours, some junk.

    No line from the future: the live demo (`engine.cli.demo`) paces its playback by the
    recorded timestamps, and one 8 h ahead would stall it.
    """
    junk = tuple(k for k in ALL_JUNK if k is not Junk.CLOCK_IN_FUTURE)
    return RunSpec("demo", DEMO_SEED, tuple(ScenarioKind), quiet=3, owntracks=1, junk=junk)


@dataclass(frozen=True, slots=True)
class Replayed:
    """What a replay produced: alert JSON lines (in raised order), the alerts, the replay."""

    lines: list[bytes]
    alerts: list[dict[str, object]]
    replay: Replay


def replay_files(readings: Path, fences: Path, loans: Path) -> Replayed:
    """Replay a readings file against fences and loans with the default rules."""
    return replay_lines(readings.read_bytes().splitlines(keepends=True), fences, loans)


def replay_lines(lines: Iterable[bytes], fences: Path, loans: Path) -> Replayed:
    """Replay readings lines against fences and loans files with the default rules."""
    out: list[bytes] = []
    index = FenceIndex.build(load_fences(fences))
    loan_list = parse_loans(orjson.loads(loans.read_bytes()))
    replay = Replay(index, loan_list, Config(), lambda a: out.append(orjson.dumps(a.to_json())))
    replay.feed(lines)
    replay.finish()
    return Replayed([line + b"\n" for line in out], [orjson.loads(line) for line in out], replay)


def _report(run: Run, replayed: Replayed) -> list[str]:
    problems = check(run.truth, replayed.alerts)
    print(f"{run.spec.name}: {len(run.messages)} messages, alerts {count_types(replayed.alerts)}")
    for problem in problems:
        print(f"  PROBLEM {problem}")
    return problems


def regenerate(specs: Sequence[RunSpec], base: Path = GOLDEN_DIR) -> int:
    """Build, write and replay golden runs; returns how many break their ground truth."""
    failed = 0
    for spec in specs:
        run = build_run(spec)
        directory = base / spec.name
        write_run(run, directory, "input.jsonl")
        replayed = replay_files(
            directory / "input.jsonl", directory / "fences.geojson", directory / "loans.json"
        )
        (directory / "expected_alerts.jsonl").write_bytes(b"".join(replayed.lines))
        failed += bool(_report(run, replayed))
    return failed


def write_demo(directory: Path = DEMO_DIR) -> int:
    """Build and write the demo city; returns 1 if its alerts break the ground truth."""
    run = build_run(demo_spec())
    write_run(run, directory, with_truth=False)
    replayed = replay_files(
        directory / "readings.jsonl", directory / "fences.geojson", directory / "loans.json"
    )
    return int(bool(_report(run, replayed)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m simulator.golden`."""
    parser = argparse.ArgumentParser(prog="python -m simulator.golden", description=__doc__)
    parser.add_argument("--regenerate", action="store_true", help="rewrite tests/golden/")
    parser.add_argument("--demo", action="store_true", help="rewrite engine/examples/city/")
    parser.add_argument(
        "--only", action="append", default=[], help="regenerate only this golden (repeatable)"
    )
    parser.add_argument("--out", type=Path, help="write here instead (goldens, or the demo)")
    args = parser.parse_args(argv)
    if not (args.regenerate or args.demo):
        parser.error("say what to write: --regenerate and/or --demo")
    failed = 0
    if args.regenerate:
        specs = [s for s in golden_specs() if not args.only or s.name in args.only]
        failed += regenerate(specs, args.out or GOLDEN_DIR)
    if args.demo:
        failed += write_demo(args.out / "demo" if args.out else DEMO_DIR)
    if failed:
        print(f"{failed} run(s) break their ground truth: see PROBLEM lines", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
