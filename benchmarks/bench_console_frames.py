"""The operator console under a live fleet: frame times in a real browser (issue 11, "Speed").

```
.venv/bin/python -m benchmarks.bench_console_frames [--cars 10000] [--period-s 10]
    [--window-s 20] [--settle-s 4] [--publishers 2] [--seed 1] [--out-dir benchmarks/results]
```

A private Mosquitto and `pledgewatch run` (SQLite), `--cars` cars on loans around one city
(normally distributed, sigma 8 km), each reporting a gps reading every `--period-s` seconds
(10k cars every 10 s = 1k readings/s) from the engine benchmark's paced publisher processes
(`benchmarks.engine_publishers`). The console page runs in Debian's headless Chromium
(`simulator/harness/browser.py`), signed in as an operator, its live feed at the engine's default
interval (1 s). Once every car is on the page, for each view (the whole fleet in clusters,
a district, a street) it waits `--settle-s`, then records for `--window-s`:
- the page's frame intervals (`requestAnimationFrame`, p50/p95/p99/max, frames over 50 ms)
  and long tasks (> 50 ms, from the Long Tasks API), via `window.pledgewatch.frames`;
- the car positions the page applied per second, and the live feed's events per second;
- what the map drew (single markers, clusters) and its last cluster rebuild's time;
- the CPU per second of the engine and of the browser (all of Chromium's processes), and
  the live feed's bytes per second (`pledgewatch_live_bytes_total`).
Last, the same window with the page closed (no console connected): the engine's CPU then,
against the windows with one console, is the feed's server cost per console.

Checks: every car reached the page; the page applied at least 80 % of the readings offered
in each window (the feed sends the latest position per car per interval, so a car that
reports twice within one interval counts once; at one report per 10 s it never does); every
publish was acknowledged by the broker; nothing was rejected by the engine. Frame times are
reported, not judged: the machine is shared and headless Chromium's frames are software
rendered.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import RESULTS_DIR, exit_status, log, machine_info, table, write_json
from benchmarks.common import fmt_value as _fmt
from benchmarks.engine_publishers import HelperPool
from benchmarks.engine_workload import Msg
from simulator.harness.broker import PrivateBroker
from simulator.harness.browser import ConsolePage, chromium, chromium_missing
from simulator.harness.engine_process import EngineProcess
from simulator.harness.procfs import tree_cpu_s
from simulator.harness.prometheus import Metrics

CENTER = (31.2304, 121.4737)  # Shanghai, People's Square
SIGMA_M = 8_000.0
MAX_FROM_CENTER_M = 40_000.0
ZONE_RADIUS_M = 50_000.0
TOKEN = "bench-console-token"  # noqa: S105  # a throwaway engine's token
OPERATOR = ("bench", "bench-console-password")
VIEWS = (("fleet", 10), ("district", 13), ("street", 16))
MIN_APPLIED_SHARE = 0.8
M_PER_DEG = 111_320.0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(prog="bench_console_frames", description=__doc__)
    p.add_argument("--cars", type=int, default=10_000)
    p.add_argument("--period-s", type=float, default=10.0, help="seconds between a car's reports")
    p.add_argument("--window-s", type=float, default=20.0, help="seconds measured per view")
    p.add_argument("--settle-s", type=float, default=4.0, help="seconds after a view change")
    p.add_argument("--publishers", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return p.parse_args(argv)


def _move(at: tuple[float, float], north_m: float, east_m: float) -> tuple[float, float]:
    lat, lon = at
    return lat + north_m / M_PER_DEG, lon + east_m / (M_PER_DEG * math.cos(math.radians(lat)))


def fleet(
    cars: int, period_s: float, duration_s: float, start_ms: int, seed: int
) -> tuple[list[Msg], list[float]]:
    """Every car's gps readings, a car every `period_s` at its own phase, moving ~10 m/s with
    a wandering heading; and each message's offset from the start (seconds)."""
    rng = random.Random(seed)
    msgs: list[Msg] = []
    due: list[float] = []
    rounds = math.ceil(duration_s / period_s)
    for i in range(cars):
        r = min(abs(rng.gauss(0.0, SIGMA_M)), MAX_FROM_CENTER_M)
        bearing = rng.uniform(0, 2 * math.pi)
        at = _move(CENTER, r * math.cos(bearing), r * math.sin(bearing))
        heading = rng.uniform(0, 2 * math.pi)
        phase = period_s * i / cars
        device = f"car-{i:05d}"
        for k in range(rounds):
            offset_s = phase + k * period_s
            speed_ms = rng.uniform(0.0, 16.0)
            heading += rng.gauss(0.0, 0.4)
            step = speed_ms * period_s
            at = _move(at, step * math.cos(heading), step * math.sin(heading))
            ts = start_ms + round(offset_s * 1000)
            payload = {"ts": ts, "lat": round(at[0], 6), "lon": round(at[1], 6)}
            payload["speed_kmh"] = round(speed_ms * 3.6, 1)
            topic = f"telematics/{device}/gps"
            msgs.append(Msg(topic, orjson.dumps(payload).decode(), device, ts))
            due.append(offset_s)
    order = sorted(range(len(msgs)), key=due.__getitem__)
    return [msgs[j] for j in order], [due[j] for j in order]


def setup(engine: EngineProcess, cars: int) -> None:
    """A city-sized zone, a loan per car, an operator."""
    zone = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [CENTER[1], CENTER[0]]},
        "properties": {"name": "City", "kind": "zone", "radius_m": ZONE_RADIUS_M},
    }
    loans = [
        {
            "loan_id": f"L-{i:05d}",
            "vin": f"LBENCH{i:011d}",
            "device_ids": [f"car-{i:05d}"],
            "zone_ids": ["city"],
        }
        for i in range(cars)
    ]
    with engine.client(timeout_s=120) as api:
        api.put("/v1/fences/city", json=zone).raise_for_status()
        api.post("/v1/loans:import", json=loans).raise_for_status()
        name, password = OPERATOR
        body = {"role": "operator", "password": password}
        api.put(f"/v1/operators/{name}", json=body).raise_for_status()


def measure(
    page: ConsolePage, engine: EngineProcess, browser_pid: int, seconds: float
) -> dict[str, Any]:
    """One window: the page's frames and updates, the engine's and browser's CPU, the feed."""
    before = page.js("return window.pledgewatch.stats()")
    metrics0 = engine.metrics()
    engine0, browser0, t0 = engine.cpu_s(), tree_cpu_s(browser_pid), time.monotonic()
    page.js("window.pledgewatch.frames.start()")
    time.sleep(seconds)
    frames: dict[str, Any] = page.js("return window.pledgewatch.frames.stop()")
    after = page.js("return window.pledgewatch.stats()")
    elapsed = time.monotonic() - t0
    engine1, browser1 = engine.cpu_s(), tree_cpu_s(browser_pid)
    metrics1 = engine.metrics()
    fed = metrics1.value("pledgewatch_live_bytes_total") - metrics0.value(
        "pledgewatch_live_bytes_total"
    )
    return {
        "seconds": round(elapsed, 2),
        "frames": frames,
        "car_updates_per_s": round((after["carUpdates"] - before["carUpdates"]) / elapsed, 1),
        "car_events_per_s": round((after["carEvents"] - before["carEvents"]) / elapsed, 2),
        "markers": after["map"]["markers"],
        "clusters": after["map"]["clusters"],
        "last_rebuild_ms": round(after["map"]["lastRebuildMs"], 2),
        "last_render_ms": round(after["map"]["lastRenderMs"], 2),
        "engine_cpu_per_s": round((engine1 - engine0) / elapsed, 3),
        "browser_cpu_per_s": round((browser1 - browser0) / elapsed, 3),
        "feed_bytes_per_s": round(fed / elapsed),
        "readings_per_s": round(_readings(metrics1, metrics0) / elapsed, 1),
    }


def _readings(after: Metrics, before: Metrics) -> float:
    return after.value("pledgewatch_readings_total") - before.value("pledgewatch_readings_total")


def run(args: argparse.Namespace, work: Path, stack: ExitStack) -> dict[str, Any]:
    """The whole run: fleet, engine, page, windows."""
    broker = PrivateBroker(work)
    broker.start()
    stack.callback(broker.stop)
    engine = EngineProcess(
        broker.url, f"sqlite:///{work}/pw.db", token=TOKEN, log_path=work / "engine.log"
    )
    engine.start()
    stack.callback(lambda: engine.terminate() if engine.running() else None)
    log(f"engine up; {args.cars} loans")
    setup(engine, args.cars)
    warm_s = args.period_s + 15.0  # a first report of every car, and signing in
    duration_s = warm_s + len(VIEWS) * (args.settle_s + args.window_s) + args.window_s + 10.0
    lead_s = 5.0
    start_s = time.time() + lead_s + 20.0  # the publishers load their files meanwhile
    msgs, due = fleet(args.cars, args.period_s, duration_s, int(start_s * 1000), args.seed)
    log(f"{len(msgs)} readings over {duration_s:.0f} s ({args.cars / args.period_s:.0f}/s)")
    pool = HelperPool(work, broker, args.publishers)
    stack.callback(pool.kill_children)
    publishers = pool.start_publishers(msgs, "console", due_s=due)
    pool.ready(publishers)
    pool.go(publishers, at_s=start_s)
    windows: dict[str, Any] = {}
    driver = stack.enter_context(chromium())
    browser_pid = int(driver.service.process.pid)
    page = ConsolePage(driver, engine.url)
    page.open()
    page.sign_in(*OPERATOR)
    wait_s = max(0.0, start_s - time.time()) + args.period_s + 30.0
    page.wait_for(
        lambda: page.js("return window.pledgewatch.carCount()") >= args.cars,
        wait_s,
        f"all {args.cars} cars on the page",
        poll_s=0.5,
    )
    log("every car is on the page")
    for name, zoom in VIEWS:
        page.js("window.pledgewatch.show(arguments[0], arguments[1], arguments[2])", *CENTER, zoom)
        time.sleep(args.settle_s)
        log(f"view {name} (zoom {zoom}): measuring {args.window_s:.0f} s")
        windows[name] = {"zoom": zoom, **measure(page, engine, browser_pid, args.window_s)}
    page.screenshot("bench-console-frames")
    driver.get("about:blank")  # no console connected
    time.sleep(3.0)
    log(f"no console: measuring {args.window_s:.0f} s")
    e0, m0, t0 = engine.cpu_s(), engine.metrics(), time.monotonic()
    time.sleep(args.window_s)
    elapsed = time.monotonic() - t0
    e1, m1 = engine.cpu_s(), engine.metrics()
    windows["no_console"] = {
        "seconds": round(elapsed, 2),
        "engine_cpu_per_s": round((e1 - e0) / elapsed, 3),
        "readings_per_s": round(_readings(m1, m0) / elapsed, 1),
    }
    results, acked = HelperPool.finish_publishers(publishers)
    rejected = engine.metrics().value("pledgewatch_rejected_total")
    return {
        "windows": windows,
        "publish_check": acked,
        "published": sum(int(r["messages"]) for r in results),
        "rejected": rejected,
        "offered_per_s": args.cars / args.period_s,
    }


def checks(result: dict[str, Any]) -> dict[str, str]:
    """Each check: 'ok' or what went wrong."""
    out = {"publish": str(result["publish_check"])}
    out["rejected"] = "ok" if result["rejected"] == 0 else f"{result['rejected']:.0f} rejected"
    low = [
        f"{name}: {w['car_updates_per_s']}/s"
        for name, w in result["windows"].items()
        if "frames" in w and w["car_updates_per_s"] < MIN_APPLIED_SHARE * result["offered_per_s"]
    ]
    out["applied"] = "ok" if not low else "page applied too few updates: " + ", ".join(low)
    return out


def report(result: dict[str, Any]) -> str:
    """The printed table."""
    rows = []
    for name, w in result["windows"].items():
        f = w.get("frames")
        rows.append(
            [
                name,
                _fmt(w.get("zoom")),
                _fmt(w.get("car_updates_per_s")),
                _fmt(f and f["fps"]),
                _fmt(f and f["p50_ms"], " ms"),
                _fmt(f and f["p95_ms"], " ms"),
                _fmt(f and f["p99_ms"], " ms"),
                _fmt(f and f["max_ms"], " ms"),
                _fmt(f and f["long_tasks"]),
                _fmt(w.get("markers")),
                _fmt(w.get("clusters")),
                _fmt(w.get("browser_cpu_per_s")),
                _fmt(w["engine_cpu_per_s"]),
                _fmt(w.get("feed_bytes_per_s")),
            ]
        )
    header = [
        "view",
        "zoom",
        "cars/s on page",
        "fps",
        "frame p50",
        "p95",
        "p99",
        "max",
        "long tasks",
        "markers",
        "clusters",
        "browser cpu/s",
        "engine cpu/s",
        "feed B/s",
    ]
    return table(header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write `<out-dir>/bench_console_frames.json`."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    missing = chromium_missing()
    if missing is not None:
        print(missing, file=sys.stderr)
        return 2
    started = time.perf_counter()
    info = machine_info()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-console-")))
        result = run(args, work, stack)
    text = report(result)
    print(text)
    found = checks(result)
    doc: dict[str, object] = {
        "benchmark": "bench_console_frames",
        "checks_passed": all(v == "ok" for v in found.values()),
        "checks": found,
        "machine": info,
        "parameters": {
            "cars": args.cars,
            "period_s": args.period_s,
            "window_s": args.window_s,
            "settle_s": args.settle_s,
            "publishers": args.publishers,
            "seed": args.seed,
            "sigma_m": SIGMA_M,
        },
        "results": result,
        "table": text,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    write_json(args.out_dir / "bench_console_frames.json", doc)
    return exit_status(doc["checks_passed"])


if __name__ == "__main__":
    sys.exit(main())
