"""The secured broker (deploy/mosquitto-secure.conf) with the files `pledgewatch broker-acl`
generates, against a real Mosquitto over TLS: who may log in, publish, read and take over."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devices.mqtt_source import Message, MqttSource
from engine.cli.main import main
from simulator.harness.broker import SECURE_CONF, SHIPPED_CONF, PrivateBroker

pytestmark = pytest.mark.mqtt

LOANS = [
    {"loan_id": "L-1", "vin": "LSVAB4182E2123456", "device_ids": ["A"], "zone_ids": []},
    {
        "loan_id": "L-2",
        "vin": "LSVAB4182E2123457",
        "device_ids": ["B", "alice:phone"],
        "zone_ids": [],
    },
    {
        "loan_id": "L-3",
        "vin": "LSVAB4182E2123458",
        "device_ids": ["C"],
        "zone_ids": [],
        "status": "closed",
    },
]


def openssl(*args: str | Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("the openssl command is needed to make test certificates", pytrace=False)
    subprocess.run([binary, *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    ca = ("-subj", "/CN=pledgewatch test CA", "-days", "2")
    openssl("req", "-x509", *ec, *ca, "-keyout", d / "ca.key", "-out", d / "ca.pem")
    server = ("-subj", "/CN=127.0.0.1")
    openssl("req", "-new", *ec, *server, "-keyout", d / "server.key", "-out", d / "server.csr")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", d / "ext", "-out", d / "server.pem",
    )  # fmt: skip
    return d


@dataclass
class Secure:
    """A private broker from the secure config, and the logins generated for it."""

    broker: PrivateBroker
    ca: Path
    passwords: dict[str, str]
    clients: list[mqtt.Client] = field(default_factory=list)

    def url(self, user: str) -> str:
        """The engine's view: an mqtts:// URL with this login."""
        return (
            f"mqtts://{user}:{self.passwords[user]}@127.0.0.1:{self.broker.port}?cafile={self.ca}"
        )


@pytest.fixture
def secure(tmp_path: Path, pki: Path) -> Iterator[Secure]:
    loans = tmp_path / "loans.json"
    loans.write_bytes(orjson.dumps(LOANS))
    auth = tmp_path / "auth"
    assert main(["broker-acl", "--loans", str(loans), "--out", str(auth)]) == 0
    creds = orjson.loads((auth / "credentials.json").read_bytes())
    broker = PrivateBroker(
        tmp_path,
        conf=SECURE_CONF,
        settings={
            "password_file": str(auth / "passwd"),
            "acl_file": str(auth / "acl"),
            "certfile": str(pki / "server.pem"),
            "keyfile": str(pki / "server.key"),
        },
    )
    broker.start()
    s = Secure(broker, pki / "ca.pem", {c["username"]: c["password"] for c in creds})
    try:
        yield s
    finally:
        for client in s.clients:
            client.disconnect()
        broker.stop()


@dataclass
class Device:
    """A paho client over TLS, driven from the test's thread (an SSL socket must not be
    read and written by two threads at once), and what happened to it."""

    client: mqtt.Client
    connack: list[ReasonCode] = field(default_factory=list)
    pubacks: dict[int, ReasonCode] = field(default_factory=dict)
    got: list[str] = field(default_factory=list)

    def pump(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        """Run the client's network loop for `seconds` or until `until()` holds."""
        deadline = time.monotonic() + seconds
        while not until() and time.monotonic() < deadline:
            if self.client.loop(0.02) != mqtt.MQTT_ERR_SUCCESS:
                return

    def publish(self, topic: str, payload: bytes = b'{"ts": 1}') -> str:
        """Publish at QoS 1 and return the broker's PUBACK reason."""
        mid = self.client.publish(topic, payload, qos=1).mid
        self.pump(5, lambda: mid in self.pubacks)
        return str(self.pubacks[mid])

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 and let the SUBACK come."""
        self.client.subscribe(topic, qos=1)
        self.pump(0.3)


def device(s: Secure, client_id: str, user: str | None, password: str | None = None) -> Device:
    """Connect as `user` (None: anonymously) and wait for the CONNACK."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )
    d = Device(client)
    client.tls_set(ca_certs=str(s.ca))
    if user is not None:
        client.username_pw_set(user, password if password is not None else s.passwords[user])
    client.on_connect = lambda _c, _u, _f, rc, _p: d.connack.append(rc)
    client.on_publish = lambda _c, _u, mid, rc, _p: d.pubacks.__setitem__(mid, rc)
    client.on_message = lambda _c, _u, m: d.got.append(m.topic)
    client.connect("127.0.0.1", s.broker.port)
    s.clients.append(client)
    d.pump(5, lambda: bool(d.connack))
    return d


def engine(s: Secure, client_id: str = "engine-1") -> MqttSource:
    source = MqttSource(s.url("pledgewatch-engine"), client_id)
    source.start()
    assert source.wait_connected(5)
    return source


def receive(source: MqttSource, n: int, timeout_s: float = 3.0) -> list[Message]:
    """What arrives within the timeout, or until `n` messages came."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        batch = source.get_batch(100, 0.1)
        got += batch
        source.ack(batch)
    return got


def test_an_anonymous_client_or_a_wrong_password_is_refused(secure: Secure) -> None:
    anonymous = device(secure, "anon", None)
    assert [str(rc) for rc in anonymous.connack] == ["Not authorized"]
    wrong = device(secure, "wrong", "A", "not-the-password")
    assert [str(rc) for rc in wrong.connack] == ["Not authorized"]
    closed_loan = device(secure, "c", "C", "any")  # C is on a closed loan: no login
    assert [str(rc) for rc in closed_loan.connack] == ["Not authorized"]
    plain = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="plain")
    plain_connack: list[ReasonCode] = []
    plain.on_connect = lambda _c, _u, _f, rc, _p: plain_connack.append(rc)
    plain.username_pw_set("A", secure.passwords["A"])
    plain.connect("127.0.0.1", secure.broker.port)  # TCP is accepted; MQTT in clear is not
    for _ in range(20):
        if plain.loop(0.05) != mqtt.MQTT_ERR_SUCCESS:
            break
    assert plain_connack == []
    assert not plain.is_connected()


def test_a_device_publishes_only_its_own_readings(secure: Secure) -> None:
    source = engine(secure)
    try:
        a = device(secure, "trk-a", "A")
        assert [str(rc) for rc in a.connack] == ["Success"]
        assert a.publish("telematics/A/gps") == "Success"
        assert a.publish("telematics/B/gps") == "Not authorized"
        assert a.publish("owntracks/alice/phone") == "Not authorized"
        phone = device(secure, "phone", "alice/phone")
        assert phone.publish("owntracks/alice/phone") == "Success"
        assert phone.publish("owntracks/alice/tablet") == "Not authorized"
        got = receive(source, 3)
        assert [m.topic for m in got] == ["telematics/A/gps", "owntracks/alice/phone"]
    finally:
        source.stop()


def test_a_device_cannot_read_other_cars(secure: Secure) -> None:
    source = engine(secure)
    try:
        a = device(secure, "trk-a", "A")
        a.subscribe("#")
        a.subscribe("telematics/B/gps")
        b = device(secure, "trk-b", "B")
        assert b.publish("telematics/B/gps") == "Success"
        assert [m.topic for m in receive(source, 1)] == ["telematics/B/gps"]
        a.pump(0.5)
        assert a.got == []
    finally:
        source.stop()


def test_a_device_with_the_engines_client_id_does_not_take_its_session(secure: Secure) -> None:
    """use_username_as_clientid: the session is named by the login, not the claimed id."""
    source = engine(secure, client_id="pledgewatch-engine")
    try:
        thief = device(secure, "pledgewatch-engine", "B")
        assert [str(rc) for rc in thief.connack] == ["Success"]
        thief.subscribe("telematics/#")
        a = device(secure, "trk-a", "A")
        for i in range(5):
            assert a.publish("telematics/A/gps", b'{"ts": %d}' % i) == "Success"
        assert len(receive(source, 5)) == 5
        assert source.connected
        assert source.reconnects == 0
        thief.pump(0.5)
        assert thief.got == []
    finally:
        source.stop()


def test_the_engine_reconnects_to_its_session_over_tls(secure: Secure) -> None:
    """Readings published while the engine is away wait in its persistent session."""
    source = engine(secure)
    source.stop()
    a = device(secure, "trk-a", "A")
    for i in range(3):
        assert a.publish("telematics/A/gps", b'{"ts": %d}' % i) == "Success"
    again = engine(secure)
    try:
        assert [m.payload for m in receive(again, 3)] == [b'{"ts": %d}' % i for i in range(3)]
    finally:
        again.stop()


def settings(conf: Path) -> dict[str, str]:
    """The `key value` lines of a Mosquitto config."""
    lines = re.findall(r"^(\w+) ?(.*)$", conf.read_text(), re.MULTILINE)
    return dict(lines)


def test_the_secure_config_keeps_the_delivery_settings() -> None:
    """Every setting of deploy/mosquitto.conf but its open listener is in the secure one."""
    shipped, secured = settings(SHIPPED_CONF), settings(SECURE_CONF)
    for key in ("listener", "allow_anonymous"):
        shipped.pop(key)
    assert {k: secured.get(k) for k in shipped} == shipped
    assert secured["allow_anonymous"] == "false"
    assert secured["use_username_as_clientid"] == "true"


def test_connect_properties_ask_for_a_maximum_packet_size() -> None:
    """The CONNECT the engine sends (checked on the packet paho builds, without a broker)."""
    sent: list[Properties] = []
    source = MqttSource("mqtt://127.0.0.1:1", "engine-p")

    def capture(*_args: object, properties: Properties, **_kw: object) -> None:
        sent.append(properties)

    source._client.connect = capture  # type: ignore[method-assign]
    source._connect()
    assert sent[0].MaximumPacketSize == 512 * 1024
    assert sent[0].ReceiveMaximum == 2000
