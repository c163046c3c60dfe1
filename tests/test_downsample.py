"""The track's downsampling (`engine.api.downsample`): a subsequence of at most `max_points`
that keeps the first and last fix and the turning points; property-tested."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.api.downsample import downsample
from engine.store.console_types import TrackPoint
from tests.factories import HOME, T0, offset, property_settings


def track(offsets_m: list[tuple[float, float]], at: tuple[float, float] = HOME) -> list[TrackPoint]:
    """Fixes one second apart at these (north, east) offsets in metres from `at`."""
    return [
        TrackPoint(T0 + i * 1000, *offset(at[0], at[1], north, east), None)
        for i, (north, east) in enumerate(offsets_m)
    ]


coordinates = st.tuples(
    st.floats(-89.0, 89.0, allow_nan=False), st.floats(-180.0, 180.0, allow_nan=False)
)


@property_settings(300)
@given(
    points=st.lists(coordinates, max_size=300),
    max_points=st.integers(2, 60),
)
def test_a_subsequence_with_both_ends_within_the_budget(
    points: list[tuple[float, float]], max_points: int
) -> None:
    fixes = [TrackPoint(T0 + i, lat, lon, None) for i, (lat, lon) in enumerate(points)]
    kept = downsample(fixes, max_points)
    if len(fixes) <= max_points:
        assert kept == fixes
        return
    assert len(kept) <= max_points
    assert kept[0] == fixes[0]
    assert kept[-1] == fixes[-1]
    stamps = [p.ts_ms for p in kept]
    assert stamps == sorted(set(stamps))  # in order, no fix twice
    assert set(kept) <= set(fixes)


@property_settings(200)
@given(
    legs=st.lists(
        st.tuples(st.floats(200.0, 2000.0), st.floats(0.0, 2 * math.pi)), min_size=1, max_size=6
    ),
    per_leg=st.integers(5, 40),
)
def test_the_corners_of_a_drive_are_kept(legs: list[tuple[float, float]], per_leg: int) -> None:
    """A drive of straight legs: with room for every corner, every corner is kept."""
    north, east = 0.0, 0.0
    offsets: list[tuple[float, float]] = [(north, east)]
    corners = [0]
    for length, bearing in legs:
        offsets.extend(
            (
                north + math.cos(bearing) * length * step / per_leg,
                east + math.sin(bearing) * length * step / per_leg,
            )
            for step in range(1, per_leg + 1)
        )
        north, east = offsets[-1]
        corners.append(len(offsets) - 1)
    fixes = track(offsets)
    kept = downsample(fixes, len(corners) + 1)
    kept_stamps = {p.ts_ms for p in kept}
    # a leg that turns back onto itself or goes on straight is no corner: only real turns
    for i in corners[1:-1]:
        before = _bearing(offsets[i - 1], offsets[i])
        after = _bearing(offsets[i], offsets[i + 1])
        turn = abs((after - before + math.pi) % (2 * math.pi) - math.pi)
        if 0.2 < turn < math.pi - 0.2:
            assert fixes[i].ts_ms in kept_stamps, (i, turn)


def _bearing(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.atan2(b[1] - a[1], b[0] - a[0])


def test_a_parked_car_keeps_only_its_ends() -> None:
    fixes = track([(0.0, 0.0)] * 500)
    assert downsample(fixes, 100) == [fixes[0], fixes[-1]]


def test_one_detour_is_kept_among_straight_fixes() -> None:
    offsets = [(float(i), 0.0) for i in range(100)]
    offsets[50] = (50.0, 300.0)  # a jump 300 m aside
    fixes = track(offsets)
    assert downsample(fixes, 3) == [fixes[0], fixes[50], fixes[-1]]


def test_a_track_across_the_antimeridian() -> None:
    """East along the equator from 179.9955 to -179.9955: a straight line, not a trip
    around the world; its one detour is kept."""
    fixes = [
        TrackPoint(T0 + i, 0.0, (179.9955 + i * 0.0001 + 180.0) % 360.0 - 180.0, None)
        for i in range(91)
    ]
    fixes[20] = TrackPoint(fixes[20].ts_ms, 0.001, fixes[20].lon, None)  # 111 m north
    assert downsample(fixes, 3) == [fixes[0], fixes[20], fixes[-1]]


def test_at_least_two_points() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        downsample(track([(0.0, 0.0)] * 5), 1)
