"""The outbox agent resumes where the store is, not where Faust's committed offset is: a
commit that ran ahead of the store (how a worker's `kill -9` once lost alerts in CI) loses
nothing. Real tansu, real PostgreSQL, a real `pledgewatch worker` process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from alerts.model import Alert
from engine.distributed.records import alert_key, alert_record
from engine.distributed.settings import ALERTS
from simulator.harness.cluster_process import ClusterProcess
from tests.brokers import REPO, PrivateKafka, kafka
from tests.factories import alert
from tests.live import TOKEN
from tests.test_distributed import WORKER_ARGS, db_url

__all__ = ["db_url", "kafka"]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PARTITIONS = 4  # WORKER_ARGS' --partitions
GROUP = "pledgewatch"  # the workers' app id: their consumer group


def produce(kafka: PrivateKafka, alerts: Sequence[Alert]) -> dict[int, int]:
    """Each alert as the workers write it (one record per batch: tansu's end offsets are
    right then); the end offset of each partition written to."""

    async def run() -> dict[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        ends: dict[int, int] = {}
        try:
            for a in alerts:
                meta = await producer.send_and_wait(ALERTS, alert_record(a), key=alert_key(a))
                ends[meta.partition] = meta.offset + 1
        finally:
            await producer.stop()
        return ends

    return asyncio.run(run())


class AsFaust(RoundRobinPartitionAssignor):  # type: ignore[misc]  # aiokafka is untyped here
    """Round robin under the name of Faust's assignor: tansu keeps an empty group's protocol
    and lets in only members that offer it."""

    name = "faust"


def commit(kafka: PrivateKafka, offsets: dict[int, int]) -> None:
    """Commit the workers' group offsets of `pledgewatch.alerts`, as the only member of their
    group (tansu takes commits only from a member)."""

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            ALERTS,
            bootstrap_servers=kafka.bootstrap,
            group_id=GROUP,
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=2000,
            rebalance_timeout_ms=6000,
            partition_assignment_strategy=(AsFaust,),
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + 60
            while len(consumer.assignment()) < PARTITIONS:
                assert time.monotonic() < deadline, consumer.assignment()
                await consumer.getmany(timeout_ms=200)  # joins the group
            tps = {TopicPartition(ALERTS, p): o for p, o in offsets.items()}
            await consumer.commit(tps)
            for tp, offset in tps.items():
                assert await consumer.committed(tp) == offset
        finally:
            await consumer.stop()  # leaves the group

    asyncio.run(run())


def stored_ids(db_url: str) -> set[str]:
    with psycopg.connect(db_url) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM alerts")}


def wait_stored(db_url: str, want: set[str], worker: ClusterProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not want <= stored_ids(db_url):
        assert time.monotonic() < deadline, (
            sorted(want - stored_ids(db_url))[:5],
            worker.log_tail(5000),
        )
        time.sleep(0.2)


def test_a_committed_offset_ahead_of_the_store_loses_no_alert(
    kafka: PrivateKafka, db_url: str, tmp_path: Path
) -> None:
    worker = ClusterProcess.worker(
        kafka.url,
        db_url,
        tmp_path,
        token=TOKEN,
        name="worker-0",
        args=[*WORKER_ARGS, "--store", "memory://"],
        cwd=REPO,
    )
    try:
        worker.start()
        loans = [f"L-{n}" for n in range(8)]  # spread over the alerts partitions
        first = [alert(n, loan_id=loans[n % 8], device=f"trk-{n % 8}") for n in range(16)]
        produce(kafka, first)
        wait_stored(db_url, {a.id for a in first}, worker, 60)
        assert worker.terminate() == 0  # leaves the group: commits may be made for it now

        # While no worker runs, alerts arrive and the group's commit runs past them all: what
        # Faust's commit of an offset whose records the store lacks would leave behind.
        second = [alert(n, loan_id=loans[n % 8], device=f"trk-{n % 8}") for n in range(16, 40)]
        ends = produce(kafka, second)
        assert len(ends) == PARTITIONS, ends  # every partition has records past the store
        commit(kafka, ends)

        worker.start()
        wait_stored(db_url, {a.id for a in first + second}, worker, 60)
        assert stored_ids(db_url) == {a.id for a in first + second}
        log = worker.log_path.read_text()
        assert "the store has records up to" in log
        # and a quiet worker does not rewind for nothing: the next alerts go straight in
        third = [alert(n, loan_id=loans[n % 8], device=f"trk-{n % 8}") for n in range(40, 48)]
        produce(kafka, third)
        wait_stored(db_url, {a.id for a in third}, worker, 60)
        assert worker.metrics().value("pledgewatch_worker_records_ahead") == 0
    finally:
        worker.kill9()
