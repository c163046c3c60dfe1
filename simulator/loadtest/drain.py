"""The drain after publishing: wait for the engine to process everything published, then for
the alerts still due, and note when either wait gave up."""

from __future__ import annotations

import time

from simulator.loadtest.state import Loadtest
from simulator.truth import GroundTruth

STALL_S = 30.0  # the drain gives up when the engine processed nothing for this long
QUIET_S = 2.0  # the drain ends once no webhook arrived for this long (and all else is done)


def drain(test: Loadtest, truth: GroundTruth) -> None:
    """Wait until the engine has processed everything published (as long as it makes
    progress), then up to `--drain-s` for the alerts still due: until the outbox is
    empty, the webhooks stopped coming and every required alert arrived."""
    test.phase = "drain"
    assert test.sampler is not None
    progress_at, last = time.time(), -1.0
    while True:
        time.sleep(0.5)
        p = test.sampler.points[-1] if test.sampler.points else None
        if p is None or p.t <= test.publish_end:
            continue
        if p.processed >= test.log.readings:
            break
        if p.processed > last:
            progress_at, last = time.time(), p.processed
        elif time.time() - progress_at > STALL_S:
            left = test.log.readings - p.processed
            test.notes.append(
                f"the engine stopped making progress with {left:,.0f} readings "
                f"unprocessed ({STALL_S:g} s without progress)"
            )
            return
    deadline = time.time() + test.opts.drain_s
    last_score = 0.0
    all_met = False
    while time.time() < deadline:
        time.sleep(0.5)
        p = test.sampler.points[-1]
        quiet = time.time() - test.collector.last_received_s >= QUIET_S
        if time.time() - last_score >= 2.0:
            last_score = time.time()
            q = test.score(truth)
            all_met = q.met == q.required
        if p.outbox == 0 and quiet and all_met:
            return
    test.notes.append(f"the drain ran its full {test.opts.drain_s:g} s after the engine caught up")
