"""Route of `GET /v1/live`: the console's live feed as Server-Sent Events (DESIGN §9 "Console").

Role viewer or higher (the guard checks it like every `/v1` read). Query `interval_ms`
(default 1000, 200 to 10000): the least time between two `cars` events. Events, each
`event: NAME` and one line of JSON `data`:
- `snapshot` first: `{"now_ms", "cars": [Car, ...]}`, every device the engine holds a
  position for;
- `cars`: `{"now_ms", "cars": [...]}`, the devices whose position changed since this
  console's previous car event, latest per device; at most one per interval, none when
  nothing moved;
- `alert`: each new alert once committed, as an item of `GET /v1/alerts` shows it;
- `fences`: `{"version"}` after fences were put or deleted (the page refetches them);
- a comment `: ping` every `PING_S`.
A Car is `{"device_id", "lat", "lon", "ts_ms", "speed_kmh", "loan_id"}` (WGS84).

The engine's side is `engine.runtime.live_hub`: each batch costs it the cars it changed,
whatever the number of consoles. Here each console's coroutine wakes on its interval (on a
grid shared by every console of that interval, so that consoles in step share one `cars`
event's bytes) or when alerts or a fence change arrive, and writes what it finds. A console
that does not read its stream fills the socket, and its writer waits; once more alerts are
unsent than `--console-alert-buffer`, the stream is ended (and counted): the page
reconnects and starts from a snapshot. At most `--console-max-streams` feeds are open; one
more is a 503. When the engine stops, every feed ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated

import orjson
from fastapi import FastAPI, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from alerts.model import Alert
from engine.api.console_config import ConsoleConfig, ConsoleConfigError, parse_interval_ms
from engine.api.context import ApiContext
from engine.api.credentials import token_sha256
from engine.api.openapi import error_responses
from engine.api.principals import caller
from engine.api.problems import Problem, problem_response, validation
from engine.api.schemas import alert_json
from engine.runtime.live_hub import ALERT_LOG, Car, LiveHub, Subscription
from engine.store.console_types import ActorKind, AlertCase
from engine.store.port import StoredAlert, StoreError

_log = logging.getLogger(__name__)

LIVE_PATH = "/v1/live"
PING_S = 15.0
REAUTH_S = 60.0
_CARS_MEMO = 8  # `cars` events kept for the consoles in step (each up to the fleet's size)
EVENT_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"x-content-type-options", b"nosniff"),
]
_ENDED_SLOW: contextvars.ContextVar[bool] = contextvars.ContextVar("live_ended_slow", default=False)


def add_live_routes(app: FastAPI, api: ApiContext, console: ConsoleConfig) -> None:
    """Register the live feed route."""
    feeds = LiveFeeds(api.engine.feed, console)
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietSlowDrops) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(QuietSlowDrops())

    # In the OpenAPI document for clients to find; the schemathesis run leaves it out (a
    # stream that never ends looks to it like a request that hangs).
    @app.get(
        LIVE_PATH,
        summary="The console's live feed: cars, alerts and fence changes as Server-Sent Events",
        tags=["console"],
        response_class=Response,
        responses={
            200: {
                "description": "An endless `text/event-stream` (events described above).",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **error_responses(422, 503),
        },
    )
    async def live(
        request: Request,
        interval_ms: Annotated[
            str | None, Query(description="Least ms between two `cars` events, 200 to 10000.")
        ] = None,
    ) -> Response:
        """The live feed (the module's docstring)."""
        try:
            interval = parse_interval_ms(interval_ms, console.live_interval_ms)
        except ConsoleConfigError as exc:
            raise validation(str(exc), "interval_ms") from None
        return LiveStream(feeds, interval, _still_admitted(api, request))


def _still_admitted(api: ApiContext, request: Request) -> Callable[[], bool]:
    """Whether the caller's credential still holds (a blocking store read): an operator's
    session not ended, expired or deleted, a machine token not revoked. The API token of
    the command line holds while the engine runs."""
    who = caller(request)
    session = who.session_sha256
    if who.kind is ActorKind.OPERATOR and session is not None:
        return lambda: api.store.session_operator(session, api.engine.now_ms()) is not None
    if who.kind is ActorKind.TOKEN:
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        digest = token_sha256(token)
        return lambda: api.store.api_token_role(digest) is not None
    return lambda: True


class LiveFeeds:
    """The live feeds of one app, on its event loop: the hub's listener while any is open,
    and the `cars` events and alert bodies consoles in step share."""

    def __init__(self, hub: LiveHub, console: ConsoleConfig) -> None:
        self.hub = hub
        self.console = console
        self.open: set[LiveStream] = set()
        self._listener: tuple[asyncio.AbstractEventLoop, object] | None = None
        self._cars: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._alerts: OrderedDict[str, bytes] = OrderedDict()

    def opened(self, stream: LiveStream) -> None:
        """A stream starts: listen to the hub if this is the first."""
        self.open.add(stream)
        if self._listener is None:
            loop = asyncio.get_running_loop()

            def listener() -> None:  # on the engine's (or an API worker's) thread
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody to wake
                    loop.call_soon_threadsafe(self.wake)

            self.hub.add_listener(listener)
            self._listener = (loop, listener)

    def closed(self, stream: LiveStream) -> None:
        """A stream ended: stop listening after the last."""
        self.open.discard(stream)
        if not self.open and self._listener is not None:
            self.hub.remove_listener(self._listener[1])  # type: ignore[arg-type]  # the listener above
            self._listener = None

    def wake(self) -> None:
        """Alerts or a fence change arrived: wake every stream; end those too slow to take
        them while their writer waits on the socket."""
        for stream in list(self.open):
            if stream.sending and self.hub.overflowed(stream.sub):
                stream.drop_slow()
            stream.woken.set()

    def cars_event(self, since: int, until: int, cars: list[Car], now_ms: int) -> bytes:
        """The `cars` event of the changes in (since, until]; shared by consoles in step."""
        key = (since, until)
        data = self._cars.get(key)
        if data is None:
            data = event(b"cars", {"now_ms": now_ms, "cars": cars})
            self._cars[key] = data
            if len(self._cars) > _CARS_MEMO:
                self._cars.popitem(last=False)
        return data

    def alert_event(self, alert: Alert) -> bytes:
        """The `alert` event of a new alert: the item `GET /v1/alerts` has for it."""
        data = self._alerts.get(alert.id)
        if data is None:
            item = alert_json(StoredAlert(alert.to_json(), case=AlertCase()))
            data = event(b"alert", item)
            self._alerts[alert.id] = data
            if len(self._alerts) > ALERT_LOG:
                self._alerts.popitem(last=False)
        return data


def event(name: bytes, data: object) -> bytes:
    """One Server-Sent Event: its name and one line of JSON."""
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class LiveStream(Response):
    """One console's feed: a response that runs until the console goes away, is too slow,
    or the engine stops."""

    def __init__(
        self, feeds: LiveFeeds, interval_ms: int, admitted: Callable[[], bool] = lambda: True
    ) -> None:
        """`admitted`: whether the caller may still read (asked every `REAUTH_S`)."""
        super().__init__(status_code=200)
        self.feeds = feeds
        self.admitted = admitted
        self.interval_s = interval_ms / 1000
        self.woken = asyncio.Event()
        self.sending = False
        self.sub = Subscription(0, 0, 0, 1, ended=True)  # the real one once the stream starts
        self._writer: asyncio.Task[None] | None = None
        self._cut = False  # ended while its writer waited: the response stays incomplete

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Subscribe (or answer 503), then write until the end."""
        feeds = self.feeds
        started = feeds.hub.subscribe(feeds.console.max_streams, feeds.console.alert_buffer)
        if started is None:
            limit = feeds.console.max_streams
            detail = (
                f"{limit} live feeds are open, the most this engine serves "
                "(--console-max-streams); retry later or close another console"
            )
            problem = Problem(503, "too-many-streams", detail, headers={"Retry-After": "5"})
            await problem_response(problem, scope["path"])(scope, receive, send)
            return
        self.sub, cars = started
        feeds.opened(self)
        writer = asyncio.create_task(self._write(send, cars))
        watcher = asyncio.create_task(_until_disconnect(receive))
        self._writer = writer
        try:
            await asyncio.wait({writer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writer, watcher):
                task.cancel()
            ended = await asyncio.gather(writer, watcher, return_exceptions=True)
            for failure in ended:
                if isinstance(failure, Exception):
                    _log.error("a live feed failed", exc_info=failure)
            feeds.hub.unsubscribe(self.sub)
            feeds.closed(self)
            if self._cut:
                # uvicorn closes the connection of an incomplete response, and says so at
                # error level unless told (in this request's context) that it is on purpose.
                _ENDED_SLOW.set(True)

    def drop_slow(self) -> None:
        """End a stream whose writer waits on a console too slow to take its alerts."""
        if self._writer is not None and not self._writer.done():
            self._count_slow()
            self._cut = True
            self._writer.cancel()

    def _count_slow(self) -> None:
        if not self.sub.ended:
            self.feeds.hub.dropped_slow += 1
            self.sub.ended = True
            _log.warning(
                "a live feed was ended: its console stopped reading, and more than %d alerts "
                "(--console-alert-buffer) waited for it",
                self.sub.alert_limit,
            )

    async def _write(self, send: Send, cars: list[Car]) -> None:
        hub, feeds = self.feeds.hub, self.feeds
        loop = asyncio.get_running_loop()
        await self._send(
            send, {"type": "http.response.start", "status": 200, "headers": EVENT_STREAM_HEADERS}
        )
        snapshot = event(b"snapshot", {"now_ms": hub.now_ms(), "cars": cars})
        await self._send_events(send, snapshot, 1)
        del cars
        interval = self.interval_s
        next_cars = _next_tick(loop.time(), interval)
        next_ping = loop.time() + PING_S
        next_auth = loop.time() + REAUTH_S
        while not hub.closed:
            wait = min(next_cars, next_ping) - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self.woken.wait()
            self.woken.clear()
            if loop.time() >= next_auth:
                next_auth = loop.time() + REAUTH_S
                if not await self._still_admitted():
                    break
            alerts = hub.alerts_since(self.sub)
            if alerts is None:
                self._count_slow()
                break
            chunks = [feeds.alert_event(a) for a in alerts]
            version = hub.fences_version
            if version != self.sub.fences_version:
                self.sub.fences_version = version
                chunks.append(event(b"fences", {"version": version}))
            now = loop.time()
            if now >= next_cars:
                since, until, changed = hub.cars_since(self.sub)
                if changed:
                    chunks.append(feeds.cars_event(since, until, changed, hub.now_ms()))
                next_cars = _next_tick(now, interval)
            events = len(chunks)
            if now >= next_ping:
                chunks.append(b": ping\n\n")
                next_ping = now + PING_S
            if chunks:
                await self._send_events(send, b"".join(chunks), events)
        await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})

    async def _still_admitted(self) -> bool:
        """Whether the caller may still read; yes when the store cannot say now."""
        try:
            admitted = await run_in_threadpool(self.admitted)
        except StoreError as exc:
            _log.warning("a live feed's credential could not be checked again: %s", exc)
            return True
        if not admitted:
            _log.info("a live feed was ended: its session or token no longer holds")
        return admitted

    async def _send_events(self, send: Send, data: bytes, events: int) -> None:
        await self._send(send, {"type": "http.response.body", "body": data, "more_body": True})
        hub = self.feeds.hub
        hub.events_sent += events
        hub.bytes_sent += len(data)

    async def _send(self, send: Send, message: Message) -> None:
        self.sending = True
        try:
            await send(message)
        finally:
            self.sending = False


def _next_tick(now: float, interval: float) -> float:
    """The next multiple of `interval` after `now`: consoles of one interval wake together."""
    return (math.floor(now / interval) + 1) * interval


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class QuietSlowDrops(logging.Filter):
    """Leaves out uvicorn's "returned without completing response" for a live feed this
    module ended on purpose (its console was too slow)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for that one record."""
        return not (_ENDED_SLOW.get() and "without completing response" in record.getMessage())
