"""How the distributed runtime reaches Kafka and lays out its topics and tables."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

READINGS = "pledgewatch.readings"  # keyed by device_id (DESIGN §9)
ALERTS = "pledgewatch.alerts"  # keyed by loan_id (DESIGN §9)
REJECTS = "pledgewatch.rejects"  # keyed by device_id, or the topic when it names none
LOAN_EVENTS = "pledgewatch.loan-events"  # keyed by loan_id: the repartition by loan
CHANGES = "pledgewatch.changes"  # compacted: fences and loans, keyed fence:/loan: + id


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

    `producer_batch_bytes`: aiokafka's batch size. Apache Kafka and Redpanda want the
    default; tansu (the tests' broker) needs 1, since it reports a batch's end offset wrongly
    and table recovery then stops short (../shared/MEASUREMENTS.md).
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

    @property
    def loan_partition_count(self) -> int:
        """Partitions of `pledgewatch.loan-events` and of the loans table."""
        return self.loan_partitions or self.partitions

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers, `host:port,...`."""
        return bootstrap_servers(self.url)
