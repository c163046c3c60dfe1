"""Devices on no active loan: no offline alerts, and forgotten after `evict_after_s` (DESIGN §4)."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.mqtt_source import Message
from engine.core.config import Config
from engine.runtime.live import Engine
from engine.store.sqlite_store import SqliteStore
from lending.model import LoanStatus
from tests.factories import HOME, T0, Fleet, circle, fix, loan, offset, types

HOME_ZONE = circle("home", HOME, 1000)
FAR = offset(*HOME, 2000, 0)
DAY_S = 86_400
WEEK_S = 7 * DAY_S


def test_a_device_on_no_loan_goes_offline_and_online_silently() -> None:
    fleet = Fleet()
    fleet.feed(fix(0, HOME))
    assert fleet.advance_to(1800) == []
    assert fleet.pipeline.devices["trk-1"].offline
    assert fleet.feed(fix(2000, HOME)) == []
    assert not fleet.pipeline.devices["trk-1"].offline


def test_a_device_of_a_closed_loan_raises_no_offline() -> None:
    fleet = Fleet([], [loan(status=LoanStatus.CLOSED)])
    fleet.feed(fix(0, HOME))
    assert fleet.advance_to(3600) == []


def test_three_thousand_unknown_ids_raise_no_offline() -> None:
    fleet = Fleet()
    for i in range(3000):
        fleet.feed(fix(i / 100, HOME, device=f"x-{i}"))
    assert fleet.advance_to(2 * 3600) == []
    assert len(fleet.pipeline.devices) == 3000
    fleet.advance_to(WEEK_S + 3600)
    assert fleet.pipeline.devices == {}
    assert fleet.pipeline.counters.evicted == 3000


def test_a_device_on_no_loan_is_forgotten_after_evict_after_s() -> None:
    fleet = Fleet()
    fleet.feed(fix(0, HOME))
    fleet.advance_to(WEEK_S - 1)
    assert "trk-1" in fleet.pipeline.devices
    fleet.pipeline.take_dirty()
    fleet.advance_to(WEEK_S)
    assert "trk-1" not in fleet.pipeline.devices
    assert fleet.pipeline.take_evicted() == ["trk-1"]
    assert fleet.pipeline.take_dirty() == ([], [])  # nothing to write for it
    assert fleet.pipeline.take_evicted() == []
    assert "trk-1" not in orjson.dumps(fleet.pipeline.snapshot()).decode()


def test_evict_after_s_counts_from_the_last_reading() -> None:
    fleet = Fleet(config=Config(evict_after_s=3600))
    fleet.feed(fix(0, HOME))
    fleet.advance_to(3000)
    fleet.feed(fix(3000, HOME))
    fleet.advance_to(6599)
    assert "trk-1" in fleet.pipeline.devices
    fleet.advance_to(6600)
    assert "trk-1" not in fleet.pipeline.devices


def test_a_device_of_an_active_loan_is_kept() -> None:
    fleet = Fleet([], [loan()])
    fleet.feed(fix(0, HOME))
    out = fleet.advance_to(30 * DAY_S)
    assert types(out) == ["device.offline"]
    assert "trk-1" in fleet.pipeline.devices


def test_a_loan_closed_while_its_device_is_silent_lets_it_be_forgotten() -> None:
    fleet = Fleet([], [loan()])
    fleet.feed(fix(0, HOME))
    fleet.advance_to(DAY_S)  # offline: nothing scheduled for it any more
    fleet.pipeline.put_loan(loan(status=LoanStatus.CLOSED), fleet.clock, fleet.clock)
    fleet.advance_to(WEEK_S)
    assert "trk-1" not in fleet.pipeline.devices


def test_a_device_put_on_a_loan_before_its_time_is_kept() -> None:
    fleet = Fleet()
    fleet.feed(fix(0, HOME))
    fleet.advance_to(DAY_S)
    fleet.pipeline.put_loan(loan(), fleet.clock, fleet.clock)
    fleet.advance_to(2 * WEEK_S)
    assert "trk-1" in fleet.pipeline.devices


def test_a_device_reporting_after_eviction_starts_afresh() -> None:
    fleet = Fleet([HOME_ZONE])
    fleet.feed(fix(0, HOME))
    fleet.advance_to(WEEK_S)
    assert "trk-1" not in fleet.pipeline.devices
    assert fleet.feed(fix(WEEK_S + 60, FAR)) == []  # first fix again: no geofence.exit
    state = fleet.pipeline.devices["trk-1"]
    assert state.inside == frozenset()
    assert fleet.pipeline.take_evicted() == []  # back in the same checkpoint: a new row
    assert [s.device_id for s in fleet.pipeline.take_dirty()[0]] == ["trk-1"]


def test_a_restored_checkpoint_forgets_what_is_overdue() -> None:
    fleet = Fleet()
    fleet.feed(fix(0, HOME), fix(0, HOME, device="other"))
    snapshot = orjson.loads(orjson.dumps(fleet.pipeline.snapshot()))
    later = Fleet()
    later.pipeline.restore(snapshot)
    later.advance_to(WEEK_S)
    assert later.pipeline.devices == {}
    assert later.pipeline.take_evicted() == ["other", "trk-1"]


ids = st.integers(0, 400).map(lambda i: f"dev-{i}")
steps_s = st.sampled_from([0, 1, 60, 600, 3600, 6 * 3600])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(ids, steps_s), min_size=1, max_size=300))
def test_memory_stays_bounded_by_the_devices_seen_within_evict_after_s(
    stream: list[tuple[str, int]],
) -> None:
    """Random ids on no loan, time moving forward: the devices held are exactly those
    that reported within the last `evict_after_s` of the runtime clock."""
    evict_s = DAY_S
    fleet = Fleet([HOME_ZONE], config=Config(evict_after_s=evict_s))
    last_seen: dict[str, int] = {}
    times: list[int] = []
    t = 0
    for device, step_s in stream:
        t += step_s
        fleet.feed(fix(t, HOME, device=device))
        last_seen[device] = t
        times.append(t)
        recent = {d for d, seen in last_seen.items() if seen > t - evict_s}
        assert set(fleet.pipeline.devices) == recent
        # timers too: at most one live wake-up per device, and superseded ones of the window
        readings_in_window = sum(1 for seen in times if seen > t - evict_s)
        assert len(fleet.pipeline._heap) <= len(recent) + readings_in_window


def message(device: str, ts_ms: int, arrived_ms: int) -> Message:
    payload = orjson.dumps({"ts": ts_ms, "lat": HOME[0], "lon": HOME[1]})
    return Message(f"telematics/{device}/gps", payload, 1, 0, arrived_ms, 0)


def test_the_live_engine_deletes_forgotten_devices_from_the_checkpoint(tmp_path: Path) -> None:
    """Evicted on the wall clock; the batch deletes the row; a restart does not bring it back."""
    clock = [T0 / 1000]
    store = SqliteStore(tmp_path / "pw.db")
    store.migrate()
    store.put_loan(loan("L-1", ["kept"]), [], T0)
    engine = Engine(store, None, clock=lambda: clock[0])
    engine.load()
    engine.process([message("kept", T0, T0), message("stray", T0, T0)])
    assert sorted(s.device_id for s in store.load_checkpoint()[0]) == ["kept", "stray"]
    assert engine.devices_near(*HOME, 10) != []

    clock[0] += WEEK_S
    alerts = engine.process([])
    assert [a.device_id for a in alerts] == ["kept"]  # device.offline, for the loan's tracker
    assert [s.device_id for s in store.load_checkpoint()[0]] == ["kept"]
    assert [d for d, _ in engine.devices_near(*HOME, 10)] == ["kept"]
    assert "pledgewatch_devices_evicted_total 1" in engine.metrics()

    restarted = Engine(store, None, clock=lambda: clock[0])
    restarted.load()
    assert sorted(restarted.pipeline.devices) == ["kept"]
    store.close()
