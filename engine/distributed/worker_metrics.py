"""A worker's `/metrics`: what it did, what its stages hold, and its lag per partition."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.distributed.offset_order import OffsetOrder
from engine.distributed.outputs import Outputs
from engine.distributed.partitions import Partitions
from engine.distributed.settings import LOAN_EVENTS, READINGS
from engine.runtime.metrics import counter_lines, gauge_lines, labelled_gauge_lines


@dataclass(slots=True)
class WorkerCounters:
    """What a worker did, for `/metrics`."""

    readings: int = 0  # reading records stepped
    loan_event_records: int = 0
    loan_events: int = 0  # in those records
    drained: int = 0  # alert records written to the outbox
    rejects: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    table_writes: int = 0
    bad_records: int = 0
    processed: dict[tuple[str, int], int] = field(default_factory=dict)  # last offset stepped


def worker_metric_lines(
    c: WorkerCounters,
    parts: Partitions,
    outputs: Outputs,
    order: OffsetOrder,
    fetch_wait_ms: int,
    lag: dict[str, int],
) -> list[str]:
    """The worker's metric lines: its counters, its stages', their records' order, its
    consumer's fetch wait (-1: unknown) and the records not yet stepped or stored per
    partition (`lag`, keyed topic/partition)."""
    totals: dict[str, int] = {}
    for stage in parts.devices.values():
        for stream, n in stage.pipeline.counters.readings.items():
            totals[str(stream)] = totals.get(str(stream), 0) + n
    return [
        *counter_lines(
            "pledgewatch_worker_records_total",
            "Records stepped.",
            "topic",
            {
                READINGS: c.readings,
                LOAN_EVENTS: c.loan_event_records,
            },
        ),
        *counter_lines(
            "pledgewatch_worker_loan_events_total",
            "Loan events sent to the per-loan stage, and stepped by it.",
            "way",
            {"sent": outputs.loan_events, "stepped": c.loan_events},
        ),
        *counter_lines("pledgewatch_readings_total", "Accepted readings.", "stream", totals),
        *counter_lines("pledgewatch_rejected_total", "Rejected input kept.", "reason", c.rejects),
        *gauge_lines(
            "pledgewatch_worker_alerts_produced", "Alert records produced.", outputs.alerts
        ),
        *gauge_lines(
            "pledgewatch_worker_alerts_drained", "Alerts written to the outbox.", c.drained
        ),
        *gauge_lines("pledgewatch_worker_checkpoints", "Checkpoints.", c.checkpoints),
        *gauge_lines("pledgewatch_worker_table_writes", "Table bucket writes.", c.table_writes),
        *gauge_lines(
            "pledgewatch_worker_bad_records", "Records no stage could read.", c.bad_records
        ),
        *gauge_lines(
            "pledgewatch_worker_records_ahead",
            "Records that came ahead of a stage's next one, left for after a seek.",
            order.ahead,
        ),
        *gauge_lines(
            "pledgewatch_worker_records_missing",
            "Records a stage never got: not in the log any more (retention) when it came to them.",
            order.missing,
        ),
        *gauge_lines(
            "pledgewatch_devices",
            "Devices held.",
            sum(len(s.pipeline.devices) for s in parts.devices.values()),
        ),
        *gauge_lines(
            "pledgewatch_worker_fetch_wait_ms", "Fetch wait (-1: unknown).", fetch_wait_ms
        ),
        *gauge_lines("pledgewatch_worker_fences", "Fences known.", len(parts.fences)),
        *gauge_lines("pledgewatch_worker_loans", "Loans known.", len(parts.loans)),
        *labelled_gauge_lines(
            "pledgewatch_worker_lag",
            "Records not yet stepped or stored, per partition (every topic a worker consumes).",
            "partition",
            lag,
        ),
    ]
