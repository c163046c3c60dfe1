"""MQTT input: paho-mqtt 2.x, MQTT v5, QoS 1, persistent session, manual acknowledgement.

A message is acknowledged to the broker only when the engine says its batch is committed
(DESIGN §6). The broker sends at most `receive_maximum` unacknowledged messages, so the
commit batch must stay below it (MEASUREMENTS.md: paho's default of 20 stalls a batching
consumer). The network runs on one thread of ours, which also sends the acks: paho is not
asked to write to its socket from two threads. After a reconnect the broker redelivers what
was not acked; acks of messages from an earlier connection are dropped (their packet ids
mean nothing on the new one), so those messages simply come again and the core's duplicate
detection absorbs them.

Hardening (issue 9): the CONNECT asks the broker never to send a packet over
`MAX_PACKET_BYTES`, so a tracker's 10 MiB payload is dropped by the broker instead of being
read into our memory; the subscription is wide (`telematics/#`), so a topic with extra
levels reaches the decoder and is counted as `bad_topic` instead of vanishing; a session
taken over by another client with our client id is logged as a warning, not only counted
as a reconnect.
"""

from __future__ import annotations

import collections
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from alerts.retry import backoff_s

_log = logging.getLogger(__name__)

TOPICS = ("telematics/#", "owntracks/+/+", "traccar/#")
"""The native and OwnTracks topics of DESIGN §2, and Traccar's MQTT forwarding
(`devices.inputs`). Native topics are taken at any depth, so a malformed one
(`telematics/a/b/gps`, `telematics/a`) is received and rejected as `bad_topic` rather than
never seen. OwnTracks is not: its apps publish events, waypoints and commands under
`owntracks/{user}/{device}/...`, which are not readings and not faults."""

MAX_PACKET_BYTES = 512 * 1024
"""The MQTT v5 Maximum Packet Size we send in CONNECT: the broker must not send us a larger
packet. Room for a 256 KiB payload (the decoder's limit, `devices.decode.MAX_PAYLOAD_BYTES`)
plus a topic of up to 64 KiB and properties, so a payload somewhat over the limit still
arrives and is counted as `too_large`. A bigger packet is dropped by the broker for us
("Dropping too large outgoing PUBLISH" in Mosquitto's log) and the connection stays up.
Mosquitto 2.0.11 leaks one slot of our Receive Maximum per packet so dropped, until we
reconnect: the shipped configs refuse such payloads at the door (`message_size_limit`)."""

SESSION_TAKEN_OVER = 0x8E
"""MQTT v5 DISCONNECT reason: another client connected with our client id."""

_LOSSES_WINDOW_S = 60.0
_LOSSES_SUSPECT = 3  # connection losses in the window that suggest a takeover ping-pong


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
    """Where the broker is and how to log in, parsed from
    `mqtt://[user[:password]@]host[:port]` or, over TLS,
    `mqtts://[user[:password]@]host[:port][?cafile=PATH]` (port 8883 by default; the
    broker's certificate and host name are verified against `cafile`, else the system's
    CAs). User and password are percent-decoded."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    cafile: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse an `mqtt://` or `mqtts://` URL; raise ValueError naming what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "tcp", "mqtts"} or not parts.hostname:
            msg = f"MQTT URL {url!r}: expected mqtt://host[:port] or mqtts://host[:port]"
            raise ValueError(msg)
        tls = parts.scheme == "mqtts"
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"cafile"})
        if unknown or (query and not tls):
            what = ", ".join(unknown) or "cafile"
            msg = f"MQTT URL {url!r}: unexpected {what}; only mqtts:// takes ?cafile=PATH"
            raise ValueError(msg)
        cafile = query["cafile"][-1] if "cafile" in query else None
        port = parts.port or (8883 if tls else 1883)
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(parts.hostname, port, username, password, tls, cafile or None)

    def configure(self, client: mqtt.Client) -> None:
        """Give a paho client this address's login and TLS settings; ValueError if the CA
        file cannot be loaded."""
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            try:
                client.tls_set(ca_certs=self.cafile)
            except (OSError, ssl.SSLError) as exc:
                msg = f"MQTT over TLS: cannot load the CA file {self.cafile!r} ({exc})"
                raise ValueError(msg) from exc


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
        self._ever_connected = False
        self._losses: collections.deque[float] = collections.deque()
        self.reconnects = 0
        self.takeovers = 0  # disconnects by the broker with reason "Session taken over"

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        self.address.configure(client)
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
                self._suspect_takeover()
                self._stop.wait(backoff_s(0))
        self._drain_acks()
        self._client.disconnect()

    def _connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho untyped
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.receive_maximum
        props.MaximumPacketSize = MAX_PACKET_BYTES
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

    def _suspect_takeover(self) -> None:
        """Warn when the connection keeps dropping: Mosquitto 2.0 closes a taken-over
        connection without the "Session taken over" DISCONNECT, so a second client with our
        client id shows only as a reconnect every few seconds."""
        now = time.monotonic()
        self._losses.append(now)
        while self._losses[0] < now - _LOSSES_WINDOW_S:
            self._losses.popleft()
        if len(self._losses) >= _LOSSES_SUSPECT:
            _log.warning(
                "MQTT connection to %s:%d lost %d times in %.0f s (%d reconnects so far): "
                "another client probably uses our client id %r and takes our session over, "
                "stealing its readings (or the network flaps); give every engine its own "
                "--client-id and the broker a per-client login (deploy/README.md)",
                self.address.host,
                self.address.port,
                len(self._losses),
                _LOSSES_WINDOW_S,
                self.reconnects,
                self.client_id,
            )
            self._losses.clear()

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
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            _log.error("MQTT broker refused the connection: %s", reason)
            return
        client.subscribe([(t, 1) for t in self.topics])
        if self._ever_connected and not flags.session_present:
            _log.warning(
                "MQTT broker %s:%d kept no session for client id %r: what was published "
                "while we were away is lost (a broker without persistence, an expired "
                "session, or another client with our id that started clean)",
                self.address.host,
                self.address.port,
                self.client_id,
            )
        self._ever_connected = True
        self._connected.set()
        _log.info(
            "MQTT connected to %s:%d as client id %r",
            self.address.host,
            self.address.port,
            self.client_id,
        )

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self._connected.clear()
        if reason.value == SESSION_TAKEN_OVER:
            self.takeovers += 1
            _log.warning(
                "MQTT session taken over: another client connected with our client id %r "
                "and now receives our readings; give every engine its own --client-id",
                self.client_id,
            )
        elif not self._stop.is_set():
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
