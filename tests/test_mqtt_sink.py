"""Alerts published to an MQTT topic (alerts.mqtt_sink) against a real private Mosquitto:
signed with user properties, in order per loan, retried while the broker is away, dead at
once when the broker's ACL refuses the topic; bad sink URLs are refused at registration."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alerts.address_policy import AddressPolicy, parse_allow
from alerts.dispatcher import Dispatcher
from alerts.outbox import Webhook
from alerts.retry import RetryPolicy
from alerts.signing import verify
from engine.api.problems import Problem
from engine.api.schemas import parse_webhook
from engine.store.port import Batch, Store
from engine.store.sqlite_store import SqliteStore
from simulator.harness.broker import SHIPPED_CONF
from tests.brokers import Broker, broker
from tests.factories import alert
from tests.test_broker_security import pki

__all__ = ["broker", "pki"]

SECRET = "whsec-mqtt"
TOPIC = "pledgewatch/alerts"
LOOPBACK = AddressPolicy(parse_allow("127.0.0.0/8"))  # the private brokers are local
FAST = RetryPolicy(base_s=0.05, cap_s=0.2, max_age_s=60.0, timeout_s=2.0)


@dataclass
class Received:
    """One alert as a subscriber saw it."""

    alert_id: str
    loan_id: str | None
    signed: bool
    retained: bool
    qos: int


@dataclass
class Subscriber:
    """A persistent-session subscriber (QoS 1) that checks each message's signature."""

    url: str
    topic: str = TOPIC
    got: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="sink-test-sub",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *_: c.subscribe(self.topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self.on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # queued for us while the broker restarts
        port = int(self.url.rsplit(":", 1)[1])
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10), "no SUBACK"

    def on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        user = dict(getattr(msg.properties, "UserProperty", []))
        doc = orjson.loads(msg.payload)
        assert doc["id"] == user["X-Pledgewatch-Id"]
        assert doc["type"] == user["X-Pledgewatch-Type"]
        ts = int(user["X-Pledgewatch-Timestamp"])
        signed = verify(SECRET, ts, msg.payload, user["X-Pledgewatch-Signature"], time.time())
        with self.lock:
            self.got.append(Received(doc["id"], doc["loan_id"], signed, msg.retain, msg.qos))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = SqliteStore(tmp_path / "pledgewatch.db")
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    sub = Subscriber(broker.url)
    yield sub
    sub.close()


def until(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def raise_alerts(store: Store, loans: dict[str, int], start: int = 0) -> list[tuple[str, str]]:
    """Commit alerts in turn over the loans (`loan id: how many`); (id, loan), raised order."""
    ids, n = [], start
    queues = dict(loans)
    while any(queues.values()):
        for loan, left in queues.items():
            if left:
                queues[loan] = left - 1
                n += 1
                a = alert(n, loan_id=loan, device=f"trk-{loan}")
                store.commit_batch(Batch(now_ms=int(time.time() * 1000), alerts=[a]))
                ids.append((a.id, loan))
    return ids


def by_loan(pairs: list[tuple[str, str | None]]) -> dict[str | None, list[str]]:
    order: dict[str | None, list[str]] = {}
    for alert_id, loan in pairs:
        order.setdefault(loan, []).append(alert_id)
    return order


def arrivals(sub: Subscriber) -> list[tuple[str, str | None]]:
    with sub.lock:
        return [(r.alert_id, r.loan_id) for r in sub.got]


def run(
    store: Store, policy: RetryPolicy = FAST, addresses: AddressPolicy = LOOPBACK
) -> Dispatcher:
    d = Dispatcher(store, policy, poll_s=0.05, addresses=addresses)
    d.start()
    return d


def test_alerts_reach_the_topic_signed_once_each_in_order_per_loan(
    store: Store, broker: Broker, subscriber: Subscriber
) -> None:
    store.put_webhook(Webhook("bus", f"{broker.url}/{TOPIC}", SECRET))
    raised = raise_alerts(store, {"L-1": 12, "L-2": 12, "L-3": 6})
    ids = [i for i, _ in raised]
    d = run(store)
    try:
        until(lambda: store.outbox_pending() == 0, "every delivery recorded")
        until(lambda: len(subscriber.got) >= len(ids), "every alert received")
    finally:
        d.stop()
    got = list(subscriber.got)
    assert sorted(r.alert_id for r in got) == sorted(ids)  # each once
    assert all(r.signed and not r.retained and r.qos == 1 for r in got)
    # each loan's alerts arrive in the order they were raised
    assert by_loan(arrivals(subscriber)) == by_loan(raised)
    assert d.counters.snapshot() == {"delivered": len(ids)}
    assert store.list_dead(None, 10).items == []


def test_while_the_broker_is_down_deliveries_are_retried_then_delivered(
    store: Store, broker: Broker, subscriber: Subscriber
) -> None:
    """First with a live connection (which the stop then cuts), then with none at all."""
    store.put_webhook(Webhook("bus", f"{broker.url}/{TOPIC}", SECRET))
    d = run(store)
    try:
        first = raise_alerts(store, {"L-1": 1, "L-2": 1})
        until(lambda: store.outbox_pending() == 0, "the first alerts delivered")
        broker.stop()
        raised = first + raise_alerts(store, {"L-1": 3, "L-2": 2}, start=2)
        ids = [i for i, _ in raised]

        def retried() -> bool:
            heads = store.due_deliveries("bus", 2**62, 10)
            return len(heads) == 2 and all(h.attempts >= 2 for h in heads)

        until(retried, "failed attempts on both loans' heads")
        heads = store.due_deliveries("bus", 2**62, 10)
        assert all("Connection refused" in (h.last_error or "") for h in heads), heads
        assert store.outbox_pending() == len(ids) - 2
        assert store.list_dead(None, 10).items == []
        broker.start()
        until(lambda: store.outbox_pending() == 0, "every delivery recorded after the restart")
        until(lambda: len(subscriber.got) >= len(ids), "every alert received", 20)
    finally:
        d.stop()
    got = list(subscriber.got)
    # QoS 1 is at least once: a message whose PUBACK the restarted broker never saw comes
    # again, with its id; each id once, in order per loan, counting first arrivals
    firsts = list(dict.fromkeys(arrivals(subscriber)))
    assert sorted(i for i, _ in firsts) == sorted(ids)
    assert by_loan(firsts) == by_loan(raised)
    assert all(r.signed for r in got)
    counts = d.counters.snapshot()
    assert counts["delivered"] == len(ids)
    assert counts["failed"] >= 2
    assert "dead" not in counts


def test_a_topic_the_broker_refuses_is_dead_at_once_and_the_loan_moves_on(
    store: Store, tmp_path: Path
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite pledgewatch/allowed/#\n")
    conf = tmp_path / "acl-template.conf"
    conf.write_text(SHIPPED_CONF.read_text() + f"\nacl_file {acl}\n")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    secured = Broker(workdir, conf=conf)
    secured.start()
    try:
        sub = Subscriber(secured.url, topic="pledgewatch/allowed/alerts")
        store.put_webhook(Webhook("denied", f"{secured.url}/pledgewatch/denied", SECRET))
        store.put_webhook(Webhook("allowed", f"{secured.url}/pledgewatch/allowed/alerts", SECRET))
        patient = RetryPolicy(base_s=30.0, cap_s=60.0, max_age_s=86_400.0, timeout_s=2.0)
        ids = [i for i, _ in raise_alerts(store, {"L-1": 3})]
        d = run(store, patient)
        try:
            until(lambda: store.outbox_pending() == 0, "every delivery recorded", 10)
            until(lambda: len(sub.got) >= len(ids), "the allowed sink's alerts")
        finally:
            d.stop()
            sub.close()
    finally:
        secured.stop()
    assert [r.alert_id for r in sub.got] == ids
    dead = store.list_dead(None, 10).items
    assert sorted(x.alert_id for x in dead) == sorted(ids)  # the queue moved on at once
    assert all(x.hook_id == "denied" and x.attempts == 1 for x in dead)
    assert all(x.last_error == "MQTT PUBACK refused: Not authorized (0x87)" for x in dead)
    assert d.counters.snapshot() == {"dead": 3, "delivered": 3}


def test_the_address_policy_is_checked_when_connecting(store: Store, broker: Broker) -> None:
    store.put_webhook(Webhook("bus", f"{broker.url}/{TOPIC}", SECRET))
    ids = [i for i, _ in raise_alerts(store, {"L-1": 2})]
    d = run(store, addresses=AddressPolicy())  # the default: loopback refused
    try:
        until(lambda: store.outbox_pending() == 0, "every delivery recorded")
    finally:
        d.stop()
    dead = store.list_dead(None, 10).items
    assert sorted(x.alert_id for x in dead) == sorted(ids)
    assert all("127.0.0.1 is a loopback address" in (x.last_error or "") for x in dead)
    assert AddressPolicy().check_url("mqtt://127.0.0.1/t") is not None  # and at registration
    assert LOOPBACK.check_url("mqtts://127.0.0.1/t") is None


def test_mqtts_verifies_the_broker_and_delivers(
    store: Store, tmp_path: Path, pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "tls-template.conf"
    tls = f"\ncertfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n"
    conf.write_text(SHIPPED_CONF.read_text() + tls)
    workdir = tmp_path / "broker"
    workdir.mkdir()
    secured = Broker(workdir, conf=conf)
    assert secured.url.startswith("mqtts://")
    secured.start()
    try:
        store.put_webhook(Webhook("tls", f"{secured.url}/{TOPIC}", SECRET))
        raise_alerts(store, {"L-1": 1})
        d = run(store)  # the test CA is not trusted yet: a retry, not dead
        try:
            until(lambda: d.counters.snapshot().get("failed", 0) >= 1, "a refused handshake")
            (head,) = store.due_deliveries("tls", 2**62, 10)
            assert "CERTIFICATE_VERIFY_FAILED" in (head.last_error or ""), head.last_error
            monkeypatch.setenv("SSL_CERT_FILE", str(pki / "ca.pem"))
            until(lambda: store.outbox_pending() == 0, "the delivery over TLS")
        finally:
            d.stop()
    finally:
        secured.stop()
    assert d.counters.snapshot()["delivered"] == 1
    assert store.list_dead(None, 10).items == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mqtt://broker.example", "must name the topic"),
        ("mqtt://broker.example/", "must name the topic"),
        ("mqtt://broker.example/alerts/+/x", "wildcard"),
        ("mqtts://broker.example:8883/alerts/#", "wildcard"),
        ("mqtt://broker.example/$SYS/x", "the broker's own"),
        ("mqtt://ops:hunter2@broker.example/alerts", "user:password@"),
        ("mqtt://broker.example/alerts?qos=2", "no ?query"),
        ("mqtt://broker.example:99999/alerts", "out of range"),
        ("mqtt:///alerts", "with a host"),
    ],
)
def test_bad_sink_urls_are_422_naming_url(url: str, why: str) -> None:
    with pytest.raises(Problem) as caught:
        parse_webhook("bus", {"url": url, "secret": "s"})
    assert caught.value.status == 422
    assert caught.value.errors[0].field == "url"
    assert why in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_good_sink_urls_parse() -> None:
    hook = parse_webhook("bus", {"url": "mqtts://broker.example/lender/alerts", "secret": "s"})
    assert hook.url == "mqtts://broker.example/lender/alerts"
