"""MQTT input: paho-mqtt 2.x, MQTT v5, QoS 1, persistent session, manual acknowledgement.

A message is acknowledged to the broker only when the engine says its batch is committed
(DESIGN §6). The broker sends at most `receive_maximum` unacknowledged messages, so the
commit batch must stay below it (MEASUREMENTS.md: paho's default of 20 stalls a batching
consumer). The network runs on one thread of ours, which also sends the acks: paho is not
asked to write to its socket from two threads. After a reconnect the broker redelivers what
was not acked; acks of messages from an earlier connection are dropped (their packet ids
mean nothing on the new one), so those messages simply come again and the core's duplicate
detection absorbs them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from alerts.retry import backoff_s

_log = logging.getLogger(__name__)

TOPICS = ("telematics/+/+", "owntracks/+/+")
"""The native and OwnTracks topics of DESIGN §2."""


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message as received; `arrived_ms` is the wall clock at arrival."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    arrived_ms: int
    connection: int  # which connection delivered it: acks are only valid on that one


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker is, parsed from `mqtt://[user[:password]@]host[:port]`."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse an `mqtt://` URL; raise ValueError naming what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "tcp"} or not parts.hostname:
            msg = f"MQTT URL {url!r}: expected mqtt://host[:port]"
            raise ValueError(msg)
        return cls(parts.hostname, parts.port or 1883, parts.username, parts.password)


class MqttSource:
    """Subscribes, hands messages to the engine in batches, acks them when told to."""

    def __init__(
        self,
        url: str,
        client_id: str,
        topics: Sequence[str] = TOPICS,
        receive_maximum: int = 2000,
        session_expiry_s: int = 7 * 24 * 3600,
        keepalive_s: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.address = BrokerAddress.parse(url)
        self.client_id = client_id
        self.topics = tuple(topics)
        self.receive_maximum = receive_maximum
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self._clock = clock
        # Holds at most receive_maximum QoS 1 messages (the broker's limit); QoS 0 traffic
        # beyond that blocks the network thread, which is TCP backpressure to the broker.
        self._inbox: queue.Queue[Message] = queue.Queue(maxsize=max(receive_maximum, 1) * 2)
        self._acks: queue.Queue[tuple[int, int, int]] = queue.Queue()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._connection = 0
        self._thread: threading.Thread | None = None
        self._client = self._make_client()
        self.reconnects = 0

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        if self.address.username is not None:
            client.username_pw_set(self.address.username, self.address.password)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        return client

    # -- the engine's side
    def start(self) -> None:
        """Start the network thread; it connects, and reconnects with backoff and jitter."""
        self._thread = threading.Thread(target=self._run, name="mqtt-source", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected and subscribed, or the timeout passes."""
        return self._connected.wait(timeout_s)

    def get_batch(self, max_messages: int, max_wait_s: float) -> list[Message]:
        """Up to `max_messages` messages: waits at most `max_wait_s` for the first, then
        takes what is already there."""
        batch: list[Message] = []
        try:
            batch.append(self._inbox.get(timeout=max_wait_s))
        except queue.Empty:
            return batch
        while len(batch) < max_messages:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge committed messages (sent by the network thread, soon)."""
        self.ack_ids((m.connection, m.mid, m.qos) for m in messages)

    def ack_ids(self, acks: Iterable[tuple[int, int, int]]) -> None:
        """Acknowledge by `(connection, mid, qos)`; QoS 0 needs none and is skipped."""
        for connection, mid, qos in acks:
            if qos > 0:
                self._acks.put((connection, mid, qos))

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send the acks still queued, disconnect, and end the network thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        return self._connected.is_set()

    # -- the network thread
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                self._connect()
            except OSError as exc:
                delay = backoff_s(attempt)
                attempt += 1
                _log.warning(
                    "MQTT broker %s:%d unreachable (%s); retrying in %.1f s",
                    self.address.host,
                    self.address.port,
                    exc,
                    delay,
                )
                self._stop.wait(delay)
                continue
            attempt = 0
            self._pump()
            self._connected.clear()
            if not self._stop.is_set():
                self.reconnects += 1
                self._stop.wait(backoff_s(0))
        self._drain_acks()
        self._client.disconnect()

    def _connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho untyped
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.receive_maximum
        self._connection += 1
        self._client.connect(
            self.address.host,
            self.address.port,
            keepalive=self.keepalive_s,
            clean_start=False,
            properties=props,
        )

    def _pump(self) -> None:
        """Run the network until the connection drops or we are told to stop."""
        while not self._stop.is_set():
            self._drain_acks()
            rc = self._client.loop(timeout=0.02)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                _log.warning("MQTT connection lost (%s)", mqtt.error_string(rc))
                return

    def _drain_acks(self) -> None:
        while True:
            try:
                connection, mid, qos = self._acks.get_nowait()
            except queue.Empty:
                return
            if connection == self._connection and self._connected.is_set():
                self._client.ack(mid, qos)

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            _log.error("MQTT broker refused the connection: %s", reason)
            return
        client.subscribe([(t, 1) for t in self.topics])
        self._connected.set()
        _log.info("MQTT connected to %s:%d", self.address.host, self.address.port)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            _log.warning("MQTT disconnected: %s", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        arrived = Message(
            msg.topic,
            bytes(msg.payload),
            msg.qos,
            msg.mid,
            int(self._clock() * 1000),
            self._connection,
        )
        while not self._stop.is_set():
            try:
                self._inbox.put(arrived, timeout=0.5)
            except queue.Full:
                continue  # the engine is behind: hold the socket (backpressure)
            return
