"""The distributed benchmark's cluster: a private tansu per run, the fleet and the readings
written straight into its topics, what the topics hold afterwards, and the worker and bridge
processes (the harness's `ClusterProcess`) with their CPU.

Writing the fleet to `pledgewatch.changes` before a worker starts is how every run here
gives it fences and loans: a worker reads that topic whole before its agents start, so the
fleet is in place before the first reading, and the API plays no part in what is timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from alerts.kafka_sink import LoopThread
from benchmarks.common import REPO
from benchmarks.engine_workload import Msg
from devices.inputs import decode_message
from engine.distributed.buckets import current_buckets, parse_table_key, read_bucket
from engine.distributed.kafka_io import Record, ensure_topics
from engine.distributed.records import fence_change, loan_change, reading_record
from engine.distributed.settings import CHANGES, KafkaSettings
from geofence.fence import parse_fence
from lending.model import parse_loan
from simulator.harness.cluster_process import ClusterProcess
from simulator.harness.kafka_broker import PrivateKafka
from simulator.harness.procfs import proc_cpu_s, tree_cpu_s

TOKEN = "bench-token"  # noqa: S105  # a throwaway token for private workers on loopback
TANSU_BATCH_BYTES = 1
"""`--producer-batch-bytes` of every worker and bridge here: tansu miscounts a batch's end
offset (../shared/MEASUREMENTS.md), so they produce one record per batch, as the tests do."""
TANSU_FETCH_WAIT_MS = 100
"""The workers' `--fetch-wait-ms` here: tansu holds a fetch for its whole wait (Faust asks
1500 ms), Apache Kafka answers it as records come."""
TIMEOUT_S = 120.0


@contextlib.contextmanager
def private_kafka(work: Path) -> Iterator[PrivateKafka]:
    """A fresh tansu (memory storage: nothing survives it) for one run, stopped at the end."""
    work.mkdir(parents=True, exist_ok=True)
    kafka = PrivateKafka(work)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


def reading_records(messages: Sequence[Msg], at_ms: int) -> list[tuple[bytes, bytes]]:
    """The `pledgewatch.readings` records (key, value) of MQTT messages, decoded as the
    bridge decodes them with `at_ms` as their arrival; ValueError if any is refused."""
    out: list[tuple[bytes, bytes]] = []
    for m in messages:
        decoded = decode_message(m.topic, m.payload.encode(), at_ms)
        if decoded.rejects:
            msg = f"the decoder refused {m.topic}: {decoded.rejects[0].detail}"
            raise ValueError(msg)
        out += [(r.device_id.encode(), reading_record(r, at_ms)) for r in decoded.readings]
    return out


def fleet_changes(fences_path: Path, loans_path: Path | None) -> list[Record]:
    """The `pledgewatch.changes` records of a fleet's fences and loans, as the API writes them."""
    records: list[Record] = []
    for feature in orjson.loads(fences_path.read_bytes())["features"]:
        fence_id = str(feature["id"])
        records.append((CHANGES, *fence_change(fence_id, parse_fence(fence_id, feature))))
    loans = orjson.loads(loans_path.read_bytes()) if loans_path is not None else []
    records += [(CHANGES, *loan_change(parse_loan(str(d["loan_id"]), d))) for d in loans]
    return records


@dataclass(slots=True)
class TopicStats:
    """What one topic holds: records and their bytes (key + value, Kafka's own framing not
    counted), and for a table's changelog the size of the last value of each key."""

    topic: str
    records: int = 0
    key_bytes: int = 0
    value_bytes: int = 0
    last: dict[bytes, bytes] = field(default_factory=dict)
    values: list[bytes] = field(default_factory=list)  # kept when asked (the alerts)

    @property
    def mean_bytes(self) -> float:
        """Mean key + value bytes of a record."""
        return (self.key_bytes + self.value_bytes) / self.records if self.records else 0.0

    def as_json(self) -> dict[str, object]:
        """The counts as JSON (values and keys left out)."""
        return {
            "records": self.records,
            "key_bytes": self.key_bytes,
            "value_bytes": self.value_bytes,
            "mean_record_bytes": round(self.mean_bytes, 1),
            "keys": len(self.last),
        }


def row_sizes(stats: TopicStats) -> dict[str, dict[str, float]]:
    """A changelog's rows by space (`d` devices, `l` loan folds, `b` loan books, `s` risk-site
    cells): rows, bytes of all the rows (as JSON), of their bucket values as stored
    (compressed), and of the largest bucket value."""
    out: dict[str, dict[str, float]] = {}
    for key, value in current_buckets(stats.last).items():
        parsed = parse_table_key(key)
        if parsed is None or not value:
            continue
        rows = read_bucket(value)
        if not isinstance(rows, dict):
            continue
        space = out.setdefault(
            parsed[0], {"rows": 0, "bytes": 0, "stored_bytes": 0, "max_bucket_bytes": 0}
        )
        space["rows"] += len(rows)
        space["stored_bytes"] += len(value)
        space["bytes"] += sum(len(k) + len(orjson.dumps(v)) for k, v in rows.items())
        space["max_bucket_bytes"] = max(space["max_bucket_bytes"], len(value))
    return out


class KafkaProbe:
    """The benchmark's own aiokafka clients on a loop thread: produce, count, read back."""

    def __init__(self, kafka: PrivateKafka, partitions: int) -> None:
        self.settings = KafkaSettings(url=kafka.url, partitions=partitions)
        self.bootstrap = kafka.bootstrap
        self.loop = LoopThread("bench-kafka")
        self._consumer: AIOKafkaConsumer | None = None

    def close(self) -> None:
        """Stop the clients and the loop."""
        if self._consumer is not None:
            self.loop.run(self._consumer.stop(), TIMEOUT_S)
        self.loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def create_topics(self) -> None:
        """The runtime's topics, as a worker or bridge would make them."""
        self.loop.run(ensure_topics(self.settings), TIMEOUT_S)

    def produce(self, records: Sequence[Record], batch_bytes: int = 16384) -> float:
        """Produce records in order (acks=all) and wait for every ack; the seconds taken.
        Normal batching is fine for input nobody recovers a table from."""

        async def run() -> float:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=False,
                linger_ms=5,
                max_batch_size=batch_bytes,
            )
            await producer.start()
            started = time.perf_counter()
            try:
                pending = []
                for topic, key, value in records:
                    pending.append(await producer.send(topic, value, key=key))
                    if len(pending) >= 10_000:
                        await asyncio.gather(*pending)
                        pending = []
                await asyncio.gather(*pending)
            finally:
                await producer.stop()
            return time.perf_counter() - started

        return self.loop.run(run(), 900.0)

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    def end_total(self, topic: str) -> int:
        """The sum of the topic's end offsets over its partitions (0 if it does not exist)."""

        async def run() -> int:
            consumer = await self._client()
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await consumer._client.force_metadata_update()  # noqa: SLF001  # new topics
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            ends = await consumer.end_offsets(tps) if tps else {}
            return int(sum(ends.values()))

        return self.loop.run(run(), TIMEOUT_S)

    def follow(self, topic: str, want: int, timeout_s: float) -> float:
        """Read the topic from its start as records come until it has held `want`; the time
        (epoch s) the last one was read, or TimeoutError. Counting what is read, not end
        offsets: tansu reports a batch's end offset wrongly, so a batched producer's records
        (the bridge's, this benchmark's) leave the end offsets short of the records."""

        async def run() -> float:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
            )
            await consumer.start()
            try:
                tps = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                seen, deadline = 0, time.monotonic() + timeout_s
                while seen < want:
                    if time.monotonic() > deadline:
                        msg = (
                            f"{topic} held {seen} records after {timeout_s:.0f} s, {want} expected"
                        )
                        raise TimeoutError(msg)
                    batches = await consumer.getmany(timeout_ms=200)
                    seen += sum(len(ms) for ms in batches.values())
                return time.time()
            finally:
                await consumer.stop()

        return self.loop.run(run(), timeout_s + 30.0)

    def topics(self) -> list[str]:
        """Every topic of the cluster."""

        async def run() -> list[str]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                return sorted(await admin.list_topics())
            finally:
                await admin.close()

        return self.loop.run(run(), TIMEOUT_S)

    def read(self, topics: Sequence[str], keep_values: Sequence[str] = ()) -> dict[str, TopicStats]:
        """Read the topics whole, from their start until nothing more comes; the values of
        the `keep_values` topics are kept."""

        async def run() -> dict[str, TopicStats]:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                max_partition_fetch_bytes=8 << 20,
                fetch_max_bytes=64 << 20,
                fetch_max_wait_ms=200,
            )
            await consumer.start()
            stats = {t: TopicStats(t) for t in topics}
            try:
                tps = [
                    TopicPartition(t, p)
                    for t in topics
                    for p in sorted(consumer.partitions_for_topic(t) or ())
                ]
                if not tps:
                    return stats
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                ends = await consumer.end_offsets(tps)
                deadline = time.monotonic() + TIMEOUT_S
                quiet = 0
                # Past the end offsets, until 0.6 s bring nothing (they may be short).
                while quiet < 3:
                    if time.monotonic() > deadline:
                        msg = f"reading {topics}: still getting records after {TIMEOUT_S} s"
                        raise TimeoutError(msg)
                    batches = await consumer.getmany(timeout_ms=200)
                    behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                    quiet = 0 if batches or behind else quiet + 1
                    for tp, messages in batches.items():
                        st, keep = stats[tp.topic], tp.topic in keep_values
                        for m in messages:
                            key, value = m.key or b"", m.value or b""
                            st.records += 1
                            st.key_bytes += len(key)
                            st.value_bytes += len(value)
                            st.last[key] = value
                            if keep:
                                st.values.append(value)
            finally:
                await consumer.stop()
            return stats

        return self.loop.run(run(), 2 * TIMEOUT_S)


def worker(
    kafka: PrivateKafka,
    work: Path,
    name: str,
    *,
    partitions: int,
    checkpoint_s: float,
    store: str,
    lending: bool,
    http: bool = False,
    extra: Sequence[str] = (),
) -> ClusterProcess:
    """A `pledgewatch worker` on `kafka` with a SQLite store of its own in `work`, not started."""
    args = [
        "--partitions",
        str(partitions),
        "--producer-batch-bytes",
        str(TANSU_BATCH_BYTES),
        "--checkpoint-s",
        str(checkpoint_s),
        "--fetch-wait-ms",
        str(TANSU_FETCH_WAIT_MS),
        "--store",
        store,
        *([] if lending else ["--no-lending"]),
        *extra,
    ]
    return ClusterProcess.worker(
        kafka.url,
        f"sqlite:///{work / (name + '.db')}",
        work,
        token=TOKEN,
        name=name,
        http=http,
        args=args,
        cwd=REPO,
    )


def bridge(
    kafka: PrivateKafka,
    mqtt_url: str,
    work: Path,
    name: str,
    partitions: int,
    batch_bytes: int = TANSU_BATCH_BYTES,
) -> ClusterProcess:
    """A `pledgewatch bridge` from `mqtt_url` to `kafka` in a share group of its own (an
    earlier bridge's persistent session would take a share of the messages), not started."""
    args = [
        "--kafka-url",
        kafka.url,
        "--mqtt-url",
        mqtt_url,
        "--client-id",
        name,
        "--share-group",
        f"group-{name}",
        "--partitions",
        str(partitions),
        "--producer-batch-bytes",
        str(batch_bytes),
    ]
    return ClusterProcess(
        "bridge", args, token=TOKEN, log_path=work / f"{name}.log", ready="MQTT connected", cwd=REPO
    )


def process_cpu_s(process: ClusterProcess) -> float:
    """CPU seconds of a running worker or bridge (its process tree)."""
    if process.proc is None:
        return 0.0
    return tree_cpu_s(process.proc.pid)


def kafka_cpu_s(kafka: PrivateKafka) -> float:
    """CPU seconds of the private broker."""
    return proc_cpu_s(kafka.proc.pid) if kafka.proc is not None else 0.0
