"""The load of `bench_jt808`: simulated JT/T 808 terminals (`simulator.jt808_terminal`) whose
cars wander, reporting when a pacer tells them to, on one asyncio loop.

Each `WalkingTerminal` registers, authenticates, then sends 0x0200 location reports
(`simulator.jt808_wire`) of a car that moved a little. The pacer spreads a total rate over
the terminals round-robin (one timer, not one per terminal); a terminal with `window`
reports unanswered is skipped (counted), so a server that falls behind sees the offered
load capped rather than an unbounded queue. Unpaced, each terminal keeps `window` reports
unanswered: it sends the next one when one is answered (a closed loop: the fleet spends no
CPU polling full windows). Seeded: the numbers, the starting points and the walk of every
car come from `seed`.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Final

from simulator.jt808_terminal import FleetStats, Terminal, connect
from simulator.jt808_wire import Fix, location_body, registration_body, terminal_numbers

REGISTRATION_BODY: Final = registration_body(maker="PWBEN")

__all__ = ["FleetStats", "WalkingTerminal", "connect_fleet", "pace", "settle"]


class WalkingTerminal(Terminal):
    """A terminal in a car wandering around Shanghai; `report` sends where it is now."""

    __slots__ = ("lat_e6", "lon_e6", "mileage", "refill_until", "refill_window", "rng")

    def __init__(self, phone: str, rng: random.Random, stats: FleetStats) -> None:
        super().__init__(phone, stats, REGISTRATION_BODY)
        self.rng = rng
        self.lat_e6 = 31_230_000 + rng.randrange(-50_000, 50_000)
        self.lon_e6 = 121_470_000 + rng.randrange(-50_000, 50_000)
        self.mileage = rng.randrange(100_000, 2_000_000)
        self.refill_until = 0.0  # unpaced: answer each ack with a new report until then
        self.refill_window = 1

    def answered(self) -> None:
        """Unpaced: the next report as soon as one is answered."""
        if time.perf_counter() < self.refill_until:
            self.report(self.refill_window)

    def report(self, window: int) -> bool:
        """Send one 0x0200 from a car that moved a little; False when the window is full."""
        if self.transport is None or len(self.outstanding) >= window:
            self.stats.skipped += 1
            return False
        rng = self.rng
        self.lat_e6 += rng.randrange(-300, 301)
        self.lon_e6 += rng.randrange(-300, 301)
        self.mileage += 1
        fix = Fix(
            int(time.time() * 1000),
            self.lat_e6 / 1e6,
            self.lon_e6 / 1e6,
            rng.randrange(0, 1200) / 10,
            rng.randrange(0, 360),
            ignition=True,
            odometer_km=self.mileage / 10,
            altitude_m=12,
        )
        self.send(0x0200, location_body(fix))
        return True


async def connect_fleet(
    host: str, port: int, n: int, seed: int, batch: int = 500, timeout_s: float = 120.0
) -> tuple[list[WalkingTerminal], FleetStats]:
    """Connect, register and authenticate `n` walking terminals, `batch` at a time."""
    stats = FleetStats()
    rng = random.Random(seed)
    terminals = [
        WalkingTerminal(number, random.Random(rng.getrandbits(64)), stats)
        for number in terminal_numbers(n, str(seed))
    ]
    return await connect(host, port, terminals, batch, timeout_s), stats


async def pace(
    terminals: list[WalkingTerminal], rate: float | None, seconds: float, window: int
) -> float:
    """Send reports for `seconds`: `rate` per second over all terminals round-robin, or, with
    no rate, as fast as the windows allow. Returns the wall seconds it ran."""
    if not terminals:
        return 0.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    end = started + seconds
    if rate is None:
        until = time.perf_counter() + seconds
        for terminal in terminals:
            terminal.refill_until, terminal.refill_window = until, window
            for _ in range(window):
                terminal.report(window)
        await asyncio.sleep(seconds)
        return loop.time() - started
    due = 0.0
    k = 0
    n = len(terminals)
    tick = 0.005
    while (now := loop.time()) < end:
        target = (now - started) * rate
        while due < target:
            terminals[k].report(window)
            k = (k + 1) % n
            due += 1
        await asyncio.sleep(tick)
    return loop.time() - started


async def settle(terminals: list[WalkingTerminal], timeout_s: float) -> int:
    """Wait until no report is unanswered (or the timeout); how many still are."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = sum(len(t.outstanding) for t in terminals)
        if left == 0:
            return 0
        await asyncio.sleep(0.05)
    return sum(len(t.outstanding) for t in terminals)
