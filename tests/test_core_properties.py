"""Property tests of the detection core over random fleets (hypothesis)."""

from __future__ import annotations

import math
import os
import random
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.model import Alert, AlertType, iso_ms
from devices.readings import Reading
from engine.runtime.pipeline import Pipeline
from tests.factories import HOME, Fleet, circle, fix, loan, offset, status, vib

FENCES = [
    circle("home", HOME, 1000),
    circle("work", offset(*HOME, 2500, 1500), 600),
    circle("pawn", offset(*HOME, 1200, 0), 150, "risk_site", "pawnshop"),
    circle("pound", offset(*HOME, -1500, 800), 120, "risk_site", "impound"),
]
LOANS = [loan("L-1", ["a", "b"], ["home", "work"]), loan("L-2", ["c"], ["home"])]
DEVICES = ["a", "b", "c", "d"]

PROPS = settings(
    max_examples=int(os.environ.get("PW_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def streams(draw: st.DrawFn) -> list[Reading]:
    """A time-ordered stream of random readings of a few devices near HOME."""
    n = draw(st.integers(5, 80))
    seed = draw(st.integers(0, 2**32 - 1))
    rnd = random.Random(seed)
    t = 0.0
    out: list[Reading] = []
    for _ in range(n):
        t += rnd.choice([1, 5, 30, 60, 120, 400, 2000])
        dev = rnd.choice(DEVICES)
        kind = rnd.random()
        if kind < 0.7:
            at = offset(*HOME, rnd.uniform(-3000, 3000), rnd.uniform(-3000, 3000))
            out.append(
                fix(
                    t,
                    at,
                    device=dev,
                    ignition=rnd.choice([None, True, False]),
                    speed_kmh=rnd.choice([None, 0.0, 30.0]),
                )
            )
        elif kind < 0.85:
            out.append(vib(t, rnd.choice([0.3, 1.0, 2.6, 4.0]), device=dev))
        else:
            out.append(
                status(
                    t,
                    device=dev,
                    ext_power=rnd.choice([None, True, False]),
                    tamper=rnd.choice([None, True, False]),
                )
            )
    return out


def run(readings: list[Reading]) -> list[Alert]:
    fleet = Fleet(FENCES, LOANS)
    fleet.feed(*readings)
    return fleet.alerts


@PROPS
@given(streams())
def test_enter_and_exit_alternate(readings: list[Reading]) -> None:
    fleet = Fleet(FENCES, LOANS)
    last: dict[tuple[str | None, str | None], AlertType] = {}
    initial: dict[str, frozenset[str]] = {}
    for r in readings:
        for a in fleet.feed(r):
            if a.type in {AlertType.GEOFENCE_ENTER, AlertType.GEOFENCE_EXIT}:
                key = (a.device_id, a.fence_id)
                assert last.get(key) != a.type, f"{a.type} twice in a row for {key}"
                if key not in last and a.device_id is not None:
                    was_inside = a.fence_id in initial[a.device_id]
                    assert (a.type is AlertType.GEOFENCE_EXIT) == was_inside
                last[key] = a.type
        state = fleet.pipeline.devices.get(r.device_id)
        if state is not None and state.fix is not None:
            initial.setdefault(r.device_id, state.inside)


@PROPS
@given(streams(), st.data())
def test_a_duplicate_reading_adds_nothing(readings: list[Reading], data: st.DataObject) -> None:
    picks = data.draw(st.lists(st.integers(0, len(readings) - 1), max_size=10))
    with_dups: list[Reading] = []
    for i, r in enumerate(readings):
        with_dups.append(r)
        with_dups.extend(r for _ in range(picks.count(i)))  # redelivered right after
    assert [a.id for a in run(with_dups)] == [a.id for a in run(readings)]


@PROPS
@given(streams(), st.data())
def test_snapshot_and_restore_mid_stream(readings: list[Reading], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(readings)))
    whole = run(readings)
    first = Fleet(FENCES, LOANS)
    first.feed(*readings[:cut])
    checkpoint = orjson.loads(orjson.dumps(first.pipeline.snapshot()))
    second = Fleet(FENCES, LOANS)
    second.pipeline.restore(checkpoint)
    second.clock = first.clock
    second.feed(*readings[cut:])
    raised_on_loading_loans = len(Fleet(FENCES, LOANS).alerts)
    resumed = first.alerts + second.alerts[raised_on_loading_loans:]
    assert [a.to_json() for a in resumed] == [a.to_json() for a in whole]


@PROPS
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 45.0, 90.0, 180.0, 270.0]))
def test_parked_on_a_boundary_with_20m_noise_never_flaps(seed: int, bearing: float) -> None:
    rnd = random.Random(seed)
    north, east = math.cos(math.radians(bearing)), math.sin(math.radians(bearing))
    edge = offset(*HOME, 1000 * north, 1000 * east)
    fleet = Fleet(FENCES[:1])
    for i in range(200):
        r, theta = 20 * math.sqrt(rnd.random()), rnd.uniform(0, 2 * math.pi)
        fleet.feed(fix(i * 30, offset(*edge, r * math.cos(theta), r * math.sin(theta))))
    crossing = {AlertType.GEOFENCE_ENTER, AlertType.GEOFENCE_EXIT}
    assert [a for a in fleet.alerts if a.type in crossing] == []


@PROPS
@given(streams())
def test_alert_ids_are_unique_and_stable(readings: list[Reading]) -> None:
    alerts = run(readings)
    ids = [a.id for a in alerts]
    assert len(set(ids)) == len(ids)
    assert ids == [a.id for a in run(readings)]


def test_pipeline_snapshot_rejects_other_versions() -> None:
    p = Pipeline(Fleet().pipeline.index)
    with pytest.raises(ValueError, match="version 99"):
        p.restore({"v": 99, "devices": [], "loans": []})


@given(st.integers(min_value=-(10**12), max_value=4 * 10**12))
def test_iso_ms_matches_the_datetime_reference(ts_ms: int) -> None:
    """The cached formatter of alert times agrees with datetime, milliseconds and all."""
    dt = datetime.fromtimestamp(ts_ms // 1000, tz=UTC)
    millis = f".{ts_ms % 1000:03d}" if ts_ms % 1000 else ""
    assert iso_ms(ts_ms) == dt.strftime("%Y-%m-%dT%H:%M:%S") + millis + "Z"
    assert datetime.fromisoformat(iso_ms(ts_ms)).timestamp() * 1000 == pytest.approx(ts_ms)
