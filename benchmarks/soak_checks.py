"""The soak's nothing-lost checks, each "ok" or "WRONG: why", and the counts behind them.

- Input: everything planned was published and acknowledged; the engine's counters moved by
  exactly the simulator's `InputCounts` (readings by stream, duplicates, rejects by reason);
  the `telemetry` table holds one row per accepted reading, none twice.
- Alerts: every alert stored by the time the outbox drained reached the receiver at least
  once, the receiver got none the store lacks, nothing is pending, nothing is dead (the
  maximum age is set beyond any flap), and every signature verified.
- The engine stayed up and exited 0 on SIGTERM; every edit through the API took effect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.soak_report import equal, missing_check
from simulator.harness.prometheus import DUPLICATES, READINGS, REJECTED, Metrics
from simulator.mqtt_publisher import PublishStats
from simulator.truth import InputCounts


def counter_delta(before: Metrics, after: Metrics, name: str, label: str) -> dict[str, int]:
    """A labelled counter's growth between two scrapes, by label value (zeros left out)."""
    now, then = after.by_label(name, label), before.by_label(name, label)
    grown = {k: int(v - then.get(k, 0.0)) for k, v in now.items()}
    return {k: v for k, v in sorted(grown.items()) if v}


def input_checks(
    expected: InputCounts,
    planned: tuple[int, int],
    stats: PublishStats,
    published_readings: int,
    before: Metrics,
    after: Metrics,
    telemetry: Mapping[str, int],
) -> dict[str, str]:
    """Published as planned; the engine took exactly the input; the store kept every reading."""
    messages, readings = planned
    checks: dict[str, str] = {}
    problems = []
    if stats.sent != messages or published_readings != readings:
        problems.append(
            f"published {stats.sent} messages / {published_readings} readings of "
            f"{messages} / {readings} planned"
        )
    if stats.failed or stats.unacked:
        problems.append(f"{stats.failed} publishes refused, {stats.unacked} clients unacked")
    checks["published_as_planned"] = "WRONG: " + "; ".join(problems) if problems else "ok"
    want_readings = dict(sorted(expected.readings.items()))
    checks["engine_readings"] = equal(
        "accepted readings", counter_delta(before, after, READINGS, "stream"), want_readings
    )
    duplicates = int(after.total(DUPLICATES) - before.total(DUPLICATES))
    checks["engine_duplicates"] = equal("duplicates", duplicates, expected.duplicates)
    checks["engine_rejects"] = equal(
        "rejects", counter_delta(before, after, REJECTED, "reason"), dict(expected.rejects)
    )
    stored = {k: v for k, v in telemetry.items() if k not in {"rows", "distinct"}}
    checks["telemetry_rows"] = equal("telemetry rows by stream", stored, want_readings)
    checks["telemetry_unique"] = equal(
        "distinct (device, stream, ts) rows", telemetry["distinct"], telemetry["rows"]
    )
    return checks


def alert_checks(
    stored: Mapping[str, int],
    received: set[str],
    drained_at_ms: int | None,
    deliveries: Mapping[str, int],
    refused: int,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Stored alerts against received ones; the outbox's states; the signatures."""
    # An alert detected after the drain was judged complete (a timer firing as the engine
    # stops) had no chance to be delivered: it is counted apart, not as lost.
    horizon = drained_at_ms if drained_at_ms is not None else max(stored.values(), default=0)
    due = {i for i, ms in stored.items() if ms <= horizon}
    checks = {
        "alerts_delivered": missing_check("stored alerts never received", due - received),
        "alerts_known": missing_check("received alerts not in the store", received - set(stored)),
        "outbox_drained": equal("deliveries pending", deliveries.get("pending", 0), 0),
        "no_dead_deliveries": equal("dead deliveries", deliveries.get("dead", 0), 0),
        "signatures": equal("POSTs refused by the receiver", refused, 0),
    }
    counts = {
        "alerts_stored": len(stored),
        "alerts_received": len(received),
        "alerts_after_drain": len(set(stored) - due),
        "dead_deliveries": deliveries.get("dead", 0),
        "pending_deliveries": deliveries.get("pending", 0),
    }
    return checks, counts


def engine_checks(
    exit_status: int | None, died_at_s: float | None, edits: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """The engine lived through the soak and stopped cleanly; each edit took effect."""
    alive = "ok" if died_at_s is None else f"WRONG: the engine exited {died_at_s:.0f} s in"
    failed = [e for e in edits if not e.get("verified")]
    first = failed[0] if failed else {}
    return {
        "engine_alive": alive,
        "engine_exit_status": equal("exit status", exit_status, 0),
        "edits_applied": "ok"
        if not failed
        else f"WRONG: {len(failed)} of {len(edits)} edits not applied (first: {first})",
    }
