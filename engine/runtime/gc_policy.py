"""Garbage-collector settings for long runs that hold many small objects.

The engine keeps per-device state for every car (tens of thousands of small objects) and
allocates a few objects per reading, almost none of them in reference cycles. CPython's
default thresholds then spend a third of a replay scanning live state that reference
counting already manages (measured in `benchmarks/bench_replay.py`). Freezing what was
loaded at start-up and collecting less often keeps cycle collection, without the cost.
"""

from __future__ import annotations

import gc

THRESHOLDS = (100_000, 50, 100)
"""Allocations before a young collection, and the ratios for the two older generations."""


def tune_gc() -> None:
    """Move everything alive now out of the collector's sight and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
