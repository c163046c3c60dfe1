"""The whole replay against "just decode those lines and look them up", side by side.

    python -m benchmarks.bench_replay [--devices 10000] [--fences 10000] [--readings 200000]
                                      [--seed S]

Generates (seeded, into a temp dir) a readings JSONL in the DESIGN §7 format, a fences
GeoJSON and a loans JSON, then times (a) the baseline: read, orjson-parse, `decode`, raw
STRtree lookup in batches; (b) `engine.runtime.replay.Replay` in-process; (c) `pledgewatch replay`
as a subprocess. Then profiles (b) once. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import shapely
from shapely import STRtree

from alerts.model import Alert
from benchmarks.common import (
    RESULTS_DIR,
    fmt_rate,
    fmt_ratio,
    log,
    machine_info,
    random_fences,
    rate,
    table,
    write_json,
)
from devices.readings import GpsFix
from engine.core.config import Config
from engine.runtime.gc_policy import THRESHOLDS, tune_gc
from engine.runtime.replay import BATCH_LINES, Replay, decode_line
from geofence.fence import FenceKind, load_fences
from geofence.geo import EARTH_RADIUS_M
from geofence.index import FenceIndex
from lending.model import parse_loans

T0_MS = 1_796_000_000_000
"""Event time of the first reading: 2026-11-30T00:53:20Z."""

VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
"""VIN characters: digits and letters except I, O and Q."""

PROFILE_TOP = 15
TARGET_RATIO = 3.0
"""The replay may take up to this many times the baseline's time."""


@dataclass(frozen=True, slots=True)
class Inputs:
    """The generated files and what is in them."""

    readings: Path
    fences: Path
    loans: Path
    lines: int
    by_stream: dict[str, int]
    event_span_s: float
    region_side_km: float


def random_vins(rng: np.random.Generator, n: int) -> list[str]:
    """`n` distinct, valid 17-character VINs (no I, O, Q)."""
    alphabet = np.array(list(VIN_ALPHABET))
    vins: list[str] = []
    seen: set[str] = set()
    while len(vins) < n:
        for row in alphabet[rng.integers(0, len(alphabet), (n - len(vins), 17))]:
            vin = "".join(row.tolist())
            if vin not in seen:
                seen.add(vin)
                vins.append(vin)
    return vins


def generate(args: argparse.Namespace, work: Path) -> Inputs:
    """Write readings.jsonl, fences.geojson and loans.json for a seeded fleet into `work`."""
    rng = np.random.default_rng(args.seed)
    n_dev = args.devices
    log(f"generating {args.fences} fences (seeded) and parsing them")
    # No holes: each car starts at its zone's centre, which must be inside the zone.
    fs = random_fences(rng, args.fences, args.coverage, hole_share=0.0)
    zone_idx = np.flatnonzero(np.array([f.kind is FenceKind.ZONE for f in fs.fences]))
    home = zone_idx[rng.integers(0, len(zone_idx), n_dev)]
    steps = max(1, args.readings // n_dev)
    interval_ms = args.interval_s * 1000
    log(f"generating {n_dev} devices x {steps} fixes every {args.interval_s} s")

    # Car speeds: a fifth stand (speed 0), the rest random-walk between 0 and 110 km/h.
    moving = rng.random(n_dev) >= 0.2
    speed = np.clip(
        rng.normal(50.0, 20.0, n_dev)[:, None]
        + np.cumsum(rng.normal(0.0, 8.0, (n_dev, steps)), axis=1),
        0.0,
        110.0,
    )
    speed[~moving] = 0.0
    heading = rng.uniform(0, 2 * math.pi, n_dev)[:, None] + np.cumsum(
        rng.normal(0.0, 0.35, (n_dev, steps)), axis=1
    )
    dist_m = speed / 3.6 * args.interval_s
    dist_m[:, 0] = 0.0  # the first fix is the start
    north_m = np.cumsum(dist_m * np.cos(heading), axis=1)
    east_m = np.cumsum(dist_m * np.sin(heading), axis=1)
    lat0 = fs.centers[home, 0][:, None]
    lon0 = fs.centers[home, 1][:, None]
    lats = lat0 + np.degrees(north_m / EARTH_RADIUS_M)
    lons = lon0 + np.degrees(east_m / (EARTH_RADIUS_M * np.cos(np.radians(lat0))))
    phase = rng.integers(0, interval_ms, n_dev)
    ts = T0_MS + phase[:, None] + np.arange(steps)[None, :] * interval_ms

    # A few vibration and status lines, between a device's fixes; never two of one stream at
    # the same time on one device (that would be a duplicate, which the engine drops).
    n_extra = round(n_dev * steps * args.vib_share) + round(n_dev * steps * args.status_share)
    extra_kind = np.where(np.arange(n_extra) < round(n_dev * steps * args.vib_share), 1, 2)
    extra_dev = rng.integers(0, n_dev, n_extra)
    extra_step = rng.integers(0, steps, n_extra)
    extra_ts = ts[extra_dev, extra_step] + rng.integers(1, min(interval_ms, 10_000), n_extra)
    _, first = np.unique(
        np.column_stack([extra_dev, extra_ts, extra_kind]), axis=0, return_index=True
    )
    first.sort()
    extra_kind, extra_dev, extra_ts = extra_kind[first], extra_dev[first], extra_ts[first]
    n_vib = int(np.count_nonzero(extra_kind == 1))
    n_status = len(extra_kind) - n_vib
    extra_g = rng.uniform(0.05, 3.0, len(extra_kind))
    extra_power = rng.random(len(extra_kind)) >= 0.1
    vins = random_vins(rng, n_dev)

    # Merge by event time (ties by device, then gps before the others): a dense, ordered stream.
    n_gps = n_dev * steps
    kind = np.concatenate([np.zeros(n_gps, np.int64), extra_kind])
    all_ts = np.concatenate([ts.ravel(), extra_ts])
    all_dev = np.concatenate([np.repeat(np.arange(n_dev), steps), extra_dev])
    ref = np.concatenate([np.arange(n_gps), np.arange(len(extra_kind))])
    order = np.lexsort((kind, all_dev, all_ts))
    readings_path = work / "readings.jsonl"
    log(f"writing {len(order)} lines to {readings_path}")
    lats_l, lons_l, speed_l = lats.ravel().tolist(), lons.ravel().tolist(), speed.ravel().tolist()
    names = [f"trk-{i:06d}" for i in range(n_dev)]
    with readings_path.open("wb") as out:
        for i in order.tolist():
            dev = int(all_dev[i])
            k = int(kind[i])
            j = int(ref[i])
            t = int(all_ts[i])
            payload: dict[str, object]
            if k == 0:
                stream = "gps"
                payload = {
                    "ts": t,
                    "lat": round(lats_l[j], 7),
                    "lon": round(lons_l[j], 7),
                    "speed_kmh": round(speed_l[j], 1),
                    "ignition": True,
                    "seq": j % steps,
                }
            elif k == 1:
                stream = "vib"
                payload = {"ts": t, "g": round(float(extra_g[j]), 2), "duration_ms": 40}
            else:
                stream = "status"
                payload = {
                    "ts": t,
                    "ext_power": bool(extra_power[j]),
                    "battery_v": 12.6,
                    "vin": vins[dev],
                }
            out.write(
                orjson.dumps({"topic": f"telematics/{names[dev]}/{stream}", "payload": payload})
                + b"\n"
            )
    fences_path = work / "fences.geojson"
    fences_path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": fs.features}))
    loans_path = work / "loans.json"
    loans = [
        {
            "loan_id": f"L-{i:06d}",
            "vin": vins[i],
            "device_ids": [names[i]],
            "zone_ids": [fs.fences[int(home[i])].fence_id],
            "status": "active",
        }
        for i in range(n_dev)
    ]
    loans_path.write_bytes(orjson.dumps(loans))
    return Inputs(
        readings=readings_path,
        fences=fences_path,
        loans=loans_path,
        lines=len(order),
        by_stream={"gps": n_gps, "vib": n_vib, "status": n_status},
        event_span_s=float(all_ts.max() - all_ts.min()) / 1000 if len(all_ts) else 0.0,
        region_side_km=fs.region.side_m / 1000,
    )


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


def baseline(inputs: Inputs, tree: STRtree) -> Timing:
    """Read and decode the lines as the replay does (`decode_line`), and look every fix up in
    a raw STRtree (vectorized, one query per `BATCH_LINES` lines)."""
    timing = Timing("baseline", note=f"decode + raw STRtree(within) per {BATCH_LINES} lines")
    readings = 0
    rejects = 0
    pairs = 0
    watermark: int | None = None
    lats: list[float] = []
    lons: list[float] = []
    start = time.perf_counter()
    with inputs.readings.open("rb") as f:
        for n, line in enumerate(f, 1):
            decoded = decode_line(line, n, watermark)
            rejects += len(decoded.rejects)
            for reading in decoded.readings:
                readings += 1
                if watermark is None or reading.ts_ms > watermark:
                    watermark = reading.ts_ms
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
    inputs: Inputs, index: FenceIndex, config: Config, profiler: cProfile.Profile | None = None
) -> tuple[Replay, list[Alert], float]:
    """A fresh in-process replay over the readings file: the replay, its alerts, seconds.

    The replay takes the loans itself, inside its first batch, as `pledgewatch replay` does.
    """
    loans = parse_loans(orjson.loads(inputs.loans.read_bytes()))
    alerts: list[Alert] = []
    replay = Replay(index, loans, config, on_alert=alerts.append)
    if profiler is not None:
        profiler.enable()
    start = time.perf_counter()
    with inputs.readings.open("rb") as f:
        replay.feed(f)
    replay.finish()
    seconds = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
    return replay, alerts, seconds


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
    if profiler is not None:
        profiler.enable()
    start = time.perf_counter()
    with inputs.readings.open("rb") as f:
        replay.feed(f)
    replay.finish()
    feed_s = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
    return replay, alerts, loans_s, feed_s


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


def run_cli(inputs: Inputs, work: Path, want: list[Alert]) -> Timing:
    """`pledgewatch replay` as a subprocess, wall time; alerts must equal the in-process ones."""
    timing = Timing("cli", note="subprocess wall time, start-up and fence/loan parsing included")
    out_path = work / "alerts.jsonl"
    cmd = [
        *pledgewatch_command(),
        "replay",
        str(inputs.readings),
        "--fences",
        str(inputs.fences),
        "--loans",
        str(inputs.loans),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    start = time.perf_counter()
    with out_path.open("wb") as out:
        proc = subprocess.run(  # noqa: S603  # our own command line, no shell
            cmd, stdout=out, stderr=subprocess.PIPE, env=env, check=False
        )
    timing.seconds = time.perf_counter() - start
    timing.readings = inputs.lines
    summary = proc.stderr.decode("utf-8", "replace").strip()
    timing.extra = {"command": " ".join(["pledgewatch", *cmd[-6:]]), "summary": summary}
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


def profile_replays(
    inputs: Inputs, index: FenceIndex, config: Config, want: list[Alert]
) -> tuple[str, str]:
    """cProfile (b) as timed, then the feed of (b') alone: two reports."""
    whole = cProfile.Profile()
    _, alerts, seconds = run_replay(inputs, index, config, whole)
    same = [a.id for a in alerts] == [a.id for a in want]
    first = profile_text(
        whole,
        f"=== (b) Replay in-process, as timed (loans taken in its first batch): "
        f"{inputs.lines} lines in {seconds:.2f} s under cProfile; alerts as timed: {same}",
    )
    feed = cProfile.Profile()
    _, alerts, _, seconds = run_replay_preloaded(inputs, index, config, feed)
    same = [a.id for a in alerts] == [a.id for a in want]
    second = profile_text(
        feed,
        f"=== (b') the feed alone, loans put beforehand (not profiled): "
        f"{inputs.lines} lines in {seconds:.2f} s under cProfile; alerts as timed: {same}",
    )
    return first, second


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_replay", description=__doc__)
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--fences", type=int, default=10_000)
    p.add_argument("--readings", type=int, default=200_000, help="gps fixes in all")
    p.add_argument("--seed", type=int, default=20261130)
    p.add_argument("--interval-s", type=int, default=30, help="seconds between a car's fixes")
    p.add_argument("--coverage", type=float, default=0.6, help="expected fences per point")
    p.add_argument("--vib-share", type=float, default=0.005, help="vib lines per gps line")
    p.add_argument("--status-share", type=float, default=0.002, help="status lines per gps line")
    p.add_argument("--no-cli", action="store_true", help="skip the subprocess run")
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    p.add_argument("--work-dir", type=Path, help="keep the generated files here (default: temp)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write `<out-dir>/bench_replay.json`."""
    args = parse_args(argv)
    started = time.perf_counter()
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="pledgewatch-bench-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        inputs = generate(args, work)
        doc = measure(args, inputs, work, info)
    doc["elapsed_s"] = round(time.perf_counter() - started, 1)
    write_json(args.out_dir / "bench_replay.json", doc)
    if not doc["checks_passed"]:
        print("SOME CHECKS FAILED: see 'check' in the JSON", file=sys.stderr)
        return 1
    return 0


def measure(
    args: argparse.Namespace, inputs: Inputs, work: Path, info: dict[str, object]
) -> dict[str, object]:
    """Time every side, profile the replay, print the report; the JSON document."""
    config = Config()
    log("loading fences and building the indexes (not timed as part of the runs)")
    load_start = time.perf_counter()
    fences = load_fences(inputs.fences)
    load_s = time.perf_counter() - load_start
    build_start = time.perf_counter()
    index = FenceIndex.build(fences)
    index_s = time.perf_counter() - build_start
    tree = STRtree(np.array([f.geometry for f in fences], dtype=object))
    tune_gc()  # what `pledgewatch replay` does; every side below runs under it

    log(f"(a) baseline over {inputs.lines} lines")
    base = baseline(inputs, tree)

    log(f"(b) in-process replay over {inputs.lines} lines")
    replay, alerts, seconds = run_replay(inputs, index, config)
    inproc = Timing(
        "replay",
        seconds,
        sum(replay.pipeline.counters.readings.values()),
        check_replay(replay, inputs),
        note="engine.runtime.replay.Replay(index, loans, ...).feed(file); finish()",
    )
    by_type = dict(sorted(Counter(a.type.value for a in alerts).items()))
    inproc.extra = {"alerts": len(alerts), "alerts_by_type": by_type}

    log(f"(b') the same with the {args.devices} loans put beforehand, feed timed apart")
    replay2, alerts2, loans_s, feed_s = run_replay_preloaded(inputs, index, config)
    feed = Timing(
        "replay_feed",
        feed_s,
        sum(replay2.pipeline.counters.readings.values()),
        check_replay(replay2, inputs),
        note="Replay(index, [], ...) after pipeline.put_loan for every loan; feed timed",
    )
    if feed.ok and [a.id for a in alerts2] != [a.id for a in alerts]:
        feed.check = f"WRONG: {len(alerts2)} alerts, (b) raised {len(alerts)} (ids or order)"
    feed.extra = {"loan_loading_s": round(loans_s, 4)}

    timings = [base, inproc, feed]
    if not args.no_cli:
        log("(c) pledgewatch replay as a subprocess")
        timings.append(run_cli(inputs, work, alerts))
    profiles: tuple[str, str] | None = None
    if not args.no_profile:
        log("profiling (b), then the feed of (b'), with cProfile")
        profiles = profile_replays(inputs, index, config, alerts)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "replay_profile.txt").write_text("\n\n".join(profiles))

    text = report(timings, inputs, by_type, args, loans_s)
    print(text)
    if profiles is not None:
        for label, prof in zip(("(b) as timed", "the feed of (b')"), profiles, strict=True):
            print(f"\nprofile of {label}, top {PROFILE_TOP} by cumulative time (cProfile):")
            print(top_cumulative(prof).strip("\n"))
    base_rps, replay_rps, feed_rps = base.readings_per_s, inproc.readings_per_s, feed.readings_per_s
    return {
        "benchmark": "bench_replay",
        "checks_passed": all(t.ok for t in timings),
        "machine": info,
        "parameters": {
            "devices": args.devices,
            "fences": args.fences,
            "readings_requested": args.readings,
            "seed": args.seed,
            "interval_s": args.interval_s,
            "coverage_target": args.coverage,
            "vib_share": args.vib_share,
            "status_share": args.status_share,
            "batch_lines": BATCH_LINES,
            "config": "engine defaults (Config())",
            "gc": f"engine.runtime.gc_policy.tune_gc: freeze, thresholds {THRESHOLDS}",
        },
        "input": {
            "lines": inputs.lines,
            "by_stream": inputs.by_stream,
            "event_span_s": inputs.event_span_s,
            "region_side_km": round(inputs.region_side_km, 1),
        },
        "setup_s": {"load_fences": round(load_s, 3), "build_fenceindex": round(index_s, 3)},
        "timings": [t.as_json() for t in timings],
        "ratio_replay_time_over_baseline": _ratio(base_rps, replay_rps),
        "ratio_feed_time_over_baseline": _ratio(base_rps, feed_rps),
        "target_ratio": TARGET_RATIO,
        "alerts_by_type": by_type,
        "table": text,
    }


def _ratio(base_rps: float | None, other_rps: float | None) -> float | None:
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
        ratio = _ratio(base, t.readings_per_s)
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


if __name__ == "__main__":
    sys.exit(main())
