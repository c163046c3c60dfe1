"""How the distributed runtime reaches Kafka and lays out its topics and tables."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from aiokafka.partitioner import murmur2

READINGS = "pledgewatch.readings"  # keyed by device_id (DESIGN §9)
ALERTS = "pledgewatch.alerts"  # keyed by loan_id (DESIGN §9)
REJECTS = "pledgewatch.rejects"  # keyed by device_id, or the topic when it names none
LOAN_EVENTS = "pledgewatch.loan-events"  # partitioned by loan_id: the repartition by loan
CHANGES = "pledgewatch.changes"  # compacted: fences and loans, keyed fence:/loan: + id


def loan_partition(loan_id: str, partitions: int) -> int:
    """The `pledgewatch.loan-events` partition of a loan: Kafka's default partitioner on the
    loan id (murmur2), as a record keyed by it would land."""
    hashed: int = murmur2(loan_id.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def bootstrap_servers(url: str) -> str:
    """`kafka://host:port[,host:port...]` as aiokafka's bootstrap list; ValueError naming
    what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "kafka" or not parts.netloc or parts.path not in {"", "/"}:
        msg = f"--kafka-url {url[:100]!r}: expected kafka://HOST:PORT[,HOST:PORT...]"
        raise ValueError(msg)
    hosts = []
    for item in parts.netloc.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            msg = f"--kafka-url: {item!r} is not HOST:PORT"
            raise ValueError(msg)
        hosts.append(f"{host}:{int(port)}")
    return ",".join(hosts)


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """The cluster, the topics' shape and the workers' tables.

    `producer_batch_bytes`: aiokafka's batch size for the topics read up to their end offsets
    (the tables' changelogs, by Faust's recovery; `pledgewatch.changes`, by every worker at
    start). Apache Kafka and Redpanda want the default; tansu (the tests' broker) needs 1,
    since it reports the end offset of a batch of several records short and the reader then
    stops early (../shared/MEASUREMENTS.md). Loan events and alerts are always batched
    (`engine.distributed.outputs`): nothing reads their end offsets.
    """

    url: str = "kafka://127.0.0.1:9092"
    partitions: int = 8
    # the per-loan stage's partitions (None: `partitions`). 1 puts every loan on one worker:
    # risk-site discovery then sees every loan, as in the local engine; with more, each
    # loan partition discovers sites among its own loans only.
    loan_partitions: int | None = None
    replication: int = 1
    app_id: str = "pledgewatch"  # the consumer group and the tables' changelog prefix
    store: str = "memory://"  # or rocksdb:// (needs rocksdict) under `data_dir`
    data_dir: str = "pledgewatch-worker"
    producer_batch_bytes: int = 16384
    session_timeout_s: float = 6.0  # short: a restarted worker rejoins in seconds
    checkpoint_s: float = 5.0  # how often changed state is written and offsets committed
    max_batch: int = 1000
    max_wait_s: float = 0.05
    # how long a fetch may wait for records (None: Faust's 1500 ms). Apache Kafka answers a
    # fetch when records come; tansu holds it for the whole wait, a delay on every hop.
    fetch_wait_ms: int | None = None

    @property
    def loan_partition_count(self) -> int:
        """Partitions of `pledgewatch.loan-events` and of the loans table."""
        return self.loan_partitions or self.partitions

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers, `host:port,...`."""
        return bootstrap_servers(self.url)
