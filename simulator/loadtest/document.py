"""The report document of one load test (what `report.json` holds and `report.md` is written
from), its charts, and the cars its map shows."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from engine.core.config import Config
from simulator.fleet_spec import FleetSpec
from simulator.harness.prometheus import ALERTS, DELIVERIES, Metrics
from simulator.jt808_reports import positions
from simulator.loadtest import report
from simulator.loadtest.latency import DueKind, summarize, windows
from simulator.loadtest.sampling import processed_at, resources, series
from simulator.loadtest.state import Loadtest
from simulator.truth import GroundTruth, Role

LATENCY_WINDOW_S = 5.0
MAP_CARS = 6
# Scenarios worth a map panel, most telling first; others fill the remaining panels.
MAP_PREFERENCE = (
    "towed",
    "pawnshop_dwell",
    "leaves_zone",
    "tracker_removed",
    "spoofed_jump",
    "impounded",
    "flatbed_tow",
    "vin_swap",
)


def choose_map_cars(test: Loadtest, truth: GroundTruth) -> None:
    """Pick the scenario cars the map shows, one per scenario kind, so that their trackers'
    messages are kept as they are published."""
    scenario_cars = [c for c in truth.cars if c.role is Role.SCENARIO and c.scenario]
    rank = {s: i for i, s in enumerate(MAP_PREFERENCE)}
    chosen: list[str] = []
    seen: set[str] = set()
    for car in sorted(scenario_cars, key=lambda c: (rank.get(c.scenario or "", 99), c.car_id)):
        if car.scenario not in seen and len(chosen) < MAP_CARS:
            seen.add(car.scenario or "")
            chosen.append(car.car_id)
            test.map_devices.update(dict.fromkeys(car.device_ids, car.car_id))


def charts(test: Loadtest, doc: dict[str, Any], out: Path) -> None:
    """Draw the charts into `out` and name them in `doc`; a chart that fails is a note."""
    drawn: dict[str, str] = {}
    try:
        report.chart_throughput(doc["series"], test.ramp_steps, out / "throughput.png")
        drawn["throughput"] = "throughput.png"
        points = [
            (s.received_s - test.t0, s.total_ms)
            for s in test.collector.samples
            if s.kind is DueKind.READING
        ]
        report.chart_latency(doc["latency"]["windows"], points, out / "latency.png")
        drawn["latency"] = "latency.png"
        if test.plan is not None and test.map_devices:
            report.chart_map(test.plan.fences_doc(), _map_cars(test), out / "map.png")
            drawn["map"] = "map.png"
    except Exception as exc:  # noqa: BLE001  # a chart must not cost the numbers
        test.notes.append(f"a chart failed: {type(exc).__name__}: {exc}")
    doc["charts"] = drawn


def _map_cars(test: Loadtest) -> list[report.CarTrack]:
    assert test.plan is not None
    truth = test.truth()
    cars = {c.car_id: c for c in truth.cars}
    tracks: dict[str, report.CarTrack] = {}
    for car_id in dict.fromkeys(test.map_devices.values()):
        car = cars[car_id]
        tracks[car_id] = report.CarTrack(car_id, car.scenario or "", car.zone_ids)
    for device, msg_id, payload in test.map_messages:
        track = tracks[test.map_devices[device]]
        if msg_id:
            track.fixes.setdefault(device, []).extend(positions(msg_id, payload))
            continue
        with contextlib.suppress(orjson.JSONDecodeError):
            doc = orjson.loads(payload)
            for r in doc if isinstance(doc, list) else [doc]:
                if isinstance(r, dict) and isinstance(r.get("ts"), int) and "lat" in r:
                    fix = (int(r["ts"]), float(r["lat"]), float(r["lon"]))
                    track.fixes.setdefault(device, []).append(fix)
    loan_car = {ln: c.car_id for c in truth.cars for ln in c.loan_ids}
    for alert in test.collector.alerts.values():
        owner = test.map_devices.get(str(alert.get("device_id"))) or loan_car.get(
            str(alert.get("loan_id"))
        )
        if owner in tracks:
            tracks[owner].alerts.append(alert)
    return list(tracks.values())


def document(
    test: Loadtest,
    final: Metrics | None,
    receiver_counts: Mapping[str, int],
    jt808: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report document: what the load test was asked, what it measured, how it judged;
    `jt808` is the JT/T 808 trackers' section, when some spoke it."""
    assert test.sampler is not None
    assert test.target is not None
    pts = test.sampler.points
    t0 = test.t0
    over_time = series(pts, t0)
    publish_pts = [p for p in pts if p.t <= test.publish_end + 0.5]
    span = max(test.publish_end - t0, 1e-9)
    published = test.log.readings
    processed = pts[-1].processed
    processed_by_end = processed_at(pts, test.publish_end)
    caught = next((p.t for p in pts if p.t >= test.publish_end and p.processed >= published), None)
    rates = [r for r in over_time["processed_rps"] if r is not None]
    base = test.sampler.baseline
    raised = (
        {k: v - base.by_label(ALERTS).get(k, 0.0) for k, v in final.by_label(ALERTS).items()}
        if final
        else {}
    )
    by_type: dict[str, int] = {}
    for a in test.collector.alerts.values():
        by_type[str(a.get("type"))] = by_type.get(str(a.get("type")), 0) + 1
    quality = None
    if test.plan is not None and not test.opts.ramp:
        quality = test.score(test.truth()).to_json()
    plan_doc: dict[str, Any] = {"speed": None, "cars": 0, "scenario_cars": 0, "skipped": []}
    if test.plan is not None and test.base_truth is not None:
        truth = test.truth()
        plan_doc = {
            "speed": test.plan.speed,
            "cars": len(truth.cars),
            "scenario_cars": sum(c.role is Role.SCENARIO for c in truth.cars),
            "scenarios": _count(c.scenario for c in truth.cars if c.role is Role.SCENARIO),
            "event_start": truth.start_ms,
            "event_end": truth.end_ms,
            "required_alerts": len(truth.required),
            "skipped": test.plan.skipped(),
            "engine_config": test.plan.engine_config(),
        }
    elif test.opts.ramp:
        plan_doc["speed"] = math.nan
    return {
        "pledgewatch_loadtest": 1,
        "status": test.status,
        "started_at": test.started_at,
        "command": test.opts.command,
        "spec": _spec_json(test.opts.spec, test.opts.clients),
        "plan": plan_doc,
        "machine": {**test.machine, "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "engine": {
            "mode": test.target.mode,
            "api": test.target.url,
            "store": test.target.store,
            "pid": test.target.pid,
            "rules": _rules_json(test.stack.rules),
            "exit_status": test.stack.engine_exit,
            "metrics_scrape_errors": test.sampler.scrape_errors,
        },
        "setup": test.setup,
        "publish": {
            **(dataclasses.asdict(test.stats) if test.stats else {}),
            "messages": test.log.messages,
            "readings": published,
            "error": test.publish_error,
        },
        "throughput": {
            "published_messages": test.log.messages,
            "published_readings": published,
            "processed_readings": round(processed),
            "publish_s": round(span, 2),
            "published_rps_mean": round(published / span, 1),
            "processed_rps_mean": round(processed_by_end / span, 1),
            "processed_rps_peak": round(max(rates), 1) if rates else None,
            "backlog_max": round(max(over_time["backlog"], default=0.0)),
            "caught_up_s": None if caught is None else round(caught - test.publish_end, 2),
        },
        "latency": {
            "by_kind": summarize(test.collector.samples),
            "not_timed": len(test.collector.not_timed),
            "not_timed_by_type": _count(str(a.get("type")) for a in test.collector.not_timed),
            "windows": windows(test.collector.samples, t0, LATENCY_WINDOW_S),
            "window_s": LATENCY_WINDOW_S,
        },
        "alerts": {
            "received_unique": len(test.collector.alerts),
            "received_by_type": dict(sorted(by_type.items())),
            "raised_by_engine": {k: round(v) for k, v in sorted(raised.items()) if v},
            "receiver": dict(receiver_counts),
            "deliveries_by_result": final.by_label(DELIVERIES) if final else {},
        },
        "quality": quality,
        "jt808": jt808,
        "resources": resources(pts, publish_pts, test.target),
        "ramp": test.ramp_result,
        "series": over_time,
        "notes": test.notes,
    }


def _spec_json(spec: FleetSpec, clients: int) -> dict[str, object]:
    return {
        "devices": spec.devices,
        "seed": spec.seed,
        "duration_s": spec.duration_s,
        "rate": spec.rate,
        "speed": spec.speed,
        "mix": {str(k): v for k, v in spec.mix.items()},
        "qos": spec.qos,
        "clients": clients,
        "jt808_share": spec.jt808_share,
    }


def _rules_json(rules: Config) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(rules):
        value = getattr(rules, f.name)
        out[f.name] = dict(value) if isinstance(value, Mapping) else value
    return out


def _count(values: Iterable[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items()))
