"""Part 2 of `bench_lending`: what the lending consumer costs a replay.

The issue's budget: replay with the consumers on costs at most 1.25x replay without them, on
the 200k-reading benchmark. The inputs are `bench_replay`'s seeded fleet
(`replay_workload.generate` with its options), read into memory once; then the same
`Replay(...).feed(lines)` + `finish()` runs without and with `consumer=LendingConsumer()`,
alternating which goes first, `rounds` times each. The minimum of each side is its time.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from alerts.model import Alert
from benchmarks.common import log, rate
from benchmarks.replay_methods import check_replay
from benchmarks.replay_workload import Inputs, generate
from engine.core.config import Config
from engine.runtime.replay import Replay
from geofence.fence import load_fences
from geofence.index import FenceIndex
from lending.consumer import LendingConsumer
from lending.model import Loan, parse_loans

TARGET_RATIO = 1.25
"""The issue's budget: time with the consumer / time without, at most this."""
TIER_CHANGED = "risk.tier_changed"


@dataclass(slots=True)
class SpeedInputs:
    """`bench_replay`'s fleet, in memory: the lines, the fence index and the loans."""

    inputs: Inputs
    lines: list[bytes]
    index: FenceIndex
    loans: list[Loan]


def speed_inputs(replay_args: argparse.Namespace, work: Path) -> SpeedInputs:
    """Generate the fleet into `work` (seeded) and read it into memory."""
    inputs = generate(replay_args, work)
    with inputs.readings.open("rb") as f:
        lines = f.readlines()
    index = FenceIndex.build(load_fences(inputs.fences))
    loans = parse_loans(orjson.loads(inputs.loans.read_bytes()))
    return SpeedInputs(inputs, lines, index, loans)


@dataclass(slots=True)
class Side:
    """One side's runs: seconds per round, and the alerts and check of its first run."""

    name: str
    seconds: list[float]
    alerts: list[Alert]
    check: str

    @property
    def best_s(self) -> float:
        """The minimum over the rounds."""
        return min(self.seconds)


def run_once(data: SpeedInputs, with_consumer: bool) -> tuple[float, list[Alert], str]:
    """One fresh replay over the lines in memory: seconds (feed and finish), alerts, check."""
    alerts: list[Alert] = []
    consumer = LendingConsumer() if with_consumer else None
    replay = Replay(data.index, data.loans, Config(), alerts.append, consumer=consumer)
    started = time.perf_counter()
    replay.feed(data.lines)
    replay.finish()
    seconds = time.perf_counter() - started
    return seconds, alerts, check_replay(replay, data.inputs)


def compare(data: SpeedInputs, rounds: int) -> tuple[Side, Side]:
    """Both sides `rounds` times, alternating which goes first; garbage collected between."""
    without = Side("without consumer", [], [], "not run")
    with_ = Side("with LendingConsumer", [], [], "not run")
    for k in range(rounds):
        order = (without, with_) if k % 2 == 0 else (with_, without)
        for side in order:
            seconds, alerts, check = run_once(data, side is with_)
            side.seconds.append(seconds)
            if k == 0:
                side.alerts, side.check = alerts, check
            del alerts
            gc.collect()
            log(f"  round {k + 1}/{rounds}: {side.name}: {seconds:.2f} s")
    return without, with_


def same_core_alerts(without: list[Alert], with_: list[Alert]) -> str:
    """'ok' if the consumer's side raised the same core alerts, id for id and in order, once
    its `risk.tier_changed` are left out."""
    core = [a.id for a in with_ if a.type.value != TIER_CHANGED]
    want = [a.id for a in without]
    if core == want:
        return "ok"
    if sorted(core) == sorted(want):
        return f"WRONG: the same {len(want)} core alerts, in another order"
    missing, extra = len(set(want) - set(core)), len(set(core) - set(want))
    return f"WRONG: {len(core)} core alerts vs {len(want)}: {missing} missing, {extra} extra"


def measure_speed(data: SpeedInputs, rounds: int, target: float) -> dict[str, Any]:
    """The comparison as a JSON object, with its checks."""
    lines = len(data.lines)
    log(f"speed: {lines:,} lines, {len(data.loans):,} loans, {rounds} rounds per side")
    without, with_ = compare(data, rounds)
    ratio = with_.best_s / without.best_s
    tiers = Counter(
        f"{a.details.get('from')}>{a.details.get('to')}"
        for a in with_.alerts
        if a.type.value == TIER_CHANGED
    )

    def side_json(side: Side) -> dict[str, Any]:
        return {
            "seconds": round(side.best_s, 4),
            "seconds_by_round": [round(s, 4) for s in side.seconds],
            "lines_per_s": round(rate(lines, side.best_s), 1),
            "alerts": len(side.alerts),
            "alerts_by_type": dict(sorted(Counter(a.type.value for a in side.alerts).items())),
            "check": side.check,
        }

    checks = {
        "speed_replay_without": without.check,
        "speed_replay_with": with_.check,
        "speed_core_alerts_identical": same_core_alerts(without.alerts, with_.alerts),
        "speed_ratio_within_budget": "ok"
        if ratio <= target
        else f"WRONG: {ratio:.3f}x, the budget is {target}x",
    }
    return {
        "input": {
            "lines": lines,
            "by_stream": data.inputs.by_stream,
            "loans": len(data.loans),
            "fences": len(data.index.fences),
            "event_span_s": data.inputs.event_span_s,
        },
        "rounds": rounds,
        "without": side_json(without),
        "with": side_json(with_),
        "ratio": round(ratio, 4),
        "ratio_by_round": [
            round(w / o, 4) for w, o in zip(with_.seconds, without.seconds, strict=True)
        ],
        "target_ratio": target,
        "tier_changes": dict(sorted(tiers.items())),
        "checks": checks,
    }
