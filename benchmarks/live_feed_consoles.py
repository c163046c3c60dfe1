"""The live feed benchmark's consoles: processes of `--count` stream clients each
(`python -m benchmarks.bench_live_feed _consoles ...`), speaking JSON lines on stdout and
taking commands on stdin.

A console process opens its feeds, waits for every snapshot, says it is ready, then on
`mark` starts counting what each console receives (events, car updates, bytes, pings, and
for its first console the age of each car update on arrival) and on `stop` says what it
counted since, closes its feeds and exits."""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import REPO
from benchmarks.engine_publishers import HelperProcess, cpu_self, say
from simulator.harness.live_client import LiveClient, LiveEvent


@dataclass(slots=True)
class Counts:
    """What one console received."""

    events: int = 0
    cars: int = 0
    bytes: int = 0
    pings: int = 0

    def since(self, base: Counts) -> dict[str, int]:
        """The counts after `base`, as JSON."""
        return {
            "events": self.events - base.events,
            "cars": self.cars - base.cars,
            "bytes": self.bytes - base.bytes,
            "pings": self.pings - base.pings,
        }


@dataclass(slots=True)
class Console:
    """One console's counters, fed by its stream's reading thread."""

    counts: Counts = field(default_factory=Counts)
    base: Counts = field(default_factory=Counts)
    snapshot: threading.Event = field(default_factory=threading.Event)
    snapshot_cars: int = 0
    ages_ms: list[int] | None = None  # collected in the window, by the first console only

    def on_event(self, event: LiveEvent) -> None:
        """Count an event."""
        c = self.counts
        c.bytes += event.size
        if event.name is None:
            c.pings += 1
            return
        c.events += 1
        data = event.data
        if event.name in {"cars", "snapshot"} and isinstance(data, dict):
            cars = data["cars"]
            if event.name == "snapshot":
                self.snapshot_cars = len(cars)
                self.snapshot.set()
                return
            c.cars += len(cars)
            if self.ages_ms is not None:
                now_ms = int(time.time() * 1000)
                self.ages_ms.extend(now_ms - car["ts_ms"] for car in cars)

    def mark(self) -> None:
        """Count from now."""
        c = self.counts
        self.base = Counts(c.events, c.cars, c.bytes, c.pings)


def consoles_worker(argv: Sequence[str]) -> int:
    """`--count` consoles reading the feed of `--url` with `--token`."""
    p = argparse.ArgumentParser(prog="bench_live_feed _consoles")
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--interval-ms", type=int, required=True)
    a = p.parse_args(argv)
    consoles = [Console() for _ in range(a.count)]
    auth = {"Authorization": f"Bearer {a.token}"}
    https = [httpx.Client(base_url=a.url, headers=auth, timeout=30) for _ in consoles]
    clients = [
        LiveClient(http, a.interval_ms, on_event=console.on_event)
        for http, console in zip(https, consoles, strict=True)
    ]
    statuses = [client.open(60) for client in clients]
    if any(s != 200 for s in statuses):
        say({"error": f"statuses {statuses}: {[c.problem for c in clients]}"})
        return 1
    if not all(console.snapshot.wait(60) for console in consoles):
        say({"error": "a console got no snapshot within 60 s"})
        return 1
    say({"ready": True, "snapshot_cars": [c.snapshot_cars for c in consoles]})
    cpu0 = cpu_self()
    for line in sys.stdin:
        if line.strip() == "mark":
            cpu0 = cpu_self()
            consoles[0].ages_ms = []
            for console in consoles:
                console.mark()
            say({"marked": time.time()})
        elif line.strip() == "stop":
            got = [console.counts.since(console.base) for console in consoles]
            ages = consoles[0].ages_ms or []
            cpu = cpu_self() - cpu0
            ended = sum(c.ended.is_set() for c in clients)
            for client in clients:
                client.close()
            for http in https:
                http.close()
            p50, p99 = np.percentile(ages, [50, 99]).tolist() if ages else (None, None)
            say(
                {
                    "consoles": got,
                    "age_p50_ms": p50,
                    "age_p99_ms": p99,
                    "cpu_s": cpu,
                    "ended_early": ended,
                    "errors": [repr(c.error) for c in clients if c.error is not None],
                }
            )
            return 0
    return 1


class ConsoleProcess(HelperProcess):
    """A process of consoles (`_consoles`), speaking JSON lines."""

    def __init__(self, args: Sequence[str], log_path: Path) -> None:
        self.name = "_consoles"
        self.log_path = log_path
        with log_path.open("ab") as err:
            self.proc = subprocess.Popen(  # noqa: S603  # this module, our own arguments
                [sys.executable, "-m", "benchmarks.bench_live_feed", "_consoles", *args],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self._buf = b""


def start_consoles(
    url: str, token: str, n: int, per_process: int, interval_ms: int, log_stem: Path
) -> list[ConsoleProcess]:
    """`n` consoles in processes of `per_process`, started (`read` says when ready)."""
    return [
        ConsoleProcess(
            [
                *("--url", url, "--token", token),
                *("--count", str(min(per_process, n - k)), "--interval-ms", str(interval_ms)),
            ],
            log_stem.with_name(f"{log_stem.name}-{k}.log"),
        )
        for k in range(0, n, per_process)
    ]
