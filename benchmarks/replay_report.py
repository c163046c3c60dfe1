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
    "baseline": "(a) baseline: decode + raw STRtree",
    "replay": "(b) Replay in-process (as the CLI runs it)",
    "replay_feed": "(b') Replay feed only, loans put before",
    "cli": "(c) pledgewatch replay (subprocess)",
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
    base = timings[0].readings_per_s
    for t in timings:
        rps = t.readings_per_s
        rows.append(
            [
                _LABELS[t.method],
                f"{t.seconds:.2f}" if not math.isnan(t.seconds) else "-",
                fmt_rate(rps) if t.ok else "WRONG",
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
        table(["method", "seconds", "readings/s", "time vs (a)", "check"], rows),
        "",
    ]
    for t in timings[1:3]:
        ratio = time_ratio(base, t.readings_per_s)
        verdict = "-" if ratio is None else ("meets" if ratio <= TARGET_RATIO else "MISSES")
        lines.append(
            f"{_LABELS[t.method].split(' ', 1)[0]} takes {fmt_ratio(ratio)} the baseline's time "
            f"(target: within {TARGET_RATIO:.0f}x) -> {verdict}"
        )
    lines.append(
        f"taking the {args.devices:,} loans (Pipeline.put_loan each, in (b') timed apart) "
        f"costs {loans_s:.2f} s; (b) pays it inside its first batch"
    )
    lines.append(
        "alerts by type: " + (", ".join(f"{k} {v:,}" for k, v in by_type.items()) or "none")
    )
    return "\n".join(lines)
