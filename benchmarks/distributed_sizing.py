"""The distributed benchmark's sizing table: workers, partitions, bridges and broker load for
fleets reporting every 30 s, derived from the figures measured on this machine.

Two cores cannot show scaling (the broker, the bridge and a worker share them; a second
worker is slower here, ../shared/MEASUREMENTS.md), so nothing here is measured at scale: each
line is arithmetic on one worker's and one bridge's measured rates and on the record and
row sizes the runs wrote, printed with the formula that made it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.common import fmt_value, table
from engine.distributed.buckets import BUCKETS

MB = 1e6
MAX_MESSAGE_BYTES = 1_048_588  # Kafka's default message.max.bytes (and Redpanda's ~1 MiB)


@dataclass(frozen=True, slots=True)
class Measured:
    """The per-unit figures the sizing is derived from."""

    worker_basis: str  # "cpu": per second of the worker's CPU; "wall": per second here
    worker_readings_per_s: float  # one worker, whole process, batching
    bridge_readings_per_s: float  # one bridge, MQTT -> Kafka
    reading_bytes: float  # key + value of a readings record
    loan_events_per_reading: float
    loan_event_records_per_reading: float  # a record holds a batch's events for a partition
    loan_event_bytes: float  # per event, in those records
    alerts_per_reading: float  # of this workload: its cars cross fence boundaries often
    alert_bytes: float
    row_bytes: dict[str, float]  # table bytes per car as stored (compressed), by space


@dataclass(frozen=True, slots=True)
class Assumptions:
    """The choices the arithmetic takes."""

    report_every_s: float = 30.0
    headroom: float = 0.5  # run workers and bridges at half their measured rate
    partitions_per_worker: int = 2  # room to add workers without changing partitions
    replication: int = 3  # production topics
    checkpoint_s: float = 5.0
    min_partitions: int = 8


def _pow2(n: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def size_fleet(cars: int, m: Measured, a: Assumptions) -> dict[str, Any]:
    """One fleet's workers, partitions, bridges and per-topic load."""
    readings_s = cars / a.report_every_s
    workers = math.ceil(readings_s / (m.worker_readings_per_s * a.headroom))
    bridges = math.ceil(readings_s / (m.bridge_readings_per_s * a.headroom))
    per_car = sum(m.row_bytes.values())
    biggest_row = max(m.row_bytes.values(), default=0.0)
    # A bucket holds cars / (partitions * BUCKETS) rows of each space; one value per bucket
    # must stay under the broker's message size limit, with half of it to spare.
    bucket_floor = cars * biggest_row / (BUCKETS * MAX_MESSAGE_BYTES * 0.5)
    partitions = _pow2(max(a.min_partitions, workers * a.partitions_per_worker, bucket_floor))
    buckets = partitions * BUCKETS
    reads_per_bucket = readings_s * a.checkpoint_s / buckets
    dirty = 1 - math.exp(-reads_per_bucket)  # share of buckets a checkpoint rewrites
    spaces = max(1, len(m.row_bytes))
    changelog_records_s = buckets * spaces * dirty / a.checkpoint_s
    changelog_bytes_s = cars * per_car * dirty / a.checkpoint_s
    topics = {
        "readings": (readings_s, readings_s * m.reading_bytes),
        "loan-events": (
            readings_s * m.loan_event_records_per_reading,
            readings_s * m.loan_events_per_reading * m.loan_event_bytes,
        ),
        "alerts": (
            readings_s * m.alerts_per_reading,
            readings_s * m.alerts_per_reading * m.alert_bytes,
        ),
        "changelogs": (changelog_records_s, changelog_bytes_s),
    }
    load = {}
    for name, (records_s, bytes_s) in topics.items():
        consumers = 0 if name == "changelogs" else 1  # changelogs are read only on recovery
        load[name] = {
            "records_per_s": round(records_s, 1),
            "mb_in_per_s": round(bytes_s / MB, 3),
            "mb_out_per_s": round(bytes_s * (consumers + a.replication - 1) / MB, 3),
        }
    return {
        "cars": cars,
        "readings_per_s": round(readings_s, 1),
        "workers": workers,
        "bridges": bridges,
        "partitions": partitions,
        "partitions_floor_for_bucket_size": round(bucket_floor, 1),
        "bucket_value_bytes": round(cars / buckets * biggest_row),
        "buckets_dirty_per_checkpoint": round(dirty, 4),
        "topics": load,
        "broker_records_in_per_s": round(sum(v[0] for v in topics.values()), 1),
        "broker_mb_in_per_s": round(sum(v["mb_in_per_s"] for v in load.values()), 3),
        "broker_mb_out_per_s": round(sum(v["mb_out_per_s"] for v in load.values()), 3),
    }


def sizing(fleets: Sequence[int], m: Measured, a: Assumptions) -> dict[str, Any]:
    """The sizing of every fleet, with the inputs and the formulas."""
    return {
        "derived_not_measured": (
            "2 cores cannot show scaling: these lines are arithmetic on one worker's and one "
            "bridge's measured rates and on the sizes of the records and rows they wrote"
        ),
        "measured": {
            "worker_readings_per_s": round(m.worker_readings_per_s, 1),
            "worker_basis": m.worker_basis,
            "bridge_readings_per_s": round(m.bridge_readings_per_s, 1),
            "reading_record_bytes": round(m.reading_bytes, 1),
            "loan_events_per_reading": round(m.loan_events_per_reading, 4),
            "loan_event_records_per_reading": round(m.loan_event_records_per_reading, 5),
            "loan_event_bytes": round(m.loan_event_bytes, 1),
            "alerts_per_reading": round(m.alerts_per_reading, 4),
            "alert_record_bytes": round(m.alert_bytes, 1),
            "table_bytes_per_car_stored": {k: round(v, 1) for k, v in m.row_bytes.items()},
        },
        "assumptions": {
            "report_every_s": a.report_every_s,
            "headroom": a.headroom,
            "partitions_per_worker": a.partitions_per_worker,
            "replication": a.replication,
            "checkpoint_s": a.checkpoint_s,
            "buckets_per_partition": BUCKETS,
            "max_message_bytes": MAX_MESSAGE_BYTES,
        },
        "formulas": FORMULAS,
        "fleets": [size_fleet(cars, m, a) for cars in fleets],
    }


FORMULAS = [
    "readings/s = cars / report_every_s",
    "workers = ceil(readings/s / (worker readings/s x headroom))",
    "bridges = ceil(readings/s / (bridge readings/s x headroom))",
    (
        "partitions = next power of 2 >= max(8, workers x partitions_per_worker, "
        "cars x largest row / (64 buckets x max_message_bytes x 0.5))"
    ),
    (
        "loan-event records/s = readings/s x records per reading (one per loan partition per "
        "batch); their bytes = readings/s x events per reading x bytes per event; alerts/s = "
        "readings/s x alerts per reading (this workload's share)"
    ),
    (
        "changelog bytes/s = cars x table bytes per car (as stored: zlib) x dirty / "
        "checkpoint_s, dirty = 1 - exp(-readings per bucket per checkpoint): a checkpoint "
        "rewrites a changed bucket whole"
    ),
    "MB out = MB in x (1 consumer group + replication - 1); changelogs: replication only",
]


def _mb(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def sizing_lines(doc: dict[str, Any]) -> list[str]:
    """The sizing as printed lines: the inputs, the formulas, one table of units and one of
    broker load."""
    m, a = doc["measured"], doc["assumptions"]
    lines = [
        "Sizing (DERIVED, not measured: " + doc["derived_not_measured"] + ")",
        f"  from: a worker {m['worker_readings_per_s']:,.0f} readings/s "
        f"({'per second of its own CPU' if m['worker_basis'] == 'cpu' else 'wall clock'}), "
        "a bridge (batched, as on Kafka) "
        f"{m['bridge_readings_per_s']:,.0f} readings/s; records: reading "
        f"{m['reading_record_bytes']:.0f} B, loan event {m['loan_event_bytes']:.0f} B "
        f"x {m['loan_events_per_reading']:.2f}/reading in "
        f"{m['loan_event_records_per_reading']:.4f} records/reading, alert "
        f"{m['alert_record_bytes']:.0f} B x {m['alerts_per_reading']:.3f}/reading; table bytes "
        "per car as stored "
        + ", ".join(f"{k} {v:.0f} B" for k, v in m["table_bytes_per_car_stored"].items()),
        (
            f"  assuming: a report every {a['report_every_s']:g} s, headroom {a['headroom']}, "
            f"{a['partitions_per_worker']} partitions per worker, replication {a['replication']}, "
            f"checkpoints every {a['checkpoint_s']:g} s, {a['buckets_per_partition']} buckets "
            "per partition and space"
        ),
        *("  " + f for f in doc["formulas"]),
        "",
    ]
    rows = [
        [
            f"{f['cars']:,}",
            fmt_value(round(f["readings_per_s"])),
            fmt_value(f["workers"]),
            fmt_value(f["bridges"]),
            fmt_value(f["partitions"]),
            f"{f['bucket_value_bytes'] / 1000:,.0f} kB",
            fmt_value(round(f["broker_records_in_per_s"])),
            _mb(f["broker_mb_in_per_s"]),
            _mb(f["broker_mb_out_per_s"]),
        ]
        for f in doc["fleets"]
    ]
    header = [
        "cars",
        "readings/s",
        "workers",
        "bridges",
        "partitions",
        "bucket",
        "records in/s",
        "MB/s in",
        "MB/s out",
    ]
    lines.append(table(header, rows))
    lines.append("")
    load_rows = []
    for f in doc["fleets"]:
        for topic, v in f["topics"].items():
            load_rows.append(
                [
                    f"{f['cars']:,}",
                    topic,
                    fmt_value(round(v["records_per_s"])),
                    _mb(v["mb_in_per_s"]),
                    _mb(v["mb_out_per_s"]),
                ]
            )
    lines.append(table(["cars", "topic", "records/s", "MB/s in", "MB/s out"], load_rows))
    return lines
