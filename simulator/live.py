"""A live fleet: N virtual trackers played against the wall clock, or written as replay input.

`plan_fleet(spec)` is pure and seeded: it lays out a city, picks which cars play which
scenario (by the spec's mix; the rest drive quietly), and chooses the speed factor k (event
seconds per wall second). The event-time span of the run is `k * duration_s`; it is placed
so that the stream ENDS at the run's last wall second: published timestamps trail the wall
clock and catch up at the end, never ahead of it (the engine rejects readings from the
future, and its `device.offline` runs on the wall clock, see `FleetPlan.engine_config`).

`FleetPlan.schedule()` yields every message lazily in publish order, each with the wall
second it is due; `publish` paces them over paho connections; `write_jsonl` writes the same
stream as `pledgewatch replay` input with the fences, loans and ground truth.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from simulator.scenarios import ScenarioKind
from simulator.truth import GroundTruth


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """What to play: how many trackers, how long (wall seconds), how fast, which scenarios.

    `rate` (messages/s) or `speed` (event seconds per wall second) sets the pace; with
    neither, the speed is 1. `mix` gives the percent of cars per scenario; the rest are
    quiet commuters. `start_wall_ms` 0 means now, at plan time.
    """

    devices: int
    seed: str
    duration_s: float
    rate: float | None
    speed: float | None
    mix: Mapping[ScenarioKind, float]
    qos: int = 1
    start_wall_ms: int = 0


class Scheduled(NamedTuple):
    """One MQTT publish of the plan: when (wall seconds after the start), where, what."""

    due_s: float
    topic: str
    payload: bytes
    device_id: str | None
    readings: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class PublishStats:
    """What `publish` did: messages sent, wall time taken, achieved rate, lag behind schedule."""

    sent: int
    bytes_sent: int
    elapsed_s: float
    rate: float
    max_lag_s: float
    final_lag_s: float
    stopped: bool


class FleetPlan:
    """A planned fleet run: its documents, ground truth and lazily generated schedule."""

    spec: FleetSpec
    speed: float

    def fences_doc(self) -> dict[str, object]:
        """GeoJSON FeatureCollection for `POST /v1/fences:import`."""
        raise NotImplementedError

    def loans_doc(self) -> list[dict[str, object]]:
        """The loans, each for `PUT /v1/loans/{loan_id}` (with its `loan_id`)."""
        raise NotImplementedError

    def truth(self) -> GroundTruth:
        """What a correct engine raises on this stream, in the stream's (rebased) time."""
        raise NotImplementedError

    def engine_config(self) -> dict[str, object]:
        """`Config` overrides an engine needs to judge this run (offline_s scaled by k)."""
        raise NotImplementedError

    def skipped(self) -> list[str]:
        """Scenario cars not played, each with why (their alerts cannot land in the run)."""
        raise NotImplementedError

    def schedule(self) -> Iterator[Scheduled]:
        """Every message in publish order, generated lazily."""
        raise NotImplementedError


def plan_fleet(spec: FleetSpec) -> FleetPlan:
    """Plan a fleet run (pure and seeded; `start_wall_ms` 0 reads the clock once)."""
    raise NotImplementedError


def publish(
    plan: FleetPlan,
    mqtt_url: str,
    *,
    clients: int,
    on_sent: Callable[[Scheduled, float], None] | None,
    stop: threading.Event | None,
) -> PublishStats:
    """Publish the plan's schedule at its pace over `clients` paho connections.

    Trackers are spread over the connections (a tracker always uses the same one); QoS is
    the spec's. `on_sent(msg, wall_s)` is called after each publish with `time.time()`;
    `stop` ends the run early. Returns counts, the achieved rate and the lag behind schedule.
    """
    raise NotImplementedError


def write_jsonl(plan: FleetPlan, directory: Path) -> list[Path]:
    """Write the stream as replay input plus fences, loans and ground truth; the paths."""
    raise NotImplementedError
