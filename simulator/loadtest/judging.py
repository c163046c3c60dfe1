"""What a load test's alerts are judged against: the plan's ground truth with its wall-clock
windows widened by how late the stream started, and the alert types an engine running other
rules than the plan needs cannot be judged on. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from engine.core.config import Config
from simulator.truth import GroundTruth

# Which alert types each rule decides: with an engine whose rules differ from the plan's,
# those types cannot be judged.
RULE_TYPES: Mapping[str, tuple[str, ...]] = {
    "hysteresis_m": (
        "geofence.enter",
        "geofence.exit",
        "zone.left",
        "zone.returned",
        "pledge.risk_site_dwell",
    ),
    "zone_grace_s": ("zone.left", "zone.returned"),
    "offline_s": ("device.offline", "device.online"),
    "max_speed_kmh": ("gps.impossible_travel",),
    "reanchor_fixes": ("gps.impossible_travel",),
    "shock_g": ("shock", "tow.suspected"),
    "tow_distance_m": ("tow.suspected",),
    "tow_speed_kmh": ("tow.suspected",),
    "separation_m": ("pledge.tracker_separation",),
    "separation_max_age_s": ("pledge.tracker_separation",),
    "separation_confirmations": ("pledge.tracker_separation",),
    "dwell_default_s": ("pledge.risk_site_dwell",),
    "dwell_by_category_s": ("pledge.risk_site_dwell",),
}
WALL_CLOCK_TYPES = frozenset({"device.offline", "device.online"})
LENDING_TYPES = frozenset({"risk.tier_changed"})


def unjudged(plan_config: Mapping[str, object], rules: Config) -> tuple[set[str], list[str]]:
    """Alert types an engine with `rules` cannot be judged on for a plan needing
    `plan_config`, and a note per differing rule."""
    # The lending consumer's tier changes follow from days of a loan's history: a load
    # test's hour has no truth for them (benchmarks/bench_lending.py judges them on lives).
    types: set[str] = set(LENDING_TYPES)
    notes: list[str] = []
    for key, wanted in sorted(plan_config.items()):
        have = getattr(rules, key, None)
        if have is None or have == wanted:
            continue
        affected = RULE_TYPES.get(key, ())
        types.update(affected)
        notes.append(
            f"the engine runs {key}={have!r} but this plan needs {wanted!r}: "
            f"{', '.join(affected) or 'nothing'} not judged"
        )
    return types, notes


def widen_wall_clock(truth: GroundTruth, late_s: float) -> GroundTruth:
    """`truth` with the windows of wall-clock alerts (`device.offline`, the `device.online`
    after it) stretched by `late_s`: the plan put them on the wall clock of a stream that
    starts when planned; it started that much later (setup, generating the cars)."""
    extra_ms = max(0, round(late_s * 1000))
    required = tuple(
        dataclasses.replace(e, ts_max_ms=e.ts_max_ms + extra_ms)
        if e.type in WALL_CLOCK_TYPES and e.ts_max_ms is not None
        else e
        for e in truth.required
    )
    return dataclasses.replace(truth, required=required)
