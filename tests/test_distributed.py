"""The distributed runtime end to end: a real Kafka-protocol broker (tansu), a real Mosquitto,
real PostgreSQL, `pledgewatch bridge` and `pledgewatch worker` processes, a real webhook
receiver. The webhooks must carry exactly the alert ids of `pledgewatch replay` on the same
readings, whatever is killed or rebalanced mid-stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from simulator.harness.cluster_process import ClusterProcess
from tests.brokers import REPO, Broker, PrivateKafka, broker, kafka
from tests.live import TOKEN, Publisher, Receiver, receiver
from tests.test_e2e import HOME, assert_all_signed, fleet_stream, gps, setup_engine

__all__ = ["broker", "kafka", "receiver"]

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.slow]

PG = "postgresql://postgres@127.0.0.1:5432/test"
LAG = "pledgewatch_worker_lag"
# tansu miscounts a batch's end offset (../shared/MEASUREMENTS.md) and holds a fetch for its
# whole wait; short checkpoints, fetch waits and webhook retries keep the tests quick.
WORKER_ARGS = (
    "--partitions",
    "4",
    "--loan-partitions",
    "3",
    "--producer-batch-bytes",
    "1",
    "--checkpoint-s",
    "1",
    "--fetch-wait-ms",
    "100",
    "--webhook-timeout-s",
    "2",
    "--webhook-retry-base-s",
    "0.2",
)


@pytest.fixture
def db_url() -> Iterator[str]:
    schema = f"dist_{time.time_ns()}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


class Cluster:
    """Workers (the first serves the API and the dispatcher) and bridges, all stopped at
    the end of the test."""

    def __init__(
        self, kafka: PrivateKafka, broker: Broker, db_url: str, workdir: Path, store: str
    ) -> None:
        self.kafka, self.broker, self.db_url, self.workdir = kafka, broker, db_url, workdir
        self.store = store
        self.workers: list[ClusterProcess] = []
        self.bridges: list[ClusterProcess] = []

    def worker(self, *extra: str, wait: bool = True) -> ClusterProcess:
        """A worker (the first serves the API), started; `wait=False`: spawned only, for
        `ready` to wait for with the others (they start side by side)."""
        n = len(self.workers)
        w = ClusterProcess.worker(
            self.kafka.url,
            self.db_url,
            self.workdir,
            token=TOKEN,
            name=f"worker-{n}",
            http=n == 0,
            args=[*WORKER_ARGS, "--store", self.store, *extra],
            cwd=REPO,
        )
        self.workers.append(w)
        w.spawn()
        if wait:
            w.wait_ready()
        return w

    def ready(self) -> None:
        """Wait until every spawned worker and bridge is ready."""
        for p in (*self.workers, *self.bridges):
            p.wait_ready()

    def bridge(self, wait: bool = True) -> ClusterProcess:
        n = len(self.bridges)
        args = ["--kafka-url", self.kafka.url, "--mqtt-url", self.broker.url]
        b = ClusterProcess(
            "bridge",
            [*args, "--client-id", f"bridge-{n}", *WORKER_ARGS[:4]],  # topics as the workers'
            token=TOKEN,
            log_path=self.workdir / f"bridge-{n}.log",
            ready="MQTT connected",
            cwd=REPO,
        )
        self.bridges.append(b)
        b.spawn()
        if wait:
            b.wait_ready()
        return b

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.log_path.name}\n{p.log_tail(2500)}" for p in (*self.workers, *self.bridges)
        )

    def stop(self) -> None:
        for p in (*self.bridges, *self.workers):
            if p.running():
                p.kill9()


@pytest.fixture
def cluster(
    kafka: PrivateKafka,
    broker: Broker,
    db_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Cluster]:
    """A cluster whose workers keep their tables in memory (or as the test's `cluster`
    parameter says: `rocksdb://`)."""
    c = Cluster(kafka, broker, db_url, tmp_path, getattr(request, "param", "memory://"))
    try:
        yield c
    finally:
        c.stop()


def publish(broker: Broker, messages: list[tuple[str, dict[str, object]]], pause_s: float) -> None:
    pub = Publisher(broker)
    try:
        for topic, payload in messages:
            pub.send(topic, payload)
            time.sleep(pause_s)
    finally:
        pub.close()


def in_background(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def setup(cluster: Cluster, api: ClusterProcess, receiver: Receiver, n_cars: int) -> None:
    """The fence, the loans and the webhook through the API, then until every worker holds
    the fence and the loans: a worker steps readings against the fleet it has (a loaded
    machine can take seconds to follow the changes topic)."""
    setup_engine(api, receiver, n_cars)  # type: ignore[arg-type]  # has client()
    deadline = time.monotonic() + 60
    for w in cluster.workers:
        while True:
            m = w.metrics()
            fences, loans = (
                m.value("pledgewatch_worker_fences"),
                m.value("pledgewatch_worker_loans"),
            )
            if (fences, loans) == (1, n_cars):
                break
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.1)


def wait_ids(receiver: Receiver, want: set[str], cluster: Cluster, timeout_s: float = 90) -> None:
    ok = receiver.wait_for(lambda rs: {str(r.alert["id"]) for r in rs} >= want, timeout_s)
    got = set(receiver.ids())
    if not ok:
        for p in (*cluster.workers, *cluster.bridges):  # shown with the failure
            print(f"--- {p.log_path}\n{p.log_tail(200_000)}")
        for w in cluster.workers:
            if w.running():
                print(f"--- metrics of {w.log_path.name}\n{httpx.get(w.metrics_url).text}")
        by_device: dict[str, list[str]] = {}
        for r in receiver.received:
            by_device.setdefault(str(r.alert["device_id"]), []).append(str(r.alert["type"]))
        print(f"--- webhooks by device\n{sorted(by_device.items())}")
    assert ok, (len(got & want), len(want), sorted(got - want)[:5], cluster.logs())


def records(worker: ClusterProcess) -> float:
    return worker.metrics().value("pledgewatch_worker_records_total", topic="pledgewatch.readings")


def test_bridge_and_two_workers_send_the_replays_alerts(
    cluster: Cluster, broker: Broker, receiver: Receiver
) -> None:
    api = cluster.worker(wait=False)
    other = cluster.worker(wait=False)
    cluster.bridge(wait=False)
    cluster.ready()
    n_cars = 12
    setup(cluster, api, receiver, n_cars)
    messages, want = fleet_stream(n_cars)
    assert len(want) == 5 * n_cars
    publish(broker, messages, 0.002)
    wait_ids(receiver, want, cluster)
    assert set(receiver.ids()) == want  # nothing lost, nothing new
    assert_all_signed(receiver)
    # the loans' alerts went out in the order the replay raised them, loan by loan
    order = {}
    for r in receiver.received:
        order.setdefault(r.alert["loan_id"], []).append(r.alert["type"])
    for types in order.values():
        assert types.index("geofence.exit") < types.index("zone.left")
        assert types.index("zone.left") < types.index("zone.returned")
    # the API worker shows a device as the workers last checkpointed it, and finds it by
    # its last fix: inside a fence, and near a point
    with api.client() as http:
        device = http.get("/v1/devices/trk-0").json()
        inside = http.get("/v1/devices", params={"inside": "home"}).json()["items"]
        lat, lon = device["last_fix"]["lat"], device["last_fix"]["lon"]
        near = http.get("/v1/devices", params={"near": f"{lat},{lon},1"}).json()["items"]
    assert "home" in device["inside"], device
    assert "trk-0" in {d["device_id"] for d in inside}, inside
    assert ("trk-0", 0.0) in [(d["device_id"], d["distance_m"]) for d in near], near
    # Faust's fetch wait, set through its private attributes, is the one asked for
    assert api.metrics().value("pledgewatch_worker_fetch_wait_ms") == 100
    # both workers stepped readings: the partitions were split between them
    assert records(api) > 0, cluster.logs()
    assert records(other) > 0, cluster.logs()
    assert records(api) + records(other) >= len(messages)
    # every alert record is in the store: the lag gauge covers the alerts partitions too
    lags = {**api.metrics().by_label(LAG), **other.metrics().by_label(LAG)}
    alert_lags = {p: n for p, n in lags.items() if p.startswith("pledgewatch.alerts/")}
    assert alert_lags, lags
    assert set(alert_lags.values()) == {0}, alert_lags


@pytest.mark.parametrize("cluster", ["memory://", "rocksdb://"], indirect=True)
def test_a_worker_killed_mid_stream_loses_no_alert_and_makes_no_new_id(
    cluster: Cluster, broker: Broker, receiver: Receiver
) -> None:
    api = cluster.worker(wait=False)
    other = cluster.worker(wait=False)
    cluster.bridge(wait=False)
    cluster.ready()
    n_cars = 16
    setup(cluster, api, receiver, n_cars)
    messages, want = fleet_stream(n_cars)
    thread = in_background(lambda: publish(broker, messages, 0.01))
    time.sleep(1.0)  # mid-stream
    other.kill9()
    other.start()
    thread.join(60)
    wait_ids(receiver, want, cluster, 120)
    assert set(receiver.ids()) == want
    assert_all_signed(receiver)


def test_a_bridge_killed_mid_stream_loses_nothing(
    cluster: Cluster, broker: Broker, receiver: Receiver
) -> None:
    api = cluster.worker(wait=False)
    bridge = cluster.bridge(wait=False)
    cluster.ready()
    n_cars = 12
    setup(cluster, api, receiver, n_cars)
    messages, want = fleet_stream(n_cars)
    thread = in_background(lambda: publish(broker, messages, 0.01))
    time.sleep(0.6)
    bridge.kill9()
    time.sleep(0.5)
    bridge.start()  # its persistent session holds what it had not acknowledged
    thread.join(60)
    wait_ids(receiver, want, cluster)
    assert set(receiver.ids()) == want
    metrics = api.metrics()
    assert metrics.value("pledgewatch_readings_total", stream="gps") >= len(messages)


@pytest.mark.parametrize("cluster", ["memory://", "rocksdb://"], indirect=True)
def test_a_rebalance_keeps_device_and_loan_state(
    cluster: Cluster, broker: Broker, receiver: Receiver
) -> None:
    """Cars leave while one worker holds every partition; a second worker joins and takes
    half of them; the cars come back: their returns need the state the first one built."""
    api = cluster.worker(wait=False)
    cluster.bridge(wait=False)
    cluster.ready()
    n_cars = 12
    setup(cluster, api, receiver, n_cars)
    messages, want = fleet_stream(n_cars)
    half = len(messages) // 2
    publish(broker, messages[:half], 0.002)
    time.sleep(3.0)  # stepped and checkpointed
    other = cluster.worker()
    deadline = time.monotonic() + 60
    while "readings partition" not in other.log_tail(100_000):  # given partitions
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.2)
    publish(broker, messages[half:], 0.002)
    wait_ids(receiver, want, cluster)
    assert set(receiver.ids()) == want
    assert records(other) > 0, cluster.logs()


def test_a_silent_car_goes_offline_once_across_a_worker_kill(
    cluster: Cluster, broker: Broker, receiver: Receiver, tmp_path: Path
) -> None:
    """The offline timer is state, not a running clock: the worker holding a silent car is
    killed before it is due, and the car still goes offline once, with one id."""
    rules = tmp_path / "rules.json"
    rules.write_bytes(orjson.dumps({"offline_s": 8}))
    api = cluster.worker("--config", str(rules), wait=False)
    other = cluster.worker("--config", str(rules), wait=False)
    cluster.bridge(wait=False)
    cluster.ready()
    n_cars = 8
    setup(cluster, api, receiver, n_cars)
    messages = [
        (f"telematics/trk-{car}/gps", gps(k, HOME, seq=k))
        for car in range(n_cars)
        for k in range(2)
    ]
    publish(broker, messages, 0.005)
    time.sleep(2.5)  # stepped and checkpointed; offline is due ~8 s after arrival
    other.kill9()
    other.start()

    def offline(rs: list) -> dict[str, set[str]]:  # type: ignore[type-arg]
        found: dict[str, set[str]] = {}
        for r in rs:
            if r.alert["type"] == "device.offline":
                found.setdefault(str(r.alert["device_id"]), set()).add(str(r.alert["id"]))
        return found

    ok = receiver.wait_for(lambda rs: len(offline(rs)) == n_cars, 90)
    if not ok:
        for w in cluster.workers:  # shown with the failure
            print(f"--- metrics of {w.log_path.name}\n{httpx.get(w.metrics_url).text}")
        print(
            f"--- webhooks\n{[(r.alert['device_id'], r.alert['type']) for r in receiver.received]}"
        )
    silent = sorted({f"trk-{car}" for car in range(n_cars)} - set(offline(receiver.received)))
    assert ok, (silent, cluster.logs())
    time.sleep(3.0)  # a second, different offline alert would have come by now
    found = offline(receiver.received)
    assert sorted(found) == sorted(f"trk-{car}" for car in range(n_cars))
    assert all(len(ids) == 1 for ids in found.values()), found
