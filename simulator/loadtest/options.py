"""What `pledgewatch loadtest` was asked to do (`Options`, from its flags), and the error it
stops with when it cannot do it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.core.config import Config
from simulator.fleet_spec import FleetSpec


class LoadtestError(Exception):
    """The load test cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Options:
    """Everything `pledgewatch loadtest` takes from its flags."""

    spec: FleetSpec
    clients: int = 8
    api: str | None = None  # a running engine's API; None: start one
    api_token: str | None = None
    engine_pid: int | None = None
    mqtt_url: str | None = None  # None: a private Mosquitto (or, attached, 127.0.0.1:1883)
    db_url: str | None = None  # the started engine's store; None: SQLite in a temp dir
    engine_rules: Config | None = None  # an attached engine's rules, if known
    drain_s: float = 30.0
    report_dir: Path = Path("loadtest-report")
    ramp: bool = False
    ramp_step_s: float = 20.0
    ramp_factor: float = 1.5
    max_p99_ms: float = 1000.0
    ramp_max_steps: int = 12
    command: str = ""
