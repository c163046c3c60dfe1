"""Publishing a plan into the broker on a thread, so that the main thread stays free for Ctrl-C
and watches the engine; the first publish starts the clock and the sampler. The plan's JT/T
808 trackers get their terminals through the gateway first, and their messages go to them."""

from __future__ import annotations

import math
import threading
import time

from simulator.fleet_plan import FleetPlan
from simulator.loadtest.options import LoadtestError
from simulator.loadtest.state import Loadtest
from simulator.loadtest.target import StartedEngine
from simulator.mqtt_publisher import PublishStats, publish


def publish_plan(test: Loadtest, plan: FleetPlan, mqtt_url: str) -> None:
    """Publish the plan on a thread (the main thread stays free for Ctrl-C)."""
    side = test.stack.jt808
    if plan.terminals:
        assert side is not None
        started = time.perf_counter()
        test.progress.say(f"connecting {len(plan.terminals):,} JT/T 808 terminals to the gateway")
        side.connect(plan.terminals)
        took = time.perf_counter() - started
        test.setup["jt808_connect_s"] = round(test.setup.get("jt808_connect_s", 0.0) + took, 2)
    stop = threading.Event()
    result: list[PublishStats] = []

    done = threading.Event()

    def work() -> None:
        try:
            result.append(
                publish(
                    plan,
                    mqtt_url,
                    clients=test.opts.clients,
                    on_sent=test.on_sent,
                    stop=stop,
                    terminals=side.send if side is not None else None,
                )
            )
        except Exception as exc:  # noqa: BLE001  # reported, and the run stops
            test.publish_error = f"{type(exc).__name__}: {exc}"
        finally:
            done.set()

    thread = threading.Thread(target=work, name="loadtest-publish", daemon=True)
    now = time.time()
    test.late_s = now - plan.start_wall_ms / 1000
    if math.isnan(test.t0):
        test.t0 = now
        assert test.sampler is not None
        test.sampler.start()
    test.phase = "publish" if not test.opts.ramp else test.phase
    thread.start()
    # An Event, not Thread.join: a join interrupted by Ctrl-C leaves Python 3.11's
    # is_alive() False while the thread still runs (cpython issue 90882).
    try:
        while not done.wait(0.2):
            if isinstance(test.target, StartedEngine) and not test.target.running():
                test.notes.append("the engine process exited during the run")
                stop.set()
    except KeyboardInterrupt:
        stop.set()
        done.wait(30)  # publish stops at the next message and returns its stats
        raise
    finally:
        test.publish_end = time.time()
        if result:
            test.stats = result[0]
    if test.publish_error:
        msg = f"publishing failed: {test.publish_error}"
        raise LoadtestError(msg)
