"""Ramp mode (`--ramp`): publish steps of rising rate, each a fresh fleet of its own trackers
(ids prefixed per step: a tracker's event time must never run backwards, and each step's
stream starts its event time anew; no loans, so no zone rules), and report the highest rate
at which processing kept up and the p99 latency stayed under `--max-p99-ms`."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from simulator.fleet_plan import FleetPlan
from simulator.loadtest.drain import QUIET_S
from simulator.loadtest.latency import DueKind
from simulator.loadtest.publishing import publish_plan
from simulator.loadtest.sampling import Point, processed_at
from simulator.loadtest.state import Loadtest

RAMP_OFFLINE_S = 86_400
RAMP_START_RATE = 500.0  # messages/s of the first ramp step (or the fleet's own rate, if more)
PUBLISHER_LAG_S = 1.0  # a ramp step whose publisher ended further behind is generator-bound
MIN_STEP_ALERTS = 20  # fewer timed alerts in a ramp step: its p99 is not judged


def ramp(test: Loadtest, mqtt_url: str, first: FleetPlan) -> None:
    """Steps of rising rate until p99 or the backlog says the engine cannot keep up."""
    opts = test.opts
    best: dict[str, Any] | None = None
    why = f"reached --ramp-max-steps {opts.ramp_max_steps}"
    test.status = "ramping"
    plan = first
    for step in range(1, opts.ramp_max_steps + 1):
        if step > 1:
            assert best is not None
            spec = dataclasses.replace(
                opts.spec,
                duration_s=opts.ramp_step_s,
                rate=best["published_msgs_per_s"] * opts.ramp_factor,
                speed=None,
                id_prefix=f"{opts.spec.id_prefix}r{step}",
            )
            plan = test.plan_fleet(spec)
        test.prepare(plan)
        test.phase = f"step {step}"
        before = test.sampler.points[-1] if test.sampler and test.sampler.points else None
        publish_plan(test, plan, mqtt_url)
        result = _judge_step(test, step, plan, before)
        test.ramp_steps.append(result)
        p99 = "-" if result["p99_ms"] is None else f"{result['p99_ms']:,.0f} ms"
        test.progress.say(
            f"step {step}: {result['published_msgs_per_s']:,.0f} msg/s "
            f"({result['published_rps']:,.0f} readings/s), p99 {p99}: {result['verdict']}"
        )
        if result["verdict"] != "sustained":
            why = result["verdict"]
            break
        best = result
    test.ramp_result = {
        "max_p99_ms": opts.max_p99_ms,
        "step_s": opts.ramp_step_s,
        "factor": opts.ramp_factor,
        "sustained_msgs_per_s": best["published_msgs_per_s"] if best else None,
        "sustained_readings_per_s": best["published_rps"] if best else None,
        "stopped_because": why,
        "steps": test.ramp_steps,
    }
    test.status = "complete"


def _judge_step(test: Loadtest, step: int, plan: FleetPlan, before: Point | None) -> dict[str, Any]:
    """A step is sustained when the engine processed everything within 5 s of the last
    publish, the p99 of its reading latencies stayed under the bound (judged when at
    least `MIN_STEP_ALERTS` alerts were timed), and the publisher kept to its schedule.
    The plan's rate for a target is estimated from a pilot fleet: the step's own
    published rate is what counts."""
    assert test.sampler is not None
    assert test.stats is not None
    start_s, end_s = test.publish_end - test.stats.elapsed_s, test.publish_end
    published_before = before.published if before else 0
    processed_before = before.processed if before else 0.0
    target = test.log.readings
    settle_until = time.time() + 5.0
    while time.time() < settle_until:
        if test.sampler.points and test.sampler.points[-1].processed >= target:
            break
        time.sleep(0.25)
    caught_up = bool(test.sampler.points) and test.sampler.points[-1].processed >= target
    time.sleep(QUIET_S)  # the step's last alerts reach the webhook
    test.collector.take()
    span = max(end_s - start_s, 1e-9)
    published = target - published_before
    processed_in_time = processed_at(test.sampler.points, end_s) - processed_before
    step_samples = [
        s.total_ms
        for s in test.collector.samples
        if s.kind is DueKind.READING and start_s <= s.due_s <= end_s
    ]
    p99 = float(np.percentile(step_samples, 99)) if step_samples else None
    msgs = test.stats.sent
    wanted = plan.spec.rate or msgs / span
    verdict = "sustained"
    if not caught_up:
        left = target - test.sampler.points[-1].processed
        verdict = f"processing fell behind: {left:,.0f} readings left 5 s after the step"
    elif p99 is not None and len(step_samples) >= MIN_STEP_ALERTS and p99 > test.opts.max_p99_ms:
        verdict = f"p99 {p99:,.0f} ms over {test.opts.max_p99_ms:g} ms"
    elif test.stats.final_lag_s > PUBLISHER_LAG_S:
        verdict = (
            f"the load generator fell {test.stats.final_lag_s:.1f} s behind its schedule "
            f"at {msgs / span:,.0f} msg/s (the engine kept up: the sustained rate is a "
            "lower bound)"
        )
    return {
        "step": step,
        "start_t": round(start_s - test.t0, 2),
        "end_t": round(end_s - test.t0, 2),
        "target_rate": round(wanted, 1),
        "speed": round(plan.speed, 3),
        "published_msgs_per_s": round(msgs / span, 1),
        "published_rps": round(published / span, 1),
        "processed_rps": round(processed_in_time / span, 1),
        "alerts_timed": len(step_samples),
        "p99_ms": None if p99 is None else round(p99, 1),
        "verdict": verdict,
    }
