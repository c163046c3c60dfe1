"""MQTT input in a child process: the paho network loop off the engine's interpreter lock.

paho-mqtt parses every packet in Python: about as much CPU per message as the engine spends
on a reading (benchmarks/bench_engine.py). In one process the two share one GIL; here the
child runs `MqttSource` (connect, subscribe, reconnect with backoff, manual acks, Receive
Maximum) and forwards what arrives through a pipe, and the engine sends acks back through
another. The contract is unchanged: a message is acked to the broker only after the engine
committed its batch. If the engine dies, even by `kill -9`, the child reads end-of-file on
the ack pipe and exits without acking anything more, so the broker redelivers the rest. If
the child dies, the engine starts a new one; acks meant for the old child's messages are
dropped (their packet ids belong to its connection) and the broker redelivers those.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import signal
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

from alerts.retry import backoff_s
from devices.mqtt_source import TOPICS, BrokerAddress, Message, MqttSource

_log = logging.getLogger(__name__)

_GENERATION_SHIFT = 32  # Message.connection = child generation << 32 | the child's connection
_FORWARD_MAX = 500  # messages per frame from the child
_STOP = None  # on the ack pipe: finish and exit

_Row = tuple[str, bytes, int, int, int, int]  # a Message as fields, cheap to pickle


def _child(
    url: str,
    client_id: str,
    topics: tuple[str, ...],
    receive_maximum: int,
    session_expiry_s: int,
    keepalive_s: int,
    out: Connection,
    acks_in: Connection,
) -> None:
    """The child process: run the source, forward messages, apply acks until told to stop
    or until the engine is gone."""
    # Ctrl-C and SIGTERM go to the engine, which stops us after committing what it acked.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    source = MqttSource(url, client_id, topics, receive_maximum, session_expiry_s, keepalive_s)
    done = threading.Event()

    def read_acks() -> None:
        try:
            while (acks := acks_in.recv()) is not _STOP:
                source.ack_ids(acks)
        except (EOFError, OSError):
            pass  # the engine is gone: nothing more will be acked
        done.set()

    threading.Thread(target=read_acks, name="mqtt-acks", daemon=True).start()
    source.start()
    state: tuple[bool, int, int] | None = None
    try:
        while not done.is_set():
            batch = source.get_batch(_FORWARD_MAX, 0.05)
            if batch:
                rows: list[_Row] = [
                    (m.topic, m.payload, m.qos, m.mid, m.arrived_ms, m.connection) for m in batch
                ]
                out.send(rows)
            now = (source.connected, source.reconnects, source.takeovers)
            if now != state:
                state = now
                out.send(now)
    except (BrokenPipeError, EOFError, OSError):
        pass  # the engine is gone
    finally:
        source.stop()


def _check_address(url: str) -> None:
    """Raise ValueError if the URL is malformed or its CA file cannot be loaded."""
    address = BrokerAddress.parse(url)
    if address.tls and address.cafile is not None:
        try:
            ssl.create_default_context(cafile=address.cafile)
        except (OSError, ssl.SSLError) as exc:
            msg = f"MQTT over TLS: cannot load the CA file {address.cafile!r} ({exc})"
            raise ValueError(msg) from exc


@dataclass(frozen=True, slots=True)
class _Child:
    """A started child process and our ends of its pipes."""

    proc: multiprocessing.process.BaseProcess
    rx: Connection  # messages and connection state from the child
    tx: Connection  # acks to the child

    def end(self) -> None:
        """Stop a child that was never used: it has received nothing to ack."""
        self.proc.kill()
        self.proc.join(1.0)
        self.rx.close()
        self.tx.close()


class MqttProcessSource:
    """The engine's `Source`, fed by `MqttSource` running in a child process."""

    def __init__(
        self,
        url: str,
        client_id: str,
        topics: Sequence[str] = TOPICS,
        receive_maximum: int = 2000,
        session_expiry_s: int = 7 * 24 * 3600,
        keepalive_s: int = 30,
        restart_base_s: float = 0.5,
    ) -> None:
        _check_address(url)  # a bad URL or CA file fails here, not in the child
        self._args = (url, client_id, tuple(topics), receive_maximum, session_expiry_s, keepalive_s)
        self._ctx = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._generation = 0
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._rx: Connection | None = None
        self._tx: Connection | None = None
        self._pending: collections.deque[Message] = collections.deque()
        self._connected = threading.Event()
        self._child_reconnects = 0
        self._takeovers = 0  # of earlier children
        self._child_takeovers = 0
        self._restarts = 0
        self._restart_base_s = restart_base_s  # doubling per restart, up to 16x
        self._stopping = False
        # A replacement child is started by a thread of its own after the backoff, so the
        # engine thread keeps committing and running timers meanwhile; it adopts the child
        # the next time it looks for messages.
        self._replacement: _Child | None = None
        self._replacement_ready = threading.Event()
        self._replacement_lock = threading.Lock()
        self._cancel_respawn = threading.Event()

    @property
    def reconnects(self) -> int:
        """Reconnects of the current child, plus one for every child restarted."""
        return self._child_reconnects + self._restarts

    @property
    def takeovers(self) -> int:
        """Times the broker said another client took our session over (all children)."""
        return self._takeovers + self._child_takeovers

    @property
    def restarts(self) -> int:
        """Children that died and were replaced."""
        return self._restarts

    @property
    def connected(self) -> bool:
        """Whether the child is connected and subscribed (as it last reported)."""
        return self._connected.is_set()

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child; it connects, and reconnects with backoff and jitter."""
        self._stopping = False
        self._cancel_respawn.clear()
        self._adopt(self._launch(self._generation + 1))

    def _launch(self, generation: int) -> _Child:
        """Start a child process with its two pipes (any thread may call this)."""
        rx, out = self._ctx.Pipe(duplex=False)
        acks_in, tx = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_child,
            args=(*self._args, out, acks_in),
            name=f"pledgewatch-mqtt-{generation}",
            daemon=True,
        )
        proc.start()
        out.close()  # only the child writes messages, only we write acks: EOF means gone
        acks_in.close()
        return _Child(proc, rx, tx)

    def _adopt(self, child: _Child) -> None:
        """Make `child` the one we read from and ack to (on the engine thread)."""
        self._generation += 1
        self._proc, self._rx, self._tx = child.proc, child.rx, child.tx
        self._connected.clear()
        self._child_reconnects = 0
        self._takeovers += self._child_takeovers
        self._child_takeovers = 0

    def _respawn(self, delay_s: float) -> None:
        """On a thread of its own: wait out the backoff, start a child, hand it over."""
        if self._cancel_respawn.wait(delay_s):
            return
        child = self._launch(self._generation + 1)
        with self._replacement_lock:
            if self._cancel_respawn.is_set():
                child.end()
                return
            self._replacement = child
        self._replacement_ready.set()

    def _take_replacement(self, timeout_s: float) -> bool:
        """Adopt the replacement child once it is started; False if it is not there yet."""
        if not self._replacement_ready.wait(timeout_s):
            return False
        with self._replacement_lock:
            child, self._replacement = self._replacement, None
            self._replacement_ready.clear()
        if child is None:
            return False
        self._adopt(child)
        return True

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until the child reports it is connected, or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while not self._connected.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._receive(min(left, 0.1))
        return True

    def get_batch(self, max_messages: int, max_wait_s: float) -> list[Message]:
        """Up to `max_messages` messages: waits at most `max_wait_s` for the first, then
        takes what is already there."""
        batch: list[Message] = []
        deadline = time.monotonic() + max_wait_s
        while len(batch) < max_messages:
            if self._pending:
                take = min(max_messages - len(batch), len(self._pending))
                batch.extend(self._pending.popleft() for _ in range(take))
                continue
            wait = 0.0 if batch else deadline - time.monotonic()
            if not self._receive(max(wait, 0.0)):
                break
        return batch

    def _receive(self, timeout_s: float) -> bool:
        """Take one frame from the child into `_pending` (or its state); False if none came."""
        rx = self._rx
        if rx is None:
            if self._stopping or not self._take_replacement(timeout_s):
                return False
            rx = self._rx
            if rx is None:
                return False
            timeout_s = 0.0
        try:
            if not rx.poll(timeout_s):
                return False
            frame: list[_Row] | tuple[bool, int, int] = rx.recv()
        except (EOFError, OSError):
            self._child_gone()
            return False
        if isinstance(frame, tuple):
            connected, self._child_reconnects, self._child_takeovers = frame
            if connected:
                self._connected.set()
            else:
                self._connected.clear()
            return True
        tag = self._generation << _GENERATION_SHIFT
        self._pending.extend(
            Message(topic, payload, qos, mid, arrived, tag | connection)
            for topic, payload, qos, mid, arrived, connection in frame
        )
        return True

    def _child_gone(self) -> None:
        """The child died: start another (what it had not acked comes again)."""
        self._connected.clear()
        if self._stopping:
            return
        code = self._proc.exitcode if self._proc is not None else None
        delay = backoff_s(min(self._restarts, 4), self._restart_base_s)
        _log.error("the MQTT child process exited (code %s); restarting in %.1f s", code, delay)
        self._close_pipes()
        self._proc = None
        self._restarts += 1
        threading.Thread(
            target=self._respawn, args=(delay,), name="mqtt-respawn", daemon=True
        ).start()

    def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge committed messages; those of an earlier child are dropped."""
        generation = self._generation
        acks = [
            (m.connection & ((1 << _GENERATION_SHIFT) - 1), m.mid, m.qos)
            for m in messages
            if m.qos > 0 and m.connection >> _GENERATION_SHIFT == generation
        ]
        if acks and self._tx is not None:
            # If the child is gone the broker redelivers; the next get_batch restarts it.
            with contextlib.suppress(OSError):
                self._tx.send(acks)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Let the child send the acks it holds and disconnect; then end it."""
        self._stopping = True
        self._cancel_respawn.set()
        with self._replacement_lock:
            unused, self._replacement = self._replacement, None
        if unused is not None:
            unused.end()
        proc, tx = self._proc, self._tx
        if proc is None:
            return
        if tx is not None:
            with contextlib.suppress(OSError):
                tx.send(_STOP)
        deadline = time.monotonic() + timeout_s
        while proc.is_alive() and time.monotonic() < deadline:
            # Keep reading so a child blocked writing to us can see the stop; the messages
            # are not acked and come again after a restart.
            self._receive(0.05)
            self._pending.clear()
        if proc.is_alive():
            _log.warning("the MQTT child process did not stop in %.0f s; killing it", timeout_s)
            proc.kill()
        proc.join(1.0)
        self._close_pipes()
        self._proc = None
        self._connected.clear()

    def _close_pipes(self) -> None:
        for conn in (self._rx, self._tx):
            if conn is not None:
                conn.close()
        self._rx = self._tx = None
