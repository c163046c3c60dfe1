"""The MQTT source against a real Mosquitto: batches, manual acks, redelivery, restarts,
oversized packets, malformed topics and session takeovers."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from devices.decode import decode
from devices.mqtt_process import MqttProcessSource
from devices.mqtt_source import MAX_PACKET_BYTES, BrokerAddress, Message, MqttSource
from devices.readings import RejectReason
from tests.brokers import REPO, Broker, broker  # noqa: F401  # the fixture

pytestmark = pytest.mark.mqtt

Source = MqttSource | MqttProcessSource
MakeSource = Callable[..., Source]


@pytest.fixture(params=["thread", "process"])
def make_source(request: pytest.FixtureRequest) -> Iterator[MakeSource]:
    """Either source: paho on a thread of this process, or in a child process."""
    made: list[Source] = []

    def make(url: str, client_id: str, **kw: int) -> Source:
        cls = MqttSource if request.param == "thread" else MqttProcessSource
        source = cls(url, client_id, **kw)
        made.append(source)
        return source

    yield make
    for source in made:
        source.stop()


MIB = 1024 * 1024


def publisher(b: Broker, client_id: str = "test-pub") -> mqtt.Client:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect("127.0.0.1", b.port)
    client.loop_start()
    return client


def publish(client: mqtt.Client, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        info = client.publish(f"telematics/d{i % 7}/gps", f'{{"ts": {i}}}', qos=1)
        info.wait_for_publish(5)


def drain(
    source: Source, until: int, timeout_s: float = 10.0, ack: bool = True, start: int = 0
) -> list[Message]:
    """Take messages until all of `start..until-1` arrived (redeliveries may repeat some)."""
    want = set(range(start, until))
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while not want <= ids(got) and time.monotonic() < deadline:
        batch = source.get_batch(200, 0.2)
        got += batch
        if ack:
            source.ack(batch)
    return got


def ids(messages: list[Message]) -> set[int]:
    return {int(m.payload.split(b":")[1].strip(b" }")) for m in messages}


def test_unacked_messages_come_back_after_a_crash(broker: Broker) -> None:  # noqa: F811
    first = MqttSource(broker.url, "engine-a")
    first.start()
    assert first.wait_connected(5)
    pub = publisher(broker)
    publish(pub, 600)
    acked = drain(first, 300, ack=False)[:300]
    first.ack(acked)
    time.sleep(0.3)  # let the acks go out
    first._acks.queue.clear()  # the crash: nothing else is acked
    first._stop.set()
    first._thread.join(5)  # type: ignore[union-attr]

    second = MqttSource(broker.url, "engine-a")
    second.start()
    assert second.wait_connected(5)
    rest = drain(second, 600, timeout_s=5)
    assert ids(acked) | ids(rest) == set(range(600))
    assert len(ids(rest) & ids(acked)) <= 50  # few acked ones come again
    second.stop()
    pub.loop_stop()


def test_a_killed_child_is_replaced_and_what_it_had_not_acked_comes_again(
    broker: Broker,  # noqa: F811
) -> None:
    source = MqttProcessSource(broker.url, "engine-e")
    source.start()
    assert source.wait_connected(10)
    pub = publisher(broker)
    publish(pub, 600)
    acked = drain(source, 300, ack=False)[:300]
    source.ack(acked)
    time.sleep(0.3)  # let the acks go out
    child = source.pid
    assert child is not None
    os.kill(child, signal.SIGKILL)
    rest = drain(source, 600, timeout_s=20)  # the next batches find the child gone
    assert source.restarts == 1
    assert source.pid not in {None, child}
    assert ids(acked) | ids(rest) == set(range(600))
    assert len(ids(rest) & ids(acked)) <= 50  # few acked ones come again
    source.stop()
    assert source.pid is None
    pub.loop_stop()


def test_a_dead_child_does_not_hold_the_engine_thread_through_the_backoff(
    broker: Broker,  # noqa: F811
) -> None:
    """The engine thread keeps its turns (commits, timers) while the child is replaced."""
    source = MqttProcessSource(broker.url, "engine-r", restart_base_s=4.0)  # backoff 2-4 s
    source.start()
    try:
        assert source.wait_connected(10)
        child = source.pid
        assert child is not None
        os.kill(child, signal.SIGKILL)
        turns: list[float] = []
        deadline = time.monotonic() + 20
        while source.pid in {None, child} and time.monotonic() < deadline:
            began = time.monotonic()
            assert source.get_batch(100, 0.05) == []
            turns.append(time.monotonic() - began)
        assert source.restarts == 1
        assert source.pid not in {None, child}, "the child was never replaced"
        assert len(turns) > 10  # the engine turned many times during the 2-4 s backoff
        assert max(turns) < 1.5, f"a turn waited {max(turns):.1f} s for the respawn"
        assert source.wait_connected(10)
    finally:
        source.stop()
    assert source.pid is None


def test_the_child_exits_when_its_engine_is_killed(broker: Broker) -> None:  # noqa: F811
    """A `kill -9` of the engine leaves no MQTT child behind to ack or hold the session."""
    code = (
        "import sys, time\n"
        "from devices.mqtt_process import MqttProcessSource\n"
        f"s = MqttProcessSource({broker.url!r}, 'engine-f')\n"
        "s.start()\n"
        "assert s.wait_connected(10)\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    engine = subprocess.Popen(  # our own interpreter and code
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO
    )
    assert engine.stdout is not None
    child = int(engine.stdout.readline())
    os.kill(engine.pid, signal.SIGKILL)
    engine.wait(5)
    engine.stdout.close()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = Path(f"/proc/{child}/stat").exists() and (
        Path(f"/proc/{child}/stat").read_text().split()[2] != "Z"
    )
    assert not alive, "the MQTT child outlived its engine"


def test_messages_published_while_the_engine_is_down_are_kept(
    broker: Broker,  # noqa: F811
    make_source: MakeSource,
) -> None:
    source = make_source(broker.url, "engine-b")
    source.start()
    assert source.wait_connected(5)
    source.stop()  # subscribed once: the broker now keeps a session for it
    pub = publisher(broker)
    publish(pub, 3000)  # over Mosquitto's default max_queued_messages of 1000
    again = make_source(broker.url, "engine-b")
    again.start()
    assert again.wait_connected(5)
    got = drain(again, 3000, timeout_s=15)
    assert ids(got) == set(range(3000))
    again.stop()
    pub.loop_stop()


def test_broker_restart_loses_nothing(broker: Broker, make_source: MakeSource) -> None:  # noqa: F811
    source = make_source(broker.url, "engine-c")
    source.start()
    assert source.wait_connected(5)
    pub = publisher(broker)
    publish(pub, 200)
    got = drain(source, 200)
    broker.restart()
    pub.loop_stop()
    pub = publisher(broker)
    assert source.wait_connected(10)
    time.sleep(0.5)
    publish(pub, 200, start=200)
    got += drain(source, 400, start=200)
    assert ids(got) == set(range(400))
    assert source.reconnects >= 1
    source.stop()
    pub.loop_stop()


def test_receive_maximum_lets_a_batching_consumer_take_thousands(
    broker: Broker,  # noqa: F811
    make_source: MakeSource,
) -> None:
    source = make_source(broker.url, "engine-d", receive_maximum=2000)
    source.start()
    assert source.wait_connected(5)
    pub = publisher(broker)
    publish(pub, 1500)
    time.sleep(0.5)
    batch = source.get_batch(1500, 2.0)  # nothing acked yet: all of them are in flight
    assert len(batch) >= 1000
    source.ack(batch)
    source.stop()
    pub.loop_stop()


def test_url_parsing() -> None:
    assert BrokerAddress.parse("mqtt://u:p@broker:1884") == BrokerAddress("broker", 1884, "u", "p")
    assert BrokerAddress.parse("mqtt://localhost").port == 1883
    with pytest.raises(ValueError, match="expected mqtt://"):
        BrokerAddress.parse("http://x")


def test_tls_url_parsing() -> None:
    assert BrokerAddress.parse("mqtts://e:p%40ss@broker?cafile=/etc/ca.pem") == BrokerAddress(
        "broker", 8883, "e", "p@ss", tls=True, cafile="/etc/ca.pem"
    )
    assert BrokerAddress.parse("mqtts://broker:9883") == BrokerAddress("broker", 9883, tls=True)
    with pytest.raises(ValueError, match="only mqtts:// takes"):
        BrokerAddress.parse("mqtt://broker?cafile=/etc/ca.pem")
    with pytest.raises(ValueError, match="unexpected certfile"):
        BrokerAddress.parse("mqtts://broker?certfile=/etc/c.pem")
    with pytest.raises(ValueError, match="cannot load the CA file"):
        MqttProcessSource("mqtts://broker?cafile=/nonexistent/ca.pem", "engine-t")
    with pytest.raises(ValueError, match="cannot load the CA file"):
        MqttSource("mqtts://broker?cafile=/nonexistent/ca.pem", "engine-t")


# issue 9: hardening


def peak_rss_kib(pid: int) -> int:
    """The high-water mark of a process's resident memory (VmHWM), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    msg = f"no VmHWM for process {pid}"
    raise AssertionError(msg)


def take_until(source: Source, want: bytes, timeout_s: float = 10.0) -> list[Message]:
    """Take and ack messages until one with payload `want` arrived."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while all(m.payload != want for m in got) and time.monotonic() < deadline:
        batch = source.get_batch(100, 0.2)
        got += batch
        source.ack(batch)
    return got


def test_the_shipped_broker_refuses_a_10_mib_payload_and_the_source_stays_up(
    broker: Broker,  # noqa: F811
    make_source: MakeSource,
) -> None:
    """deploy/mosquitto.conf's message_size_limit: the payload never enters the broker,
    and the tracker that sent it stays connected."""
    source = make_source(broker.url, "engine-big")
    source.start()
    assert source.wait_connected(5)
    pub = publisher(broker)
    pub.publish("telematics/d0/gps", b"x" * (10 * MIB), qos=1).wait_for_publish(10)
    pub.publish("telematics/d0/gps", b'{"ts": 1}', qos=1).wait_for_publish(5)
    got = take_until(source, b'{"ts": 1}')
    assert [m.payload for m in got] == [b'{"ts": 1}']
    assert source.connected
    assert source.reconnects == 0
    assert pub.is_connected()
    pub.loop_stop()


@pytest.fixture
def open_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker that forwards any size, like one we did not configure."""
    b = Broker(tmp_path, settings={"message_size_limit": "0", "max_packet_size": "268435455"})
    b.start()
    try:
        yield b
    finally:
        b.stop()


def test_the_source_never_receives_a_packet_over_its_maximum(
    open_broker: Broker, make_source: MakeSource
) -> None:
    """The CONNECT's Maximum Packet Size makes the broker drop 10 MiB payloads for us: the
    source stays connected, takes the next reading, and its memory does not grow by them."""
    source = make_source(open_broker.url, "engine-max")
    source.start()
    assert source.wait_connected(5)
    pid = source.pid if isinstance(source, MqttProcessSource) else None
    before = peak_rss_kib(pid) if pid is not None else 0
    pub = publisher(open_broker)
    for _ in range(30):
        pub.publish("telematics/d0/gps", b"x" * (10 * MIB), qos=1).wait_for_publish(10)
    pub.publish("telematics/d0/gps", b'{"ts": 1}', qos=1).wait_for_publish(5)
    got = take_until(source, b'{"ts": 1}')
    assert [len(m.payload) for m in got] == [9], "a packet over the maximum came through"
    assert max(len(m.payload) for m in got) < MAX_PACKET_BYTES
    assert source.connected
    assert source.reconnects == 0
    if pid is not None:  # the MQTT child: one 10 MiB message would raise its peak by 10 MiB
        grew_kib = peak_rss_kib(pid) - before
        assert grew_kib < 5 * 1024, f"the MQTT child's peak memory grew by {grew_kib} KiB"
    pub.loop_stop()


def test_a_topic_with_extra_levels_is_received_and_rejected_as_bad_topic(
    broker: Broker,  # noqa: F811
    make_source: MakeSource,
) -> None:
    """`telematics/#`: malformed native topics reach the decoder and are counted, not lost."""
    source = make_source(broker.url, "engine-topics")
    source.start()
    assert source.wait_connected(5)
    pub = publisher(broker)
    for topic in ("telematics/d1/b/gps", "telematics/d1", "telematics/d1/gps"):
        pub.publish(topic, b'{"ts": 1795940100000, "lat": 1, "lon": 2}', qos=1).wait_for_publish(5)
    got: list[Message] = []
    deadline = time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline:
        batch = source.get_batch(10, 0.2)
        got += batch
        source.ack(batch)
    assert [m.topic for m in got] == ["telematics/d1/b/gps", "telematics/d1", "telematics/d1/gps"]
    decoded = [decode(m.topic, m.payload, 1795940100000) for m in got]
    assert [r.reason for d in decoded for r in d.rejects] == [RejectReason.BAD_TOPIC] * 2
    assert [r.device_id for d in decoded for r in d.rejects] == ["d1", "d1"]
    assert "4 segments" in decoded[0].rejects[0].detail
    assert len(decoded[2].readings) == 1
    pub.loop_stop()


def test_a_second_client_with_our_client_id_is_reported(
    broker: Broker,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Mosquitto 2.0.11 closes a taken-over connection without saying why: the ping-pong
    of two engines with one client id shows as reconnects and a warning naming the id."""
    caplog.set_level(logging.WARNING, logger="devices.mqtt_source")
    first = MqttSource(broker.url, "engine-twin")
    second = MqttSource(broker.url, "engine-twin")
    first.start()
    assert first.wait_connected(5)
    second.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
            "probably uses our client id 'engine-twin'" in r.getMessage() for r in caplog.records
        ):
            time.sleep(0.1)
        assert any("probably uses our client id 'engine-twin'" in r.message for r in caplog.records)
        assert first.reconnects + second.reconnects >= 3
    finally:
        first.stop()
        second.stop()


def test_a_session_taken_over_disconnect_is_a_warning_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Brokers that send DISCONNECT "Session taken over" (MQTT v5, 0x8E) get it logged."""
    source = MqttSource("mqtt://127.0.0.1:1", "engine-taken")  # never started
    reason = ReasonCode(PacketTypes.DISCONNECT, identifier=0x8E)  # type: ignore[no-untyped-call]
    flags = mqtt.DisconnectFlags(is_disconnect_packet_from_server=True)
    with caplog.at_level(logging.WARNING, logger="devices.mqtt_source"):
        source._on_disconnect(source._client, None, flags, reason, None)
    assert source.takeovers == 1
    assert "session taken over" in caplog.text
    assert "'engine-taken'" in caplog.text
