"""The flags of `pledgewatch loadtest` and the command itself (engine/cli/main.py wires it in;
this module imports nothing of the CLI, which reports LoadtestUsageError like its own errors).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import orjson

from engine.core.config import Config, ConfigError, parse_config

Option = Callable[..., None]
"""engine.cli.main's `_option(parser, flag, **kwargs)`: a flag whose default reads PLEDGEWATCH_*."""
Flag = Callable[[argparse.ArgumentParser, str, str], None]
AUTO_EVENT_S = 3600.0


class LoadtestUsageError(Exception):
    """A flag of `pledgewatch loadtest` is wrong or names a bad file; the message says which."""


def add_arguments(parser: argparse.ArgumentParser, option: Option, flag: Flag) -> None:
    """Add the load test's flags to its subparser."""
    fleet = parser.add_argument_group("the fleet (as `pledgewatch simulate`)")
    option(fleet, "--devices", type=int, default=1000, help="trackers to simulate")
    option(fleet, "--duration", type=float, default=60.0, help="wall seconds to publish for")
    option(fleet, "--rate", type=float, help="target messages/s (sets the speed)")
    option(
        fleet,
        "--speed",
        type=float,
        help="event seconds per wall second (default: one hour of event time in the run)",
    )
    option(fleet, "--seed", default="1", help="any string; the same seed plays the same fleet")
    option(
        fleet,
        "--mix",
        help="percent of cars per scenario, e.g. towed=1,leaves_zone=2 (default: the simulator's)",
    )
    option(fleet, "--qos", type=int, choices=(0, 1), default=1, help="MQTT QoS of the publishes")
    option(fleet, "--clients", type=int, default=8, help="MQTT connections to publish over")
    option(
        fleet,
        "--jt808-share",
        type=float,
        default=0.0,
        help="share of the trackers (0 to 1) that speak JT/T 808 over TCP to a gateway the "
        "load test starts, instead of MQTT (wired units only; default 0)",
    )
    option(
        fleet,
        "--id-prefix",
        default="sim",
        help="prefix of device, loan and car ids (another one to run again on the same engine)",
    )
    engine = parser.add_argument_group("the engine under test")
    option(engine, "--api", help="a running engine's API URL (default: start one)")
    option(engine, "--api-token", help="with --api: its bearer token")
    option(engine, "--engine-pid", type=int, help="with --api: its process id, to sample CPU/RSS")
    option(
        engine,
        "--config",
        help="with --api: the engine's rule settings (JSON), to tell what can be judged",
    )
    option(
        engine,
        "--mqtt-url",
        help="the broker (default: a private Mosquitto; with --api: mqtt://127.0.0.1:1883)",
    )
    option(engine, "--db-url", help="the started engine's store (default: SQLite in a temp dir)")
    run = parser.add_argument_group("the run and its report")
    option(run, "--drain-s", type=float, default=30.0, help="longest wait for alerts at the end")
    option(run, "--report", default="loadtest-report", help="directory for the report")
    flag(parser, "--ramp", "step the rate up until p99 or the backlog says stop")
    option(run, "--ramp-step-s", type=float, default=20.0, help="seconds per ramp step")
    option(run, "--ramp-factor", type=float, default=1.5, help="rate multiplier per step")
    option(run, "--ramp-max-steps", type=int, default=12, help="most steps to try")
    option(run, "--max-p99-ms", type=float, default=1000.0, help="ramp: the latency bound")


def auto_speed(duration_s: float) -> float:
    """The default pace: one hour of event time in the run, at least real time. Scenario
    stories need most of an hour (a 30 min silence before `device.offline`, dwell times)."""
    return max(1.0, AUTO_EVENT_S / duration_s)


def read_rules(path: str) -> Config:
    """The engine's rule settings from a `--config` JSON file."""
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        msg = f"--config: cannot read {path}: {exc.strerror}"
        raise LoadtestUsageError(msg) from exc
    except orjson.JSONDecodeError as exc:
        msg = f"--config {path}: not valid JSON ({exc})"
        raise LoadtestUsageError(msg) from exc
    try:
        return parse_config(doc)
    except ConfigError as exc:
        msg = f"--config {path}: {exc}"
        raise LoadtestUsageError(msg) from exc


def main(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run `pledgewatch loadtest` from parsed flags; the exit status. LoadtestUsageError
    when a flag is wrong."""
    from simulator.fleet_spec import DEFAULT_MIX, FleetError, FleetSpec, parse_mix  # noqa: PLC0415
    from simulator.loadtest.options import Options  # noqa: PLC0415
    from simulator.loadtest.run import run  # noqa: PLC0415  # heavy: the simulator

    if args.api is None and (args.engine_pid is not None or args.config):
        msg = "--engine-pid and --config describe a running engine: use them with --api"
        raise LoadtestUsageError(msg)
    if args.ramp and (args.ramp_factor <= 1 or args.ramp_step_s <= 0):
        msg = "--ramp-factor must be over 1 and --ramp-step-s positive"
        raise LoadtestUsageError(msg)
    if args.clients < 1:
        msg = "--clients must be at least 1"
        raise LoadtestUsageError(msg)
    if not 0.0 <= args.jt808_share <= 1.0:
        msg = f"--jt808-share must be from 0 to 1, got {args.jt808_share:g}"
        raise LoadtestUsageError(msg)
    try:
        mix = dict(DEFAULT_MIX) if args.mix in {None, "default"} else parse_mix(args.mix)
    except FleetError as exc:
        raise LoadtestUsageError(str(exc)) from exc
    speed = args.speed
    if speed is None and args.rate is None and not args.ramp:
        speed = auto_speed(args.duration)
    spec = FleetSpec(
        devices=args.devices,
        seed=args.seed,
        duration_s=args.duration,
        rate=args.rate,
        speed=speed,
        mix=mix,
        qos=args.qos,
        id_prefix=args.id_prefix,
        jt808_share=args.jt808_share,
    )
    opts = Options(
        spec=spec,
        clients=args.clients,
        api=args.api,
        api_token=args.api_token,
        engine_pid=args.engine_pid,
        mqtt_url=args.mqtt_url,
        db_url=args.db_url,
        engine_rules=read_rules(args.config) if args.config else None,
        drain_s=args.drain_s,
        report_dir=Path(args.report),
        ramp=args.ramp,
        ramp_step_s=args.ramp_step_s,
        ramp_factor=args.ramp_factor,
        max_p99_ms=args.max_p99_ms,
        ramp_max_steps=args.ramp_max_steps,
        command=shlex.join(["pledgewatch", *(sys.argv[1:] if argv is None else argv)]),
    )

    def interrupt(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # SIGTERM ends the run like Ctrl-C: a report
    return run(opts)
