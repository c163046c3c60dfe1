"""The gateway's MQTT side: QoS 1 publishes whose PUBACKs resolve asyncio futures.

One paho-mqtt 2.x client (MQTT v5) runs its network on a thread of its own and reconnects
by itself. `publish` is called on the event loop and returns a future that the broker's
PUBACK resolves, so the gateway answers a terminal only after the broker holds what it
sent (DESIGN §9). PUBACKs cross back to the loop with `call_soon_threadsafe`, one wake-up
per burst rather than per ack.

Nothing is lost while the broker is away: paho keeps every unacknowledged QoS 1 publish
and sends it again, marked DUP, once it is connected again; until then the futures stay
pending and the terminals get no answer (they resend, as the standard has them do; the
engine drops the duplicates by (device, stream, ts)). The session is clean: a publisher
has nothing for the broker to keep, and paho's retry does not depend on it.

In flight: at most `max_inflight` publishes are on the wire unacknowledged, fewer if the
broker's CONNACK says a smaller Receive Maximum (paho ignores it); the rest wait in a queue
here and go out as PUBACKs come back. The window is kept here, not by paho, whose own
bookkeeping rescans every in-flight message on each PUBACK once messages queue behind a
full window (a saturated gateway spent half its CPU there). Packet ids are 16 bits and
paho refuses one still in use, so the caller keeps fewer than `MAX_PENDING` publishes
outstanding (the gateway stops reading its sockets long before).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devices.mqtt_source import BrokerAddress

_log = logging.getLogger(__name__)

MAX_PENDING: Final = 60_000
"""Publishes that may await their PUBACK at once: packet ids must not wrap onto live ones."""

RECONNECT_MIN_S: Final = 1
RECONNECT_MAX_S: Final = 8
UNREACHABLE_LOG_S: Final = 60.0  # at most one "broker unreachable" warning a minute


class PublishError(Exception):
    """The broker refused a publish (a failure reason code in its PUBACK), or paho did."""


class MqttSink:
    """Publishes at QoS 1 from the event loop; each future resolves on the broker's PUBACK."""

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        max_inflight: int = 1000,
        keepalive_s: int = 30,
    ) -> None:
        self.address = BrokerAddress.parse(url)
        self.client_id = client_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._futures: dict[int, asyncio.Future[None]] = {}  # on the wire, by packet id
        self._waiting: collections.deque[tuple[str, bytes, asyncio.Future[None]]] = (
            collections.deque()
        )  # behind a full window
        self.max_inflight = max_inflight
        self._window = max_inflight  # lowered to the broker's Receive Maximum on connect
        # PUBACKs from the network thread: (mid, failure or None); drained on the loop.
        self._acks: collections.deque[tuple[int, str | None]] = collections.deque()
        self._drain_scheduled = False
        self._connected = False
        self._ever_connected = False
        self.reconnects = 0
        self.refused = 0  # publishes the broker answered with a failure reason code
        self._idle: asyncio.Event | None = None
        self._closing = False
        self._unreachable_logged = -UNREACHABLE_LOG_S
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.address.configure(client)
        client.max_inflight_messages_set(0)  # the window is ours (see the module's docstring)
        client.max_queued_messages_set(0)  # unbounded in paho: the gateway bounds it
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        self._keepalive_s = keepalive_s

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up (CONNACK received, not lost since)."""
        return self._connected

    @property
    def pending(self) -> int:
        """Publishes awaiting their PUBACK (on the wire or waiting for room in the window)."""
        return len(self._futures) + len(self._waiting)

    def start(self) -> None:
        """Start connecting (on paho's thread); publishes made before it connects wait."""
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        self._client.connect_async(
            self.address.host, self.address.port, keepalive=self._keepalive_s, clean_start=True
        )
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Publish at QoS 1; the future resolves on the PUBACK (or fails: PublishError)."""
        loop = self._loop
        if loop is None or self._idle is None:
            msg = "MqttSink.publish before start(): call start() on the event loop first"
            raise RuntimeError(msg)
        future: asyncio.Future[None] = loop.create_future()
        self._idle.clear()
        if len(self._futures) < self._window:
            self._send(topic, payload, future)
        else:
            self._waiting.append((topic, payload, future))
        return future

    def _send(self, topic: str, payload: bytes, future: asyncio.Future[None]) -> None:
        info = self._client.publish(topic, payload, qos=1)
        # NO_CONN: paho keeps the message and sends it once connected.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            why = mqtt.error_string(info.rc)
            future.set_exception(PublishError(f"paho refused the publish: {why}"))
            return
        self._futures[info.mid] = future

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no publish awaits its PUBACK; False when `timeout_s` passed first."""
        if self._idle is None:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Disconnect and end the network thread; publishes still pending are cancelled."""
        await asyncio.to_thread(self._stop_client)
        self._drain_acks()
        for future in self._futures.values():
            future.cancel()
        for _, _, future in self._waiting:
            future.cancel()
        self._futures.clear()
        self._waiting.clear()

    def _stop_client(self) -> None:
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    # -- paho's network thread
    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if reason.is_failure:
            _log.error(
                "MQTT broker %s:%d refused the gateway's connection: %s",
                self.address.host,
                self.address.port,
                reason,
            )
            return
        receive_maximum = getattr(props, "ReceiveMaximum", 65535)
        self._window = max(1, min(self.max_inflight, receive_maximum))
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self._connected = True
        _log.info(
            "MQTT connected to %s:%d as %r", self.address.host, self.address.port, self.client_id
        )

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        now = time.monotonic()
        if now - self._unreachable_logged >= UNREACHABLE_LOG_S:
            self._unreachable_logged = now
            _log.warning(
                "MQTT broker %s:%d unreachable; retrying every %d s at most, terminals get "
                "no acks for their reports until it answers",
                self.address.host,
                self.address.port,
                RECONNECT_MAX_S,
            )

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        was = self._connected
        self._connected = False
        if was and not self._closing:
            _log.warning(
                "MQTT connection to %s:%d lost (%s): terminals get no acks until it is back",
                self.address.host,
                self.address.port,
                reason,
            )

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: object,
        mid: int,
        reason: ReasonCode,
        _props: Properties,
    ) -> None:
        self._acks.append((mid, str(reason) if reason.is_failure else None))
        # The loop clears the flag before draining, so an ack appended after its drain
        # always schedules another one.
        if not self._drain_scheduled and self._loop is not None:
            self._drain_scheduled = True
            self._loop.call_soon_threadsafe(self._drain_acks)

    # -- the event loop
    def _drain_acks(self) -> None:
        self._drain_scheduled = False
        acks = self._acks
        futures = self._futures
        while acks:
            mid, failure = acks.popleft()
            future = futures.pop(mid, None)
            if future is None or future.done():
                continue
            if failure is None:
                future.set_result(None)
            else:
                self.refused += 1
                future.set_exception(PublishError(f"the broker refused the publish: {failure}"))
        waiting = self._waiting
        while waiting and len(futures) < self._window:
            self._send(*waiting.popleft())
        if not futures and not waiting and self._idle is not None:
            self._idle.set()
