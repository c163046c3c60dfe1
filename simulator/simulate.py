"""`pledgewatch simulate`: a fleet of virtual trackers publishing over MQTT, or written out.

Plans the fleet (`simulator.fleet_plan`), generates its cars with progress on stderr, then either
publishes the stream at its pace with a live progress line (sent, rate, lag behind
schedule), or with `--out DIR` writes it as `pledgewatch replay` input instead.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from simulator.fleet_plan import FleetPlan, plan_fleet
from simulator.fleet_spec import (
    DEFAULT_MIX,
    DEFAULT_START_WALL_MS,
    FleetError,
    FleetSpec,
    parse_mix,
)
from simulator.mqtt_publisher import PublishProgress, publish
from simulator.writer import write_json, write_jsonl

DEFAULT_DURATION_S = 60.0
SKIPPED_SHOWN = 8


@dataclass(frozen=True, slots=True)
class SimulateOptions:
    """The command's options, as parsed."""

    devices: int
    duration_s: float | None
    count: int | None
    rate: float | None
    speed: float | None
    mix: str
    qos: int
    clients: int
    mqtt_url: str
    seed: str
    out: Path | None
    start: str | None
    id_prefix: str
    setup_dir: Path | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SimulateOptions:
        """The options from `pledgewatch simulate`'s parsed arguments."""
        return cls(
            devices=int(args.devices),
            duration_s=None if args.duration is None else float(args.duration),
            count=None if args.count is None else int(args.count),
            rate=None if args.rate is None else float(args.rate),
            speed=None if args.speed is None else float(args.speed),
            mix=str(args.mix),
            qos=int(args.qos),
            clients=int(args.clients),
            mqtt_url=str(args.mqtt_url),
            seed=str(args.seed),
            out=None if args.out is None else Path(args.out),
            start=args.start,
            id_prefix=str(args.id_prefix),
            setup_dir=None if args.setup_dir is None else Path(args.setup_dir),
        )


def parse_start(text: str) -> int:
    """`--start`: epoch milliseconds, or ISO-8601 with an offset."""
    if text.strip().isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        msg = f"--start {text!r}: give epoch milliseconds or ISO-8601 with an offset"
        raise FleetError(msg)
    return round(moment.timestamp() * 1000)


def fleet_spec(opts: SimulateOptions, now_ms: int) -> FleetSpec:
    """The fleet the options ask for; `--out` without `--start` is placed at a fixed time so
    that the same seed and options write the same bytes."""
    mix = DEFAULT_MIX if opts.mix.strip().lower() == "default" else parse_mix(opts.mix)
    duration = opts.duration_s
    if duration is None:
        duration = DEFAULT_DURATION_S
        if opts.count is not None and opts.rate is not None:
            duration = max(1.0, math.ceil(opts.count / opts.rate * 1.1))  # some to spare
    if opts.start is not None:
        start = parse_start(opts.start)
    else:
        start = DEFAULT_START_WALL_MS if opts.out is not None else now_ms
    return FleetSpec(
        devices=opts.devices,
        seed=opts.seed,
        duration_s=duration,
        rate=opts.rate,
        speed=opts.speed,
        mix=mix,
        qos=opts.qos,
        start_wall_ms=start,
        id_prefix=opts.id_prefix,
    )


class _Progress:
    """The live line on stderr: rewritten in place on a terminal, a line every 10 s if not."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last_line = 0.0

    def generating(self, done: int, total: int) -> None:
        self._show(f"generating cars: {done:,}/{total:,}", final=done == total)

    def publishing(self, p: PublishProgress) -> None:
        self._show(
            f"sent {p.sent:,}  {p.rate:,.0f} msg/s  lag {p.lag_s:.2f} s  "
            f"{p.elapsed_s:.0f}/{p.duration_s:.0f} s"
        )

    def _show(self, text: str, *, final: bool = False) -> None:
        if self.tty:
            self.stream.write(f"\r{text:<72}" + ("\n" if final else ""))
            self.stream.flush()
        elif final or time.monotonic() - self.last_line >= 10.0:
            print(text, file=self.stream, flush=True)
            self.last_line = time.monotonic()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _describe(plan: FleetPlan, err: TextIO) -> None:
    kinds = ", ".join(f"{k} {n:,}" for k, n in plan.kinds().items())
    print(f"cars: {kinds}", file=err)
    skipped = plan.skipped()
    if skipped:
        per_kind = Counter(line.split(": ", 1)[0].split()[-1] for line in skipped)
        summary = ", ".join(f"{k} {n}" for k, n in sorted(per_kind.items()))
        print(
            f"{len(skipped)} scenario cars not played (their alerts cannot land in this "
            f"run; they drive quietly instead): {summary}",
            file=err,
        )
        for line in skipped[:SKIPPED_SHOWN]:
            print(f"  {line}", file=err)
        if len(skipped) > SKIPPED_SHOWN:
            print(f"  ... and {len(skipped) - SKIPPED_SHOWN} more", file=err)


def simulate(opts: SimulateOptions, err: TextIO = sys.stderr, out: TextIO = sys.stdout) -> int:
    """Run the command; returns the exit status (FleetError for bad options)."""
    spec = fleet_spec(opts, int(time.time() * 1000))
    started = time.perf_counter()
    plan = plan_fleet(spec, lambda line: print(line, file=err, flush=True))
    progress = _Progress(err)
    plan.prepare(progress.generating)
    print(f"planned in {time.perf_counter() - started:.1f} s", file=err)
    _describe(plan, err)
    if opts.out is not None:
        for path in write_jsonl(plan, opts.out, limit=opts.count):
            print(path, file=out)
        return 0
    if opts.setup_dir is not None:
        setup = opts.setup_dir
        setup.mkdir(parents=True, exist_ok=True)
        write_json(setup / "fences.geojson", plan.fences_doc())
        write_json(setup / "loans.json", plan.loans_doc())
        write_json(setup / "ground_truth.json", plan.truth().to_json())
        write_json(setup / "engine_config.json", plan.engine_config())
        print(f"fences, loans, ground truth and engine config in {setup}", file=err)
    print(
        f"publishing to {opts.mqtt_url} over {opts.clients} connections, QoS {spec.qos}; "
        f"an engine judging this run needs {plan.engine_config()}",
        file=err,
    )
    stop = threading.Event()
    try:
        stats = publish(
            plan,
            opts.mqtt_url,
            clients=opts.clients,
            on_sent=None,
            stop=stop,
            limit=opts.count,
            progress=progress.publishing,
        )
    except KeyboardInterrupt:
        stop.set()
        progress.done()
        print("interrupted", file=err)
        return 130
    progress.done()
    target = f" (asked {spec.rate:,.0f})" if spec.rate is not None else ""
    print(
        f"published {stats.sent:,} messages ({stats.readings:,} readings, "
        f"{stats.bytes_sent / 1e6:.1f} MB) in {stats.elapsed_s:.1f} s: "
        f"{stats.rate:,.0f} msg/s{target}; lag behind schedule max {stats.max_lag_s:.2f} s, "
        f"at the end {stats.final_lag_s:.2f} s",
        file=err,
    )
    if stats.failed or stats.unacked:
        print(
            f"{stats.failed} publishes refused by the client (no connection), "
            f"{stats.unacked} connections with unacknowledged messages at the end",
            file=err,
        )
        return 1
    return 0
