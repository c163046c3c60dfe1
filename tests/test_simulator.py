"""The simulator: deterministic per seed, physically plausible, valid input, honest ground truth."""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from shapely import Point as ShapelyPoint
from shapely import Polygon as ShapelyPolygon

from devices.decode import decode
from devices.readings import GpsFix, Vibration
from geofence.fence import FenceKind, parse_feature_collection
from geofence.geo import haversine_m
from lending.model import VIN_RE, parse_loans
from simulator import __main__ as simulator_cli
from simulator.car import ScenarioKind
from simulator.city import build_city, fence_features, interior
from simulator.fleet import Run, RunSpec, build_run, fences_doc, loans_doc, reading_lines, truth_doc
from simulator.frame import LocalFrame
from simulator.golden import DEMO_DIR, GOLDEN_DIR, demo_spec, golden_specs
from simulator.junk import ALL_JUNK
from simulator.motion import Move
from simulator.trackers import Silence, WildFix, merge, messages
from simulator.truth import Expectation, GroundTruth, Role, check, iso_utc
from simulator.vehicles import check_digit

REGENERATE = "python -m simulator.golden --regenerate --demo"
HEADLINE = {
    ScenarioKind.STAYS_HOME: set(),
    ScenarioKind.LEAVES_ZONE: {"zone.left", "zone.returned"},
    ScenarioKind.PAWNSHOP_DWELL: {"pledge.risk_site_dwell", "zone.left"},
    ScenarioKind.TOWED: {"tow.suspected", "shock", "zone.left"},
    ScenarioKind.TRACKER_REMOVED: {"pledge.tracker_separation"},
    ScenarioKind.VIN_SWAP: {"pledge.vin_conflict"},
    ScenarioKind.SPOOFED_JUMP: {"gps.impossible_travel"},
    ScenarioKind.POWER_CUT: {"power.disconnected", "tamper"},
    ScenarioKind.GOES_SILENT: {"device.offline", "device.online"},
    ScenarioKind.SILENT_OUTSIDE: {"zone.left", "device.offline"},
    ScenarioKind.IMPOUNDED: {"pledge.risk_site_dwell", "zone.left"},
    ScenarioKind.DOUBLE_PLEDGE: {"pledge.vin_conflict"},
    ScenarioKind.FLATBED_TOW: {"tow.suspected", "zone.left"},
    ScenarioKind.BRIEF_VISIT: {"geofence.enter", "geofence.exit", "zone.left"},
    ScenarioKind.QUICK_EXIT: {"geofence.exit", "geofence.enter"},
}


@pytest.fixture(scope="module")
def demo() -> Run:
    return build_run(demo_spec())


def _documents(run: Run) -> tuple[bytes, bytes, bytes, bytes]:
    return (
        b"".join(reading_lines(run)),
        orjson.dumps(fences_doc(run)),
        orjson.dumps(loans_doc(run)),
        orjson.dumps(truth_doc(run)),
    )


def test_same_seed_gives_byte_identical_output() -> None:
    spec = RunSpec("det", "seed-a", (ScenarioKind.TOWED, ScenarioKind.VIN_SWAP), junk=ALL_JUNK)
    assert _documents(build_run(spec)) == _documents(build_run(spec))


def test_different_seeds_give_different_output() -> None:
    spec = RunSpec("det", "seed-a", (ScenarioKind.TOWED,))
    a, b = build_run(spec), build_run(replace(spec, seed="seed-b"))
    for doc_a, doc_b in zip(_documents(a), _documents(b), strict=True):
        assert doc_a != doc_b


def test_goldens_are_what_the_simulator_generates() -> None:
    for spec in golden_specs():
        directory = GOLDEN_DIR / spec.name
        run = build_run(spec)
        assert b"".join(reading_lines(run)) == (directory / "input.jsonl").read_bytes(), (
            f"{spec.name}: the simulator no longer generates this golden; if on purpose: "
            f"{REGENERATE}"
        )
        truth = GroundTruth.from_json(orjson.loads((directory / "ground_truth.json").read_bytes()))
        assert truth == run.truth


def test_demo_is_what_the_simulator_generates(demo: Run) -> None:
    assert b"".join(reading_lines(demo)) == (DEMO_DIR / "readings.jsonl").read_bytes(), REGENERATE
    assert orjson.loads((DEMO_DIR / "fences.geojson").read_bytes()) == fences_doc(demo)
    assert orjson.loads((DEMO_DIR / "loans.json").read_bytes()) == loans_doc(demo)


def test_demo_is_a_dozen_cars_two_hours_every_scenario(demo: Run) -> None:
    assert len(demo.cars) >= 12
    kinds = [c.scenario for c in demo.cars if c.role is Role.SCENARIO]
    assert sorted(kinds) == sorted(ScenarioKind)
    span_ms = demo.messages[-1].ts_ms - demo.messages[0].ts_ms
    assert 110 * 60_000 <= span_ms <= 125 * 60_000
    assert (DEMO_DIR / "readings.jsonl").stat().st_size < 2_000_000


def test_every_scenario_guarantees_its_headline_alerts(demo: Run) -> None:
    for car in demo.cars:
        types = {e.type for e in car.required}
        if car.role is Role.QUIET:
            assert not types
        else:
            assert car.scenario is not None
            assert HEADLINE[car.scenario] <= types, car.scenario
            if car.scenario is ScenarioKind.STAYS_HOME:
                assert not types


def _decoded(run: Run) -> tuple[dict[str, list[GpsFix]], list[Vibration]]:
    """Decode every message in arrival order with the replay's watermark; check each."""
    fixes: dict[str, list[GpsFix]] = defaultdict(list)
    vibs: list[Vibration] = []
    watermark: int | None = None
    for m in run.messages:
        decoded = decode(m.topic, m.body(), watermark)
        assert sorted(r.reason.value for r in decoded.rejects) == sorted(m.rejects), m
        assert len(decoded.readings) == len(m.readings), m
        for reading in decoded.readings:
            watermark = max(watermark or 0, reading.ts_ms)
            if isinstance(reading, GpsFix):
                fixes[reading.device_id].append(reading)
            elif isinstance(reading, Vibration):
                vibs.append(reading)
    return fixes, vibs


def test_readings_pass_the_decoder_except_injected_junk(demo: Run) -> None:
    _decoded(demo)
    junk = [m for m in demo.messages if m.rejects]
    assert sum(len(m.rejects) for m in junk) == sum(demo.truth.counts.rejects.values()) >= 10


def test_scenario_goldens_hold_no_malformed_input() -> None:
    run = build_run(golden_specs()[0])
    assert not any(m.rejects for m in run.messages)
    _decoded(run)


def test_consecutive_fixes_are_physically_plausible(demo: Run) -> None:
    fixes, vibs = _decoded(demo)
    wild = {
        (t.device_id, e.at_ms)
        for c in demo.cars
        for t in c.trackers
        for e in t.events
        if isinstance(e, WildFix)
    }
    assert len(wild) == 1
    for device_id, device_fixes in fixes.items():
        ordered = sorted({f.ts_ms: f for f in device_fixes}.values(), key=lambda f: f.ts_ms)
        ordered = [f for f in ordered if (device_id, f.ts_ms) not in wild]
        for a, b in itertools.pairwise(ordered):
            dt_s = (b.ts_ms - a.ts_ms) / 1000
            assert dt_s >= 4.9, (device_id, a, b)
            kmh = haversine_m(a.lat, a.lon, b.lat, b.lon) / dt_s * 3.6
            assert kmh <= 150.0, (device_id, a, b, kmh)
        assert all((f.speed_kmh or 0.0) <= 70.0 for f in ordered)
    shocks = [v for v in vibs if v.g >= 2.5]
    assert len(shocks) == 2  # the towed car's shock, and its redelivery
    assert all(v.g < 2.0 for v in vibs if v.g < 2.5)


def test_true_tracks_drive_like_cars(demo: Run) -> None:
    for car in demo.cars:
        for phase in car.trackers[0].track.phases:
            if not isinstance(phase, Move):
                continue
            for a, b in itertools.pairwise(phase.samples):
                assert b.speed_mps <= 60 / 3.6 + 1e-9
                assert abs(b.speed_mps - a.speed_mps) <= 2.5  # 1-1.8 m/s² up, ~2 m/s² down
                assert math.dist((a.u, a.v), (b.u, b.v)) <= 60 / 3.6 + 0.5


def test_stream_is_time_ordered_and_dense(demo: Run) -> None:
    arrivals = [m.ts_ms for m in demo.messages]
    assert arrivals == sorted(arrivals)
    # a line more than 5 min past the largest event time seen would be a future_timestamp
    assert max(b - a for a, b in itertools.pairwise(arrivals)) < 180_000
    silences = {
        t.device_id: [e for e in t.events if isinstance(e, Silence)]
        for c in demo.cars
        for t in c.trackers
    }
    by_device: dict[str | None, list[int]] = defaultdict(list)
    for m in demo.messages:
        if m.readings:
            by_device[m.device_id].append(m.ts_ms)
    for device_id, times in by_device.items():
        assert device_id is not None
        for a, b in itertools.pairwise(times):
            scripted = any(s.start_ms <= b and a <= s.end_ms for s in silences[device_id])
            assert b - a < 1_800_000 or scripted, (device_id, a, b)


def test_input_mixes_every_wire_format(demo: Run) -> None:
    payloads = [m.payload for m in demo.messages]
    objects = [p for p in payloads if isinstance(p, dict)]
    assert any(isinstance(p.get("ts"), int) for p in objects)
    assert any(isinstance(p.get("ts"), str) and p["ts"].endswith("+08:00") for p in objects)
    assert any(p.get("_type") == "location" for p in objects)
    assert any(m.topic.startswith("owntracks/") for m in demo.messages)
    assert sum(isinstance(p, list) and len(p) > 1 for p in payloads) >= 2  # catch-up arrays
    assert any(isinstance(p, str) for p in payloads)  # raw bytes (injected)
    counts = demo.truth.counts
    assert counts.duplicates > 0
    assert counts.late > 0
    assert counts.missing > 0


def test_loans_fences_and_vins_are_valid(demo: Run) -> None:
    loans = parse_loans(loans_doc(demo))
    assert len({ln.loan_id for ln in loans}) == len(loans)
    for loan in loans:
        assert VIN_RE.fullmatch(loan.vin)
        assert check_digit(loan.vin) == loan.vin[8]
    fences = parse_feature_collection(fences_doc(demo))
    zones = {f.fence_id for f in fences if f.kind is FenceKind.ZONE}
    categories = {f.category for f in fences if f.kind is FenceKind.RISK_SITE}
    assert {"pawnshop", "impound", "lender", "used_car_market", "auction"} <= categories
    assert all(set(ln.zone_ids) <= zones for ln in loans)


def test_vin_check_digit_follows_iso_3779() -> None:
    assert check_digit("1M8GDM9AXKP042788") == "X"
    assert check_digit("11111111111111111") == "1"


def test_background_cars_keep_well_inside_their_zone(demo: Run) -> None:
    for car in demo.cars:
        if car.role is not Role.QUIET:
            continue
        inner = interior(car.zone, 150.0)
        others = [a.shape for a in demo.city.areas if a.fence_id != car.zone.fence_id]
        for u, v in car.trackers[0].track.points():
            p = ShapelyPoint(u, v)
            assert inner.contains(p)
            assert all(shape.distance(p) > 300.0 for shape in others)


def test_ground_truth_round_trips_through_json(demo: Run) -> None:
    assert GroundTruth.from_json(orjson.loads(orjson.dumps(truth_doc(demo)))) == demo.truth


def _alert(e: Expectation, ts: str, **over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "type": e.type,
        "ts": ts,
        "device_id": e.device_id,
        "loan_id": e.loan_id,
        "vin": e.vin,
        "fence_id": e.fence_id,
    }
    doc.update(over)
    return doc


def test_check_reports_misses_counts_windows_and_extras(demo: Run) -> None:
    truth = demo.truth
    required = [e for e in truth.required if e.ts_min_ms is not None]
    perfect = [_alert(e, iso_utc(e.ts_min_ms or 0)) for e in required]
    assert check(replace(truth, required=tuple(required)), perfect) == []
    assert any("missing" in p for p in check(truth, perfect[1:]))
    counted = next(e for e in required if e.count == 1)
    twice = [*perfect, _alert(counted, iso_utc(counted.ts_min_ms or 0))]
    assert any(p.startswith("count") for p in check(truth, twice))
    late = [_alert(e, iso_utc((e.ts_max_ms or 0) + 60_000)) for e in required]
    assert any("missing" in p for p in check(truth, late))
    quiet_device = min(truth.quiet_device_ids)
    noisy = [*perfect, {"type": "shock", "ts": perfect[0]["ts"], "device_id": quiet_device}]
    assert any(p.startswith("background car") for p in check(truth, noisy))
    stray = [*perfect, _alert(required[0], str(perfect[0]["ts"]), type="tamper")]
    assert any(p.startswith("unexpected") for p in check(truth, stray))


def test_tracker_messages_are_a_time_ordered_stream(demo: Run) -> None:
    """The shape a live MQTT fleet will reuse: per-tracker streams, merged by arrival."""
    streams = [
        messages(t, demo.city.frame, random.Random(t.device_id))
        for c in demo.cars[:3]
        for t in c.trackers
    ]
    for stream in streams:
        times = [m.ts_ms for m in stream]
        assert times == sorted(times)
    merged = list(merge(streams))
    assert [m.ts_ms for m in merged] == sorted(m.ts_ms for m in merged)
    assert len(merged) == sum(len(s) for s in streams)


def test_cli_writes_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [str(out), "--scenario", "towed", "--minutes", "90", "--seed", "7"]
    assert simulator_cli.main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["fences.geojson", "ground_truth.json", "loans.json", "readings.jsonl"]
    truth = GroundTruth.from_json(orjson.loads((out / "ground_truth.json").read_bytes()))
    assert {e.type for e in truth.required} >= {"shock", "tow.suspected"}


@given(st.floats(-40_000, 40_000), st.floats(-40_000, 40_000), st.floats(0.0, 45.0))
def test_grid_and_degrees_convert_both_ways(u: float, v: float, rotation_deg: float) -> None:
    frame = LocalFrame(31.23, 121.47, rotation_deg)
    back = frame.to_grid(*frame.to_latlon(u, v))
    assert math.dist(back, (u, v)) < 1e-6


def test_a_large_city_draws_circles_as_the_engine_does() -> None:
    """Far from the frame's origin the frame's own circle is metres off the engine's."""
    city = build_city(random.Random("wide"), 100, engine_circles=True)
    doc = {"type": "FeatureCollection", "features": fence_features(city)}
    fences = {f.fence_id: f for f in parse_feature_collection(doc)}
    circles = [a for a in city.areas if a.radius_m is not None]
    assert len(circles) > 20
    for area in circles:
        engine = fences[area.fence_id].geometry
        assert isinstance(engine, ShapelyPolygon)
        ring = ShapelyPolygon([city.frame.to_grid(y, x) for x, y in engine.exterior.coords])
        assert ring.hausdorff_distance(area.shape) < 0.05, area.fence_id


def test_a_track_window_keeps_the_truth_inside_it(demo: Run) -> None:
    track = demo.cars[1].trackers[0].track
    move = next(p for p in track.phases if isinstance(p, Move))
    t0, t1 = move.t0_ms + 10_500, track.t1_ms - 600_000
    part = track.window(t0, t1)
    assert t0 <= part.t0_ms < t0 + 1000
    assert t1 - 1000 < part.t1_ms <= t1
    for a, b in itertools.pairwise(part.phases):
        assert a.t1_ms == b.t0_ms
    for t in range(part.t0_ms, part.t1_ms, 7_000):
        assert part.state_at(t) == track.state_at(t)
