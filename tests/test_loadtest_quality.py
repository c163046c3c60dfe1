"""The load test's arithmetic: quality against ground truth, and latency due times."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.harness.prometheus import Metrics
from simulator.loadtest.judging import widen_wall_clock
from simulator.loadtest.latency import DueKind, PublishLog, percentiles, sample
from simulator.loadtest.quality import score
from simulator.truth import CarTruth, Expectation, GroundTruth, InputCounts, Role, iso_utc

T0 = 1_795_910_400_000
HOUR = 3_600_000


def _car(n: int, role: Role, scenario: str | None = None) -> CarTruth:
    return CarTruth(
        f"car-{n:02d}",
        role,
        scenario,
        f"VIN{n:014d}",
        (f"L-{1000 + n}",),
        (f"trk-{n:03d}",),
        (f"zone-{n}",),
    )


def _truth(
    required: tuple[Expectation, ...] = (),
    allowed: tuple[Expectation, ...] = (),
    quiet: int = 2,
    hours: float = 2.0,
) -> GroundTruth:
    cars = (
        _car(1, Role.SCENARIO, "towed"),
        _car(2, Role.SCENARIO, "leaves_zone"),
        *(_car(10 + k, Role.QUIET) for k in range(quiet)),
    )
    return GroundTruth(
        "t", "s", T0, T0 + round(hours * HOUR), cars, required, allowed, InputCounts()
    )


def _alert(
    type_: str,
    device: str | None,
    ts_ms: int,
    fence: str | None = None,
    loan: str | None = None,
    alert_id: str | None = None,
) -> dict[str, object]:
    return {
        "id": alert_id or f"{type_}|{device}|{fence}|{ts_ms}",
        "type": type_,
        "ts": iso_utc(ts_ms),
        "detected_at": iso_utc(ts_ms + 50),
        "device_id": device,
        "loan_id": loan,
        "fence_id": fence,
    }


TOW = Expectation("tow.suspected", None, "trk-001", count=1, ts_min_ms=T0, ts_max_ms=T0 + HOUR)
LEFT = Expectation("zone.left", "zone-2", "trk-002", count=1, ts_min_ms=T0, ts_max_ms=T0 + HOUR)
CROSS = Expectation("geofence.exit", "zone-2", "trk-002")


def test_every_expectation_met_and_nothing_else_is_perfect() -> None:
    truth = _truth((TOW, LEFT), (CROSS,))
    alerts = [
        _alert("tow.suspected", "trk-001", T0 + 600_000),
        _alert("zone.left", "trk-002", T0 + 900_000, "zone-2"),
        _alert("geofence.exit", "trk-002", T0 + 500_000, "zone-2"),
    ]
    q = score(truth, alerts)
    assert (q.recall, q.precision, q.false) == (1.0, 1.0, 0)
    assert q.by_type["geofence.exit"].correct == 1  # allowed: correct, not required
    assert q.by_type["geofence.exit"].recall is None
    assert q.car_hours == 4 * 2.0
    assert q.false_per_1000_car_hours == 0.0


def test_a_miss_lowers_recall_and_names_what_was_missed() -> None:
    q = score(_truth((TOW, LEFT)), [_alert("tow.suspected", "trk-001", T0 + 600_000)])
    assert q.recall == 0.5
    assert q.by_type["zone.left"].recall == 0.0
    assert len(q.misses) == 1
    assert "zone.left trk-002" in q.misses[0]


def test_late_repeated_and_quiet_car_alerts_are_false() -> None:
    truth = _truth((TOW,), (CROSS,))
    alerts = [
        _alert("tow.suspected", "trk-001", T0 + 600_000),
        _alert("tow.suspected", "trk-001", T0 + 700_000),  # one more than count=1
        _alert("zone.left", "trk-002", T0 + HOUR + 1, "zone-2"),  # expected by nothing
        _alert("geofence.exit", "trk-010", T0 + 5_000, "zone-2"),  # a quiet car, even if allowed
    ]
    q = score(truth, alerts)
    assert q.recall == 1.0
    assert q.false == 3
    assert q.precision == 0.25
    # 4 cars x 2 h of event time
    assert math.isclose(q.false_per_1000_car_hours or 0, 3 * 1000 / 8)
    reasons = " ".join(q.false_examples)
    assert "one more than the scenario's count" in reasons
    assert "quiet car" in reasons
    assert "expected by no scenario" in reasons


def test_an_alert_outside_its_window_is_a_miss_and_a_false_alert() -> None:
    q = score(_truth((TOW,)), [_alert("tow.suspected", "trk-001", T0 + 2 * HOUR - 1)])
    assert (q.recall, q.false) == (0.0, 1)
    assert "outside its expected window" in q.false_examples[0]


def test_an_interrupted_run_judges_only_what_its_horizon_covers() -> None:
    late = Expectation("zone.left", "zone-2", "trk-002", ts_min_ms=T0, ts_max_ms=T0 + 90 * 60_000)
    truth = _truth((TOW, late))
    alerts = [
        _alert("tow.suspected", "trk-001", T0 + 600_000),
        _alert("shock", "trk-010", T0 + 100 * 60_000),  # after the horizon
        _alert("device.offline", "trk-011", T0 + 10 * 60_000),  # rules differ: not judged
    ]
    q = score(truth, alerts, horizon_ms=T0 + HOUR, unjudged={"device.offline"})
    assert (q.required, q.met, q.false) == (1, 1, 0)
    assert q.by_type["shock"].not_judged == 1
    assert q.by_type["device.offline"].not_judged == 1
    assert any("after the run's horizon" in x for x in q.expectations_not_judged)
    assert q.car_hours == 4 * 1.0  # car-hours up to the horizon


def test_a_complete_run_judges_every_expectation_but_not_the_silence_after_it() -> None:
    # device.offline runs on the wall clock: its window may end after the stream does
    offline = Expectation(
        "device.offline", None, "trk-002", count=1, ts_min_ms=T0, ts_max_ms=T0 + 3 * HOUR
    )
    truth = _truth((offline,))
    alerts = [
        _alert("device.offline", "trk-002", T0 + 2 * HOUR + 60_000),
        _alert("device.offline", "trk-010", T0 + 2 * HOUR + 60_000),  # the run ended: quiet
    ]
    q = score(truth, alerts)
    assert (q.required, q.met, q.false) == (1, 1, 0)
    assert q.by_type["device.offline"].not_judged == 1
    assert q.extra["alerts_after_horizon"] == 1


def test_wall_clock_windows_widen_by_a_late_start() -> None:
    offline = Expectation("device.offline", None, "trk-002", ts_min_ms=T0, ts_max_ms=T0 + 1000)
    truth = widen_wall_clock(_truth((TOW, offline)), late_s=12.5)
    assert truth.required[0] == TOW
    assert truth.required[1].ts_max_ms == T0 + 13_500
    assert truth.required[1].ts_min_ms == T0


@settings(max_examples=60, deadline=None)
@given(
    met=st.lists(st.booleans(), min_size=1, max_size=12),
    quiet_alerts=st.integers(0, 20),
    hours=st.floats(0.5, 48),
    quiet=st.integers(1, 50),
)
def test_recall_and_false_rate_follow_their_definitions(
    met: list[bool], quiet_alerts: int, hours: float, quiet: int
) -> None:
    required = tuple(
        Expectation(
            "shock", None, "trk-001", count=1, ts_min_ms=T0 + k * 1000, ts_max_ms=T0 + k * 1000
        )
        for k in range(len(met))
    )
    truth = _truth(required, quiet=quiet, hours=hours)
    alerts = [_alert("shock", "trk-001", T0 + k * 1000) for k, hit in enumerate(met) if hit]
    alerts += [_alert("shock", "trk-010", T0 + k, alert_id=f"q{k}") for k in range(quiet_alerts)]
    q = score(truth, alerts)
    assert q.required == len(met)
    assert q.met == sum(met)
    assert q.recall == sum(met) / len(met)
    assert q.false == quiet_alerts
    car_hours = (2 + quiet) * (truth.end_ms - truth.start_ms) / HOUR
    assert math.isclose(q.car_hours, car_hours)
    assert math.isclose(q.false_per_1000_car_hours or 0.0, quiet_alerts * 1000 / car_hours)
    judged = sum(met) + quiet_alerts
    assert q.precision == (sum(met) / judged if judged else None)


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(6))))
def test_the_verdict_does_not_depend_on_arrival_order(order: list[int]) -> None:
    truth = _truth((TOW, LEFT), (CROSS,))
    alerts = [
        _alert("tow.suspected", "trk-001", T0 + 600_000),
        _alert("tow.suspected", "trk-001", T0 + 650_000),
        _alert("zone.left", "trk-002", T0 + 900_000, "zone-2"),
        _alert("geofence.exit", "trk-002", T0 + 500_000, "zone-2"),
        _alert("shock", "trk-011", T0 + 1000),
        _alert("zone.left", "trk-002", T0 + 3 * HOUR, "zone-2"),
    ]
    q = score(truth, [alerts[i] for i in order])
    assert q.to_json() == score(truth, alerts).to_json()


def test_due_times_by_kind() -> None:
    log = PublishLog(zone_grace_s=300)
    log.record("trk-1", (("gps", T0),), 100.0)
    log.record("trk-1", (("gps", T0 + 15_000), ("vib", T0 + 16_000)), 101.0)
    log.record("trk-1", (("gps", T0 + 30_000),), 102.0)
    log.record(None, (), 102.5)  # a reject: counted, not indexed
    log.record("trk-1", (("gps", T0 + 45_000),), 1000.0)  # after a long silence
    assert log.absorb() == 5
    assert (log.messages, log.readings, log.max_ts_ms) == (5, 5, T0 + 45_000)
    # a reading: the publish of its message
    assert log.due(_alert("shock", "trk-1", T0 + 16_000)) == (DueKind.READING, 101.0)
    # a timer: the first message with a later reading
    assert log.due(_alert("zone.left", "trk-1", T0 + 20_000)) == (DueKind.TIMER, 102.0)
    # a timer running out while the device was silent: last message + zone grace (wall)
    assert log.due(_alert("zone.left", "trk-1", T0 + 40_000)) == (DueKind.TIMER, 402.0)
    # offline: its own ts (a wall time); online: the first message at or after its ts
    assert log.due(_alert("device.offline", "trk-1", 500_000)) == (DueKind.OFFLINE, 500.0)
    assert log.due(_alert("device.online", "trk-1", 900_000)) == (DueKind.ONLINE, 1000.0)
    assert log.due(_alert("pledge.vin_conflict", None, T0)) is None
    s = sample(log, _alert("shock", "trk-1", T0 + 16_000), 101.25)
    assert s is not None
    assert math.isclose(s.total_ms, 250.0)
    assert math.isclose(s.to_detect_ms + s.to_webhook_ms, s.total_ms)


def test_percentiles() -> None:
    stats = percentiles([float(x) for x in range(1, 101)])
    assert stats["count"] == 100
    assert stats["p50"] == 50.5
    assert stats["max"] == 100.0
    assert percentiles([])["p99"] is None


def test_the_metrics_parser_reads_names_labels_and_values() -> None:
    m = Metrics.parse(
        "# HELP pledgewatch_readings_total Accepted readings.\n"
        "# TYPE pledgewatch_readings_total counter\n"
        'pledgewatch_readings_total{stream="gps"} 12\n'
        'pledgewatch_readings_total{stream="vib"} 3.0\n'
        'pledgewatch_rejected_total{reason="bad topic",detail="a=\\"b\\"} c"} 2\n'
        'pledgewatch_batch_seconds_bucket{le="+Inf"} 7 1700000000000\n'
        "pledgewatch_outbox_pending 4\n"
        "not a sample\n"
    )
    assert m.total("pledgewatch_readings_total") == 15
    assert m.value("pledgewatch_readings_total", stream="gps") == 12
    assert m.value("pledgewatch_readings_total", stream="none") == 0
    assert m.by_label("pledgewatch_readings_total") == {"gps": 12, "vib": 3}
    assert m.by_label("pledgewatch_rejected_total", "detail") == {'a="b"} c': 2}
    assert m.value("pledgewatch_rejected_total", reason="bad topic") == 2
    assert m.values['pledgewatch_batch_seconds_bucket{le="+Inf"}'] == 7  # timestamp ignored
    assert m.total("pledgewatch_outbox_pending") == 4
    assert m.total("pledgewatch_outbox") == 0  # a name, not a prefix
    assert m.processed == 15
