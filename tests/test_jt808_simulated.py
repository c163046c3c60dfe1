"""The simulated JT/T 808 terminal, pure parts: what it writes (`simulator.jt808_wire`) read
back by the gateway's own codec and mapping (`devices.jt808`), which trackers speak it and the
ids they take (`simulator.jt808_choice`), and what a fleet plan's terminals send in place of
their MQTT messages (`simulator.jt808_reports`)."""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from devices.jt808.frame import MAX_BODY_BYTES, FrameReader
from devices.jt808.header import Frame, Header, decode_frame, device_id, encode_frame
from devices.jt808.mapping import bcd_time_ms, map_batch, map_location
from devices.jt808.messages import (
    LocationBatch,
    LocationReport,
    MsgId,
    Registration,
    parse_message,
)
from simulator.car import ScenarioKind
from simulator.fleet_plan import FleetPlan, plan_fleet
from simulator.fleet_spec import DEFAULT_START_WALL_MS, FleetError, FleetSpec
from simulator.jt808_choice import Candidate, choose_terminals, rename_car
from simulator.jt808_reports import COLLISION_G, positions
from simulator.jt808_wire import (
    ALARM_COLLISION,
    ALARM_TAMPER,
    BLIND_AREA,
    Fix,
    alarm_word,
    batch_bodies,
    bcd_time,
    location_body,
    registration_body,
    terminal_numbers,
)
from simulator.trackers import TrackerModel
from simulator.writer import write_jsonl

PHONE = "014123456789"
DEVICE = "jt808-14123456789"


def _read_back(msg_id: int, body: bytes) -> Frame:
    """The bytes a terminal writes, through the gateway's framing and header codec."""
    wire = encode_frame(Header(msg_id, PHONE, 7), body)
    (content,) = FrameReader().feed(wire)
    assert isinstance(content, bytes)
    frame = decode_frame(content)
    assert isinstance(frame, Frame)
    assert frame.header.device_id == DEVICE
    return frame


def test_bcd_time_is_the_whole_second_in_utc_plus_8() -> None:
    ts_ms = 1_795_910_399_999  # 2026-11-28T23:59:59.999Z: 07:59:59 the next day in Shanghai
    assert bcd_time(ts_ms).hex() == "261129075959"
    assert bcd_time_ms(bcd_time(ts_ms)) == ts_ms - 999


def test_registration_reads_in_the_2013_layout() -> None:
    message = parse_message(_read_back(MsgId.REGISTRATION, registration_body("T-42")))
    assert isinstance(message, Registration)
    assert (message.manufacturer_id, message.model, message.terminal_id) == (
        "PWSIM",
        "FLEET",
        "T-42",
    )
    assert (message.layout, message.plate_colour, message.vin) == (2013, 0, None)


@pytest.mark.parametrize(
    ("ext_power", "tamper", "shock", "ignition"),
    [
        (True, False, False, True),
        (False, False, False, False),
        (True, True, False, False),
        (False, True, True, False),
        (True, False, True, True),
    ],
)
def test_a_report_maps_back_to_the_readings_it_stands_for(
    ext_power: bool, tamper: bool, shock: bool, ignition: bool
) -> None:
    fix = Fix(
        1_795_910_400_456,
        -33.868_123,
        -151.209_456,
        speed_kmh=47.3,
        heading_deg=359.6,
        ignition=ignition,
        alarm=alarm_word(ext_power=ext_power, tamper=tamper, shock=shock),
        odometer_km=12_345.6,
        sats=11,
    )
    report = parse_message(_read_back(MsgId.LOCATION, location_body(fix)))
    assert isinstance(report, LocationReport)
    mapped = map_location(DEVICE, report)
    assert mapped.faults == []
    got = {topic.rsplit("/", 1)[1]: payload for topic, payload in mapped.publications}
    ts = 1_795_910_400_000
    assert got["gps"] == {
        "ts": ts,
        "lat": -33.868_123,
        "lon": -151.209_456,
        "speed_kmh": 47.3,
        "heading_deg": 0,  # whole degrees: 359.6 rounds to north
        "ignition": ignition,
        "odometer_km": 12_345.6,
        "sats": 11,
    }
    if not ext_power or tamper:
        assert got["status"] == {"ts": ts, "ext_power": ext_power, "tamper": tamper}
    else:
        assert "status" not in got
    if shock:
        assert got["vib"] == {"ts": ts, "g": 3.0, "ignition": ignition}
    else:
        assert "vib" not in got
    assert report.alarm >> ALARM_TAMPER & 1 == tamper
    assert report.alarm >> ALARM_COLLISION & 1 == shock


def test_an_unpositioned_report_costs_only_its_gps() -> None:
    fix = Fix(1_795_910_400_000, 31.2, 121.4, positioned=False, alarm=alarm_word(ext_power=False))
    report = parse_message(_read_back(MsgId.LOCATION, location_body(fix)))
    assert isinstance(report, LocationReport)
    mapped = map_location(DEVICE, report)
    assert [f.reason.value for f in mapped.faults] == ["not_positioned"]
    assert [t.rsplit("/", 1)[1] for t, _ in mapped.publications] == ["status"]
    assert positions(MsgId.LOCATION, location_body(fix)) == []


def test_a_long_catch_up_is_split_into_batches_that_fit_a_frame() -> None:
    fixes = [
        Fix(1_795_910_400_000 + k * 15_000, 31.2 + k * 1e-4, 121.4, 30.0, 90.0, odometer_km=5.0)
        for k in range(70)
    ]
    bodies = batch_bodies(fixes, BLIND_AREA)
    assert len(bodies) > 1
    assert all(len(b) <= MAX_BODY_BYTES for b in bodies)
    items = []
    for body in bodies:
        batch = parse_message(_read_back(MsgId.LOCATION_BATCH, body))
        assert isinstance(batch, LocationBatch)
        assert batch.kind == BLIND_AREA
        items += batch.items
        mapped = map_batch(DEVICE, batch)
        assert mapped.faults == []
        assert len(mapped.publications) == len(batch.items)
    assert len(items) == 70
    assert [p[0] for b in bodies for p in positions(MsgId.LOCATION_BATCH, b)] == [
        f.ts_ms for f in fixes
    ]
    assert batch_bodies([]) == []


def test_terminal_numbers_are_distinct_seeded_and_give_jt808_ids() -> None:
    numbers = terminal_numbers(500, "s")
    assert numbers == terminal_numbers(500, "s")
    assert numbers != terminal_numbers(500, "t")
    assert len(set(numbers)) == 500
    for number in numbers:
        assert len(number) == 12
        assert number.isdigit()
        assert number.startswith("014")
        assert device_id(number) == f"jt808-{number[1:]}"
        # the 2019 edition's 20-digit number of the same SIM is the same device
        assert device_id(number.rjust(20, "0")) == device_id(number)


def test_only_wired_trackers_whose_story_needs_no_vin_are_chosen() -> None:
    candidates = [
        Candidate(f"sim-{k:05d}", model, scenario)
        for k, (model, scenario) in enumerate(
            [
                (TrackerModel.WIRED, None),
                (TrackerModel.BATTERY, None),
                (TrackerModel.OWNTRACKS, None),
                (TrackerModel.WIRED, ScenarioKind.VIN_SWAP),
                (TrackerModel.WIRED, ScenarioKind.TOWED),
                (TrackerModel.WIRED, ScenarioKind.POWER_CUT),
            ]
            * 10
        )
    ]
    chosen = choose_terminals(candidates, 0.25, "s", "sim")
    assert len(chosen) == 15  # a quarter of 60
    assert chosen == choose_terminals(candidates, 0.25, "s", "sim")
    assert set(chosen) != set(choose_terminals(candidates, 0.25, "s", "lt2"))
    able = {c.device_id for c in candidates if c.model is TrackerModel.WIRED} - {
        c.device_id for c in candidates if c.scenario is ScenarioKind.VIN_SWAP
    }
    assert set(chosen) <= able
    assert set(choose_terminals(candidates, 1.0, "s", "sim")) == able  # all that can
    assert choose_terminals(candidates, 0.0, "s", "sim") == {}


def _spec(**over: object) -> FleetSpec:
    mix = dict.fromkeys((ScenarioKind.TOWED, ScenarioKind.POWER_CUT, ScenarioKind.LEAVES_ZONE), 5.0)
    spec = FleetSpec(
        devices=40,
        seed="j1",
        duration_s=300,
        rate=None,
        speed=12.0,
        mix=mix,
        start_wall_ms=DEFAULT_START_WALL_MS,
    )
    return replace(spec, **over)  # type: ignore[arg-type]  # test overrides by name


def _by_device(plan: FleetPlan) -> dict[str, list[tuple[int, tuple[tuple[str, int], ...]]]]:
    out: dict[str, list[tuple[int, tuple[tuple[str, int], ...]]]] = {}
    for m in plan.schedule():
        out.setdefault(m.device_id or "", []).append((m.msg_id, m.readings))
    return out


def test_a_plan_renames_its_terminals_everywhere_and_keeps_their_fixes() -> None:
    mqtt = plan_fleet(_spec())
    plan = plan_fleet(_spec(jt808_share=1.0))
    assert mqtt.terminals == {}
    assert plan.terminals
    assert all(d == device_id(n) for d, n in plan.terminals.items())
    loans = {d for loan in plan.loans_doc() for d in loan["device_ids"]}  # type: ignore[attr-defined]
    truth = plan.truth()
    truth_devices = {d for car in truth.cars for d in car.device_ids}
    for d in plan.terminals:
        assert d in loans
        assert d in truth_devices
        assert plan.first_ids[d] not in loans
    required = [e for e in truth.required if e.device_id in plan.terminals]
    assert {e.type for e in required} >= {"shock", "tow.suspected", "tamper", "power.disconnected"}
    for e in required:
        assert e.ts_min_ms is None or e.ts_min_ms % 1000 == 0

    before, after = _by_device(mqtt), _by_device(plan)
    streams: Counter[str] = Counter()
    for d in plan.terminals:
        sent = after[d]
        assert all(
            msg_id in {MsgId.LOCATION, MsgId.LOCATION_BATCH, MsgId.HEARTBEAT} for msg_id, _ in sent
        )
        twin = before[plan.first_ids[d]]
        twin_gps = {ts - ts % 1000 for _, rs in twin for s, ts in rs if s == "gps"}
        got = [(s, ts) for _, rs in sent for s, ts in rs]
        assert all(ts % 1000 == 0 for _, ts in got)
        # every fix of the MQTT twin, at its whole second; more only for alarm reports
        gps = {ts for s, ts in got if s == "gps"}
        assert twin_gps <= gps
        assert len(gps - twin_gps) <= sum(s != "gps" for s, _ in got)
        streams.update(s for s, _ in got)
        # a status of unchanged state is a heartbeat live, nothing in a catch-up
        heartbeats = sum(msg_id == MsgId.HEARTBEAT for msg_id, _ in sent)
        statuses = sum(s == "status" for _, rs in twin for s, _ in rs)
        assert 0 < heartbeats + sum(s == "status" for s, _ in got) <= statuses
    assert streams["vib"] >= 1  # the tow truck's shock, once though it was sent twice
    assert streams["status"] >= 2  # the case opened, the wire cut


def test_the_shock_threshold_is_the_engines() -> None:
    assert COLLISION_G == 2.5


def test_rename_car_leaves_a_car_without_terminals_alone() -> None:
    plan = plan_fleet(_spec())
    car = next(iter(plan.scenario_cars.values()))
    assert rename_car(car, {"nobody": "jt808-1"}) is car


def test_a_plan_with_terminals_has_no_replay_input(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="cannot be replay input"):
        write_jsonl(plan_fleet(_spec(jt808_share=0.5)), tmp_path)
    with pytest.raises(FleetError, match="JT/T 808 share must be from 0 to 1"):
        plan_fleet(_spec(jt808_share=1.5))


def test_registration_body_is_the_2013_fixed_layout() -> None:
    body = registration_body()
    assert len(body) == struct.calcsize(">HH5s20s7sB")
