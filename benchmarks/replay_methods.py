"""The replay benchmark's sides: (f) the floor (orjson and a raw STRtree lookup), (a) the
decode-and-look-up baseline, (b) the in-process `Replay` (and (b'), its loans put
beforehand), (c) `pledgewatch replay` as a subprocess; (b) and (c) also with the batch step
off (the fold alone, as before issue 12); each timed and checked."""

from __future__ import annotations

import cProfile
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import shapely
from shapely import STRtree

from alerts.model import Alert
from benchmarks.common import rate
from benchmarks.replay_workload import T0_MS, Inputs
from devices.readings import GpsFix
from engine.core.config import Config
from engine.runtime.replay import BATCH_LINES, Replay, decode_line
from geofence.index import FenceIndex
from lending.model import parse_loans


@dataclass(slots=True)
class Timing:
    """One side of the comparison: seconds, readings it handled, and whether it was right."""

    method: str
    seconds: float = math.nan
    readings: int = 0
    check: str = "not run"
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the checks of this method passed."""
        return self.check == "ok"

    @property
    def readings_per_s(self) -> float | None:
        """Readings per second, or None if the checks failed: never report a wrong answer."""
        return rate(self.readings, self.seconds) if self.ok else None

    def as_json(self) -> dict[str, object]:
        """The timing as a JSON object."""
        rps = self.readings_per_s
        return {
            "method": self.method,
            "seconds": round(self.seconds, 4) if not math.isnan(self.seconds) else None,
            "readings": self.readings,
            "readings_per_s": round(rps, 1) if rps is not None else None,
            "check": self.check,
            "note": self.note,
            **self.extra,
        }


def floor(inputs: Inputs, tree: STRtree) -> Timing:
    """The floor of issue 12: parse each line with orjson and look every fix up in a raw
    STRtree (vectorized, one query per `BATCH_LINES` lines); no validation at all."""
    timing = Timing("floor", note=f"orjson.loads + raw STRtree(within) per {BATCH_LINES} lines")
    readings = 0
    pairs = 0
    lats: list[float] = []
    lons: list[float] = []
    loads = orjson.loads
    start = time.perf_counter()
    with inputs.readings.open("rb") as f:
        for n, line in enumerate(f, 1):
            payload = loads(line)["payload"]
            readings += 1
            if "lat" in payload:
                lats.append(payload["lat"])
                lons.append(payload["lon"])
            if n % BATCH_LINES == 0 and lats:
                pairs += tree.query(shapely.points(lons, lats), predicate="within").shape[1]
                lats, lons = [], []
    if lats:
        pairs += tree.query(shapely.points(lons, lats), predicate="within").shape[1]
    timing.seconds = time.perf_counter() - start
    timing.readings = readings
    timing.extra = {"inside_pairs": pairs}
    timing.check = (
        "ok"
        if readings == inputs.lines
        else f"WRONG: {readings} lines read, expected {inputs.lines}"
    )
    return timing


def baseline(inputs: Inputs, tree: STRtree) -> Timing:
    """Read and decode the lines as the replay does (`decode_line`), and look every fix up in
    a raw STRtree (vectorized, one query per `BATCH_LINES` lines)."""
    timing = Timing("baseline", note=f"decode + raw STRtree(within) per {BATCH_LINES} lines")
    readings = 0
    rejects = 0
    pairs = 0
    lats: list[float] = []
    lons: list[float] = []
    start = time.perf_counter()
    with inputs.readings.open("rb") as f:
        for n, line in enumerate(f, 1):
            decoded = decode_line(line, n)
            rejects += len(decoded.rejects)
            for reading in decoded.readings:
                readings += 1
                if isinstance(reading, GpsFix):
                    lats.append(reading.lat)
                    lons.append(reading.lon)
            if n % BATCH_LINES == 0 and lats:
                pairs += tree.query(shapely.points(lons, lats), predicate="within").shape[1]
                lats, lons = [], []
    if lats:
        pairs += tree.query(shapely.points(lons, lats), predicate="within").shape[1]
    timing.seconds = time.perf_counter() - start
    timing.readings = readings
    timing.extra = {"rejects": rejects, "inside_pairs": pairs}
    expected = inputs.lines
    timing.check = (
        "ok"
        if readings == expected and rejects == 0
        else f"WRONG: {readings} readings and {rejects} rejects, expected {expected} and 0"
    )
    return timing


def run_replay(
    inputs: Inputs,
    index: FenceIndex,
    config: Config,
    profiler: cProfile.Profile | None = None,
    fast: bool = True,
) -> tuple[Replay, list[Alert], float]:
    """A fresh in-process replay over the readings file: the replay, its alerts, seconds.

    The replay takes the loans itself, inside its first batch, as `pledgewatch replay` does;
    `fast=False`: the fold alone, with the per-line decoder (the batch step off).
    """
    loans = parse_loans(orjson.loads(inputs.loans.read_bytes()))
    alerts: list[Alert] = []
    replay = Replay(index, loans, config, on_alert=alerts.append)
    replay.pipeline.fast = replay.columnar = fast
    return replay, alerts, feed_all(replay, inputs, profiler)


def same_run(fold: Replay, fold_alerts: list[Alert], fast: Replay, alerts: list[Alert]) -> str:
    """'ok' if the fold and the batch step raised the same alerts (ids, order and contents)
    and ended with the same states and counters."""
    problems = []
    if fold_alerts != alerts:
        problems.append(f"{len(fold_alerts)} alerts from the fold, {len(alerts)} batched")
    if fold.pipeline.devices != fast.pipeline.devices:
        problems.append("device states differ")
    if fold.pipeline.counters != fast.pipeline.counters:
        problems.append("counters differ")
    return "ok" if not problems else "WRONG: " + "; ".join(problems)


def run_replay_preloaded(
    inputs: Inputs, index: FenceIndex, config: Config, profiler: cProfile.Profile | None = None
) -> tuple[Replay, list[Alert], float, float]:
    """The replay with its loans put beforehand (`Pipeline.put_loan`, the public way): the
    replay, its alerts, seconds taking the loans, seconds feeding the lines."""
    loans = parse_loans(orjson.loads(inputs.loans.read_bytes()))
    alerts: list[Alert] = []
    replay = Replay(index, [], config, on_alert=alerts.append)
    start = time.perf_counter()
    for loan in loans:
        alerts.extend(replay.pipeline.put_loan(loan, T0_MS, T0_MS))
    loans_s = time.perf_counter() - start
    return replay, alerts, loans_s, feed_all(replay, inputs, profiler)


def feed_all(replay: Replay, inputs: Inputs, profiler: cProfile.Profile | None) -> float:
    """Feed the readings file to `replay` and finish it, under `profiler` if given; seconds."""
    if profiler is not None:
        profiler.enable()
    start = time.perf_counter()
    with inputs.readings.open("rb") as f:
        replay.feed(f)
    replay.finish()
    seconds = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
    return seconds


def check_replay(replay: Replay, inputs: Inputs) -> str:
    """'ok' if every line was accepted once: no rejects, duplicates or late readings."""
    c = replay.pipeline.counters
    accepted = sum(c.readings.values())
    problems = []
    if accepted != inputs.lines:
        problems.append(f"{accepted} readings accepted, expected {inputs.lines}")
    if dict(c.readings) != {k: v for k, v in inputs.by_stream.items() if v}:
        problems.append(f"readings by stream {dict(c.readings)}, expected {inputs.by_stream}")
    for name, counter in (("rejected", c.rejected), ("duplicates", c.duplicates), ("late", c.late)):
        if sum(counter.values()):
            problems.append(f"{name}: {dict(counter)}")
    if c.alerts.get("gps.impossible_travel"):
        problems.append("gps.impossible_travel raised, but the cars never exceed 110 km/h")
    return "ok" if not problems else "WRONG: " + "; ".join(problems)


def pledgewatch_command() -> list[str]:
    """The installed `pledgewatch` script next to this interpreter, else `python -m`."""
    script = Path(sys.executable).parent / "pledgewatch"
    if script.exists():
        return [str(script)]
    found = shutil.which("pledgewatch")
    return [found] if found else [sys.executable, "-m", "engine.cli"]


def run_cli(inputs: Inputs, work: Path, want: list[Alert], fast: bool = True) -> Timing:
    """`pledgewatch replay` as a subprocess, wall time; alerts must equal the in-process ones.

    `fast=False` runs it with `PLEDGEWATCH_FAST_PATH=0` (the fold alone)."""
    timing = Timing(
        "cli" if fast else "cli_fold",
        note="subprocess wall time, start-up and fence/loan parsing included"
        + ("" if fast else "; PLEDGEWATCH_FAST_PATH=0"),
    )
    out_path = work / ("alerts.jsonl" if fast else "alerts_fold.jsonl")
    cmd = [
        *pledgewatch_command(),
        "replay",
        str(inputs.readings),
        "--fences",
        str(inputs.fences),
        "--loans",
        str(inputs.loans),
        "--no-lending",  # the core's replay, as in-process; bench_lending times the consumer
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    if not fast:
        env["PLEDGEWATCH_FAST_PATH"] = "0"
    start = time.perf_counter()
    with out_path.open("wb") as out:
        proc = subprocess.run(  # noqa: S603  # our own command line, no shell
            cmd, stdout=out, stderr=subprocess.PIPE, env=env, check=False
        )
    timing.seconds = time.perf_counter() - start
    timing.readings = inputs.lines
    summary = proc.stderr.decode("utf-8", "replace").strip()
    timing.extra = {"command": " ".join(["pledgewatch", *cmd[-7:]]), "summary": summary}
    if proc.returncode != 0:
        timing.check = f"WRONG: exit status {proc.returncode}: {summary[-500:]}"
        return timing
    got = [orjson.loads(line)["id"] for line in out_path.read_bytes().splitlines() if line]
    ids = [a.id for a in want]
    if got == ids:
        timing.check = "ok"
        return timing
    first = next((i for i, (g, w) in enumerate(zip(got, ids, strict=False)) if g != w), None)
    timing.check = (
        f"WRONG: {len(got)} alerts from the CLI, {len(ids)} in-process; same ids as a set: "
        f"{set(got) == set(ids)}; first difference at alert {first}"
    )
    return timing
