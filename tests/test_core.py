"""Unit tests of the detection core: one rule at a time, a fake clock, no I/O."""

from __future__ import annotations

import orjson
import pytest

from alerts.model import Alert, AlertType
from engine.core.config import Config
from engine.core.loan import put_conflicts
from engine.core.state import DeviceState, device_from_json, device_to_json
from lending.model import LoanStatus
from tests.factories import (
    HOME,
    OTHER_VIN,
    T0,
    VIN,
    Fleet,
    circle,
    fix,
    loan,
    of_type,
    offset,
    status,
    types,
    vib,
)

HOME_ZONE = circle("home", HOME, 1000)
FAR = offset(*HOME, 2000, 0)  # 2 km north: outside the home zone, 120 km/h away in a minute


def drive(fleet: Fleet, start_s: int, points: list[tuple[float, float]], every_s: int = 60) -> list:
    """Feed one fix per point, `every_s` apart."""
    out = []
    for i, p in enumerate(points):
        out += fleet.feed(fix(start_s + i * every_s, p))
    return out


def test_first_fix_sets_state_without_enter() -> None:
    fleet = Fleet([HOME_ZONE])
    assert fleet.feed(fix(0, HOME)) == []
    assert fleet.pipeline.devices["trk-1"].inside == frozenset({"home"})


def test_exit_and_enter_are_raised_on_crossing() -> None:
    fleet = Fleet([HOME_ZONE])
    fleet.feed(fix(0, HOME))
    out = fleet.feed(fix(300, offset(*HOME, 1500, 0)))
    assert types(out) == ["geofence.exit"]
    assert out[0].fence_id == "home"
    assert out[0].ts_ms == T0 + 300_000
    out = fleet.feed(fix(600, HOME))
    assert types(out) == ["geofence.enter"]


@pytest.mark.parametrize(("outside_m", "exits"), [(10, 0), (24, 0), (40, 1)])
def test_hysteresis_keeps_state_near_the_boundary(outside_m: float, exits: int) -> None:
    fleet = Fleet([HOME_ZONE])
    fleet.feed(fix(0, HOME))
    out = fleet.feed(fix(60, offset(*HOME, 1000 + outside_m, 0)))
    assert len(of_type(out, AlertType.GEOFENCE_EXIT)) == exits


def test_first_fix_near_boundary_uses_exact_containment() -> None:
    fleet = Fleet([HOME_ZONE])
    fleet.feed(fix(0, offset(*HOME, 990, 0)))  # 10 m inside
    assert fleet.pipeline.devices["trk-1"].inside == frozenset({"home"})


def test_zone_left_after_grace_then_returned() -> None:
    fleet = Fleet([HOME_ZONE], [loan()])
    fleet.feed(fix(0, HOME))
    away = drive(fleet, 60, [FAR] * 6)  # outside from t=60 s to t=360 s
    left = of_type(away, AlertType.ZONE_LEFT)
    assert len(left) == 1
    assert left[0].ts_ms == T0 + (60 + 300) * 1000
    assert left[0].loan_id == "L-1"
    assert left[0].vin == VIN
    assert left[0].fence_id == "home"
    assert left[0].severity.value == "critical"
    back = fleet.feed(fix(600, HOME))
    assert types(back) == ["geofence.enter", "zone.returned"]


def test_zone_return_within_grace_raises_nothing() -> None:
    fleet = Fleet([HOME_ZONE], [loan()])
    fleet.feed(fix(0, HOME))
    out = drive(fleet, 60, [FAR, FAR, FAR, HOME])
    assert AlertType.ZONE_LEFT not in {a.type for a in out}
    assert AlertType.ZONE_RETURNED not in {a.type for a in out}


def test_zone_left_fires_for_a_car_that_went_silent() -> None:
    fleet = Fleet([HOME_ZONE], [loan()])
    fleet.feed(fix(0, HOME), fix(60, FAR))  # left, then silent
    other = (31.0, 121.0)
    out = []
    for t in range(120, 900, 60):  # another car keeps the replay clock moving
        out += fleet.feed(fix(t, other, device="bg-1"))
    left = of_type(out, AlertType.ZONE_LEFT)
    assert [a.device_id for a in left] == ["trk-1"]
    assert left[0].ts_ms == T0 + 360_000


def test_closed_loan_raises_no_zone_alert() -> None:
    fleet = Fleet([HOME_ZONE], [loan(status=LoanStatus.CLOSED)])
    fleet.feed(fix(0, HOME))
    out = drive(fleet, 60, [FAR] * 10)
    assert AlertType.ZONE_LEFT not in {a.type for a in out}


@pytest.mark.parametrize(
    ("category", "dwell_s", "expected_s"),
    [
        ("pawnshop", None, 600),
        ("impound", None, 0),
        ("lender", None, 1800),
        ("other", None, 900),
        ("pawnshop", 120, 120),
    ],
)
def test_risk_site_dwell_by_category(category: str, dwell_s: int | None, expected_s: int) -> None:
    site = circle("site", offset(*HOME, 3000, 0), 100, "risk_site", category, dwell_s)
    fleet = Fleet([HOME_ZONE, site])
    fleet.feed(fix(0, HOME))
    at_site = offset(*HOME, 3000, 0)
    out = drive(fleet, 60, [at_site] * 40)  # 40 minutes there
    dwell = of_type(out, AlertType.RISK_SITE_DWELL)
    assert len(dwell) == 1
    assert dwell[0].fence_id == "site"
    assert dwell[0].ts_ms == T0 + (60 + expected_s) * 1000
    assert dwell[0].details["category"] == category


def test_short_visit_raises_no_dwell() -> None:
    site = circle("pawn", offset(*HOME, 3000, 0), 100, "risk_site", "pawnshop")
    fleet = Fleet([site])
    fleet.feed(fix(0, HOME))
    out = drive(fleet, 60, [offset(*HOME, 3000, 0)] * 5 + [HOME] * 20)
    assert of_type(out, AlertType.RISK_SITE_DWELL) == []
    assert types(out)[:2] == ["geofence.enter", "geofence.exit"]


def test_first_fix_inside_risk_site_starts_dwell() -> None:
    site = circle("lot", HOME, 100, "risk_site", "impound")
    fleet = Fleet([site])
    out = fleet.feed(fix(0, HOME))
    assert types(out) == ["pledge.risk_site_dwell"]


def test_impossible_travel_is_alerted_and_ignored() -> None:
    fleet = Fleet([HOME_ZONE], [loan()])
    fleet.feed(fix(0, HOME))
    before = fleet.pipeline.devices["trk-1"]
    out = fleet.feed(fix(60, (39.9, 116.4)))  # Beijing a minute later
    assert types(out) == ["gps.impossible_travel"]
    assert out[0].details["implied_speed_kmh"] > 250
    after = fleet.pipeline.devices["trk-1"]
    assert after.fix == before.fix
    assert after.inside == before.inside
    out = fleet.feed(fix(120, offset(*HOME, 50, 0)))
    assert out == []  # back home: no exit/enter, no zone alert


def test_repeated_consistent_jumps_reanchor() -> None:
    fleet = Fleet([HOME_ZONE])
    fleet.feed(fix(0, HOME))
    jump = offset(*HOME, 80_000, 0)  # 80 km in a minute
    out = drive(fleet, 60, [jump, offset(*jump, 10, 0), offset(*jump, 20, 0)], every_s=1)
    assert types(out) == ["gps.impossible_travel", "geofence.exit"]
    assert fleet.pipeline.devices["trk-1"].fix is not None
    assert fleet.pipeline.devices["trk-1"].fix.lat == pytest.approx(offset(*jump, 20, 0)[0])


def test_shock_threshold() -> None:
    fleet = Fleet()
    assert fleet.feed(vib(0, 2.4)) == []
    out = fleet.feed(vib(1, 2.5, duration_ms=40))
    assert types(out) == ["shock"]
    assert out[0].details == {"g": 2.5, "duration_ms": 40}


def test_tow_when_parked_car_moves() -> None:
    fleet = Fleet()
    fleet.feed(fix(0, HOME, ignition=False))
    assert fleet.feed(fix(60, offset(*HOME, 150, 0), ignition=False)) == []
    out = fleet.feed(fix(120, offset(*HOME, 250, 0), ignition=False))
    assert types(out) == ["tow.suspected"]
    assert out[0].details["reason"] == "moved_m"
    assert fleet.feed(fix(180, offset(*HOME, 900, 0), ignition=False)) == []  # once per parking


def test_tow_by_speed_and_by_shock() -> None:
    fleet = Fleet()
    fleet.feed(fix(0, HOME, ignition=False))
    out = fleet.feed(fix(60, HOME, speed_kmh=15.0))
    assert [a.details["reason"] for a in out] == ["speed_kmh"]
    fleet.feed(fix(120, HOME, ignition=True), fix(180, HOME, ignition=False))
    out = fleet.feed(vib(200, 3.0))
    assert types(out) == ["shock", "tow.suspected"]


def test_driving_away_is_not_a_tow() -> None:
    fleet = Fleet()
    fleet.feed(fix(0, HOME, ignition=False))
    assert fleet.feed(fix(60, offset(*HOME, 800, 0), ignition=True, speed_kmh=40.0)) == []


def test_power_and_tamper_alert_on_transitions() -> None:
    fleet = Fleet()
    assert fleet.feed(status(0, ext_power=True, tamper=False)) == []
    assert types(fleet.feed(status(60, ext_power=False, battery_v=3.9))) == ["power.disconnected"]
    assert fleet.feed(status(120, ext_power=False)) == []
    fleet.feed(status(180, ext_power=True))
    out = fleet.feed(status(240, ext_power=False, tamper=True))
    assert types(out) == ["power.disconnected", "tamper"]


def test_tracker_reporting_another_vin() -> None:
    fleet = Fleet([HOME_ZONE], [loan()])
    assert fleet.feed(status(0, vin=VIN)) == []
    out = fleet.feed(status(60, vin=OTHER_VIN))
    assert types(out) == ["pledge.vin_conflict"]
    assert out[0].details["reported_vin"] == OTHER_VIN
    assert fleet.feed(status(120, vin=OTHER_VIN)) == []


def test_one_vin_on_two_active_loans() -> None:
    fleet = Fleet([HOME_ZONE], [loan("L-1", ["a"]), loan("L-2", ["b"])])
    conflicts = of_type(fleet.alerts, AlertType.VIN_CONFLICT)
    assert [(a.loan_id, a.details["other_loan_ids"]) for a in conflicts] == [("L-2", ["L-1"])]


def conflicts_of(alerts: list[Alert]) -> list[tuple[str | None, object]]:
    return [(a.loan_id, a.details["other_loan_ids"]) for a in alerts]


def test_put_conflicts_follow_put_order() -> None:
    stored = [loan("S-1", vin=VIN), loan("S-2", vin=OTHER_VIN, status=LoanStatus.CLOSED)]
    puts = [
        loan("P-1", vin=VIN),  # clashes with the stored S-1
        loan("P-2", vin=OTHER_VIN),  # S-2 is closed: no clash
        loan("P-3", vin=OTHER_VIN),  # clashes with P-2, PUT just before
        loan("P-4", vin=VIN, status=LoanStatus.CLOSED),  # a closed loan raises nothing
    ]
    out = put_conflicts(stored, puts, T0, T0 + 5)
    assert conflicts_of(out) == [("P-1", ["S-1"]), ("P-3", ["P-2"])]
    assert {(a.type, a.ts_ms, a.detected_ms, a.vin) for a in out} == {
        (AlertType.VIN_CONFLICT, T0, T0 + 5, VIN),
        (AlertType.VIN_CONFLICT, T0, T0 + 5, OTHER_VIN),
    }


def test_put_conflicts_re_put_of_an_active_loan_raises_nothing_again() -> None:
    stored = [loan("S-1", vin=VIN), loan("S-2", vin=VIN)]
    assert put_conflicts(stored, [loan("S-2", vin=VIN, devices=["new"])], T0, T0) == []
    closed = loan("S-2", vin=VIN, status=LoanStatus.CLOSED)
    # Reopened, or moved to another VIN, it is judged again.
    assert conflicts_of(put_conflicts([stored[0], closed], [stored[1]], T0, T0)) == [
        ("S-2", ["S-1"])
    ]
    moved = loan("S-2", vin=OTHER_VIN)
    assert conflicts_of(put_conflicts([stored[0], moved], [stored[1]], T0, T0)) == [
        ("S-2", ["S-1"])
    ]
    # A loan that moves off the VIN no longer counts against it.
    later = [loan("S-1", vin=OTHER_VIN), loan("S-3", vin=VIN)]
    assert put_conflicts([stored[0]], later, T0, T0) == []


def test_pipeline_put_loan_judges_as_put_conflicts() -> None:
    fleet = Fleet([HOME_ZONE], [loan("L-1", ["a"]), loan("L-2", ["b"])])
    assert conflicts_of(of_type(fleet.alerts, AlertType.VIN_CONFLICT)) == [("L-2", ["L-1"])]
    assert fleet.pipeline.put_loan(loan("L-2", ["b", "c"]), T0, T0) == []  # a re-PUT
    assert fleet.pipeline.put_loan(loan("L-3", ["d"]), T0, T0, check_vin=False) == []
    out = fleet.pipeline.put_loan(loan("L-4", ["e"]), T0, T0)
    assert conflicts_of(out) == [("L-4", ["L-1", "L-2", "L-3"])]


def test_tracker_separation_once_per_episode() -> None:
    fleet = Fleet([], [loan(devices=["a", "b"])])
    apart = offset(*HOME, 800, 0)
    fleet.feed(fix(0, HOME, device="a"), fix(1, HOME, device="b"))
    out = fleet.feed(fix(60, apart, device="a"))  # first comparison over 500 m
    assert out == []
    out = fleet.feed(fix(61, HOME, device="b"))  # second, consecutive
    assert types(out) == ["pledge.tracker_separation"]
    assert out[0].loan_id == "L-1"
    assert out[0].details["distance_m"] == pytest.approx(800, abs=2)
    out = fleet.feed(fix(120, apart, device="a"), fix(121, HOME, device="b"))
    assert out == []  # same episode
    fleet.feed(fix(180, HOME, device="a"))  # together again
    out = fleet.feed(fix(240, apart, device="a"), fix(241, HOME, device="b"))
    assert types(out) == ["pledge.tracker_separation"]


def test_separation_ignores_stale_fix_of_the_other_tracker() -> None:
    fleet = Fleet([], [loan(devices=["a", "b"])])
    fleet.feed(fix(0, HOME, device="b"))
    apart = offset(*HOME, 800, 0)
    out = fleet.feed(fix(700, apart, device="a"), fix(760, apart, device="a"))
    assert out == []


def test_offline_and_online() -> None:
    fleet = Fleet([], [loan()])  # only trackers of active loans are reported (DESIGN §4)
    fleet.feed(fix(0, HOME))
    assert fleet.advance_to(1799) == []
    out = fleet.advance_to(1800)
    assert types(out) == ["device.offline"]
    assert out[0].ts_ms == T0 + 1_800_000
    out = fleet.feed(fix(2000, HOME))
    assert types(out) == ["device.online"]
    assert fleet.advance_to(3000) == []


def test_duplicates_and_late_readings() -> None:
    fleet = Fleet([HOME_ZONE])
    fleet.feed(fix(0, HOME), fix(120, HOME))
    state = fleet.pipeline.devices["trk-1"]
    assert fleet.feed(fix(120, HOME)) == []
    assert fleet.pipeline.counters.duplicates["gps"] == 1
    assert fleet.pipeline.devices["trk-1"] == state
    assert fleet.feed(fix(60, FAR)) == []  # late: stored and counted, state not moved back
    assert fleet.pipeline.counters.late["gps"] == 1
    assert fleet.pipeline.counters.readings["gps"] == 3
    assert fleet.pipeline.devices["trk-1"].fix == state.fix


def test_late_reading_of_another_stream_still_counts() -> None:
    fleet = Fleet()
    fleet.feed(fix(100, HOME))
    out = fleet.feed(status(50, tamper=True))
    assert types(out) == ["tamper"]


def test_seq_gaps_are_counted() -> None:
    fleet = Fleet()
    fleet.feed(fix(0, HOME, seq=1), fix(1, HOME, seq=2), fix(2, HOME, seq=7))
    assert fleet.pipeline.counters.missing == 4


def test_alert_ids_are_deterministic_and_distinct() -> None:
    def run() -> list[str]:
        fleet = Fleet([HOME_ZONE], [loan()])
        fleet.feed(fix(0, HOME))
        drive(fleet, 60, [FAR] * 8 + [HOME])
        return [a.id for a in fleet.alerts]

    first = run()
    assert first == run()
    assert len(set(first)) == len(first) == 4  # exit, zone.left, enter, zone.returned


def test_alert_json_shape() -> None:
    fleet = Fleet([HOME_ZONE], [loan()])
    fleet.feed(fix(0, HOME))
    alert = fleet.feed(fix(60.12, FAR))[0]
    doc = alert.to_json()
    assert set(doc) == {
        "id",
        "type",
        "severity",
        "ts",
        "detected_at",
        "device_id",
        "loan_id",
        "vin",
        "fence_id",
        "lat",
        "lon",
        "details",
    }
    assert doc["ts"] == "2026-11-30T00:54:20.120Z"
    assert orjson.loads(orjson.dumps(doc)) == doc


def test_device_snapshot_round_trip() -> None:
    fleet = Fleet([HOME_ZONE, circle("pawn", FAR, 100, "risk_site", "pawnshop")], [loan()])
    fleet.feed(fix(0, HOME, seq=3, ignition=False), status(5, ext_power=False, vin=OTHER_VIN))
    drive(fleet, 60, [FAR] * 3)
    state = fleet.pipeline.devices["trk-1"]
    assert state.dwell
    assert state.zone_out_ms is not None
    doc = orjson.loads(orjson.dumps(device_to_json(state)))
    assert device_from_json(doc) == state


def test_config_dwell_override() -> None:
    config = Config(dwell_by_category_s={"pawnshop": 60})
    assert config.dwell_s("pawnshop", None) == 60
    assert config.dwell_s("pawnshop", 5) == 5
    assert config.dwell_s(None, None) == 900
    assert DeviceState("x").inside == frozenset()


def test_loan_updates_remap_trackers() -> None:
    fleet = Fleet([HOME_ZONE], [loan("L-1", ["a", "b"], vin=VIN)])
    p = fleet.pipeline
    p.put_loan(loan("L-1", ["a"], vin=VIN, status=LoanStatus.CLOSED), T0, T0)
    assert p.ctx.loan_for("b") is None
    assert p.ctx.loan_for("a") is not None
    p.put_loan(loan("L-0", ["a"], vin=OTHER_VIN), T0, T0)
    assert p.ctx.loan_for("a").loan_id == "L-0"  # the active loan wins over the closed one
    out = p.put_loan(loan("L-2", ["c"], vin=OTHER_VIN), T0, T0)
    assert [a.details["other_loan_ids"] for a in out] == [["L-0"]]
    assert p.put_loan(loan("L-1", ["a"], vin=VIN), T0, T0) == []  # reopened: VIN is unique
    assert p.ctx.loan_for("a").loan_id == "L-1"  # two active loans: the larger id, stable


def test_ignition_off_on_a_vibration_parks_at_the_next_fix() -> None:
    fleet = Fleet()
    for k in range(4):  # driving north at 54 km/h, a fix every 15 s
        fleet.feed(fix(15 * k, offset(*HOME, 225 * k, 0), ignition=True, speed_kmh=54.0))
    fleet.feed(vib(59.5, 0.4, ignition=False))  # the engine stops 210 m past the last fix
    stop = offset(*HOME, 225 * 3 + 210, 0)
    assert fleet.feed(fix(60, stop, ignition=False)) == []  # not a tow: that is where it parked
    assert fleet.pipeline.devices["trk-1"].parked is not None
    out = fleet.feed(fix(600, offset(*stop, 400, 0), ignition=False))
    assert types(out) == ["tow.suspected"]
    assert out[0].details["parked_since_ms"] == T0 + 60_000


def test_shock_after_ignition_off_on_a_vibration_is_a_tow() -> None:
    fleet = Fleet()
    fleet.feed(fix(0, HOME, ignition=True), vib(10, 0.2, ignition=False))
    out = fleet.feed(vib(20, 3.0))
    assert types(out) == ["shock", "tow.suspected"]
    assert out[1].details["parked_lat"] is None


def test_device_online_is_not_stamped_before_the_offline_it_ends() -> None:
    fleet = Fleet([], [loan()])
    fleet.feed(fix(0, HOME))
    fleet.advance_to(2400)  # offline at 1800 s
    out = fleet.feed(fix(120, HOME))  # a catch-up upload of an old fix arrives
    assert types(out) == ["device.online"]
    offline = of_type(fleet.alerts, AlertType.DEVICE_OFFLINE)[0]
    assert out[0].ts_ms == offline.ts_ms == T0 + 1_800_000
