"""The server cost of the console's live feed (`GET /v1/live`) per connected console.

    python -m benchmarks.bench_live_feed [--cars 10000] [--report-s 10] [--consoles 0,1,10,50]
        [--rounds 3] [--window-s 20] [--interval-ms 1000] [--parts engine,feed] [--seed S]

Two parts, side by side in one run, each a series of windows with 0, 1, 10 and 50 consoles
connected (`--consoles`), the series run `--rounds` times, interleaved, so that a busier
machine in one round weighs on every console count alike. A console is a stream client in
a separate process (`--per-process` per process) that parses every event and counts its
cars, bytes, and the age of each car update when it arrives.

- engine: a private Mosquitto and `pledgewatch run` (SQLite); a publisher process plays a
  seeded fleet, `--cars` cars each reporting a gps fix every `--report-s` seconds (10k
  cars every 10 s: 1k readings/s), one QoS 1 message per reading, at city speeds. The
  measure is the CPU of the engine's process tree from /proc (ms of CPU per second).
- feed: the feed alone: a process serving the same API on an engine without input, whose
  hub a thread feeds with the same number of car updates per second, as the engine thread
  would (`LiveHub.publish`, 20 batches a second): no MQTT, no store, no detection, so the
  feed's cost is not lost in the engine's.

The cost of a console: the CPU over that of the same round's window without consoles,
divided by the consoles (the median over the rounds). Checks: every console receives every
car update of the window (within 15 %: each car reports once per `--report-s`, longer than
the interval, so nothing is coalesced away), the bytes the server counts as sent match what
the consoles received, every snapshot holds the whole fleet, and no feed was ended or
refused. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import orjson

from benchmarks.common import (
    RESULTS_DIR,
    exit_status,
    fmt_ratio,
    fmt_value,
    log,
    machine_info,
    mosquitto_version,
    table,
    work_dir,
    write_json,
)
from benchmarks.engine_publishers import HelperPool
from benchmarks.engine_runs import rounded
from benchmarks.engine_side import START_TIMEOUT_S, TOKEN, engine_process
from benchmarks.engine_workload import Msg
from benchmarks.live_feed_consoles import consoles_worker, start_consoles
from benchmarks.live_feed_server import FeedServer, feed_server_worker
from geofence.geo import EARTH_RADIUS_M
from simulator.harness.broker import PrivateBroker
from simulator.harness.procfs import machine_cpu_s
from simulator.harness.prometheus import READINGS, Metrics

LIVE_EVENTS = "pledgewatch_live_events_total"
LIVE_CARS = "pledgewatch_live_car_updates_total"
LIVE_BYTES = "pledgewatch_live_bytes_total"
LIVE_STREAMS = "pledgewatch_live_streams"
LIVE_ENDED = "pledgewatch_live_streams_ended_total"
CENTRE = (31.23, 121.47)
SIDE_M = 30_000.0
MAX_SPEED_KMH = 60.0
CARS_TOLERANCE = 0.15


WORKERS: dict[str, Callable[[Sequence[str]], int]] = {
    "_consoles": consoles_worker,
    "_feed_server": feed_server_worker,
}
"""The helper processes: `python -m benchmarks.bench_live_feed _consoles|_feed_server ...`."""


# -- the fleet


def fleet(
    rng: np.random.Generator, cars: int, report_s: float, duration_s: float, start_ms: int
) -> tuple[list[Msg], list[float]]:
    """Each car's fixes every `report_s` (cars evenly staggered), moving straight at up to
    `MAX_SPEED_KMH` inside a square around `CENTRE`: the messages, and when each is due (s
    after the start, which is also its reading's `ts`)."""
    half_dlat = math.degrees(SIDE_M / 2 / EARTH_RADIUS_M)
    half_dlon = half_dlat / math.cos(math.radians(CENTRE[0]))
    lat = CENTRE[0] + rng.uniform(-half_dlat, half_dlat, cars)
    lon = CENTRE[1] + rng.uniform(-half_dlon, half_dlon, cars)
    heading = rng.uniform(0, 2 * math.pi, cars)
    speed = rng.uniform(0, MAX_SPEED_KMH, cars)
    step_m = speed / 3.6 * report_s
    dlat = np.degrees(step_m * np.cos(heading) / EARTH_RADIUS_M)
    dlon = np.degrees(step_m * np.sin(heading) / EARTH_RADIUS_M) / np.cos(np.radians(lat))
    offsets = np.arange(cars) * (report_s / cars)
    messages: list[Msg] = []
    due: list[float] = []
    ids = [f"car-{i:05d}" for i in range(cars)]
    for k in range(math.ceil(duration_s / report_s)):
        out = (np.abs(lat + dlat - CENTRE[0]) > half_dlat) | (
            np.abs(lon + dlon - CENTRE[1]) > half_dlon
        )
        dlat[out], dlon[out] = -dlat[out], -dlon[out]  # turn back at the edge
        lat, lon = lat + dlat, lon + dlon
        for i in range(cars):
            at = k * report_s + float(offsets[i])
            ts = start_ms + round(at * 1000)
            payload = orjson.dumps(
                {
                    "ts": ts,
                    "lat": round(float(lat[i]), 6),
                    "lon": round(float(lon[i]), 6),
                    "speed_kmh": round(float(speed[i]), 1),
                }
            ).decode()
            messages.append(Msg(f"telematics/{ids[i]}/gps", payload, ids[i], ts))
            due.append(at)
    return messages, due


# -- the benchmark


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_live_feed", description=__doc__)
    p.add_argument("--cars", type=int, default=10_000)
    p.add_argument("--report-s", type=float, default=10.0, help="each car's reporting period")
    p.add_argument("--consoles", default="0,1,10,50", help="consoles per window, in order")
    p.add_argument("--rounds", type=int, default=3, help="times the list is run, interleaved")
    p.add_argument("--parts", default="engine,feed", help="engine (pledgewatch run), feed (alone)")
    p.add_argument("--window-s", type=float, default=20.0)
    p.add_argument("--warm-s", type=float, default=3.0, help="after the consoles connect")
    p.add_argument("--interval-ms", type=int, default=1000, help="the consoles' interval_ms")
    p.add_argument("--per-process", type=int, default=10, help="consoles per client process")
    p.add_argument("--seed", default="1")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--work-dir", type=Path, help="keep logs here (default: a temp dir)")
    return p.parse_args(argv)


class Served(Protocol):
    """What a window measures: `pledgewatch run` (`EngineProcess`) or the feed alone."""

    @property
    def url(self) -> str:
        """The API's base URL."""

    def client(self) -> httpx.Client:
        """An HTTP client on the API with the token."""

    def metrics(self, http: httpx.Client) -> Metrics:
        """Its `/metrics`."""

    def cpu_s(self) -> float:
        """CPU seconds of its processes."""


@dataclass(frozen=True, slots=True)
class Window:
    """What one window measured."""

    consoles: int
    wall_s: float
    cpu_s: float
    others_cpu_s: float
    clients_cpu_s: float
    before: Metrics
    after: Metrics
    ready: list[dict[str, Any]]
    reports: list[dict[str, Any]]


def run_window(served: Served, n: int, args: argparse.Namespace, stem: Path) -> Window:
    """Start `n` consoles, warm up, measure a window, stop them."""
    children = start_consoles(served.url, TOKEN, n, args.per_process, args.interval_ms, stem)
    try:
        ready = [child.read(120) for child in children]
        time.sleep(args.warm_s)
        with served.client() as http:
            for child in children:
                child.send("mark")
            for child in children:
                child.read(30)
            t0, cpu0, busy0, m0 = (
                time.time(),
                served.cpu_s(),
                machine_cpu_s()[0],
                served.metrics(http),
            )
            time.sleep(args.window_s)
            t1, cpu1, busy1, m1 = (
                time.time(),
                served.cpu_s(),
                machine_cpu_s()[0],
                served.metrics(http),
            )
            for child in children:
                child.send("stop")
            reports = [child.read(60) for child in children]
    finally:
        for child in children:
            child.close()
    clients = sum(r["cpu_s"] for r in reports)
    others = max(0.0, busy1 - busy0 - (cpu1 - cpu0) - clients)
    return Window(n, t1 - t0, cpu1 - cpu0, others, clients, m0, m1, ready, reports)


def _wait_streams(served: Served, n: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    with served.client() as http:
        while (got := served.metrics(http).total(LIVE_STREAMS)) != n:
            if time.monotonic() > deadline:
                msg = f"{got:.0f} live feeds are open, not {n}"
                raise RuntimeError(msg)
            time.sleep(0.1)


def run_windows(
    served: Served,
    part: str,
    plan: list[int],
    args: argparse.Namespace,
    work: Path,
) -> list[dict[str, Any]]:
    """Every window of `plan` against `served`."""
    windows: list[dict[str, Any]] = []
    rounds = len(plan) // args.rounds
    for i, n in enumerate(plan):
        log(f"{part}: window {i + 1} of {len(plan)}: {n} consoles")
        w = run_window(served, n, args, work / f"consoles-{part}-{i}")
        _wait_streams(served, 0)
        doc = window_doc(w, w.after.total(LIVE_CARS) - w.before.total(LIVE_CARS), args.cars)
        doc["round"] = i // rounds
        windows.append(doc)
        log(f"  {doc['ms_per_s']:.0f} ms CPU/s, check {doc['check']}")
    return windows


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run every window of each part; the JSON document's measurements."""
    counts = [int(x) for x in args.consoles.split(",") if x.strip()]
    plan = [n for _ in range(args.rounds) for n in counts]  # interleaved: drift hits all alike
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    doc: dict[str, Any] = {}
    if "engine" in parts:
        doc["engine"] = _engine_part(args, plan, work)
    if "feed" in parts:
        log("feed alone: a server process whose hub a thread feeds with the same fleet")
        server = FeedServer(args.cars, args.report_s, TOKEN, work)
        try:
            windows = run_windows(server, "feed", plan, args, work)
        finally:
            server.stop()
        doc["feed"] = {"windows": windows, "summary": summarize(windows)}
    return doc


def _engine_part(args: argparse.Namespace, plan: list[int], work: Path) -> dict[str, Any]:
    """`pledgewatch run` fed over MQTT, measured with each window's consoles."""
    # publishing runs through every window: the fleet's first round, then per window
    # the consoles' start (snapshots of the whole fleet), the warm-up and the window
    per_window = args.window_s + args.warm_s + 15 + max(plan, default=0) / 5
    duration = args.report_s + 5 + len(plan) * per_window + 30
    seed = int.from_bytes(str(args.seed).encode(), "little") % (2**32)
    rng = np.random.default_rng(seed)
    with ExitStack() as stack:
        broker = PrivateBroker(work)
        broker.start()
        stack.callback(broker.stop)
        engine = engine_process(broker, f"sqlite:///{work}/live.db", work, "pw-live-bench")
        engine.args += ["--console-max-streams", str(max(plan, default=0) + 10)]
        engine.start(START_TIMEOUT_S)
        stack.callback(engine.terminate)
        # time for the publisher to load its file and connect (a late start only means
        # readings a little older than their publish time)
        start_s = time.time() + 0.5 + args.cars * duration / args.report_s / 100_000
        messages, due = fleet(rng, args.cars, args.report_s, duration, int(start_s * 1000))
        log(f"{len(messages):,} messages over {duration:.0f} s ({args.cars:,} cars)")
        pool = HelperPool(work, broker, publishers=1)
        stack.callback(pool.kill_children)
        publishers = pool.start_publishers(messages, "fleet", due_s=due)
        del messages, due
        pool.ready(publishers)
        pool.go(publishers, start_s)
        with engine.client() as http:  # every car has reported once
            deadline = time.time() + args.report_s * 3 + 60
            while engine.metrics(http).total(READINGS) < args.cars:
                if time.time() > deadline:
                    msg = "the fleet's first round did not reach the engine"
                    raise RuntimeError(msg)
                time.sleep(0.1)
        windows = run_windows(engine, "engine", plan, args, work)
    return {"windows": windows, "summary": summarize(windows)}


def window_doc(w: Window, car_updates: float, cars: int) -> dict[str, Any]:
    """A window as JSON, with its checks."""
    consoles = [c for r in w.reports for c in r["consoles"]]
    sent_bytes = w.after.total(LIVE_BYTES) - w.before.total(LIVE_BYTES)
    got_bytes = sum(c["bytes"] for c in consoles)
    ended = w.after.total(LIVE_ENDED) - w.before.total(LIVE_ENDED)
    ended += sum(r["ended_early"] for r in w.reports)
    problems = [
        f"console {i} got {c['cars']} car updates, the engine made {car_updates:.0f}"
        for i, c in enumerate(consoles)
        if abs(c["cars"] - car_updates) > CARS_TOLERANCE * car_updates
    ]
    if consoles and abs(sent_bytes - got_bytes) > 0.1 * max(sent_bytes, 1):
        problems.append(f"the engine sent {sent_bytes:.0f} bytes, the consoles got {got_bytes}")
    if ended:
        problems.append(f"{ended:.0f} feeds were ended or refused")
    errors = [e for r in w.reports for e in r["errors"]]
    if errors:
        problems.append(f"client errors: {errors[:3]}")
    snapshots = [s for r in w.ready for s in r["snapshot_cars"]]
    if any(s < cars for s in snapshots):
        problems.append(f"a snapshot held {min(snapshots)} cars, not {cars}")

    def per(key: str) -> float | None:
        return sum(c[key] for c in consoles) / len(consoles) / w.wall_s if consoles else None

    ages = [r for r in w.reports if r["age_p50_ms"] is not None]
    return {
        "consoles": w.consoles,
        "wall_s": w.wall_s,
        "cpu_s": w.cpu_s,
        "ms_per_s": 1000 * w.cpu_s / w.wall_s,
        "clients_cpu_s": w.clients_cpu_s,
        "others_cpu_s": w.others_cpu_s,
        "car_updates_per_s": car_updates / w.wall_s,
        "sent_events_per_s": (w.after.total(LIVE_EVENTS) - w.before.total(LIVE_EVENTS)) / w.wall_s,
        "sent_bytes_per_s": sent_bytes / w.wall_s,
        "per_console": {
            "events_per_s": per("events"),
            "cars_per_s": per("cars"),
            "bytes_per_s": per("bytes"),
            "age_p50_ms": max((r["age_p50_ms"] for r in ages), default=None),
            "age_p99_ms": max((r["age_p99_ms"] for r in ages), default=None),
        },
        "snapshot_cars": min(snapshots, default=None),
        "check": "ok" if not problems else "WRONG: " + "; ".join(problems),
    }


def summarize(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per console count: the medians over the rounds, and the cost of one console: the
    CPU over that of the same round's 0-console window, divided by the consoles (the
    median over rounds; paired, so a busier machine in one round cancels out)."""
    base = {w["round"]: w["ms_per_s"] for w in windows if w["consoles"] == 0}
    out = []
    for n in sorted({w["consoles"] for w in windows}):
        ws = [w for w in windows if w["consoles"] == n]
        cpu = [w["ms_per_s"] for w in ws]
        extra = [w["ms_per_s"] - base[w["round"]] for w in ws if w["round"] in base]

        def median(key: str, ws: list[dict[str, Any]] = ws) -> float | None:
            values = [w["per_console"][key] for w in ws if w["per_console"][key] is not None]
            return statistics.median(values) if values else None

        out.append(
            {
                "consoles": n,
                "windows": len(ws),
                "ms_per_s": statistics.median(cpu),
                "ms_per_s_range": [min(cpu), max(cpu)],
                "extra_ms_per_s": statistics.median(extra) if extra and n else None,
                "ms_per_s_per_console": statistics.median(extra) / n if extra and n else None,
                "others_cores": statistics.median(w["others_cpu_s"] / w["wall_s"] for w in ws),
                "car_updates_per_s": statistics.median(w["car_updates_per_s"] for w in ws),
                "per_console": {
                    key: median(key)
                    for key in (
                        "events_per_s",
                        "cars_per_s",
                        "bytes_per_s",
                        "age_p50_ms",
                        "age_p99_ms",
                    )
                },
                "check": "ok" if all(w["check"] == "ok" for w in ws) else "WRONG",
            }
        )
    return out


def _table(summary: list[dict[str, Any]]) -> str:
    rows = []
    for w in summary:
        pc = w["per_console"]
        age = (
            "-" if pc["age_p50_ms"] is None else f"{pc['age_p50_ms']:.0f} / {pc['age_p99_ms']:.0f}"
        )
        low, high = w["ms_per_s_range"]
        rows.append(
            [
                str(w["consoles"]),
                f"{w['ms_per_s']:,.0f} ({low:,.0f}-{high:,.0f})",
                fmt_value(w["extra_ms_per_s"]),
                fmt_value(w["ms_per_s_per_console"]),
                fmt_value(pc["events_per_s"]),
                fmt_value(pc["cars_per_s"]),
                "-" if pc["bytes_per_s"] is None else f"{pc['bytes_per_s'] / 1024:,.1f}",
                age,
                fmt_value(w["car_updates_per_s"]),
                f"{w['others_cores']:.2f}",
                "ok" if w["check"] == "ok" else "WRONG",
            ]
        )
    header = [
        "consoles",
        "ms CPU/s (range)",
        "over 0",
        "per console",
        "events/s",
        "cars/s",
        "KiB/s",
        "age p50/p99 ms",
        "updates/s",
        "others",
        "check",
    ]
    return table(header, rows)


def _cost_line(what: str, summary: list[dict[str, Any]]) -> str | None:
    base = next((w for w in summary if w["consoles"] == 0), None)
    most = max(summary, key=lambda w: w["consoles"])
    if base is None or not most["consoles"] or base["ms_per_s"] <= 0:
        return None
    one = most["ms_per_s_per_console"]
    return (
        f"{what}: CPU with {most['consoles']} consoles / with none: "
        f"{fmt_ratio(most['ms_per_s'] / base['ms_per_s'])}; one console costs {one:.2f} ms "
        f"CPU/s, {fmt_ratio(one / base['ms_per_s'])} of the cost without consoles"
    )


def report(doc: dict[str, Any], args: argparse.Namespace) -> str:
    """The printed tables."""
    title = (
        f"live feed: {args.cars:,} cars every {args.report_s:g} s, consoles at interval_ms "
        f"{args.interval_ms}; medians of {args.rounds} rounds of {args.window_s:g} s windows, "
        "interleaved"
    )
    lines = [title]
    titles = {
        "engine": "pledgewatch run over MQTT (the engine's process tree)",
        "feed": "the feed alone (API process, hub fed by a thread, no MQTT, store or detection)",
    }
    costs = []
    for part, heading in titles.items():
        if part in doc:
            lines += ["", heading, _table(doc[part]["summary"])]
            cost = _cost_line(part, doc[part]["summary"])
            if cost is not None:
                costs.append(cost)
    legend = (
        "ms CPU/s: CPU of the measured processes per s of wall time, median (range); over 0: "
        "more than the same round's window without consoles; per console: that / consoles; "
        "events/s .. age: what each console received (age: from a reading's time, its publish, "
        "to its arrival at the console); updates/s: car updates the engine made; others: cores "
        "busy outside the measured processes and the consoles"
    )
    lines += ["", legend, "", *costs]
    return "\n".join(lines)


def _rounded(doc: dict[str, Any]) -> dict[str, Any]:
    """Floats to 2 decimals, nested dicts too."""
    return {
        k: rounded(v, 2) if isinstance(v, float) else _rounded(v) if isinstance(v, dict) else v
        for k, v in doc.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write `<out-dir>/bench_live_feed.json`."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in WORKERS:
        return WORKERS[args_list[0]](args_list[1:])
    args = parse_args(args_list)
    started = time.perf_counter()
    info = machine_info()
    with ExitStack() as stack:
        work = work_dir(stack, args.work_dir, "pw-live-")
        doc = measure(args, work)
    checks = {
        f"{part} window {i + 1}: {w['consoles']} consoles": w["check"]
        for part, found in doc.items()
        for i, w in enumerate(found["windows"])
    }
    passed = all(v == "ok" for v in checks.values())
    text = report(doc, args)
    print(text)
    out: dict[str, object] = {
        "benchmark": "bench_live_feed",
        "checks_passed": passed,
        "machine": info,
        "mosquitto": mosquitto_version(),
        "parameters": {
            "cars": args.cars,
            "report_s": args.report_s,
            "consoles": args.consoles,
            "rounds": args.rounds,
            "parts": args.parts,
            "window_s": args.window_s,
            "warm_s": args.warm_s,
            "interval_ms": args.interval_ms,
            "per_process": args.per_process,
            "seed": args.seed,
            "engine": "pledgewatch run, SQLite, defaults; one QoS 1 message per reading",
        },
        **{
            part: {
                "windows": [_rounded(w) for w in found["windows"]],
                "summary": [_rounded(w) for w in found["summary"]],
            }
            for part, found in doc.items()
        },
        "checks": checks,
        "table": text,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    write_json(args.out_dir / "bench_live_feed.json", out)
    return exit_status(passed)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
