"""`pledgewatch simulate`: a seeded fleet, honest ground truth, published to a real broker."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt_source import BrokerAddress
from simulator.car import ScenarioKind
from simulator.fleet_plan import FleetPlan, plan_fleet
from simulator.fleet_spec import (
    DEFAULT_MIX,
    DEFAULT_START_WALL_MS,
    TWO_TRACKERS,
    FleetError,
    FleetSpec,
    apportion,
    fleet_cars,
    parse_mix,
)
from simulator.golden import replay_files
from simulator.motion import Move, Stay
from simulator.mqtt_publisher import publish
from simulator.trackers import TrackerModel
from simulator.truth import GroundTruth, Role, check, count_types
from simulator.writer import write_jsonl
from tests.brokers import REPO, Broker, broker  # noqa: F401  # the fixture

HEADLINE = {  # the alert each scenario is about
    ScenarioKind.LEAVES_ZONE: "zone.left",
    ScenarioKind.PAWNSHOP_DWELL: "pledge.risk_site_dwell",
    ScenarioKind.TOWED: "tow.suspected",
    ScenarioKind.TRACKER_REMOVED: "pledge.tracker_separation",
    ScenarioKind.VIN_SWAP: "pledge.vin_conflict",
    ScenarioKind.SPOOFED_JUMP: "gps.impossible_travel",
    ScenarioKind.POWER_CUT: "power.disconnected",
    ScenarioKind.GOES_SILENT: "device.offline",
    ScenarioKind.SILENT_OUTSIDE: "zone.left",
    ScenarioKind.IMPOUNDED: "pledge.risk_site_dwell",
    ScenarioKind.DOUBLE_PLEDGE: "pledge.vin_conflict",
    ScenarioKind.FLATBED_TOW: "tow.suspected",
    ScenarioKind.BRIEF_VISIT: "geofence.enter",
    ScenarioKind.QUICK_EXIT: "geofence.exit",
}
EVERY_KIND = dict.fromkeys(ScenarioKind, 4.0)  # 60 % of the cars, four in a hundred each


def _spec(**over: object) -> FleetSpec:
    spec = FleetSpec(
        devices=40,
        seed="t1",
        duration_s=300,
        rate=None,
        speed=12.0,  # an hour of event time
        mix=DEFAULT_MIX,
        start_wall_ms=DEFAULT_START_WALL_MS,
    )
    return replace(spec, **over)  # type: ignore[arg-type]  # test overrides by name


def _files(plan: FleetPlan, directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in write_jsonl(plan, directory)}


def test_same_seed_and_spec_give_the_same_bytes(tmp_path: Path) -> None:
    a = _files(plan_fleet(_spec()), tmp_path / "a")
    b = _files(plan_fleet(_spec()), tmp_path / "b")
    assert a == b
    assert a["readings.jsonl"].count(b"\n") > 500
    schedule_a = [(m.due_s, m.topic, m.payload) for m in plan_fleet(_spec()).schedule()]
    schedule_b = [(m.due_s, m.topic, m.payload) for m in plan_fleet(_spec()).schedule()]
    assert schedule_a == schedule_b
    lines = [orjson.loads(x) for x in a["readings.jsonl"].splitlines()]
    assert [(x["topic"], orjson.dumps(x["payload"])) for x in lines] == [
        (topic, payload) for _, topic, payload in schedule_a
    ]


def test_another_seed_gives_another_fleet(tmp_path: Path) -> None:
    a = _files(plan_fleet(_spec()), tmp_path / "a")
    b = _files(plan_fleet(_spec(seed="t2")), tmp_path / "b")
    for name in ("readings.jsonl", "loans.json", "fences.geojson"):
        assert a[name] != b[name], name


@pytest.mark.parametrize(("speed", "duration_s"), [(24.0, 300.0), (10.0, 240.0)])
def test_every_scenario_replays_to_exactly_its_ground_truth(
    tmp_path: Path, speed: float, duration_s: float
) -> None:
    """Two hours (every story at its written pace) and 40 minutes (stories compressed)."""
    plan = plan_fleet(_spec(devices=90, mix=EVERY_KIND, speed=speed, duration_s=duration_s))
    write_jsonl(plan, tmp_path)
    truth = GroundTruth.from_json(orjson.loads((tmp_path / "ground_truth.json").read_bytes()))
    replayed = replay_files(
        tmp_path / "readings.jsonl", tmp_path / "fences.geojson", tmp_path / "loans.json"
    )
    assert check(truth, replayed.alerts) == []  # recall 1.0, counts, no stray alerts
    quiet = truth.quiet_device_ids
    assert len(quiet) >= 30
    assert not [a for a in replayed.alerts if a.get("device_id") in quiet]
    played = {c.scenario for c in truth.cars if c.role is Role.SCENARIO}
    types = count_types(replayed.alerts)
    for kind, alert_type in HEADLINE.items():
        if kind.value in played:
            assert types.get(alert_type, 0) > 0, (kind, types)
    if speed == 24.0:  # two hours hold every story
        assert played == {k.value for k in ScenarioKind}
        # ... but not 300 s of wall time after a silent car's last reading (zone grace on
        # the wall clock, live): those are not played, and say so
        assert all("silent_outside" in s and "live engine" in s for s in plan.skipped())
    counts = replayed.replay.pipeline.counters
    assert dict(counts.readings) == truth.counts.readings
    assert sum(counts.duplicates.values()) == truth.counts.duplicates
    assert counts.missing == truth.counts.missing


def test_a_story_that_cannot_land_is_skipped_with_a_reason(tmp_path: Path) -> None:
    mix = {ScenarioKind.GOES_SILENT: 25.0, ScenarioKind.PAWNSHOP_DWELL: 25.0}
    plan = plan_fleet(_spec(devices=12, mix=mix, speed=5.0, duration_s=120))  # 10 minutes
    skipped = plan.skipped()
    assert len(skipped) == 6
    assert all(("goes_silent" in s or "pawnshop_dwell" in s) and ": " in s for s in skipped)
    assert plan.kinds() == {"quiet": 12}
    write_jsonl(plan, tmp_path)
    truth = GroundTruth.from_json(orjson.loads((tmp_path / "ground_truth.json").read_bytes()))
    assert truth.required == ()
    replayed = replay_files(
        tmp_path / "readings.jsonl", tmp_path / "fences.geojson", tmp_path / "loans.json"
    )
    assert replayed.alerts == []


def test_mix_percentages_are_honoured() -> None:
    mix = parse_mix("leaves_zone=5,towed=2.5,power_cut=1,tracker_removed=2")
    plan = plan_fleet(_spec(devices=400, mix=mix, speed=24.0, duration_s=300))
    cars = len(plan.slots)
    devices = sum(len(plan.car(n).trackers) for n in plan.scenario_cars) + len(plan.quiet)
    assert devices == 400
    played = Counter({k: v for k, v in plan.kinds().items() if k != "quiet"})
    assert not plan.skipped()
    for kind, percent in mix.items():
        assert abs(played[kind.value] - percent * cars / 100) < 1, (kind, played)


_MIXES = st.dictionaries(
    st.sampled_from(list(ScenarioKind)), st.floats(0.0, 20.0), min_size=0, max_size=5
)


@given(_MIXES, st.integers(0, 5000))
def test_apportion_rounds_each_share_and_keeps_the_total(
    mix: dict[ScenarioKind, float], cars: int
) -> None:
    counts = apportion(mix, cars)
    for kind, percent in mix.items():
        exact = percent * cars / 100
        assert math.floor(exact) <= counts.get(kind, 0) <= math.ceil(exact)
    assert sum(counts.values()) == min(cars, math.floor(sum(mix.values()) * cars / 100 + 0.5))


@given(_MIXES, st.integers(1, 5000))
def test_fleet_cars_make_exactly_the_trackers_asked(
    mix: dict[ScenarioKind, float], devices: int
) -> None:
    cars, counts = fleet_cars(devices, mix)
    assert cars + sum(n for k, n in counts.items() if k in TWO_TRACKERS) == devices
    assert sum(counts.values()) <= cars
    for kind, percent in mix.items():
        assert abs(counts.get(kind, 0) - percent * cars / 100) < 2, (kind, counts)


@settings(max_examples=12, deadline=None)
@given(st.floats(1.0, 200.0), st.floats(5.0, 120.0), st.integers(0, 86_399))
def test_the_schedule_is_ordered_and_never_ahead_of_the_wall_clock(
    speed: float, duration_s: float, start_s: int
) -> None:
    start = DEFAULT_START_WALL_MS + start_s * 1000 + 123
    plan = plan_fleet(
        _spec(devices=6, speed=speed, duration_s=duration_s, start_wall_ms=start, mix={})
    )
    dues = []
    for m in plan.schedule():
        dues.append(m.due_s)
        wall_ms = start + m.due_s * 1000
        assert all(ts <= wall_ms + 1e-6 for _, ts in m.readings), (m, wall_ms)
    assert dues == sorted(dues)
    assert dues, "a fleet sends something"
    assert dues[-1] <= plan.wall_s == round(duration_s)
    assert plan.speed >= speed - 1e-9


def test_bad_specs_say_what_to_change() -> None:
    with pytest.raises(FleetError, match="at least 1"):
        plan_fleet(_spec(speed=0.5))
    with pytest.raises(FleetError, match="unknown scenario 'tow'"):
        parse_mix("tow=3")
    with pytest.raises(FleetError, match="at most 100"):
        parse_mix("towed=60,vin_swap=50")
    with pytest.raises(FleetError, match="percent"):
        parse_mix("towed")
    with pytest.raises(FleetError, match="cannot run slower than the wall clock"):
        plan_fleet(_spec(devices=5, speed=None, rate=0.001))
    assert parse_mix("none") == {}


def test_commuters_live_by_the_clock() -> None:
    """A day: night parking at home, commutes and errands by day, every drive an ignition
    cycle, a mix of tracker makes, and nobody leaves the zone."""
    start = int(datetime(2026, 11, 29, 16, 0, tzinfo=UTC).timestamp() * 1000)  # 00:00 CST
    plan = plan_fleet(_spec(devices=30, mix={}, speed=1440.0, duration_s=60, start_wall_ms=start))
    assert plan.span_s == 86_400
    models = Counter()
    drives_by_hour: Counter[int] = Counter()
    for n in plan.quiet:
        car = plan.car(n)
        tracker = car.trackers[0]
        models[tracker.model] += 1
        phases = tracker.track.phases
        for k, phase in enumerate(phases):
            if not isinstance(phase, Move):
                continue
            local = datetime.fromtimestamp(phase.t0_ms / 1000, tz=UTC) + timedelta(hours=8)
            drives_by_hour[local.hour] += 1
            before, after = phases[k - 1], phases[k + 1]
            assert isinstance(before, Stay)
            assert before.ignition is True  # warming up
            assert isinstance(after, Stay)
            assert after.ignition is True  # then switched off
            assert phase.ignition is True
        stays = [p for p in phases if isinstance(p, Stay) and p.ignition is False]
        assert max(p.t1_ms - p.t0_ms for p in stays) >= 8 * 3_600_000  # the night
    assert sum(drives_by_hour[h] for h in range(6)) == 0, drives_by_hour  # night parking
    assert sum(drives_by_hour[h] for h in range(7, 21)) >= 40, drives_by_hour
    assert drives_by_hour[7] + drives_by_hour[8] + drives_by_hour[9] >= 10  # the commute
    assert models[TrackerModel.WIRED] > models[TrackerModel.BATTERY] > 0


def _subscribe(url: str, got: list[tuple[str, bytes, float]]) -> mqtt.Client:
    address = BrokerAddress.parse(url)
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="sub")
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append((msg.topic, bytes(msg.payload), time.time()))

    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    client.connect(address.host, address.port)
    client.loop_start()
    client.subscribe([("telematics/#", 1), ("owntracks/#", 1)])
    assert subscribed.wait(10)
    return client


def _wait_for(got: list[tuple[str, bytes, float]], count: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.mqtt
def test_publishing_delivers_every_message_on_time(broker: Broker) -> None:  # noqa: F811
    got: list[tuple[str, bytes, float]] = []
    sub = _subscribe(broker.url, got)
    spec = _spec(devices=200, rate=300.0, speed=None, duration_s=6, start_wall_ms=0)
    plan = plan_fleet(spec)
    expected = Counter(
        (m.topic, m.payload)
        for m in plan_fleet(replace(spec, start_wall_ms=plan.start_wall_ms)).schedule()
    )
    sent_at: list[float] = []
    stats = publish(plan, broker.url, clients=4, on_sent=lambda _m, t: sent_at.append(t), stop=None)
    _wait_for(got, stats.sent)
    sub.loop_stop()
    sub.disconnect()
    assert stats.sent == sum(expected.values()) == len(sent_at)
    assert Counter((topic, payload) for topic, payload, _ in got) == expected
    assert stats.failed == stats.unacked == 0
    # on schedule, give or take a loaded machine; the rate as asked, give or take the pilot
    assert 4.0 <= stats.elapsed_s <= 12.0
    assert 300 * 0.5 <= stats.sent / spec.duration_s <= 300 * 1.6
    for _, payload, received_s in got:
        doc = orjson.loads(payload)
        for reading in doc if isinstance(doc, list) else [doc]:
            ts = reading.get("ts", reading.get("tst", 0) * 1000)
            ts_ms = ts if isinstance(ts, int) else datetime.fromisoformat(ts).timestamp() * 1000
            assert ts_ms <= received_s * 1000 + 1, (payload, received_s)


@pytest.mark.mqtt
def test_the_command_publishes_and_reports(
    broker: Broker,  # noqa: F811
    tmp_path: Path,
) -> None:
    got: list[tuple[str, bytes, float]] = []
    sub = _subscribe(broker.url, got)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "simulate",
            "--devices",
            "50",
            "--speed",
            "30",
            "--duration",
            "3",
            "--qos",
            "0",
            "--clients",
            "2",
            "--mqtt-url",
            broker.url,
            "--setup-dir",
            str(tmp_path / "setup"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    published = next(x for x in done.stderr.splitlines() if x.startswith("published "))
    sent = int(published.split()[1].replace(",", ""))
    _wait_for(got, sent)
    sub.loop_stop()
    sub.disconnect()
    assert len(got) == sent > 0
    assert "an engine judging this run needs {'offline_s': 60}" in done.stderr
    names = sorted(p.name for p in (tmp_path / "setup").iterdir())
    assert names == ["engine_config.json", "fences.geojson", "ground_truth.json", "loans.json"]


def test_the_command_writes_replay_files_and_refuses_bad_flags(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "engine.cli", "simulate", "--devices", "20", "--speed", "10"]
    cmd += ["--duration", "360"]
    done = subprocess.run(
        [*cmd, "--out", str(tmp_path / "run"), "--count", "300"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "run" / "readings.jsonl").read_bytes().splitlines()
    assert len(lines) == 300
    replayed = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "replay",
            str(tmp_path / "run" / "readings.jsonl"),
            "--fences",
            str(tmp_path / "run" / "fences.geojson"),
            "--loans",
            str(tmp_path / "run" / "loans.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "rejected:   none" in replayed.stderr
    bad = subprocess.run(
        [*cmd, "--mix", "towed=200", "--out", str(tmp_path / "bad")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert "percent from 0 to 100" in bad.stderr


def test_live_truth_moves_offline_to_the_wall_clock() -> None:
    mix = {ScenarioKind.GOES_SILENT: 50.0}
    plan = plan_fleet(_spec(devices=4, mix=mix, speed=30.0, duration_s=240))  # 2 h
    assert plan.kinds().get("goes_silent") == 2
    assert plan.engine_config() == {"offline_s": 60}
    replay_windows = {
        (e.type, e.device_id): (e.ts_min_ms, e.ts_max_ms) for e in plan.replay_truth().required
    }
    live = [e for e in plan.truth(lag_s=5.0).required if e.type == "device.offline"]
    assert len(live) == 2
    for exp in live:
        _, hi = replay_windows[exp.type, exp.device_id]
        assert hi is not None
        # the same moment of the story, seen on the wall clock: 30 min of event time is
        # 60 s of wall time, and the event clock trails the wall clock
        silence_wall = plan.wall_ms(hi - 1_800_000)
        assert exp.ts_max_ms == math.ceil(silence_wall + 65_000)
        assert exp.ts_min_ms is not None
        assert exp.ts_max_ms - exp.ts_min_ms == pytest.approx(125_000 / plan.speed + 5_000, abs=2)
        assert exp.ts_max_ms < plan.end_ms
    for m in itertools.islice(plan.schedule(), 50):
        assert m.due_s >= 0
