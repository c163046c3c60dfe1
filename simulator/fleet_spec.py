"""What a fleet run plays: how many trackers, for how long, how fast, which scenarios.

`FleetSpec` is the request; `validate_spec` says everything wrong with one at once.
`parse_mix` reads `--mix`, and `fleet_cars` turns a tracker count and a mix into cars per
scenario (two scenarios put two trackers in a car).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from simulator.car import ScenarioKind

TWO_TRACKERS = frozenset({ScenarioKind.TRACKER_REMOVED, ScenarioKind.DOUBLE_PLEDGE})
DEFAULT_START_WALL_MS = 1_795_910_400_000  # 2026-11-29T00:00:00Z: `--out` without `--start`
DEFAULT_MIX: Mapping[ScenarioKind, float] = {
    ScenarioKind.STAYS_HOME: 1.0,
    ScenarioKind.LEAVES_ZONE: 1.0,
    ScenarioKind.TOWED: 0.5,
    ScenarioKind.PAWNSHOP_DWELL: 0.5,
    ScenarioKind.TRACKER_REMOVED: 0.5,
    ScenarioKind.VIN_SWAP: 0.5,
    ScenarioKind.SPOOFED_JUMP: 0.5,
    ScenarioKind.POWER_CUT: 0.5,
    ScenarioKind.GOES_SILENT: 0.5,
}
"""Six cars in a hundred play a scenario by default; the issue's nine kinds."""


class FleetError(ValueError):
    """A fleet that cannot be planned as asked; the message says what to change."""


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """What to play: how many trackers, how long (wall seconds), how fast, which scenarios.

    `rate` (messages/s) or `speed` (event seconds per wall second, at least 1) sets the
    pace; with neither, the speed is 1. `mix` gives the percent of cars per scenario; the
    rest are quiet commuters. `start_wall_ms` 0 means now, at plan time. `id_prefix` starts
    every device, loan and car id (a second run against the same engine wants another).
    `jt808_share` of the trackers speak JT/T 808 over TCP instead of MQTT
    (`simulator.jt808_choice` says which can).
    """

    devices: int
    seed: str
    duration_s: float
    rate: float | None
    speed: float | None
    mix: Mapping[ScenarioKind, float]
    qos: int = 1
    start_wall_ms: int = 0
    id_prefix: str = "sim"
    jt808_share: float = 0.0


def parse_mix(text: str) -> dict[ScenarioKind, float]:
    """`leaves_zone=5,towed=2` as percent per scenario; `none` or an empty text for none."""
    mix: dict[ScenarioKind, float] = {}
    if text.strip().lower() in {"", "none"}:
        return mix
    known = ", ".join(k.value for k in ScenarioKind)
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        try:
            kind = ScenarioKind(name.strip())
        except ValueError:
            msg = f"--mix: unknown scenario {name.strip()!r}; known: {known}"
            raise FleetError(msg) from None
        try:
            percent = float(value) if sep else math.nan
        except ValueError:
            percent = math.nan
        if not (math.isfinite(percent) and 0.0 <= percent <= 100.0):
            msg = f"--mix: {part.strip()!r} needs a percent from 0 to 100, like {kind.value}=5"
            raise FleetError(msg)
        mix[kind] = mix.get(kind, 0.0) + percent
    _check_mix(mix)
    return mix


def _check_mix(mix: Mapping[ScenarioKind, float]) -> None:
    total = sum(mix.values())
    if any(not (math.isfinite(p) and p >= 0.0) for p in mix.values()) or total > 100.0 + 1e-9:
        msg = f"the scenario mix must be percents adding up to at most 100, got {total:g}"
        raise FleetError(msg)


def apportion(mix: Mapping[ScenarioKind, float], cars: int) -> dict[ScenarioKind, int]:
    """Cars per scenario by percent (largest remainder): each count is its exact share
    rounded down or up, and the counts add up to the rounded sum of the shares."""
    exact = {k: p * cars / 100.0 for k, p in mix.items() if p > 0.0}
    counts = {k: math.floor(x) for k, x in exact.items()}
    total = min(cars, math.floor(sum(exact.values()) + 0.5))
    order = sorted(exact, key=lambda k: (-(exact[k] - counts[k]), list(ScenarioKind).index(k)))
    for k in order[: max(0, total - sum(counts.values()))]:
        counts[k] += 1
    return {k: c for k, c in counts.items() if c > 0}


def fleet_cars(
    devices: int, mix: Mapping[ScenarioKind, float]
) -> tuple[int, dict[ScenarioKind, int]]:
    """How many cars make `devices` trackers (two scenarios put two trackers in a car), and
    how many of them play each scenario (percent of the cars, see `apportion`)."""

    def trackers(cars: int) -> int:
        counts = apportion(mix, cars)
        return cars + sum(n for k, n in counts.items() if k in TWO_TRACKERS)

    cars = devices
    while trackers(cars) > devices:
        cars -= 1
    # a tracker short of `devices` when the next car would have brought two: a quiet car
    return cars + devices - trackers(cars), apportion(mix, cars)


def validate_spec(spec: FleetSpec) -> None:
    """FleetError naming every problem of `spec` (counts, pace, QoS, id prefix, JT/T 808
    share, mix)."""
    problems = []
    if spec.devices < 1:
        problems.append(f"devices must be at least 1, got {spec.devices}")
    if not (math.isfinite(spec.duration_s) and spec.duration_s >= 1.0):
        problems.append(f"the duration must be at least 1 s, got {spec.duration_s:g}")
    if spec.rate is not None and not (math.isfinite(spec.rate) and spec.rate > 0):
        problems.append(f"the rate must be a positive number of messages/s, got {spec.rate:g}")
    if spec.speed is not None and not (math.isfinite(spec.speed) and spec.speed >= 1.0):
        problems.append(
            f"the speed must be at least 1 (event seconds per wall second: a slower stream "
            f"would run ahead of the wall clock), got {spec.speed:g}"
        )
    if spec.rate is not None and spec.speed is not None:
        problems.append("give a rate or a speed, not both")
    if spec.qos not in {0, 1}:
        problems.append(f"QoS must be 0 or 1, got {spec.qos}")
    if not spec.id_prefix or not all(c.isalnum() or c in "_.-" for c in spec.id_prefix):
        problems.append(f"the id prefix must be letters, digits, _ . or -, got {spec.id_prefix!r}")
    if not (math.isfinite(spec.jt808_share) and 0.0 <= spec.jt808_share <= 1.0):
        problems.append(f"the JT/T 808 share must be from 0 to 1, got {spec.jt808_share:g}")
    if problems:
        raise FleetError("; ".join(problems))
    _check_mix(spec.mix)
