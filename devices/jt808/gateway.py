"""The JT/T 808 gateway: an asyncio TCP server for terminals, publishing to MQTT (DESIGN §9).

Per connection: a `FrameReader`, a `Reassembler` (made when a first sub-package comes), the
platform serial counter, the alarm word of the last live report (the mapping publishes a
`status` only when its bits change) and the device the connection authenticated as. What a
frame gets, in order (the codec's modules do the protocol, see `devices.jt808`):

- a bad checksum, or a header whose body length is wrong: 0x8001 result 2 when its header
  still reads, else nothing; counted by kind; the connection stays open;
- a sub-package: result 0 at once (terminals wait for it before sending the next one);
  the message it completes is handled below and the last package answered for it;
- 0x0100 registration: 0x8100 with the device's auth code, saved to disk first (result 3
  when the number is registered with another terminal id: `auth_store.py` says why);
- 0x0102: result 0 for the device's code, else 1 (`bad_auth_code`);
- 0x0200 / 0x0704 from the device the connection authenticated as: mapped to readings and
  published at QoS 1, then result 0 once the broker acked every publish of the message;
  from any other connection result 1 and nothing published (`not_authenticated`);
- 0x0002, 0x0003 and 0x0001: result 0; another id: result 3; a body that does not fit
  its layout: result 2 (`malformed`).

Back-pressure: when more than `max_pending` publishes await their PUBACK (the broker is
slow or away) the gateway stops reading every socket, and resumes below half of it; so
does one connection with `max_pending_per_connection` messages unanswered, or whose
terminal does not read its answers. Unread bytes wait in the kernel and then in the
terminal, which resends what got no answer. Nothing is acked that the broker lacks.
Connections resume least recently read first: the event loop reads them in the order they
resume and stops where the limit is hit again, so a fixed order would starve the same
terminals on every turn.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Final, Protocol

import orjson

from devices.jt808.auth_store import AuthStore, AuthStoreError
from devices.jt808.frame import FrameError, FrameErrorKind, FrameReader
from devices.jt808.header import Frame, Header, decode_frame, peek_header
from devices.jt808.mapping import DEFAULT_CONFIG, Mapped, MappingConfig, map_batch, map_location
from devices.jt808.messages import (
    Authentication,
    Heartbeat,
    LocationBatch,
    LocationReport,
    Logout,
    MessageError,
    MsgId,
    Registration,
    TerminalResponse,
    Unsupported,
    parse_message,
)
from devices.jt808.replies import (
    RegistrationResult,
    ResultCode,
    general_response,
    registration_response,
)
from devices.jt808.subpackage import Reassembler, ReassemblyError

_log = logging.getLogger(__name__)

BLIND_AREA_BATCH: Final = 1
"""0x0704 type 1: a catch-up after a dead zone, older than the live reports."""

_KNOWN_IDS: Final = {int(m): f"0x{int(m):04x}" for m in MsgId}
_PAUSE_GLOBAL: Final = 1  # too many publishes await their PUBACK
_PAUSE_OWN: Final = 2  # this connection has too many messages unanswered
_PAUSE_WRITE: Final = 4  # this terminal does not read its answers
_PAUSE_STOP: Final = 8  # the gateway is stopping
_PRESSURE_LOG_S: Final = 60.0  # at most one back-pressure warning a minute


class Publisher(Protocol):
    """Where readings go: QoS 1 publishes whose futures resolve on the broker's PUBACK."""

    @property
    def pending(self) -> int:
        """Publishes awaiting their PUBACK."""

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Publish; the future resolves when the broker acked it."""

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing awaits a PUBACK; False on timeout."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Bounds of the gateway; `idle_timeout_s` closes a connection without a valid frame."""

    max_pending: int = 10_000
    max_pending_per_connection: int = 64
    idle_timeout_s: float = 600.0
    summary_s: float = 60.0
    mapping: MappingConfig = DEFAULT_CONFIG


@dataclass(slots=True)
class GatewayCounters:
    """What the gateway did since it started (rendered on /metrics and in the summary)."""

    connections_open: int = 0
    connections_total: int = 0
    connections_idle_closed: int = 0
    paused: int = 0  # connections not read from right now
    pressure_pauses: int = 0  # times every connection was paused for pending publishes
    reads: int = 0  # chunks read from terminals; orders connections by their last read
    frames: collections.Counter[str] = field(default_factory=collections.Counter)
    published: collections.Counter[str] = field(default_factory=collections.Counter)
    acked: int = 0  # terminal messages answered after the broker acked their readings
    rejects: collections.Counter[str] = field(default_factory=collections.Counter)
    registrations: int = 0
    authentications: int = 0


class Gateway:
    """Terminal connections in, readings out through a `Publisher`, acks after PUBACK."""

    def __init__(
        self,
        publisher: Publisher,
        store: AuthStore,
        settings: GatewaySettings | None = None,
        observe_ack_s: Callable[[float], None] | None = None,
    ) -> None:
        self.publisher = publisher
        self.store = store
        self.settings = settings or GatewaySettings()
        self.counters = GatewayCounters()
        self.observe_ack_s = observe_ack_s
        self.connections: set[_Terminal] = set()
        self.paused_all = False
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._loops: list[asyncio.Task[None]] = []  # the idle sweep and the summaries
        self._registrations: set[asyncio.Task[None]] = set()
        self._last_frames = 0
        self._pressure_logged = -_PRESSURE_LOG_S
        self._all_closed = asyncio.Event()  # set when stopping and the last connection closed

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on host:port (port 0: any free one); returns the address bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Terminal(self), host, port, backlog=4096, reuse_address=True
        )
        self._loops.append(loop.create_task(self._sweep()))
        if self.settings.summary_s > 0:
            self._loops.append(loop.create_task(self._summaries()))
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def stop(self, drain_s: float = 10.0) -> None:
        """Stop accepting and reading, answer what the broker acks within `drain_s`, close."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.pause(_PAUSE_STOP)
        for task in self._loops:
            task.cancel()
        if self._registrations:
            await asyncio.wait(list(self._registrations), timeout=drain_s)
        if not await self.publisher.drain(drain_s):
            _log.warning(
                "stopping with %d publishes unacked by the broker: their terminals get no "
                "answer and will send them again",
                self.publisher.pending,
            )
        for conn in list(self.connections):
            conn.transport.close()  # after what is buffered is written
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), 2.0)
        for conn in list(self.connections):
            conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    def summary(self) -> str:
        """One line for the log: connections, traffic, rejects, the broker's state."""
        c = self.counters
        frames = sum(c.frames.values())
        published = ", ".join(f"{k}={v}" for k, v in sorted(c.published.items())) or "none"
        rejects = ", ".join(f"{k}={v}" for k, v in sorted(c.rejects.items())) or "none"
        line = (
            f"jt808 gateway: {c.connections_open} connections ({c.connections_total} since "
            f"start, {c.paused} paused), {frames} frames (+{frames - self._last_frames}), "
            f"{c.acked} reports acked after publish, readings published {published}; "
            f"rejects {rejects}; {self.publisher.pending} publishes pending, MQTT "
            f"{'connected' if self.publisher.connected else 'DISCONNECTED'}"
        )
        self._last_frames = frames
        return line

    # -- back-pressure
    def check_pressure(self) -> None:
        """Pause every connection over `max_pending` publishes; resume below half of it."""
        pending = self.publisher.pending
        limit = self.settings.max_pending
        if not self.paused_all and pending >= limit:
            self.paused_all = True
            self.counters.pressure_pauses += 1
            now = time.monotonic()
            if now - self._pressure_logged >= _PRESSURE_LOG_S:
                self._pressure_logged = now
                _log.warning(
                    "%d publishes await the broker's PUBACK (limit %d): reading from "
                    "terminals stops until half of them are acked (%d times so far)",
                    pending,
                    limit,
                    self.counters.pressure_pauses,
                )
            for conn in self.connections:
                conn.pause(_PAUSE_GLOBAL)
        elif self.paused_all and pending <= limit // 2:
            self.paused_all = False
            for conn in sorted(self.connections, key=_last_read):
                conn.resume(_PAUSE_GLOBAL)

    def all_closed(self) -> None:
        """The last connection closed while stopping."""
        self._all_closed.set()

    def register_later(self, coro: Coroutine[object, object, None]) -> None:
        """Run a registration (it waits for the disk) as a task the gateway keeps."""
        task = asyncio.get_running_loop().create_task(coro)
        self._registrations.add(task)
        task.add_done_callback(self._registrations.discard)

    async def _sweep(self) -> None:
        """Close connections that sent no valid frame for `idle_timeout_s`."""
        idle = self.settings.idle_timeout_s
        while True:
            await asyncio.sleep(min(max(idle / 4, 0.05), 30.0))
            cutoff = time.monotonic() - idle
            for conn in list(self.connections):
                if conn.last_seen < cutoff and not conn.paused:
                    self.counters.connections_idle_closed += 1
                    conn.transport.close()

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.settings.summary_s)
            _log.info("%s", self.summary())


class _Terminal(asyncio.Protocol):
    """One terminal's TCP connection."""

    __slots__ = (
        "alarm",
        "device",
        "gateway",
        "last_read",
        "last_seen",
        "paused",
        "reader",
        "reassembler",
        "serial",
        "transport",
        "unanswered",
    )

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.transport: asyncio.Transport
        self.reader = FrameReader()
        self.reassembler: Reassembler | None = None
        self.serial = 0
        self.alarm: int | None = None
        self.device: str | None = None  # the device_id this connection authenticated as
        self.paused = 0  # _PAUSE_* bits
        self.unanswered = 0  # messages whose answer waits for PUBACKs
        self.last_seen = time.monotonic()
        self.last_read = 0  # `counters.reads` at this connection's last chunk

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection; paused at once when the gateway is under pressure."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        gateway = self.gateway
        gateway.connections.add(self)
        gateway.counters.connections_open += 1
        gateway.counters.connections_total += 1
        if gateway.stopping:
            transport.close()
        elif gateway.paused_all:
            self.pause(_PAUSE_GLOBAL)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection; a frame cut off by the close is counted."""
        del exc
        gateway = self.gateway
        gateway.connections.discard(self)
        gateway.counters.connections_open -= 1
        if gateway.stopping and not gateway.connections:
            gateway.all_closed()
        if self.paused:
            gateway.counters.paused -= 1
            self.paused = 0
        for error in self.reader.finish():
            gateway.counters.rejects[error.kind.value] += 1

    def pause_writing(self) -> None:
        """The terminal does not read its answers: stop reading its messages."""
        self.pause(_PAUSE_WRITE)

    def resume_writing(self) -> None:
        """The terminal reads again."""
        self.resume(_PAUSE_WRITE)

    def data_received(self, data: bytes) -> None:
        """Handle every frame the chunk completes."""
        counters = self.gateway.counters
        counters.reads += 1
        self.last_read = counters.reads
        for item in self.reader.feed(data):
            if isinstance(item, FrameError):
                self._frame_error(item)
                continue
            frame = decode_frame(item)
            if isinstance(frame, FrameError):
                self._frame_error(frame)
                continue
            self._frame(frame)
        if self.gateway.publisher.pending >= self.gateway.settings.max_pending:
            self.gateway.check_pressure()

    # -- pausing
    def pause(self, reason: int) -> None:
        """Stop reading for `reason` (a _PAUSE_* bit) until every reason is gone."""
        if not self.paused:
            self.transport.pause_reading()
            self.gateway.counters.paused += 1
        self.paused |= reason

    def resume(self, reason: int) -> None:
        """Drop one reason to pause; read again when none is left."""
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused:
                self.transport.resume_reading()
                self.gateway.counters.paused -= 1

    # -- frames
    def _frame_error(self, error: FrameError) -> None:
        self.gateway.counters.rejects[error.kind.value] += 1
        if error.content is None or error.kind not in {
            FrameErrorKind.BAD_CHECKSUM,
            FrameErrorKind.BAD_HEADER,
        }:
            return
        header = peek_header(error.content)
        if header is not None:
            self._answer(header, ResultCode.MESSAGE_ERROR)

    def _frame(self, frame: Frame) -> None:
        header = frame.header
        counters = self.gateway.counters
        counters.frames[_KNOWN_IDS.get(header.msg_id, "other")] += 1
        self.last_seen = time.monotonic()
        if header.package is not None:
            if self.reassembler is None:
                self.reassembler = Reassembler()
            whole = self.reassembler.add(frame)
            if isinstance(whole, ReassemblyError):
                counters.rejects["reassembly"] += 1
                self._answer(header, ResultCode.MESSAGE_ERROR)
                return
            if whole is None:
                self._answer(header, ResultCode.OK)
                return
            frame = whole
        self._message(frame, header)

    def _message(self, frame: Frame, answer_to: Header) -> None:
        """Handle a whole message; `answer_to` is the frame that completed it."""
        message = parse_message(frame)
        counters = self.gateway.counters
        if isinstance(message, (LocationReport, LocationBatch)):
            self._report(frame.header.device_id, message, answer_to)
        elif isinstance(message, (Heartbeat, TerminalResponse)):
            self._answer(answer_to, ResultCode.OK)
        elif isinstance(message, Authentication):
            self._authenticate(frame.header.device_id, message, answer_to)
        elif isinstance(message, Registration):
            self.gateway.register_later(self._register(frame.header.device_id, message, answer_to))
        elif isinstance(message, Logout):
            self.device = None
            self._answer(answer_to, ResultCode.OK)
        elif isinstance(message, Unsupported):
            counters.rejects["unsupported"] += 1
            self._answer(answer_to, ResultCode.UNSUPPORTED)
        else:
            assert isinstance(message, MessageError)
            counters.rejects["malformed"] += 1
            _log.debug("%s: %s", frame.header.device_id, message.detail)
            self._answer(answer_to, ResultCode.MESSAGE_ERROR)

    def _authenticate(self, device_id: str, auth: Authentication, answer_to: Header) -> None:
        if self.gateway.store.check(device_id, auth.code):
            if self.device != device_id:
                self.alarm = None  # the alarm word of another terminal says nothing here
            self.device = device_id
            self.gateway.counters.authentications += 1
            self._answer(answer_to, ResultCode.OK)
        else:
            self.gateway.counters.rejects["bad_auth_code"] += 1
            _log.debug("%s: authentication with a wrong or unknown code", device_id)
            self._answer(answer_to, ResultCode.FAILURE)

    async def _register(self, device_id: str, reg: Registration, answer_to: Header) -> None:
        store = self.gateway.store
        known = store.code(device_id) is not None
        try:
            code = await store.register(device_id, reg.terminal_id)
        except AuthStoreError as exc:
            # No 0x8100 result says "try later"; no answer makes the terminal register again.
            self.gateway.counters.rejects["state_not_saved"] += 1
            _log.error("%s: registration not answered: %s", device_id, exc)
            return
        if self.transport.is_closing():
            return
        if code is None:
            self.gateway.counters.rejects["already_registered"] += 1
            _log.warning(
                "%s: registration refused, the number is registered with another terminal "
                "id than %r (remove its entry from %s while the gateway is stopped to allow it)",
                device_id,
                reg.terminal_id,
                store.path,
            )
            result = RegistrationResult.TERMINAL_REGISTERED
            self.transport.write(registration_response(answer_to, self._next_serial(), result))
            return
        self.gateway.counters.registrations += 1
        (_log.debug if known else _log.info)(
            "%s registered (%s model %r, terminal id %r, plate %r)",
            device_id,
            reg.manufacturer_id,
            reg.model,
            reg.terminal_id,
            reg.plate,
        )
        reply = registration_response(answer_to, self._next_serial(), RegistrationResult.OK, code)
        self.transport.write(reply)

    def _report(
        self, device_id: str, report: LocationReport | LocationBatch, answer_to: Header
    ) -> None:
        gateway = self.gateway
        counters = gateway.counters
        if self.device != device_id:
            counters.rejects["not_authenticated"] += 1
            self._answer(answer_to, ResultCode.FAILURE)
            return
        config = gateway.settings.mapping
        mapped: Mapped
        if isinstance(report, LocationReport):
            mapped = map_location(device_id, report, config, self.alarm)
            self.alarm = mapped.alarm
        elif report.kind == BLIND_AREA_BATCH:
            mapped = map_batch(device_id, report, config)  # old items: the live alarm stays
        else:
            mapped = map_batch(device_id, report, config, self.alarm)
            self.alarm = mapped.alarm
        for fault in mapped.faults:
            counters.rejects[fault.reason.value] += 1
        if not mapped.publications:
            self._answer(answer_to, ResultCode.OK)  # judged and counted; a resend changes nothing
            return
        waiter = _AckWaiter(self, answer_to, len(mapped.publications))
        publish = gateway.publisher.publish
        for topic, payload in mapped.publications:
            waiter.streams.append(topic[topic.rfind("/") + 1 :])
            publish(topic, orjson.dumps(payload)).add_done_callback(waiter)
        self.unanswered += 1
        if self.unanswered >= gateway.settings.max_pending_per_connection:
            self.pause(_PAUSE_OWN)

    def acked(self, waiter: _AckWaiter) -> None:
        """All publishes of a message are settled: answer the terminal."""
        gateway = self.gateway
        self.unanswered -= 1
        if self.paused & _PAUSE_OWN and (
            self.unanswered < gateway.settings.max_pending_per_connection // 2
        ):
            self.resume(_PAUSE_OWN)
        if gateway.paused_all:
            gateway.check_pressure()
        if waiter.cancelled:
            return  # the gateway stopped before the broker acked: no answer, a resend
        counters = gateway.counters
        if waiter.failed:
            counters.rejects["broker_refused"] += 1
            self._answer(waiter.answer_to, ResultCode.FAILURE)
            return
        counters.acked += 1
        for stream in waiter.streams:
            counters.published[stream] += 1
        if gateway.observe_ack_s is not None:
            gateway.observe_ack_s(time.perf_counter() - waiter.started)
        self._answer(waiter.answer_to, ResultCode.OK)

    def _answer(self, request: Header, result: ResultCode) -> None:
        if not self.transport.is_closing():
            self.transport.write(general_response(request, self._next_serial(), result))

    def _next_serial(self) -> int:
        serial = self.serial
        self.serial = (serial + 1) & 0xFFFF
        return serial


def _last_read(conn: _Terminal) -> int:
    return conn.last_read


class _AckWaiter:
    """Counts the PUBACKs of one terminal message; answers it when the last one settles."""

    __slots__ = ("answer_to", "cancelled", "conn", "failed", "left", "started", "streams")

    def __init__(self, conn: _Terminal, answer_to: Header, publishes: int) -> None:
        self.conn = conn
        self.answer_to = answer_to
        self.left = publishes
        self.failed = False
        self.cancelled = False
        self.started = time.perf_counter()
        self.streams: list[str] = []

    def __call__(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            self.cancelled = True
        elif future.exception() is not None:
            self.failed = True
        self.left -= 1
        if self.left == 0:
            self.conn.acked(self)
