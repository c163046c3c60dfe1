"""The JT/T 808 gateway over real TCP sockets, publishing to a real (private) Mosquitto.

The terminals here send frames made by the byte-by-byte builders of `tests/test_jt808.py`
(written from the standard's layouts) and read the platform's answers with a parser of
their own. The gateway runs as `pledgewatch gateway jt808` (the harness's launcher), except
in one test that drives it in process with a publisher whose acks the test holds back.
"""

from __future__ import annotations

import asyncio
import calendar
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devices.jt808.auth_store import AuthStore, AuthStoreError
from devices.jt808.gateway import Gateway, GatewaySettings
from devices.jt808.mqtt_sink import PublishError
from simulator.harness.gateway_process import GatewayProcess
from tests.brokers import REPO, Broker, broker  # noqa: F401  # the fixture
from tests.factories import HOME, offset
from tests.live import SECRET, EngineProcess, Receiver, engines, receiver  # noqa: F401  # fixtures
from tests.test_e2e import HOME_FENCE, VINS
from tests.test_jt808 import (
    PHONE_2013,
    PHONE_2019,
    content_of,
    item,
    location_body,
    message,
    on_wire,
    xor_all,
)

DEVICE = "jt808-13800138000"
REGISTRATION_2013 = struct.pack(">HH5s20s7sB", 31, 100, b"PWTST", b"T-808", b"0000001", 0)
REGISTRATION_2019 = struct.pack(">HH11s30s30sB", 31, 100, b"PWTST", b"T-808", b"0000001", 0)
POSITIONED_ACC = 0b11
TIME = "240131200000"  # 2024-01-31 20:00:00 UTC+8
TIME_MS = (calendar.timegm((2024, 1, 31, 20, 0, 0)) - 8 * 3600) * 1000


@dataclass(frozen=True)
class Reply:
    """A platform message as a terminal reads it."""

    msg_id: int
    phone: str
    serial: int
    body: bytes

    @property
    def general(self) -> tuple[int, int, int]:
        """0x8001: (reply serial, reply id, result)."""
        assert self.msg_id == 0x8001, self
        return struct.unpack(">HHB", self.body)


def read_reply(content: bytes) -> Reply:
    """Header and body of unescaped frame content, checksum checked, either edition."""
    assert xor_all(content[:-1]) == content[-1], content.hex()
    msg_id, props = struct.unpack_from(">HH", content)
    at = 5 if props & 0x4000 else 4
    width = 10 if props & 0x4000 else 6
    phone = content[at : at + width].hex()
    (serial,) = struct.unpack_from(">H", content, at + width)
    body = content[at + width + 2 : -1]
    assert len(body) == props & 0x3FF
    return Reply(msg_id, phone, serial, body)


class Terminal:
    """A JT/T 808 terminal on a blocking socket."""

    def __init__(self, port: int, phone: str = PHONE_2013, edition: int = 2013) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.phone, self.edition = phone, edition
        self.serial = 0
        self.buffer = b""

    def send(self, msg_id: int, body: bytes) -> int:
        self.serial += 1
        frame = message(msg_id, body, phone=self.phone, serial=self.serial, edition=self.edition)
        self.sock.sendall(frame)
        return self.serial

    def reply(self, timeout_s: float = 10.0) -> Reply | None:
        """The next platform message, or None when none comes within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            frames = self.buffer.split(b"\x7e")
            whole = [f for f in frames[:-1] if f]
            if whole:
                raw = whole[0]
                self.buffer = self.buffer[self.buffer.index(raw) + len(raw) + 1 :]
                content = raw.replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")
                return read_reply(content)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                return None
            assert chunk, "the gateway closed the connection"
            self.buffer += chunk

    def answer(self, serial: int, timeout_s: float = 10.0) -> int:
        """The result of the 0x8001 answering our message `serial`."""
        reply = self.reply(timeout_s)
        assert reply is not None, f"no answer to serial {serial}"
        assert reply.phone == self.phone
        reply_serial, _, result = reply.general
        assert reply_serial == serial
        return result

    def register(self) -> str:
        body = REGISTRATION_2019 if self.edition == 2019 else REGISTRATION_2013
        serial = self.send(0x0100, body)
        reply = self.reply()
        assert reply is not None
        assert reply.msg_id == 0x8100
        assert struct.unpack_from(">HB", reply.body) == (serial, 0)
        return reply.body[3:].decode()

    def authenticate(self, code: str) -> int:
        raw = code.encode()
        if self.edition == 2019:
            body = bytes([len(raw)]) + raw + b"860000000000001" + b"1.0".ljust(20, b"\x00")
        else:
            body = raw
        return self.answer(self.send(0x0102, body))

    def close(self) -> None:
        self.sock.close()


class Subscriber:
    """Everything published under telematics/#, with the monotonic time it arrived.

    A persistent session (clean start off) on a fixed client id: what is published while it
    reconnects after a broker restart is kept for it."""

    def __init__(self, port: int) -> None:
        self.got: list[tuple[str, dict[str, object], float]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"jt808-test-sub-{port}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.reconnect_delay_set(1, 1)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe("telematics/#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.got.append((msg.topic, orjson.loads(msg.payload), time.monotonic()))
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout_s)

    def wait_count(self, n: int, timeout_s: float = 10.0) -> list[tuple[str, dict[str, object]]]:
        assert self.wait(lambda: len(self.got) >= n, timeout_s), self.got
        return [(t, p) for t, p, _ in self.got]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gateway(broker: Broker, tmp_path: Path) -> Iterator[GatewayProcess]:  # noqa: F811
    g = GatewayProcess(broker.url, tmp_path / "auth.json", tmp_path / "gateway.log", cwd=REPO)
    g.start()
    yield g
    if g.running():
        assert g.terminate() == 0, g.log_tail()


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:  # noqa: F811
    s = Subscriber(broker.port)
    yield s
    s.close()


def signed_in(gateway: GatewayProcess, phone: str = PHONE_2013, edition: int = 2013) -> Terminal:
    terminal = Terminal(gateway.port, phone, edition)
    assert terminal.authenticate(terminal.register()) == 0
    return terminal


def gps_expected(lat: float = 31.230416, lon: float = 121.473701, **extra: object) -> dict:
    return {
        "ts": TIME_MS,
        "lat": lat,
        "lon": lon,
        "speed_kmh": 65.3,
        "heading_deg": 270,
        "ignition": True,
        **extra,
    }


@pytest.mark.mqtt
def test_register_authenticate_report_and_the_ack_means_the_broker_has_it(
    gateway: GatewayProcess, subscriber: Subscriber
) -> None:
    t = Terminal(gateway.port)
    code = t.register()
    assert len(code) == 16
    assert int(code, 16) >= 0
    assert t.authenticate(code) == 0
    assert t.answer(t.send(0x0002, b"")) == 0
    items = item(0x01, struct.pack(">I", 123456)) + item(0x31, b"\x09")
    body = location_body(status=POSITIONED_ACC, speed=653, direction=270, time=TIME, items=items)
    assert t.answer(t.send(0x0200, body)) == 0
    gateway.kill9()  # at once: what the terminal saw acked must be in the broker already
    assert subscriber.wait_count(1) == [
        (f"telematics/{DEVICE}/gps", gps_expected(odometer_km=12345.6, sats=9))
    ]
    t.close()
    gateway.start()
    t = Terminal(gateway.port)
    assert t.authenticate(code) == 0
    assert t.answer(t.send(0x0200, body)) == 0
    assert t.answer(t.send(0x0900, b"\x01")) == 3  # unsupported
    assert t.answer(t.send(0x0200, b"\x00" * 10)) == 2  # malformed
    m = gateway.metrics()
    assert m.value("pledgewatch_jt808_readings_published_total", stream="gps") == 1
    assert m.value("pledgewatch_jt808_reports_acked_total") == 1
    assert m.value("pledgewatch_jt808_frames_total", msg_id="0x0200") == 2
    assert m.value("pledgewatch_jt808_rejected_total", reason="unsupported") == 1
    assert m.value("pledgewatch_jt808_rejected_total", reason="malformed") == 1
    assert m.value("pledgewatch_jt808_connections") == 1
    assert m.value("pledgewatch_jt808_publish_seconds_count") == 1
    assert subscriber.wait_count(2)[1] == subscriber.got[0][:2]
    t.close()


@pytest.mark.mqtt
def test_a_2019_terminal_of_the_same_sim_keeps_its_id_and_code_after_a_restart(
    gateway: GatewayProcess, subscriber: Subscriber
) -> None:
    old = Terminal(gateway.port)
    code = old.register()
    old.close()
    assert gateway.terminate() == 0
    saved = orjson.loads(gateway.state_file.read_bytes())["terminals"]
    assert set(saved) == {DEVICE}
    assert (saved[DEVICE]["code"], saved[DEVICE]["terminal_id"]) == (code, "0000001")
    assert gateway.state_file.stat().st_mode & 0o777 == 0o600
    gateway.start()
    new = Terminal(gateway.port, PHONE_2019, 2019)
    assert new.authenticate(code) == 0  # no registration needed: the code survived
    assert new.register() == code  # same SIM, same terminal id: the same code again
    body = location_body(status=POSITIONED_ACC, speed=653, direction=270, time=TIME)
    assert new.answer(new.send(0x0200, body)) == 0
    assert subscriber.wait_count(1) == [(f"telematics/{DEVICE}/gps", gps_expected())]
    stranger = Terminal(gateway.port)  # the same number from another terminal id
    serial = stranger.send(0x0100, REGISTRATION_2013.replace(b"0000001", b"9999999"))
    refused = stranger.reply()
    assert refused is not None
    assert (refused.msg_id, refused.body) == (0x8100, struct.pack(">HB", serial, 3))
    assert (
        gateway.metrics().value("pledgewatch_jt808_rejected_total", reason="already_registered")
        == 1
    )
    new.close()
    stranger.close()


@pytest.mark.mqtt
def test_wrong_codes_and_reports_before_authentication_are_refused(
    gateway: GatewayProcess, subscriber: Subscriber
) -> None:
    t = Terminal(gateway.port)
    body = location_body(time=TIME)
    assert t.answer(t.send(0x0200, body)) == 1  # not authenticated
    code = t.register()
    assert t.answer(t.send(0x0200, body)) == 1  # registered is not authenticated
    assert t.authenticate("0" * 16 if code != "0" * 16 else "1" * 16) == 1
    assert t.answer(t.send(0x0200, body)) == 1
    other = Terminal(gateway.port, "013800138001")
    assert other.authenticate(code) == 1  # another terminal's code
    assert t.authenticate(code) == 0
    t.sock.sendall(on_wire(content_of(0x0200, body, phone="013800138001", serial=9)))
    spoofed = t.reply()  # signed in as one terminal, reporting as another: refused
    assert spoofed is not None
    assert (spoofed.phone, spoofed.general) == ("013800138001", (9, 0x0200, 1))
    time.sleep(0.5)
    assert subscriber.got == []
    m = gateway.metrics()
    assert m.value("pledgewatch_jt808_rejected_total", reason="not_authenticated") == 4
    assert m.value("pledgewatch_jt808_rejected_total", reason="bad_auth_code") == 2
    t.close()
    other.close()


@pytest.mark.mqtt
def test_a_bad_checksum_is_answered_2_and_the_connection_stays_usable(
    gateway: GatewayProcess,
) -> None:
    t = signed_in(gateway)
    content = content_of(0x0002, b"", serial=77)
    wrong = content + bytes([xor_all(content) ^ 0xFF])
    t.sock.sendall(
        b"\x7e" + wrong.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02") + b"\x7e"
    )
    assert t.answer(77) == 2
    t.sock.sendall(b"\x7eHELLO\x7e\x7e\x01\x02\x7e")  # too short to be frames: dropped
    assert t.answer(t.send(0x0002, b"")) == 0
    m = gateway.metrics()
    assert m.value("pledgewatch_jt808_rejected_total", reason="bad_checksum") == 1
    assert m.value("pledgewatch_jt808_rejected_total", reason="garbage") == 2
    t.close()


@pytest.mark.mqtt
def test_a_batch_publishes_each_item_and_a_power_cut_publishes_status(
    gateway: GatewayProcess, subscriber: Subscriber
) -> None:
    t = signed_in(gateway)
    points = [offset(*HOME, 100 * k, 0) for k in range(3)]
    items = [
        location_body(
            status=POSITIONED_ACC,
            lat_e6=round(lat * 1e6),
            lon_e6=round(lon * 1e6),
            time=f"2401312000{k:02d}",
        )
        for k, (lat, lon) in enumerate(points)
    ]
    batch = struct.pack(">HB", 3, 0) + b"".join(struct.pack(">H", len(i)) + i for i in items)
    assert t.answer(t.send(0x0704, batch)) == 0
    got = subscriber.wait_count(3)
    assert [topic for topic, _ in got] == [f"telematics/{DEVICE}/gps"] * 3
    assert [p["ts"] for _, p in got] == [TIME_MS + 1000 * k for k in range(3)]
    assert [(p["lat"], p["lon"]) for _, p in got] == [
        (round(lat * 1e6) / 1e6, round(lon * 1e6) / 1e6) for lat, lon in points
    ]
    cut = location_body(alarm=1 << 8, status=POSITIONED_ACC, time="240131200100")
    assert t.answer(t.send(0x0200, cut)) == 0
    got = subscriber.wait_count(5)
    status = [p for topic, p in got if topic == f"telematics/{DEVICE}/status"]
    assert status == [{"ts": TIME_MS + 60_000, "ext_power": False, "tamper": False}]
    t.close()


@pytest.mark.mqtt
def test_no_ack_while_the_broker_is_down_and_the_ack_once_it_is_back(
    broker: Broker,  # noqa: F811
    gateway: GatewayProcess,
    subscriber: Subscriber,
) -> None:
    t = signed_in(gateway)
    broker.stop()
    assert gateway.health() == {"mqtt_connected": False, "connections": 1, "publishes_pending": 0}
    body = location_body(status=POSITIONED_ACC, speed=653, direction=270, time=TIME)
    serial = t.send(0x0200, body)
    assert t.reply(timeout_s=1.5) is None  # no PUBACK, no answer
    assert t.answer(t.send(0x0002, b"")) == 0  # the connection itself is alive
    broker.start()
    assert t.answer(serial, timeout_s=20) == 0
    assert subscriber.wait_count(1, timeout_s=10) == [(f"telematics/{DEVICE}/gps", gps_expected())]
    assert gateway.metrics().value("pledgewatch_jt808_mqtt_reconnects_total") == 1
    t.close()


def test_the_auth_store_saves_codes_before_giving_them_and_groups_its_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "auth.json"

    async def register_many() -> dict[str, str | None]:
        store = AuthStore(path)
        devices = [f"jt808-1380013{k:04d}" for k in range(200)]
        codes = await asyncio.gather(*(store.register(d, "T1") for d in devices))
        assert store.writes <= 3  # one write carries every registration waiting for it
        assert await store.register(devices[0], "T2") is None  # another terminal id
        await store.close()
        return dict(zip(devices, codes, strict=True))

    codes = asyncio.run(register_many())
    assert len(set(codes.values())) == 200
    assert path.stat().st_mode & 0o777 == 0o600
    again = AuthStore(path)
    assert all(again.check(d, str(c)) for d, c in codes.items())
    assert not again.check("jt808-13800130000", "0" * 16)
    assert not again.check("jt808-1", "")
    with pytest.raises(AuthStoreError, match="in use by another JT/T 808 gateway"):
        AuthStore(path)
    asyncio.run(again.close())
    path.write_text('{"codes": {}}')
    with pytest.raises(AuthStoreError, match="is not a JT/T 808 auth file"):
        AuthStore(path)
    path.write_text("{")
    with pytest.raises(AuthStoreError, match="is not JSON"):
        AuthStore(path)


class HeldPublisher:
    """A publisher whose PUBACKs the test gives: `ack(n)` resolves the n oldest."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self.connected = True

    @property
    def pending(self) -> int:
        return sum(not f.done() for _, _, f in self.sent)

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.sent.append((topic, payload, future))
        return future

    async def drain(self, timeout_s: float) -> bool:
        return True

    def ack(self, n: int, error: Exception | None = None) -> None:
        for _, _, f in [s for s in self.sent if not s[2].done()][:n]:
            f.set_result(None) if error is None else f.set_exception(error)


def test_acks_wait_for_pubacks_and_pending_publishes_stop_the_reading(tmp_path: Path) -> None:
    async def scenario() -> None:
        publisher = HeldPublisher()
        store = AuthStore(tmp_path / "auth.json")
        gw = Gateway(publisher, store, GatewaySettings(max_pending=4, summary_s=0))
        _, port = await gw.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def frame(timeout_s: float = 2.0) -> Reply:
            assert await asyncio.wait_for(reader.readuntil(b"\x7e"), timeout_s) == b"\x7e"
            raw = (await reader.readuntil(b"\x7e"))[:-1]
            return read_reply(raw.replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d"))

        async def results(n: int) -> list[int]:
            return [(await frame()).general[2] for _ in range(n)]

        async def nothing(seconds: float = 0.3) -> None:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readuntil(b"\x7e"), seconds)

        writer.write(message(0x0100, REGISTRATION_2013, serial=1) + b"\x7e")
        code = (await frame()).body[3:]
        writer.write(message(0x0102, code, serial=2) + b"\x7e")
        assert await results(1) == [0]
        body = location_body(time=TIME)
        writer.write(message(0x0200, body, serial=3) + b"\x7e")
        await nothing()  # published, not yet acked by the broker: no answer
        publisher.ack(1)
        assert await results(1) == [0]
        writer.write(b"".join(message(0x0200, body, serial=s) + b"\x7e" for s in range(4, 10)))
        await asyncio.sleep(0.2)
        assert publisher.pending == 6  # one chunk is read whole, then the reading stops
        writer.write(message(0x0002, b"", serial=10) + b"\x7e")
        await nothing()  # not read: even a heartbeat waits
        assert gw.counters.paused == 1
        publisher.ack(4)
        assert await results(5) == [0, 0, 0, 0, 0]  # half acked: reading resumes
        publisher.ack(1, PublishError("refused"))
        publisher.ack(1)
        assert sorted(await results(2)) == [0, 1]
        assert gw.counters.rejects["broker_refused"] == 1
        assert gw.counters.acked == 6
        writer.close()
        await gw.stop(1)
        await store.close()

    asyncio.run(scenario())


@pytest.mark.mqtt
@pytest.mark.slow
def test_a_terminal_leaving_its_zone_raises_zone_left_by_webhook(
    broker: Broker,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    engines: Callable[[str], EngineProcess],  # noqa: F811
    gateway: GatewayProcess,
    tmp_path: Path,
) -> None:
    engine = engines(f"sqlite:///{tmp_path}/pw.db")
    engine.start()
    with engine.client() as api:
        assert api.put("/v1/fences/home", json=HOME_FENCE).status_code in {200, 201}
        loan = {"vin": VINS[0], "device_ids": [DEVICE], "zone_ids": ["home"]}
        assert api.put("/v1/loans/L-J", json=loan).status_code in {200, 201}
        hook = {"url": receiver.url, "secret": SECRET}
        assert api.put("/v1/webhooks/ops", json=hook).status_code in {200, 201}
    time.sleep(0.5)  # the engine takes changes between batches
    t = signed_in(gateway)
    t0_s = int(time.time()) // 60 * 60 - 3 * 3600  # in the past: the future check passes
    far = offset(*HOME, 2000, 0)
    for k in range(10):
        lat, lon = HOME if k == 0 else far
        bcd = time.strftime("%y%m%d%H%M%S", time.gmtime(t0_s + 60 * k + 8 * 3600))
        body = location_body(
            status=POSITIONED_ACC,
            lat_e6=round(lat * 1e6),
            lon_e6=round(lon * 1e6),
            speed=400,
            time=bcd,
        )
        assert t.answer(t.send(0x0200, body)) == 0
    assert receiver.wait_for(lambda rs: any(r.alert["type"] == "zone.left" for r in rs), 20), (
        [r.alert["type"] for r in receiver.received],
        engine.log_tail(2000),
    )
    left = next(r.alert for r in receiver.received if r.alert["type"] == "zone.left")
    assert (left["device_id"], left["loan_id"], left["fence_id"]) == (DEVICE, "L-J", "home")
    assert all(r.signature_ok for r in receiver.received)
    t.close()
    assert engine.terminate() == 0
