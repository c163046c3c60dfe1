"""The replay benchmark's report: the table of sides with their time against the
baseline's and the target, and the top of a cProfile profile."""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats

from benchmarks.common import fmt_rate, fmt_ratio, table
from benchmarks.replay_methods import Timing
from benchmarks.replay_workload import Inputs

PROFILE_TOP = 15
TARGET_RATIO = 3.0
"""The replay may take up to this many times the baseline's time."""
TARGET_FLOOR_RATIO = 2.5
"""Issue 12: `pledgewatch replay` (whole process) within this many times the floor's time."""


def profile_text(profiler: cProfile.Profile, title: str) -> str:
    """The top functions of a profile by cumulative and by own time, under a title."""
    text = io.StringIO()
    text.write(f"{title}\n")
    for key in ("cumulative", "tottime"):
        text.write(f"\n--- top {PROFILE_TOP} by {key} ---\n")
        stats = pstats.Stats(profiler, stream=text)
        stats.strip_dirs().sort_stats(key).print_stats(PROFILE_TOP)
    return text.getvalue()


def top_cumulative(text: str) -> str:
    """The by-cumulative table of `profile_text`'s output."""
    after = text.split(f"--- top {PROFILE_TOP} by cumulative ---\n", maxsplit=1)[1]
    return after.split("\n--- top", maxsplit=1)[0]


def time_ratio(base_rps: float | None, other_rps: float | None) -> float | None:
    """How many times the baseline's time the other takes (rates as readings/s)."""
    return round(base_rps / other_rps, 3) if base_rps and other_rps else None


_LABELS = {
    "floor": "(f) floor: orjson.loads + raw STRtree",
    "baseline": "(a) baseline: decode + raw STRtree",
    "replay": "(b) Replay in-process (as the CLI runs it)",
    "replay_feed": "(b') Replay feed only, loans put before",
    "replay_fold": "(b-) Replay in-process, batch step off",
    "cli": "(c) pledgewatch replay (subprocess)",
    "cli_fold": "(c-) pledgewatch replay, batch step off",
}


def report(
    timings: list[Timing],
    inputs: Inputs,
    by_type: dict[str, int],
    args: argparse.Namespace,
    loans_s: float,
) -> str:
    """The result table and the ratios against the target."""
    rows = []
    by = {t.method: t for t in timings}
    base = by["baseline"].readings_per_s
    low = by["floor"].readings_per_s if "floor" in by else None
    for t in timings:
        rps = t.readings_per_s
        rows.append(
            [
                _LABELS[t.method],
                f"{t.seconds:.2f}" if not math.isnan(t.seconds) else "-",
                fmt_rate(rps) if t.ok else "WRONG",
                fmt_ratio(low / rps) if low and rps else "-",
                fmt_ratio(base / rps) if base and rps else "-",
                t.check,
            ]
        )
    streams = ", ".join(f"{k} {v:,}" for k, v in inputs.by_stream.items())
    title = (
        f"{inputs.lines:,} lines ({streams}), {args.devices:,} devices, {args.fences:,} fences, "
        f"{inputs.event_span_s:,.0f} s of event time"
    )
    lines = [
        title,
        "",
        table(["method", "seconds", "readings/s", "time vs (f)", "time vs (a)", "check"], rows),
        "",
    ]
    for t in (by["replay"], by["replay_feed"]):
        ratio = time_ratio(base, t.readings_per_s)
        verdict = "-" if ratio is None else ("meets" if ratio <= TARGET_RATIO else "MISSES")
        lines.append(
            f"{_LABELS[t.method].split(' ', 1)[0]} takes {fmt_ratio(ratio)} the baseline's time "
            f"(target: within {TARGET_RATIO:.0f}x) -> {verdict}"
        )
    for fast, fold in (("replay", "replay_fold"), ("cli", "cli_fold")):
        if fast in by and fold in by:
            speedup = time_ratio(by[fast].readings_per_s, by[fold].readings_per_s)
            lines.append(
                f"{_LABELS[fast].split(' ', 1)[0]} with the batch step takes "
                f"{fmt_ratio(None if speedup is None else 1 / speedup)} the time of "
                f"{_LABELS[fold].split(' ', 1)[0]} (the fold alone)"
            )
    if "cli" in by and low:
        ratio = time_ratio(low, by["cli"].readings_per_s)
        verdict = "-" if ratio is None else ("meets" if ratio <= TARGET_FLOOR_RATIO else "MISSES")
        lines.append(
            f"(c) takes {fmt_ratio(ratio)} the floor's time "
            f"(issue 12 target: within {TARGET_FLOOR_RATIO}x) -> {verdict}"
        )
    lines.append(
        f"taking the {args.devices:,} loans (Pipeline.put_loan each, in (b') timed apart) "
        f"costs {loans_s:.2f} s; (b) pays it inside its first batch"
    )
    lines.append(
        "alerts by type: " + (", ".join(f"{k} {v:,}" for k, v in by_type.items()) or "none")
    )
    return "\n".join(lines)
