"""Device clocks that disagree with the arrival clock (DESIGN §4 `device.clock_skew`).

Most tests here run on a live runtime clock: each reading arrives at a wall-clock time of
its own (`Live.feed(now_s, reading)`), as in the live engine, where `now_ms` is the time the
MQTT message arrived. `Fleet` (the replay clock) is used where the replay's view matters.
"""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.model import Alert, AlertType, Severity
from devices.readings import Reading
from engine.core.config import Config
from engine.core.state import device_from_json, device_to_json
from engine.runtime.pipeline import Pipeline
from geofence.index import FenceIndex
from tests.factories import HOME, T0, Fleet, circle, fix, loan, of_type, offset, status, types

HOME_ZONE = circle("home", HOME, 1000)
FAR = offset(*HOME, 2000, 0)
OUT = offset(*HOME, 1100, 0)  # just out of the home zone
YEAR_S = 365 * 86_400


class Live:
    """A pipeline fed with the wall clock of arrival, as the live engine feeds it."""

    def __init__(self, config: Config | None = None) -> None:
        self.pipeline = Pipeline(FenceIndex.build([HOME_ZONE]), config)
        self.pipeline.put_loan(loan(), T0, T0)
        self.alerts: list[Alert] = []

    def feed(self, now_s: float, *readings: Reading) -> list[Alert]:
        """Readings arriving `now_s` seconds after T0 (wall clock), then the timers due."""
        now = T0 + round(now_s * 1000)
        out = self.pipeline.process(list(readings), [now] * len(readings))
        out += self.pipeline.advance(now)
        self.alerts += out
        return out


def skewed(real_s: float, at: tuple[float, float], back_s: int = YEAR_S) -> Reading:
    """A fix taken at `real_s` by a device whose clock is `back_s` behind."""
    return fix(real_s - back_s, at)


def leave_home_and_lose_a_year(live: Live) -> None:
    """At home, out of the zone at 60 s; from 120 s on the tracker's clock is a year behind."""
    live.feed(0, fix(0, HOME))
    live.feed(60, fix(60, FAR))  # geofence.exit; zone grace starts
    for t in range(120, 480, 60):
        live.feed(t, skewed(t, offset(*FAR, t, 0)))


def test_a_clock_back_a_year_while_leaving_the_zone_raises_clock_skew_then_zone_left() -> None:
    live = Live()
    leave_home_and_lose_a_year(live)
    assert types(live.alerts) == ["geofence.exit", "device.clock_skew", "zone.left"]
    skew = of_type(live.alerts, AlertType.DEVICE_CLOCK_SKEW)[0]
    assert skew.severity is Severity.WARNING
    assert skew.ts_ms == T0 + (240 - YEAR_S) * 1000  # the third fix on the new clock
    assert skew.detected_ms == T0 + 240_000
    assert skew.details == {
        "old_clock_ms": T0 + 60_000,
        "new_clock_ms": T0 + (240 - YEAR_S) * 1000,
        "skew_s": YEAR_S,
        "readings": 3,
    }
    assert skew.loan_id == "L-1"
    left = of_type(live.alerts, AlertType.ZONE_LEFT)[0]
    # grace started at 60 s on the old clock and ran on, on the new one: 300 s later
    assert left.ts_ms == T0 + (360 - YEAR_S) * 1000
    assert left.details["outside_since_ms"] == T0 + (60 - YEAR_S) * 1000
    counters = live.pipeline.counters
    assert counters.clock_skew == {"gps": 2}
    assert sum(counters.late.values()) == 0
    assert counters.readings["gps"] == 8  # held-back readings are accepted readings too


def test_the_new_clock_keeps_fences_working() -> None:
    live = Live()
    leave_home_and_lose_a_year(live)
    out = live.feed(480, skewed(480, HOME))  # home again, on the new clock
    assert types(out) == ["geofence.enter", "zone.returned"]
    assert out[0].ts_ms == T0 + (480 - YEAR_S) * 1000


def test_clock_skew_on_the_replay_clock() -> None:
    """A replay has no arrival clock: the largest event time stands still meanwhile."""
    fleet = Fleet([HOME_ZONE], [loan()])
    fleet.feed(fix(0, HOME), fix(60, FAR))
    for t in range(120, 600, 60):
        fleet.feed(skewed(t, offset(*FAR, t * 10, 0)))
    assert types(fleet.alerts) == ["geofence.exit", "device.clock_skew", "zone.left"]
    assert fleet.pipeline.counters.clock_skew == {"gps": 2}


def test_readings_far_behind_from_a_device_silent_for_longer_are_late() -> None:
    """Not fresh: the first reading after a silence longer than `max_clock_skew_s`."""
    live = Live()
    live.feed(0, fix(0, HOME))
    out = live.feed(7200, fix(-7200, FAR))
    assert of_type(out, AlertType.DEVICE_CLOCK_SKEW) == []
    assert live.pipeline.counters.late == {"gps": 1}
    assert live.pipeline.counters.clock_skew == {}


def test_a_device_whose_clock_reset_during_a_silence_re_anchors_after_it() -> None:
    live = Live()
    live.feed(0, fix(0, HOME))
    for t in range(7200, 7200 + 5 * 60, 60):  # back after 2 h, clock a year behind
        live.feed(t, skewed(t, HOME))
    assert types(live.alerts) == ["device.offline", "device.online", "device.clock_skew"]
    assert live.pipeline.counters.late == {"gps": 1}  # the first one, after the silence
    assert live.pipeline.counters.clock_skew == {"gps": 2}


def test_skewed_readings_that_do_not_agree_do_not_re_anchor() -> None:
    live = Live()
    live.feed(0, fix(0, HOME))
    live.feed(60, fix(60, HOME))
    # far behind, but jumping around: out of order, or hours apart from each other
    for now_s, t_s in [(120, -20_000), (180, -30_000), (240, -40_000), (300, -25_000)]:
        live.feed(now_s, fix(t_s, HOME))
    assert of_type(live.alerts, AlertType.DEVICE_CLOCK_SKEW) == []
    assert live.pipeline.counters.clock_skew == {"gps": 4}


def test_a_reading_on_the_old_clock_ends_the_episode() -> None:
    live = Live()
    live.feed(0, fix(0, HOME))
    live.feed(120, skewed(120, HOME), skewed(125, HOME))
    live.feed(130, fix(130, HOME))  # the old clock again
    live.feed(140, skewed(140, HOME))  # a new episode: one reading so far
    assert of_type(live.alerts, AlertType.DEVICE_CLOCK_SKEW) == []
    state = live.pipeline.devices["trk-1"]
    assert state.skew == (T0 + (140 - YEAR_S) * 1000,)
    assert state.event_ms == T0 + 130_000


def test_a_held_back_reading_delivered_twice_is_a_duplicate() -> None:
    live = Live()
    live.feed(0, fix(0, HOME))
    first = status(120 - YEAR_S, tamper=False)  # a stream the old clock never reported
    live.feed(120, first)
    live.feed(121, first)
    assert live.pipeline.counters.duplicates == {"status": 1}
    assert live.pipeline.devices["trk-1"].skew == (first.ts_ms,)


def test_a_status_report_on_the_new_clock_counts_toward_the_episode() -> None:
    live = Live()
    live.feed(0, fix(0, HOME))
    live.feed(60, skewed(60, HOME))
    live.feed(90, status(90 - YEAR_S, tamper=False))
    out = live.feed(120, skewed(120, HOME))
    assert types(out) == ["device.clock_skew"]
    assert live.pipeline.counters.clock_skew == {"gps": 1, "status": 1}
    out = live.feed(150, status(150 - YEAR_S, tamper=True))
    assert types(out) == ["tamper"]  # status reports work on the new clock, too


def test_clock_skew_settings_are_configurable() -> None:
    live = Live(Config(max_clock_skew_s=60, clock_skew_readings=2))
    live.feed(0, fix(0, HOME))
    live.feed(10, fix(-100, HOME))
    out = live.feed(20, fix(-90, HOME))
    assert types(out) == ["device.clock_skew"]
    assert out[0].details["skew_s"] == 110


def test_skew_episode_survives_a_snapshot() -> None:
    live = Live()
    live.feed(0, fix(0, HOME))
    live.feed(60, skewed(60, HOME), skewed(120, HOME))
    state = live.pipeline.devices["trk-1"]
    assert len(state.skew) == 2
    assert state.skew_ms == YEAR_S * 1000  # the old clock at 0 s, run on for 60 s, minus 60 s
    doc = orjson.loads(orjson.dumps(device_to_json(state)))
    assert device_from_json(doc) == state


def test_a_snapshot_of_an_older_build_restores_with_the_defaults() -> None:
    live = Live()
    live.feed(0, fix(0, HOME))
    doc = device_to_json(live.pipeline.devices["trk-1"])
    for key in ("ahead_ms", "skew", "skew_ms"):
        del doc[key]
    assert device_from_json(doc) == live.pipeline.devices["trk-1"]


# A fix stamped ahead of its arrival (within the decoder's 5 minutes)


def test_a_fix_299_s_ahead_does_not_make_the_next_fixes_late() -> None:
    live = Live()
    live.feed(0, fix(0, HOME))
    live.feed(60, fix(60 + 299, HOME))  # accepted: under the 5-minute limit
    out = live.feed(100, fix(100, OUT))  # the next ordinary fix: the car has left
    assert types(out) == ["geofence.exit"]
    assert out[0].ts_ms == T0 + 100_000
    state = live.pipeline.devices["trk-1"]
    assert state.event_ms == T0 + 100_000
    assert state.ahead_ms == T0 + 359_000
    for t in range(110, 420, 10):
        live.feed(t, fix(t, OUT))
    counters = live.pipeline.counters
    assert counters.late == {}
    assert counters.readings["gps"] == 3 + 31
    left = of_type(live.alerts, AlertType.ZONE_LEFT)
    assert [a.ts_ms for a in left] == [T0 + 400_000]  # grace from the exit


def test_zone_grace_started_by_an_ahead_fix_runs_from_its_arrival() -> None:
    live = Live()
    live.feed(0, fix(0, HOME))
    out = live.feed(60, fix(60 + 299, OUT))  # out of the zone, stamped 299 s ahead
    assert types(out) == ["geofence.exit"]
    assert out[0].ts_ms == T0 + 359_000  # its own alerts keep the stamp it carried
    for t in range(90, 400, 30):
        live.feed(t, fix(t, OUT))
    left = of_type(live.alerts, AlertType.ZONE_LEFT)
    assert [a.ts_ms for a in left] == [T0 + 365_000]  # from its arrival + 5 s, not 659 s
    assert live.pipeline.counters.late == {}


def test_a_tracker_whose_clock_runs_steadily_ahead_keeps_its_stamps() -> None:
    """30 s ahead, three fixes 10 s apart per message: nothing to contradict its stamps."""
    live = Live()
    for k in range(6):
        batch = [fix(30 * k + 10 * j + 30, offset(*HOME, 150 * (3 * k + j), 0)) for j in range(3)]
        live.feed(30 * k + 21, *batch)
    assert types(live.alerts) == ["geofence.exit"]
    assert live.alerts[0].ts_ms == T0 + 100_000  # the fix 1050 m north, as stamped
    assert live.pipeline.counters.late == {}
    assert live.pipeline.devices["trk-1"].ahead_ms == -1


def test_the_ahead_fix_repeated_is_still_a_duplicate() -> None:
    live = Live()
    live.feed(0, fix(0, HOME))
    ahead = fix(60 + 299, HOME)
    live.feed(60, ahead)
    live.feed(70, fix(70, HOME))
    live.feed(200, ahead)  # redelivered, whenever
    live.feed(400, ahead)  # after real time caught up with its stamp
    assert live.pipeline.counters.duplicates == {"gps": 2}
    assert live.pipeline.counters.late == {}


def test_readings_older_than_an_ordinary_one_after_the_ahead_fix_are_late() -> None:
    live = Live()
    live.feed(0, fix(0, HOME))
    live.feed(60, fix(60 + 299, HOME))
    live.feed(80, fix(80, HOME))
    live.feed(90, fix(75, FAR))  # out of order behind the fix of 80 s
    assert live.pipeline.counters.late == {"gps": 1}
    state = live.pipeline.devices["trk-1"]
    assert state.fix is not None
    assert state.fix.ts_ms == T0 + 80_000


def test_a_device_clock_a_few_seconds_ahead_is_taken_as_it_is() -> None:
    live = Live()
    live.feed(0, fix(3, HOME))
    out = live.feed(60, fix(63, FAR))
    assert out[0].ts_ms == T0 + 63_000
    assert live.pipeline.devices["trk-1"].ahead_ms == -1


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 12), st.integers(0, 12))
def test_a_snapshot_mid_episode_changes_no_alert(cut: int, jump: int) -> None:
    """Snapshot and restore anywhere around a clock jump: the same alerts as one run."""
    readings: list[Reading] = [fix(60 * k, HOME if k < 2 else FAR) for k in range(jump + 1)]
    readings += [skewed(60 * k, offset(*FAR, k * 10, 0)) for k in range(jump + 1, 14)]
    whole = Fleet([HOME_ZONE], [loan()])
    whole.feed(*readings)
    first = Fleet([HOME_ZONE], [loan()])
    first.feed(*readings[:cut])
    second = Fleet([HOME_ZONE], [loan()])
    second.pipeline.restore(orjson.loads(orjson.dumps(first.pipeline.snapshot())))
    second.clock = first.clock
    second.feed(*readings[cut:])
    assert [a.to_json() for a in first.alerts + second.alerts] == [
        a.to_json() for a in whole.alerts
    ]
