"""A console's live feed (`GET /v1/live`, Server-Sent Events) read from outside: the tests'
and the live feed benchmark's one client and one event parser.

`LiveClient` opens the stream with the caller's httpx client (bearer token or session
cookie) and reads it on a thread of its own, parsing each event's one line of JSON; the
events go to a queue (`next_event`, `wait_for`) or, for a benchmark that only counts, to
a callback instead. `parse_events` is the parser alone: `event: NAME` and `data: ...`
lines, a blank line ending each event, `:` comments (the pings) kept as name None.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Self

import httpx
import orjson

LIVE_PATH = "/v1/live"


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One event: its name (None for a comment such as `: ping`), its data parsed as JSON
    (the comment's text for a comment, None when `parse` was off), and its size on the wire."""

    name: str | None
    data: object
    size: int


def parse_events(chunks: Iterable[bytes], *, parse: bool = True) -> Iterator[LiveEvent]:
    """The events of a stream's body, as its chunks arrive."""
    buf = bytearray()
    start = 0
    for chunk in chunks:
        buf += chunk
        while (end := buf.find(b"\n\n", start)) >= 0:
            block = bytes(buf[start:end])
            start = end + 2
            yield _event(block, parse)
        if start > 1 << 20:  # keep the buffer short once a large event is done
            del buf[:start]
            start = 0


def _event(block: bytes, parse: bool) -> LiveEvent:
    name: str | None = None
    data: list[bytes] = []
    comment = b""
    for line in block.split(b"\n"):
        if line.startswith(b":"):
            comment = line[1:].strip()
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
    size = len(block) + 2
    if name is None and not data:
        return LiveEvent(None, comment.decode(), size)
    body = b"\n".join(data)
    return LiveEvent(name or "message", orjson.loads(body) if parse else None, size)


class LiveClient:
    """One console's feed, read on a thread: `open` returns the response's status and
    headers once they arrive (the body of a refusal is in `problem`)."""

    def __init__(
        self,
        http: httpx.Client,
        interval_ms: int | None = None,
        *,
        on_event: Callable[[LiveEvent], None] | None = None,
        parse: bool = True,
    ) -> None:
        """`on_event`: called with each event on the reading thread, instead of queueing it;
        `parse` False: leave the JSON unparsed (a benchmark counting bytes)."""
        self.http = http
        self.params = {} if interval_ms is None else {"interval_ms": str(interval_ms)}
        self.on_event = on_event
        self.parse = parse
        self.events: queue.Queue[LiveEvent | None] = queue.Queue()  # None: the stream ended
        self.status = 0
        self.headers: httpx.Headers = httpx.Headers()
        self.problem: object = None
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._opened = threading.Event()
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._read, name="live-client", daemon=True)

    def open(self, timeout_s: float = 10.0) -> int:
        """Start reading; the response's status once its headers arrived."""
        self._thread.start()
        if not self._opened.wait(timeout_s):
            msg = f"GET {LIVE_PATH} did not answer within {timeout_s} s"
            raise TimeoutError(msg)
        if self.error is not None and self.status == 0:
            raise self.error
        return self.status

    def _read(self) -> None:
        try:
            with self.http.stream("GET", LIVE_PATH, params=self.params) as response:
                self._response = response
                stream = response.extensions.get("network_stream")
                self._socket = None if stream is None else stream.get_extra_info("socket")
                self.status, self.headers = response.status_code, response.headers
                if response.status_code != 200:
                    self.problem = orjson.loads(response.read())
                    self._opened.set()
                    return
                self._opened.set()
                for event in parse_events(response.iter_raw(), parse=self.parse):
                    if self.on_event is not None:
                        self.on_event(event)
                    else:
                        self.events.put(event)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            if not self._stop.is_set():
                self.error = exc
        finally:
            self._opened.set()
            self.ended.set()
            self.events.put(None)

    def next_event(self, timeout_s: float = 10.0, *, pings: bool = False) -> LiveEvent | None:
        """The next event (pings too when asked); None once the stream has ended.
        TimeoutError when none comes within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                msg = f"no event within {timeout_s} s"
                raise TimeoutError(msg) from None
            if event is None:
                self.events.put(None)  # the end stays the end
                return None
            if event.name is not None or pings:
                return event

    def wait_for(
        self, check: Callable[[LiveEvent], bool], timeout_s: float = 10.0
    ) -> tuple[LiveEvent, list[LiveEvent]]:
        """The first event for which `check` holds, and every event before it."""
        deadline = time.monotonic() + timeout_s
        seen: list[LiveEvent] = []
        while True:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if event is None:
                msg = f"the stream ended before the event waited for; events: {seen[-5:]}"
                raise AssertionError(msg)
            if check(event):
                return event, seen
            seen.append(event)

    def close(self) -> None:
        """Stop reading and close the connection."""
        self._stop.set()
        if self._socket is not None:  # wakes the reading thread out of its recv
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
