"""The `pledgewatch` command line. Every flag also reads `PLEDGEWATCH_<FLAG>` from the env."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, cast

import orjson

from alerts.model import Alert
from devices.readings import Reject
from engine.cli.distributed import bridge_options, worker_options
from engine.cli.gateway import gateway_options
from engine.cli.lending_options import lending_options, load_lending
from engine.cli.operators import operators_options
from engine.cli.options import CliError
from engine.cli.options import flag as _flag
from engine.cli.options import option as _option
from engine.cli.service_options import (
    api_options,
    console_config,
    console_options,
    http_address,
    load_config,
    mqtt_options,
    read_json,
    service_settings,
)
from engine.core.config import Config
from engine.runtime.gc_policy import tune_gc
from engine.runtime.replay import Replay
from geofence.fence import FenceError, load_fences, parse_feature_collection
from geofence.index import FenceIndex
from lending.consumer import LendingConsumer
from lending.model import LoanError, parse_loans
from lending.params import DEFAULT_PARAMS, LendingParams
from simulator.loadtest.command import LoadtestUsageError
from simulator.loadtest.command import add_arguments as load_options

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _lines(path: str) -> Iterator[bytes]:
    if path == "-":
        yield from sys.stdin.buffer
        return
    try:
        with Path(path).open("rb") as f:
            yield from f
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc


def run_replay(
    readings: str,
    fences: str | None,
    loans: str | None,
    config: Config,
    on_alert: Callable[[Alert], None],
    rejects_out: IO[bytes] | None = None,
    lending: LendingParams | None = DEFAULT_PARAMS,
) -> Replay:
    """Replay a readings file against fences and loans files; returns the finished replay."""
    try:
        index = FenceIndex.build(load_fences(fences) if fences else [])
        loan_list = parse_loans(read_json(loans)) if loans else []
    except (FenceError, LoanError) as exc:
        raise CliError(str(exc)) from exc

    def on_reject(reject: Reject) -> None:
        if rejects_out is not None:
            _write_line(rejects_out, reject.to_json())

    consumer = None if lending is None else LendingConsumer(lending)
    replay = Replay(index, loan_list, config, on_alert, on_reject, consumer)
    tune_gc()
    replay.feed(_lines(readings))
    replay.finish()
    return replay


def _summary(replay: Replay, seconds: float) -> str:
    c = replay.pipeline.counters
    total = sum(c.readings.values())
    rate = total / seconds if seconds > 0 else 0.0

    def fmt(counter: dict[str, int]) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(counter.items())) or "none"

    return "\n".join(
        [
            (
                f"replay: {replay.lines} lines, {total} readings accepted in {seconds:.2f} s "
                f"({rate:,.0f} readings/s), {len(replay.pipeline.devices)} devices"
            ),
            f"  readings:   {fmt(dict(c.readings))}",
            f"  late:       {fmt(dict(c.late))}",
            f"  duplicates: {fmt(dict(c.duplicates))}",
            f"  clock skew: {fmt(dict(c.clock_skew))}",
            f"  missing (seq gaps): {c.missing}, devices evicted: {c.evicted}",
            f"  rejected:   {fmt(dict(c.rejected))}",
            f"  alerts:     {fmt(dict(c.alerts))}",
        ]
    )


def cmd_replay(args: argparse.Namespace) -> int:
    """`pledgewatch replay`: alerts as JSON lines on stdout, summary on stderr."""
    out = sys.stdout.buffer
    rejects_out = Path(args.rejects).open("wb") if args.rejects else None  # noqa: SIM115  # closed below
    started = time.perf_counter()
    try:
        replay = run_replay(
            args.readings,
            args.fences,
            args.loans,
            load_config(args.config),
            lambda alert: _write_line(out, alert.to_json()),
            rejects_out,
            load_lending(args),
        )
    finally:
        if rejects_out is not None:
            rejects_out.close()
    out.flush()
    print(_summary(replay, time.perf_counter() - started), file=sys.stderr)
    return 0


def _write_line(out: IO[bytes], doc: dict[str, object]) -> None:
    out.write(orjson.dumps(doc) + b"\n")


def format_alert_row(alert: Alert) -> str:
    """One alert as a line of the live table."""
    j = alert.to_json()
    where = (
        f"{alert.lat:.5f},{alert.lon:.5f}"
        if alert.lat is not None and alert.lon is not None
        else "-"
    )
    return (
        f"{j['ts']!s:<24} {alert.severity.value:<8} {alert.type.value:<26} "
        f"{alert.loan_id or '-':<8} {alert.device_id or '-':<14} "
        f"{alert.fence_id or '-':<18} {where}"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """`pledgewatch demo`: the live system with the example city, or `--offline` its replay."""
    if not args.offline:
        from engine.cli.demo import DemoError, run_demo  # noqa: PLC0415  # heavy

        try:
            return run_demo(
                args.mqtt_url,
                args.http,
                args.play_s,
                args.duration,
                console_settings=console_config(args),
            )
        except DemoError as exc:
            raise CliError(str(exc)) from exc
    example = EXAMPLES / "city"
    print(f"pledgewatch demo: replaying the bundled example city ({example})", file=sys.stderr)
    header = (
        f"{'event time':<24} {'severity':<8} {'type':<26} {'loan':<8} "
        f"{'device':<14} {'fence':<18} where"
    )
    print(header)
    print("-" * len(header))
    started = time.perf_counter()
    replay = run_replay(
        str(example / "readings.jsonl"),
        str(example / "fences.geojson"),
        str(example / "loans.json"),
        load_config(args.config),
        lambda alert: print(format_alert_row(alert)),
        lending=load_lending(args),
    )
    print(_summary(replay, time.perf_counter() - started), file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """`pledgewatch run`: the engine, the API and the dispatcher until SIGTERM or SIGINT."""
    from engine.cli.service import Service  # noqa: PLC0415  # heavy
    from engine.store.port import LeaseError, StoreConfigError  # noqa: PLC0415

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = service_settings(args)
    try:
        service = Service(settings)
    except StoreConfigError as exc:
        raise CliError(str(exc)) from exc
    except LeaseError as exc:  # not a usage error: another engine runs (exit 1, one line)
        print(f"pledgewatch: {exc}", file=sys.stderr)
        return 1
    service.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5) and service.healthy():
        pass
    healthy = service.healthy()
    service.stop()
    return 0 if healthy else 1


def cmd_import(args: argparse.Namespace) -> int:
    """`pledgewatch fences import FILE` / `loans import FILE`: through a running engine's API,
    after checking the whole file here (so one bad record fails before anything is sent)."""
    import httpx  # noqa: PLC0415  # only this command talks HTTP

    from simulator.harness.api_client import ImportRefusedError, import_items  # noqa: PLC0415  # httpx

    kind = args.kind
    doc = read_json(args.file)
    try:
        if kind == "fences":
            parse_feature_collection(doc)
            items = list(cast("dict[str, list[object]]", doc)["features"])  # its shape is checked
        else:
            parse_loans(doc)
            items = list(cast("list[object]", doc))
    except (FenceError, LoanError) as exc:
        raise CliError(f"{args.file}: {exc}") from exc

    def show(done: int, alerts: list[dict[str, object]]) -> None:
        for alert in alerts:
            print(f"alert {alert['type']} loan {alert['loan_id']}: {alert['details']}")
        print(f"{done} of {len(items)} {kind} imported", file=sys.stderr, flush=True)

    headers = {"Authorization": f"Bearer {args.api_token}"} if args.api_token else {}
    with httpx.Client(base_url=args.api.rstrip("/"), headers=headers, timeout=120) as http:
        try:
            import_items(http, kind, items, show)
        except ImportRefusedError as exc:
            raise CliError(str(exc)) from exc
        except httpx.HTTPError as exc:
            msg = f"no engine answers at {args.api} ({exc}); start `pledgewatch run` or pass --api"
            raise CliError(msg) from exc
    print(f"imported {len(items)} {kind} into {args.api}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """`pledgewatch simulate`: a fleet of virtual trackers over MQTT, or `--out` replay files."""
    from simulator.fleet_spec import FleetError  # noqa: PLC0415  # heavy: the simulator
    from simulator.simulate import SimulateOptions, simulate  # noqa: PLC0415

    try:
        return simulate(SimulateOptions.from_args(args))
    except FleetError as exc:
        raise CliError(str(exc)) from exc


def _simulate_options(sim: argparse.ArgumentParser) -> None:
    _option(sim, "--devices", type=int, default=100, help="trackers (default 100)")
    _option(sim, "--duration", type=float, help="wall seconds to publish for (default 60)")
    _option(sim, "--count", type=int, help="stop after this many messages")
    _option(sim, "--rate", type=float, help="target messages/s (sets the speed)")
    _option(sim, "--speed", type=float, help="event seconds per wall second, >= 1 (default 1)")
    _option(sim, "--mix", default="default", help="percent per scenario: leaves_zone=5,towed=2")
    _option(sim, "--qos", type=int, choices=(0, 1), default=1, help="MQTT QoS (default 1)")
    _option(sim, "--clients", type=int, default=8, help="MQTT connections (default 8)")
    _option(sim, "--mqtt-url", default="mqtt://127.0.0.1:1883", help="the MQTT broker")
    _option(sim, "--seed", default="1", help="any string: same seed and flags, same stream")
    _option(sim, "--out", help="write replay files to this directory instead of publishing")
    _option(sim, "--start", help="wall start, epoch ms or ISO (default now; fixed with --out)")
    _option(sim, "--id-prefix", default="sim", help="prefix of device, loan and car ids")
    _option(sim, "--setup-dir", help="also write fences, loans and ground truth here")


def cmd_broker_acl(args: argparse.Namespace) -> int:
    """`pledgewatch broker-acl`: Mosquitto password and ACL files for the active loans'
    trackers and the engine; passwords already in OUT/credentials.json are kept."""
    from devices.broker_acl import BrokerAclError, build_broker_auth, parse_credentials  # noqa: PLC0415

    try:
        loans = parse_loans(read_json(args.loans))
    except LoanError as exc:
        raise CliError(f"{args.loans}: {exc}") from exc
    out = Path(args.out)
    creds = out / "credentials.json"
    try:
        known = parse_credentials(creds.read_bytes()) if creds.exists() else {}
    except (BrokerAclError, OSError) as exc:
        raise CliError(f"{creds}: {exc}") from exc
    devices = (d for loan in loans if loan.active for d in loan.device_ids)
    try:
        auth = build_broker_auth(devices, known, args.engine_user, source=Path(args.loans).name)
    except BrokerAclError as exc:
        raise CliError(str(exc)) from exc
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {out}: {exc.strerror}") from exc
    _write_private(out / "passwd", auth.passwd.encode())
    _write_private(out / "acl", auth.acl.encode())
    _write_private(creds, auth.credentials_json())
    print(
        f"{out}: passwd, acl and credentials.json (mode 0600) for the engine "
        f"({args.engine_user}) and {len(auth.credentials) - 1} devices; "
        f"{len(auth.new)} new passwords, {len(auth.revoked)} logins revoked. "
        "Give each tracker its login, then reload Mosquitto (kill -HUP)."
    )
    return 0


def _write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, readable by its owner only from the start."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
        tmp.replace(path)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from exc


def cmd_loadtest(args: argparse.Namespace) -> int:
    """`pledgewatch loadtest`: play a fleet into an engine, measure, and write a report."""
    from simulator.loadtest.command import main  # noqa: PLC0415  # heavy: the simulator

    try:
        return main(args)
    except LoadtestUsageError as exc:
        raise CliError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="pledgewatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    rp = sub.add_parser("replay", help="run the detection core offline over recorded readings")
    rp.add_argument(
        "readings", help="readings JSONL ({'topic', 'payload'} per line), or - for stdin"
    )
    _option(rp, "--fences", help="GeoJSON FeatureCollection of fences (each feature with an id)")
    _option(rp, "--loans", help="JSON array of loans, each with its loan_id")
    _option(rp, "--rejects", help="write every rejected record with its reason to this JSONL file")
    _option(rp, "--config", help="JSON object of rule settings overriding the defaults")
    lending_options(rp)
    rp.set_defaults(func=cmd_replay)

    run = sub.add_parser("run", help="the engine, HTTP API and webhook dispatcher")
    mqtt_options(run)
    api_options(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="everything on this machine, with the example city")
    _option(demo, "--mqtt-url", default="mqtt://127.0.0.1:1883", help="broker (else a private one)")
    _option(
        demo,
        "--http",
        type=http_address,
        default="127.0.0.1:8080",
        help="HOST:PORT of the demo's API",
    )
    _option(demo, "--play-s", type=float, default=60.0, help="seconds to play the city's day in")
    _option(demo, "--duration", type=float, help="stop after this many seconds (default: Ctrl-C)")
    _option(demo, "--config", help="with --offline: rule settings overriding the defaults")
    lending_options(demo)
    console_options(demo)
    _flag(demo, "--offline", "replay the example city offline and print its alerts instead")
    demo.set_defaults(func=cmd_demo)

    for kind, what in (
        ("fences", "a GeoJSON FeatureCollection whose features carry ids"),
        ("loans", "a JSON array of loans, each with its loan_id"),
    ):
        group = sub.add_parser(kind, help=f"manage the {kind} of a running engine")
        verbs = group.add_subparsers(dest="verb", required=True)
        imp = verbs.add_parser("import", help=f"import {what} through the API")
        imp.add_argument("file", help=what)
        _option(imp, "--api", default="http://127.0.0.1:8080", help="the engine's API base URL")
        _option(imp, "--api-token", help="bearer token of the API")
        imp.set_defaults(func=cmd_import, kind=kind)

    sim = sub.add_parser("simulate", help="a fleet of virtual trackers publishing over MQTT")
    _simulate_options(sim)
    sim.set_defaults(func=cmd_simulate)

    load = sub.add_parser("loadtest", help="play a fleet into an engine, measure it, report")
    load_options(load, _option, _flag)
    load.set_defaults(func=cmd_loadtest)

    acl = sub.add_parser("broker-acl", help="Mosquitto logins and ACL from the loan book")
    _option(acl, "--loans", required=True, help="JSON array of loans (active ones' trackers)")
    _option(acl, "--out", required=True, help="directory for passwd, acl, credentials.json")
    _option(acl, "--engine-user", default="pledgewatch-engine", help="the engine's username")
    acl.set_defaults(func=cmd_broker_acl)

    operators_options(sub.add_parser("operators", help="the console's operator accounts"))
    gateway_options(sub.add_parser("gateway", help="tracker protocols in, MQTT readings out"))
    bridge_options(sub.add_parser("bridge", help="distributed runtime: MQTT in, Kafka out"))
    worker_options(sub.add_parser("worker", help="distributed runtime: a Faust worker"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pledgewatch` console script."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except CliError as exc:
        print(f"pledgewatch: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return result
