"""`pledgewatch loadtest`: set up an engine, play a planned fleet into it, measure, report.

Phases: plan the fleet; start a private Mosquitto (unless `--mqtt-url`) and `pledgewatch run`
on SQLite in a temporary directory (unless `--api` names a running engine); load the plan's
fences and loans through the API; register our own signed-webhook receiver; with
`--jt808-share`, start the JT/T 808 gateway and connect those trackers' terminals through it;
publish the plan at its pace; drain until the engine has processed everything and the alerts
stopped coming; judge and write the report. A sampler thread scrapes `/metrics` and
`/proc/<pid>` once a second and keeps a progress line on stderr. Ctrl-C (or SIGTERM) stops
publishing and writes a partial report. Ramp mode (`--ramp`) publishes steps of rising rate
instead (`ramp`).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import IO

from simulator.fleet_spec import FleetError
from simulator.loadtest import report
from simulator.loadtest.document import charts, choose_map_cars, document
from simulator.loadtest.drain import drain
from simulator.loadtest.options import LoadtestError, Options
from simulator.loadtest.publishing import publish_plan
from simulator.loadtest.ramp import RAMP_OFFLINE_S, RAMP_START_RATE, ramp
from simulator.loadtest.sampling import Sampler
from simulator.loadtest.state import Loadtest
from simulator.loadtest.target import TargetError

TRUTH_LAG_S = 30.0  # device.offline may come this late on the wall clock (see FleetPlan.truth)


def execute(test: Loadtest) -> None:
    """Run every phase; `status` says how far it got."""
    opts = test.opts
    setup_started = time.perf_counter()
    test.status = "planning"
    spec = opts.spec
    if opts.ramp:
        rate = spec.rate if spec.rate or spec.speed else RAMP_START_RATE
        spec = dataclasses.replace(
            spec, duration_s=opts.ramp_step_s, rate=rate, id_prefix=f"{spec.id_prefix}r1"
        )
    try:
        plan = test.plan_fleet(spec)
    except FleetError:
        if not opts.ramp or opts.spec.rate or opts.spec.speed:
            raise
        # A fleet whose own rate is above the default start: start at real time.
        spec = dataclasses.replace(spec, rate=None, speed=1.0)
        plan = test.plan_fleet(spec)
    test.status = "setting up"
    mqtt_url = test.stack.broker()
    plan_config = plan.engine_config()
    if opts.ramp:
        # Each step's trackers fall silent when the step ends: their device.offline
        # alerts would land in the next step's measurement. The ramp judges no quality.
        plan_config = {**plan_config, "offline_s": RAMP_OFFLINE_S}
    test.target = target = test.stack.engine(mqtt_url, plan_config)
    test.log.zone_grace_s = test.stack.rules.zone_grace_s
    test.progress.say(f"loading the plan's fences into {target.url}")
    test.stack.load(target, plan, loans=not opts.ramp)
    test.stack.receive(target, test.collector.on_delivery)
    if spec.jt808_share > 0:
        test.stack.start_jt808(mqtt_url)
    time.sleep(1.0)  # the engine takes API changes between batches
    baseline = target.metrics()
    test.sampler = Sampler(target, test.collector, test.progress, baseline, lambda: test.phase)
    if opts.ramp:
        test.setup["total_s"] = round(time.perf_counter() - setup_started, 2)
        ramp(test, mqtt_url, plan)
        return
    test.plan = plan
    started = time.perf_counter()
    test.progress.say("working out the ground truth")
    test.base_truth = plan.truth(lag_s=TRUTH_LAG_S)
    test.setup["truth_s"] = round(time.perf_counter() - started, 2)
    choose_map_cars(test, test.base_truth)
    test.prepare(plan)
    test.setup["total_s"] = round(time.perf_counter() - setup_started, 2)
    test.progress.say(f"setup took {test.setup['total_s']:.1f} s; publishing")
    test.status = "publishing"
    publish_plan(test, plan, mqtt_url)
    test.status = "draining"
    drain(test, test.truth())
    test.status = "complete"


def finish(test: Loadtest) -> Path | None:
    """Stop the sampler, the engine and the broker; write the report; its directory."""
    if test.sampler is not None and test.sampler.is_alive():
        test.sampler.stop()
    final_metrics = test.sampler.latest_metrics if test.sampler else None
    test.log.absorb()
    test.collector.take(final=True)
    receiver_counts = dataclasses.asdict(test.stack.receiver.counts) if test.stack.receiver else {}
    side = test.stack.jt808
    jt808 = side.summary(test.opts.spec.jt808_share, test.plan) if side is not None else None
    test.stack.close()  # webhook deleted, engine and broker stopped, in reverse order
    if test.sampler is None or not test.sampler.points:
        shutil.rmtree(test.stack.work, ignore_errors=True)
        return None
    doc = document(test, final_metrics, receiver_counts, jt808)
    out = test.opts.report_dir
    out.mkdir(parents=True, exist_ok=True)
    charts(test, doc, out)
    report.write_json(out / "report.json", doc)
    (out / "report.md").write_text(report.markdown(doc))
    shutil.rmtree(test.stack.work, ignore_errors=True)
    return out


def run(opts: Options, err: IO[str] = sys.stderr) -> int:
    """Run a load test; 0 when it completed, 1 when it failed, 130 when interrupted.

    Whatever happens, the engine and the broker it started are stopped and what was
    measured is written."""
    test = Loadtest(opts, err)
    code = 1
    try:
        execute(test)
        code = 0
    except KeyboardInterrupt:
        test.progress.say("interrupted: stopping, writing a partial report")
        test.status = f"interrupted while {test.status}"
        code = 130
    except (LoadtestError, TargetError, FleetError) as exc:
        test.progress.say(f"the load test failed: {exc}")
        test.status = f"failed while {test.status}: {exc}"
    except Exception as exc:
        test.status = f"failed while {test.status}: {type(exc).__name__}: {exc}"
        raise  # a bug: its traceback, after the cleanup below
    finally:
        out = finish(test)
        if out is not None:
            test.progress.say(f"report: {out / 'report.md'} ({out / 'report.json'})")
    return code
