"""A simulated JT/T 808 terminal fleet on one asyncio loop: the load of `bench_jt808`.

Each terminal is an `asyncio.Protocol` on its own TCP connection: it registers (0x0100),
authenticates with the code of the 0x8100 (0x0102), then sends 0x0200 location reports
when the pacer tells it to, and times each from the write to the 0x8001 that answers it.
The pacer spreads a total rate over the terminals round-robin (one timer, not one per
terminal); a terminal with `window` reports unanswered is skipped (counted), so a server
that falls behind sees the offered load capped rather than an unbounded queue. Unpaced,
each terminal keeps `window` reports unanswered: it sends the next one when one is answered
(a closed loop: the fleet spends no CPU polling full windows). Seeded: the
phones, the starting points and the walk of every car come from `seed`.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from dataclasses import dataclass, field
from typing import Final

from devices.jt808.frame import FrameReader
from devices.jt808.header import Header, encode_frame

REGISTRATION_BODY: Final = struct.pack(">HH5s20s7sB", 31, 100, b"PWBEN", b"FLEET", b"0000001", 0)
_GENERAL: Final = struct.Struct(">HHB")
_LOCATION: Final = struct.Struct(">IIIIHHH6s")
_MILEAGE: Final = struct.Struct(">BBI")
_UTC8_S: Final = 8 * 3600


@dataclass(slots=True)
class FleetStats:
    """What the fleet sent and got back; latencies in seconds, of answered reports."""

    ready: int = 0
    failed: int = 0  # connections refused or closed before they were ready
    sent: int = 0
    acked: int = 0  # reports answered result 0
    refused: int = 0  # reports answered another result
    skipped: int = 0  # pacer turns that found the terminal's window full
    closed: int = 0
    latencies_s: list[float] = field(default_factory=list)

    def reset_window(self) -> None:
        """Start a new measurement: zero the report counters (not the connections)."""
        self.sent = self.acked = self.refused = self.skipped = 0
        self.latencies_s = []


class Terminal(asyncio.Protocol):
    """One simulated terminal; `ready` resolves once it authenticated."""

    __slots__ = (
        "code",
        "lat_e6",
        "lon_e6",
        "mileage",
        "outstanding",
        "phone",
        "reader",
        "ready",
        "refill_until",
        "refill_window",
        "rng",
        "serial",
        "stats",
        "transport",
    )

    def __init__(self, phone: str, rng: random.Random, stats: FleetStats) -> None:
        self.phone = phone
        self.rng = rng
        self.stats = stats
        self.reader = FrameReader()
        self.serial = 0
        self.code = b""
        self.outstanding: dict[int, float] = {}  # serial -> perf_counter at send
        self.lat_e6 = 31_230_000 + rng.randrange(-50_000, 50_000)
        self.lon_e6 = 121_470_000 + rng.randrange(-50_000, 50_000)
        self.mileage = rng.randrange(100_000, 2_000_000)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.refill_until = 0.0  # unpaced: answer each ack with a new report until then
        self.refill_window = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register at once."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send(0x0100, REGISTRATION_BODY)

    def connection_lost(self, exc: Exception | None) -> None:
        """Count the loss; a terminal not yet ready fails its `ready`."""
        self.transport = None
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))

    def data_received(self, data: bytes) -> None:
        """Read the platform's answers."""
        for content in self.reader.feed(data):
            if not isinstance(content, bytes) or len(content) < 12:
                continue
            msg_id = content[0] << 8 | content[1]
            body = content[12:]
            if msg_id == 0x8001 and len(body) >= 5:
                self._general(*_GENERAL.unpack_from(body))
            elif msg_id == 0x8100 and len(body) >= 3 and body[2] == 0:
                self.code = bytes(body[3:])
                self._send(0x0102, self.code)

    def _general(self, reply_serial: int, reply_id: int, result: int) -> None:
        if reply_id == 0x0200:
            started = self.outstanding.pop(reply_serial, None)
            now = time.perf_counter()
            if result == 0:
                self.stats.acked += 1
                if started is not None:
                    self.stats.latencies_s.append(now - started)
            else:
                self.stats.refused += 1
            if now < self.refill_until:
                self.report(self.refill_window)
        elif reply_id == 0x0102 and not self.ready.done():
            if result == 0:
                self.stats.ready += 1
                self.ready.set_result(None)
            else:
                self.ready.set_exception(ConnectionError(f"authentication answered {result}"))

    def report(self, window: int) -> bool:
        """Send one 0x0200 from a car that moved a little; False when the window is full."""
        if self.transport is None or len(self.outstanding) >= window:
            self.stats.skipped += 1
            return False
        rng = self.rng
        self.lat_e6 += rng.randrange(-300, 301)
        self.lon_e6 += rng.randrange(-300, 301)
        self.mileage += 1
        now = time.time()
        bcd = bytes.fromhex(time.strftime("%y%m%d%H%M%S", time.gmtime(now + _UTC8_S)))
        speed = rng.randrange(0, 1200)
        body = _LOCATION.pack(
            0, 0b11, self.lat_e6, self.lon_e6, 12, speed, rng.randrange(0, 360), bcd
        ) + _MILEAGE.pack(0x01, 4, self.mileage)
        serial = self._send(0x0200, body)
        self.outstanding[serial] = time.perf_counter()
        self.stats.sent += 1
        return True

    def _send(self, msg_id: int, body: bytes) -> int:
        serial = self.serial
        self.serial = (serial + 1) & 0xFFFF
        if self.transport is not None:
            self.transport.write(encode_frame(Header(msg_id, self.phone, serial), body))
        return serial

    def close(self) -> None:
        """Close the connection."""
        if self.transport is not None:
            self.transport.close()


def phones(n: int, seed: int) -> list[str]:
    """`n` distinct 12-digit terminal numbers (a 2013 BCD[6]), seeded."""
    rng = random.Random(seed)
    numbers = rng.sample(range(10_000_000, 100_000_000), n)
    return [f"0138{x:08d}" for x in numbers]


async def connect_fleet(
    host: str, port: int, n: int, seed: int, batch: int = 500, timeout_s: float = 120.0
) -> tuple[list[Terminal], FleetStats]:
    """Connect, register and authenticate `n` terminals, `batch` at a time."""
    loop = asyncio.get_running_loop()
    stats = FleetStats()
    rng = random.Random(seed)
    terminals: list[Terminal] = []
    deadline = time.monotonic() + timeout_s
    numbers = phones(n, seed)
    for start in range(0, n, batch):
        made: list[Terminal] = []

        async def one(phone: str, made: list[Terminal] = made) -> None:
            terminal = Terminal(phone, random.Random(rng.getrandbits(64)), stats)
            made.append(terminal)
            await loop.create_connection(lambda: terminal, host, port)
            await terminal.ready

        left = max(deadline - time.monotonic(), 1.0)
        results = await asyncio.wait_for(
            asyncio.gather(
                *(one(p) for p in numbers[start : start + batch]), return_exceptions=True
            ),
            left,
        )
        stats.failed += sum(isinstance(r, BaseException) for r in results)
        terminals += made
    return [t for t in terminals if t.ready.done() and not t.ready.exception()], stats


async def pace(terminals: list[Terminal], rate: float | None, seconds: float, window: int) -> float:
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


async def settle(terminals: list[Terminal], timeout_s: float) -> int:
    """Wait until no report is unanswered (or the timeout); how many still are."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = sum(len(t.outstanding) for t in terminals)
        if left == 0:
            return 0
        await asyncio.sleep(0.05)
    return sum(len(t.outstanding) for t in terminals)
