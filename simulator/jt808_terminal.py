"""Simulated JT/T 808 terminals over TCP: the load of `bench_jt808` and the load test's
JT/T 808 trackers.

A `Terminal` is an `asyncio.Protocol` on its own connection: it registers (0x0100),
authenticates with the code of the 0x8100 (0x0102) and resolves `ready`; then `send` writes
any message (bodies from `simulator.jt808_wire`), and a location report or batch is timed
from its write to the 0x8001 that answers it. `connect` brings terminals up `batch` at a
time. `TerminalFleet` runs terminals on an event loop of their own thread, so that a
publishing thread hands their messages over in order without waiting for the network.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from devices.jt808.frame import FrameReader
from devices.jt808.header import Header, encode_frame
from devices.jt808.messages import MsgId
from simulator.jt808_wire import registration_body

REGISTRATION_BODY: Final = registration_body()
REPORT_IDS: Final = frozenset({MsgId.LOCATION, MsgId.LOCATION_BATCH})
_GENERAL: Final = struct.Struct(">HHB")


@dataclass(slots=True)
class FleetStats:
    """What the terminals sent and got back; latencies in seconds, of answered reports."""

    ready: int = 0
    failed: int = 0  # connections refused or closed before they were ready
    sent: int = 0  # location reports and batches written
    acked: int = 0  # reports answered result 0
    refused: int = 0  # reports answered another result
    skipped: int = 0  # reports a pacer did not send: the terminal's window was full
    lost: int = 0  # messages for a terminal without a connection
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
        "outstanding",
        "phone",
        "reader",
        "ready",
        "registration",
        "serial",
        "stats",
        "transport",
    )

    def __init__(
        self, phone: str, stats: FleetStats, registration: bytes = REGISTRATION_BODY
    ) -> None:
        self.phone = phone
        self.stats = stats
        self.registration = registration
        self.reader = FrameReader()
        self.serial = 0
        self.code = b""
        self.outstanding: dict[int, float] = {}  # serial -> perf_counter at send
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register at once."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send(MsgId.REGISTRATION, self.registration)

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
            if msg_id == MsgId.PLATFORM_RESPONSE and len(body) >= 5:
                self._general(*_GENERAL.unpack_from(body))
            elif msg_id == MsgId.REGISTRATION_RESPONSE and len(body) >= 3 and body[2] == 0:
                self.code = bytes(body[3:])
                self.send(MsgId.AUTHENTICATION, self.code)

    def _general(self, reply_serial: int, reply_id: int, result: int) -> None:
        if reply_id in REPORT_IDS:
            started = self.outstanding.pop(reply_serial, None)
            if result == 0:
                self.stats.acked += 1
                if started is not None:
                    self.stats.latencies_s.append(time.perf_counter() - started)
            else:
                self.stats.refused += 1
            self.answered()
        elif reply_id == MsgId.AUTHENTICATION and not self.ready.done():
            if result == 0:
                self.stats.ready += 1
                self.ready.set_result(None)
            else:
                self.ready.set_exception(ConnectionError(f"authentication answered {result}"))

    def answered(self) -> None:
        """Called when a report was answered (a closed-loop load sends the next one here)."""

    def send(self, msg_id: int, body: bytes) -> int:
        """Write one message; its serial, or -1 (counted as lost) without a connection."""
        if self.transport is None:
            self.stats.lost += 1
            return -1
        serial = self.serial
        self.serial = (serial + 1) & 0xFFFF
        self.transport.write(encode_frame(Header(msg_id, self.phone, serial), body))
        if msg_id in REPORT_IDS:
            self.outstanding[serial] = time.perf_counter()
            self.stats.sent += 1
        return serial

    def close(self) -> None:
        """Close the connection."""
        if self.transport is not None:
            self.transport.close()


TerminalT = TypeVar("TerminalT", bound=Terminal)


async def connect(
    host: str, port: int, terminals: Sequence[TerminalT], batch: int = 500, timeout_s: float = 120.0
) -> list[TerminalT]:
    """Connect, register and authenticate `terminals`, `batch` at a time; the ready ones
    (the others are counted in their stats as failed). TimeoutError after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout_s

    async def one(terminal: Terminal) -> None:
        await loop.create_connection(lambda: terminal, host, port)
        await terminal.ready

    for start in range(0, len(terminals), batch):
        left = max(deadline - time.monotonic(), 1.0)
        results = await asyncio.wait_for(
            asyncio.gather(
                *(one(t) for t in terminals[start : start + batch]), return_exceptions=True
            ),
            left,
        )
        for terminal, result in zip(terminals[start : start + batch], results, strict=True):
            if isinstance(result, BaseException):
                terminal.stats.failed += 1
    return [t for t in terminals if t.ready.done() and not t.ready.exception()]


class TerminalFleet:
    """Terminals of many devices on an event loop in a thread of its own.

    `connect` brings up the terminals of new devices (and blocks until they are ready);
    `send` takes a device's message from any thread without blocking, and the messages of
    one device are written in the order given; `unanswered` and `close` as they say.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.stats = FleetStats()
        self.terminals: dict[str, Terminal] = {}  # device id -> its terminal
        self._queue: collections.deque[tuple[str, int, bytes]] = collections.deque()
        self._wake_pending = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="jt808-terminals", daemon=True
        )
        self._thread.start()

    def connect(self, numbers: Mapping[str, str], timeout_s: float = 120.0) -> int:
        """Bring up a terminal for each new device id -> terminal number; how many failed."""
        new = {d: n for d, n in numbers.items() if d not in self.terminals}

        async def up() -> int:
            made = {d: Terminal(n, self.stats) for d, n in new.items()}
            self.terminals.update(made)
            ready = await connect(self.host, self.port, list(made.values()), timeout_s=timeout_s)
            return len(made) - len(ready)

        return asyncio.run_coroutine_threadsafe(up(), self._loop).result(timeout_s + 5.0)

    def send(self, device_id: str, msg_id: int, body: bytes) -> None:
        """Queue one message of `device_id`'s terminal (thread-safe; one wake-up per burst)."""
        self._queue.append((device_id, msg_id, body))
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        self._wake_pending = False  # first: a message queued from now on wakes us again
        queue, terminals = self._queue, self.terminals
        while queue:
            device_id, msg_id, body = queue.popleft()
            terminal = terminals.get(device_id)
            if terminal is None:
                self.stats.lost += 1
            else:
                terminal.send(msg_id, body)

    def unanswered(self) -> int:
        """Reports written and not answered yet, plus those not yet written."""
        return len(self._queue) + sum(len(t.outstanding) for t in list(self.terminals.values()))

    def settle(self, timeout_s: float) -> int:
        """Wait until every report is answered (or the timeout); how many are not."""
        deadline = time.monotonic() + timeout_s
        while (left := self.unanswered()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def close(self) -> None:
        """Close every connection and stop the loop's thread."""

        async def down() -> None:
            for terminal in self.terminals.values():
                terminal.close()
            await asyncio.sleep(0.1)  # the transports close on the next turns

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(down(), self._loop).result(10.0)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10.0)
        self._loop.close()
