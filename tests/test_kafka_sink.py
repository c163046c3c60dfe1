"""Alerts produced to a Kafka topic (alerts.kafka_sink) against a real private Kafka-protocol
broker (tansu): signed record headers, keyed by loan, in order per loan, retried while the
cluster is away, refused by the address policy; bad sink URLs are refused at registration."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiokafka.errors as kerr
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from alerts.address_policy import AddressPolicy, AddressRefusedError, parse_allow
from alerts.kafka_sink import KafkaAddress, KafkaEndpoint, permanent, record_key
from alerts.outbox import Webhook
from alerts.signing import verify
from engine.api.problems import Problem
from engine.api.schemas import parse_webhook
from engine.store.port import Store
from engine.store.sqlite_store import SqliteStore
from simulator.harness.broker import free_port
from simulator.harness.kafka_broker import PrivateKafka
from tests.brokers import kafka
from tests.test_mqtt_sink import FAST, LOOPBACK, SECRET, by_loan, raise_alerts, run, until

__all__ = ["kafka"]

TOPIC = "pledgewatch.alerts"


@dataclass(frozen=True)
class Record:
    """One alert as a Kafka consumer saw it."""

    alert_id: str
    loan_id: str | None
    key: bytes
    partition: int
    signed: bool
    content_type: bytes


def read_topic(bootstrap: str, topic: str, want: int, timeout_s: float = 20.0) -> list[Record]:
    """Every record of `topic` from the start, until `want` came or the time is up; in the
    order of each partition (their interleaving is arbitrary)."""

    async def consume() -> list[Record]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        got: list[Record] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(got) < want and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, messages in sorted(batches.items(), key=lambda kv: kv[0].partition):
                    for m in messages:
                        headers = dict(m.headers)
                        doc = orjson.loads(m.value)
                        assert doc["id"] == headers["X-Pledgewatch-Id"].decode()
                        assert doc["type"] == headers["X-Pledgewatch-Type"].decode()
                        ts = int(headers["X-Pledgewatch-Timestamp"])
                        sig = headers["X-Pledgewatch-Signature"].decode()
                        signed = verify(SECRET, ts, m.value, sig, time.time())
                        got.append(
                            Record(
                                doc["id"],
                                doc["loan_id"],
                                m.key or b"",
                                tp.partition,
                                signed,
                                headers["content-type"],
                            )
                        )
        finally:
            await consumer.stop()
        return got

    return asyncio.run(consume())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = SqliteStore(tmp_path / "pledgewatch.db")
    s.migrate()
    yield s
    s.close()


def test_alerts_reach_the_topic_signed_keyed_by_loan_in_order_per_loan(
    store: Store, kafka: PrivateKafka
) -> None:
    store.put_webhook(Webhook("bus", f"{kafka.url}/{TOPIC}", SECRET))
    raised = raise_alerts(store, {"L-1": 12, "L-2": 12, "L-3": 6})
    ids = [i for i, _ in raised]
    d = run(store)
    try:
        until(lambda: store.outbox_pending() == 0, "every delivery recorded", 30)
    finally:
        d.stop()
    got = read_topic(kafka.bootstrap, TOPIC, len(ids))
    assert sorted(r.alert_id for r in got) == sorted(ids)  # each once
    assert all(r.signed and r.content_type == b"application/json" for r in got)
    assert all(r.key == (r.loan_id or "").encode() for r in got)
    partitions = {r.loan_id: {x.partition for x in got if x.loan_id == r.loan_id} for r in got}
    assert all(len(p) == 1 for p in partitions.values())  # one loan, one partition
    assert by_loan([(r.alert_id, r.loan_id) for r in got]) == by_loan(raised)
    assert d.counters.snapshot() == {"delivered": len(ids)}
    assert store.list_dead(None, 10).items == []


def test_while_the_cluster_is_away_deliveries_are_retried_then_delivered(
    store: Store, tmp_path: Path
) -> None:
    """No broker at first (every attempt fails and is retried), then one on that port."""
    port = free_port()
    late = PrivateKafka(tmp_path, port)
    store.put_webhook(Webhook("bus", f"{late.url}/{TOPIC}", SECRET))
    raised = raise_alerts(store, {"L-1": 3, "L-2": 2})
    ids = [i for i, _ in raised]
    d = run(store)
    try:

        def retried() -> bool:
            heads = store.due_deliveries("bus", 2**62, 10)
            return len(heads) == 2 and all(h.attempts >= 2 for h in heads)

        until(retried, "failed attempts on both loans' heads", 30)
        heads = store.due_deliveries("bus", 2**62, 10)
        assert all("cannot reach the Kafka cluster" in (h.last_error or "") for h in heads)
        assert store.outbox_pending() == len(ids)
        assert store.list_dead(None, 10).items == []
        late.start()
        until(lambda: store.outbox_pending() == 0, "every delivery once the broker is up", 40)
        got = read_topic(late.bootstrap, TOPIC, len(ids))
    finally:
        d.stop()
        late.stop()
    # at least once: an attempt that timed out while the cluster came up may have landed
    # too; each id once, in order per loan, counting first arrivals
    firsts = list(dict.fromkeys((r.alert_id, r.loan_id) for r in got))
    assert sorted(i for i, _ in firsts) == sorted(ids)
    assert by_loan(firsts) == by_loan(raised)
    counts = d.counters.snapshot()
    assert counts["delivered"] == len(ids)
    assert counts["failed"] >= 2
    assert "dead" not in counts


def test_the_address_policy_is_checked_when_connecting(store: Store, kafka: PrivateKafka) -> None:
    store.put_webhook(Webhook("bus", f"{kafka.url}/{TOPIC}", SECRET))
    ids = [i for i, _ in raise_alerts(store, {"L-1": 2})]
    d = run(store, addresses=AddressPolicy())  # the default: loopback refused
    try:
        until(lambda: store.outbox_pending() == 0, "every delivery recorded")
    finally:
        d.stop()
    dead = store.list_dead(None, 10).items
    assert sorted(x.alert_id for x in dead) == sorted(ids)
    assert all("127.0.0.1 is a loopback address" in (x.last_error or "") for x in dead)
    assert AddressPolicy().check_url("kafka://127.0.0.1/t") is not None  # and at registration
    assert LOOPBACK.check_url("kafkas://127.0.0.1/t") is None


def test_a_broker_the_metadata_names_passes_the_policy_too(tmp_path: Path) -> None:
    """The bootstrap address is allowed, but the cluster advertises a broker that is not:
    nothing is produced there, and the delivery is refused by the policy."""
    foreign = PrivateKafka(tmp_path, advertised_host="127.0.0.2")
    foreign.start()
    only_bootstrap = AddressPolicy(parse_allow("127.0.0.1/32"))
    endpoint = KafkaEndpoint(f"{foreign.url}/{TOPIC}", FAST.timeout_s, only_bootstrap)
    try:
        body = orjson.dumps({"id": "a-1", "type": "zone.exit", "loan_id": "L-9"})
        sent = {
            "X-Pledgewatch-Id": "a-1",
            "X-Pledgewatch-Type": "zone.exit",
            "X-Pledgewatch-Timestamp": "1",
            "X-Pledgewatch-Signature": "v1=00",
        }
        with pytest.raises(AddressRefusedError, match=r"127\.0\.0\.2 is outside"):
            endpoint.send(body, sent)
    finally:
        endpoint.close()
        foreign.stop()


def test_broker_refusals_are_permanent_and_outages_are_not() -> None:
    assert permanent(kerr.TopicAuthorizationFailedError())
    assert permanent(kerr.MessageSizeTooLargeError())
    assert permanent(kerr.PolicyViolationError())
    assert not permanent(kerr.KafkaConnectionError())
    assert not permanent(kerr.KafkaTimeoutError())
    assert not permanent(kerr.NotEnoughReplicasError())
    assert not permanent(kerr.UnknownTopicOrPartitionError())  # it may be created yet


def test_the_record_key_is_the_loan_else_the_tracker() -> None:
    assert record_key(b'{"id": "a", "loan_id": "L-1", "device_id": "d"}') == b"L-1"
    assert record_key(b'{"id": "a", "loan_id": null, "device_id": "d"}') == b"d"
    assert record_key(b'{"id": "a", "loan_id": null, "device_id": null}') == b"a"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("kafka://broker.example", "not a Kafka topic name"),
        ("kafka://broker.example/", "not a Kafka topic name"),
        ("kafka://broker.example/alerts/eu", "not a Kafka topic name"),
        ("kafka://broker.example/" + "x" * 250, "not a Kafka topic name"),
        ("kafkas://broker.example/..", "not a Kafka topic name"),
        ("kafka://ops:hunter2@broker.example/alerts", "user:password@"),
        ("kafka://broker.example/alerts?acks=1", "no ?query"),
        ("kafka://broker.example:99999/alerts", "out of range"),
        ("kafka:///alerts", "with a host"),
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
    hook = parse_webhook("bus", {"url": "kafkas://kafka-1.example/lender.alerts", "secret": "s"})
    assert hook.url == "kafkas://kafka-1.example/lender.alerts"
    address = KafkaAddress.parse(hook.url)
    assert (address.host, address.port, address.tls) == ("kafka-1.example", 9093, True)
    assert address.topic == "lender.alerts"
    assert KafkaAddress.parse("kafka://k:19092/a_b-c.d").port == 19092
