"""The live feed alone, for the benchmark's second measure: a process serving the API
(`create_app` under uvicorn, on an engine without input) whose hub is fed by a thread
standing in for the engine thread, with the same fleet's motion, `Engine.process`'s call
(`LiveHub.publish`) at 20 batches a second. Its CPU is the feed's cost and little else:
no MQTT, no store writes, no detection.

`python -m benchmarks.bench_live_feed _feed_server --cars N --report-s S --dir DIR` says
`{"ready": true, "port": ...}` once it serves, and exits on `stop` (or when its parent
goes away)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import uvicorn

from benchmarks.common import REPO
from benchmarks.engine_publishers import HelperProcess, say
from devices.readings import GpsFix
from engine.api.app import create_app
from engine.api.console_config import ConsoleConfig
from engine.core.state import DeviceState, Position
from engine.runtime.live import Engine
from engine.store.sqlite_store import SqliteStore
from geofence.geo import EARTH_RADIUS_M
from simulator.harness.procfs import tree_cpu_s
from simulator.harness.prometheus import Metrics

BATCHES_PER_S = 20
CENTRE = (31.23, 121.47)


def feed_server_worker(argv: Sequence[str]) -> int:
    """Serve the feed of a moving fleet until `stop`."""
    p = argparse.ArgumentParser(prog="bench_live_feed _feed_server")
    p.add_argument("--cars", type=int, required=True)
    p.add_argument("--report-s", type=float, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--dir", type=Path, required=True)
    a = p.parse_args(argv)
    store = SqliteStore(a.dir / "feed.db")
    store.migrate()
    engine = Engine(store, None)
    engine.start()
    app = create_app(engine, store, None, a.token, console=ConsoleConfig(max_streams=10_000))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    http = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    http.start()
    while not server.started:
        time.sleep(0.05)
    stop = threading.Event()
    mover = threading.Thread(target=_move, args=(engine, a.cars, a.report_s, stop), daemon=True)
    mover.start()
    say({"ready": True, "port": sock.getsockname()[1]})
    parent = os.getppid()
    for line in sys.stdin:
        if line.strip() == "stop" or os.getppid() != parent:
            break
    stop.set()
    server.should_exit = True
    http.join(10)
    engine.stop()
    store.close()
    return 0


def _move(engine: Engine, cars: int, report_s: float, stop: threading.Event) -> None:
    """Each car moves and reports every `report_s`, in `BATCHES_PER_S` batches a second."""
    ids = [f"car-{i:05d}" for i in range(cars)]
    step = math.degrees(100.0 / EARTH_RADIUS_M)  # ~100 m per report: 36 km/h at 10 s
    now = int(time.time() * 1000)
    states = [
        DeviceState(d, fix=Position(now, CENTRE[0] + (i % 100) * step, CENTRE[1] + i // 100 * step))
        for i, d in enumerate(ids)
    ]
    engine.feed.seed(states, engine.loan_for)
    per_batch = max(1, round(cars / report_s / BATCHES_PER_S))
    started, k, turn = time.monotonic(), 0, 0
    while not stop.is_set():
        now = int(time.time() * 1000)
        moved, readings = [], []
        for _ in range(per_batch):
            i = k % cars
            k += 1
            fix = states[i].fix
            assert fix is not None
            states[i] = DeviceState(ids[i], fix=Position(now, fix.lat + step, fix.lon))
            moved.append(states[i])
            readings.append(GpsFix(ids[i], now, fix.lat + step, fix.lon, speed_kmh=36.0))
        engine.feed.publish(moved, (), readings, (), engine.loan_for)
        turn += 1
        stop.wait(max(0.0, started + turn / BATCHES_PER_S - time.monotonic()))


class FeedServer(HelperProcess):
    """The feed server process, and what the benchmark reads of it (as of an engine)."""

    def __init__(self, cars: int, report_s: float, token: str, work: Path) -> None:
        self.name = "_feed_server"
        self.log_path = work / "feed-server.log"
        self.token = token
        argv = [sys.executable, "-m", "benchmarks.bench_live_feed", "_feed_server"]
        argv += ["--cars", str(cars), "--report-s", str(report_s), "--token", token]
        with self.log_path.open("ab") as err:
            self.proc = subprocess.Popen(  # noqa: S603  # this module, our own arguments
                [*argv, "--dir", str(work)],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self._buf = b""
        self.url = f"http://127.0.0.1:{self.read(120)['port']}"

    def client(self) -> httpx.Client:
        """An HTTP client on its API with the token."""
        auth = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.url, headers=auth, timeout=30)

    def metrics(self, http: httpx.Client) -> Metrics:
        """Its `/metrics`."""
        return Metrics.parse(http.get("/metrics").text)

    def cpu_s(self) -> float:
        """CPU seconds of the process."""
        return tree_cpu_s(self.proc.pid)

    def stop(self) -> None:
        """Ask it to stop, and wait."""
        with contextlib.suppress(OSError):
            self.send("stop")
        self.close()
