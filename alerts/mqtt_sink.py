"""Alerts published to an MQTT topic: a webhook whose URL is `mqtt://` or `mqtts://`.

`PUT /v1/webhooks/{id}` with `"url": "mqtt://broker.lender.example:1883/pledgewatch/alerts"`
makes a sink that shares everything with the HTTP webhooks (outbox, ids, retries, dead
letters, redelivery, per-loan order); only the last hop differs. Each alert is one PUBLISH,
QoS 1, not retained, to the URL's path as the topic, with the alert JSON exactly as a
webhook body is, and the signing headers as MQTT v5 user properties (`X-Pledgewatch-Id`,
`-Type`, `-Timestamp`, `-Signature`: the same HMAC, so `alerts.signing.verify` checks it).

Delivered means the broker's PUBACK came back with a success reason code within the
timeout. A PUBACK with a failure code (0x80 and up: not authorized, topic name invalid,
quota exceeded...) is permanent, like a 4xx: dead at once with the reason, and so is a
CONNACK that refuses the login (bad user name or password, not authorized, bad
authentication method): no retry changes the credentials. A timeout, a refused or lost
connection, a CONNACK that refuses us for another reason (server busy...): retried with the
usual backoff.

One paho-mqtt client (MQTT v5, clean start) per sink, connected on first use. The worker's
threads publish on it at once for different loans; a loan's next alert is published only
after the previous one's PUBACK was recorded (the dispatcher's rounds see to it). A client
whose connection was lost, or whose PUBACK timed out, is thrown away whole (its unacked
messages with it) and the next delivery connects afresh, so no stale resend from an old
session can overtake a loan's newer alert.

The broker's address passes `--webhook-allow` like an HTTP host: at registration, and at
each connect, to the very address that was checked (TLS still verifies the host name).
URLs with `user:password@` are refused: the login of the sink's broker comes from the sink
credentials file (`alerts.sink_credentials`, keyed by `mqtt[s]://host:port`), and without an
entry the client connects anonymously. `mqtts://` verifies the broker against the system's
CAs (`SSL_CERT_FILE` names a private CA); over plain `mqtt://` the password crosses the
network in the clear.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from alerts.address_policy import DEFAULT_PORTS, AddressPolicy
from alerts.broker_endpoint import BrokerEndpoint, LoginRefusedError
from alerts.sender import Answer
from alerts.sink_credentials import SinkCredentials

_log = logging.getLogger(__name__)

MQTT_SCHEMES = frozenset({"mqtt", "mqtts"})
SIGNED = (
    "X-Pledgewatch-Id",
    "X-Pledgewatch-Type",
    "X-Pledgewatch-Timestamp",
    "X-Pledgewatch-Signature",
)
"""The signing headers sent as user properties, in this order."""
LOGIN_REFUSALS = frozenset({0x86, 0x87, 0x8C})
"""CONNACK reason codes that refuse the login: bad user name or password, not authorized,
bad authentication method."""
KEEPALIVE_S = 60
MAX_INFLIGHT = 100  # more than a worker's threads ever have in flight


def topic_problem(topic: str) -> str | None:
    """None if alerts may be published to `topic`; else why not."""
    if not topic:
        return "the path must name the topic, e.g. mqtt://broker:1883/pledgewatch/alerts"
    if "+" in topic or "#" in topic:
        return f"the topic {topic[:100]!r} has a wildcard (+ or #); publish needs a plain topic"
    if topic.startswith("$"):
        return f"the topic {topic[:100]!r} starts with $, which is the broker's own"
    if "\x00" in topic or len(topic.encode("utf-8", "replace")) > 65535:
        return "the topic has a NUL character or is longer than 65535 bytes"
    return None


@dataclass(frozen=True, slots=True)
class SinkAddress:
    """Where an MQTT sink publishes: broker host and port, TLS or not, and the topic."""

    host: str
    port: int
    tls: bool
    topic: str

    @classmethod
    def parse(cls, url: str) -> SinkAddress:
        """`mqtt[s]://host[:port]/topic/path`; a ValueError says what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in MQTT_SCHEMES or not parts.hostname:
            msg = f"{url[:100]!r} is not an mqtt:// or mqtts:// URL with a host"
            raise ValueError(msg)
        if parts.username is not None or parts.password is not None:
            msg = (
                "an MQTT sink URL must not carry user:password@: the broker's login goes in "
                "the --sink-credentials file"
            )
            raise ValueError(msg)
        if "#" in url:  # urlsplit would take it for a fragment
            msg = "the topic has a wildcard (#); publish needs a plain topic"
            raise ValueError(msg)
        if parts.query or parts.fragment:
            msg = "an MQTT sink URL takes no ?query or #fragment: the path is the topic"
            raise ValueError(msg)
        port = parts.port or DEFAULT_PORTS[parts.scheme]  # a bad port raises ValueError
        topic = unquote(parts.path[1:])
        why = topic_problem(topic)
        if why is not None:
            raise ValueError(why)
        return cls(parts.hostname, port, parts.scheme == "mqtts", topic)


class _CheckedClient(mqtt.Client):
    """Connects only to an address the policy allows: the one it has just checked."""

    policy = AddressPolicy()

    def _create_socket_connection(self) -> socket.socket:
        checked = self.policy.resolve(self._host, self._port)
        return socket.create_connection((str(checked[0]), self._port), self._connect_timeout)

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        # paho's own leaves the socket open when the handshake fails (a refused certificate
        # would leak one per retry); the host name is always verified (tls_set's default).
        context = self._ssl_context
        if context is None or not context.check_hostname:
            tcp_sock.close()
            msg = "an mqtts:// sink verifies the broker's host name"
            raise ValueError(msg)
        try:
            ssl_sock = context.wrap_socket(
                tcp_sock, server_hostname=self._host, do_handshake_on_connect=False
            )
        except BaseException:
            tcp_sock.close()
            raise
        try:
            ssl_sock.settimeout(self._connect_timeout)
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        return ssl_sock


class _Session:
    """One connection of one client, with the PUBACKs it is waiting for. Thrown away whole
    once lost: the next delivery connects a new one."""

    def __init__(self, client: _CheckedClient) -> None:
        self.client = client
        self.connected = threading.Event()  # set on CONNACK, or on any end of the connection
        self.lost: str | None = None  # why the connection is unusable; None while it is fine
        self.refused: ReasonCode | None = None  # the CONNACK's reason if it refused us
        self._lock = threading.Lock()
        self._acks: dict[int, ReasonCode] = {}  # PUBACKs that came before their waiter
        self._waiters: dict[int, threading.Event] = {}
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.refused = reason
            self._end(f"the broker refused the connection: {reason} (0x{reason.value:02x})")
        self.connected.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._end(f"the connection to the broker was lost: {reason}")

    def _end(self, why: str) -> None:
        with self._lock:
            if self.lost is None:
                self.lost = why
            waiters, self._waiters = list(self._waiters.values()), {}
        self.connected.set()
        for event in waiters:
            event.set()

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: object,
        mid: int,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        # Called with paho's message lock held: take only ours, briefly, and call no paho.
        with self._lock:
            self._acks[mid] = reason
            event = self._waiters.pop(mid, None)
        if event is not None:
            event.set()

    def publish(self, topic: str, body: bytes, props: Properties, timeout_s: float) -> ReasonCode:
        """Publish at QoS 1; the PUBACK's reason code. OSError on a timeout or a lost
        connection (the session is then unusable)."""
        info = self.client.publish(topic, body, qos=1, retain=False, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._end(f"paho could not publish: {mqtt.error_string(info.rc)}")
            raise ConnectionError(self.lost)
        event = threading.Event()
        with self._lock:
            reason = self._acks.pop(info.mid, None)
            if reason is None and self.lost is None:
                self._waiters[info.mid] = event
        if reason is None and self.lost is None:
            event.wait(timeout_s)
            with self._lock:
                self._waiters.pop(info.mid, None)
                reason = self._acks.pop(info.mid, None)
        if reason is not None:
            return reason
        if self.lost is not None:
            raise ConnectionError(self.lost)
        self._end(f"no PUBACK within {timeout_s:g} s")
        msg = f"the broker sent no PUBACK within {timeout_s:g} s"
        raise TimeoutError(msg)

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self._end("closed")
        self.client.disconnect()
        self.client.loop_stop()


class MqttEndpoint(BrokerEndpoint[SinkAddress]):
    """Publishes one sink's alerts to its topic over one client; a `Sender`."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        policy: AddressPolicy | None = None,
        name: str = "sink",
        credentials: SinkCredentials | None = None,
    ) -> None:
        super().__init__(url, timeout_s, policy, name, SinkAddress.parse, credentials)
        self._session: _Session | None = None

    def send(self, body: bytes, sent: dict[str, str]) -> Answer:
        """Publish one alert and wait for its PUBACK (see the module docstring)."""
        address = self.parsed()
        try:
            session = self._connected(address)
        except LoginRefusedError as exc:
            return Answer(delivered=False, permanent=True, error=str(exc))
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho untyped
        props.PayloadFormatIndicator = 1
        props.ContentType = "application/json"
        props.UserProperty = [(key, sent[key]) for key in SIGNED]
        try:
            reason = session.publish(address.topic, body, props, self.timeout_s)
        except OSError:
            self._discard(session)
            raise
        if reason.is_failure:
            error = f"MQTT PUBACK refused: {reason} (0x{reason.value:02x})"
            return Answer(delivered=False, permanent=True, error=error)
        return Answer(delivered=True)

    def _connected(self, address: SinkAddress) -> _Session:
        """The live session, connecting a new one if there is none (OSError if that fails;
        AddressRefusedError if the policy refuses the broker's address)."""
        with self._lock:
            old = self._session
            if old is not None and old.lost is None:
                return old
            self._session = None
            if old is not None:
                old.stop()
            client = _CheckedClient(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=MQTTProtocolVersion.MQTTv5,
            )
            client.policy = self.policy
            client.connect_timeout = self.timeout_s
            client.max_inflight_messages_set(MAX_INFLIGHT)
            if address.tls:
                client.tls_set()  # the system's CAs; the host name is verified
            if self.login is not None:
                client.username_pw_set(self.login.username, self.login.password)
            session = _Session(client)
            client.connect(address.host, address.port, KEEPALIVE_S, clean_start=True)
            client.loop_start()
            if not session.connected.wait(self.timeout_s):
                session.stop()
                msg = f"the broker sent no CONNACK within {self.timeout_s:g} s"
                raise TimeoutError(msg)
            if session.lost is not None:
                why, refused = session.lost, session.refused
                session.stop()
                if refused is not None and refused.value in LOGIN_REFUSALS:
                    reason = f"{refused} (0x{refused.value:02x})"
                    raise self.login_refused("MQTT", reason)
                raise ConnectionError(why)
            self._session = session
            return session

    def _discard(self, session: _Session) -> None:
        with self._lock:
            if self._session is session:
                self._session = None
        session.stop()

    def close(self) -> None:
        """Disconnect."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.stop()
