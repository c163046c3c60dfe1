"""The dynamic index of devices' latest positions, against brute force."""

from __future__ import annotations

import math
import random

import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.fence import Fence, parse_fence
from geofence.geo import haversine_m
from geofence.positions import PositionIndex

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def impound(lat: float, lon: float, radius_m: float) -> Fence:
    doc = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": {"kind": "risk_site", "category": "impound", "radius_m": radius_m},
    }
    return parse_fence("lot", doc)


def test_update_move_remove() -> None:
    index = PositionIndex()
    assert len(index) == 0
    assert index.position("a") is None
    index.update("a", 31.23, 121.47)
    index.update("b", 31.24, 121.48)
    assert len(index) == 2
    assert "a" in index
    assert index.position("a") == (31.23, 121.47)
    lot = impound(31.23, 121.47, 300.0)
    assert index.inside(lot) == ["a"]
    index.update("a", 40.0, 116.0)  # moved away: no stale entry stays behind
    assert len(index) == 2
    assert index.position("a") == (40.0, 116.0)
    assert index.inside(lot) == []
    assert [d for d, _ in index.near(40.0, 116.0, 10.0)] == ["a"]
    index.update("b", 31.23, 121.47)
    index.update("b", 31.23, 121.47)  # same place again
    assert index.inside(lot) == ["b"]
    assert index.remove("b") is True
    assert index.remove("b") is False
    assert "b" not in index
    assert index.inside(lot) == []
    assert len(index) == 1
    index.update("b", 31.23, 121.47)
    assert index.inside(lot) == ["b"]


def test_near_sorted_by_distance_then_id() -> None:
    index = PositionIndex()
    index.update("z", 0.0, 0.001)
    index.update("a", 0.0, -0.001)
    index.update("m", 0.0, 0.0005)
    index.update("far", 1.0, 1.0)
    found = index.near(0.0, 0.0, 200.0)
    assert [d for d, _ in found] == ["m", "a", "z"]
    assert found[0][1] == pytest.approx(haversine_m(0.0, 0.0, 0.0, 0.0005))
    assert index.near(0.0, 0.0, 0.0) == []
    index.update("here", 0.0, 0.0)
    assert index.near(0.0, 0.0, 0.0) == [("here", 0.0)]


def test_near_across_the_antimeridian_and_the_pole() -> None:
    index = PositionIndex()
    index.update("east", 10.0, 179.9995)
    index.update("west", 10.0, -179.9995)
    index.update("edge", 10.0, 180.0)
    found = dict(index.near(10.0, -179.9999, 200.0))
    assert set(found) == {"east", "west", "edge"}
    index.update("pole1", 89.9999, 0.0)
    index.update("pole2", 89.9999, 180.0)
    assert {d for d, _ in index.near(89.9999, 90.0, 50.0)} == {"pole1", "pole2"}


def test_rejects_bad_points() -> None:
    index = PositionIndex()
    for lat, lon in [(math.nan, 0.0), (0.0, math.nan), (91.0, 0.0), (0.0, 181.0)]:
        with pytest.raises(ValueError, match="not a valid lat, lon"):
            index.update("a", lat, lon)
    assert len(index) == 0
    with pytest.raises(ValueError, match="radius_m"):
        index.near(0.0, 0.0, -1.0)
    with pytest.raises(ValueError, match="not a valid lat, lon"):
        index.near(95.0, 0.0, 1.0)


moves = st.lists(
    st.tuples(
        st.sampled_from([f"trk-{i}" for i in range(12)]),
        st.one_of(
            st.tuples(st.floats(31.0, 31.05), st.floats(121.0, 121.05)),  # a busy city block
            st.tuples(st.floats(-89.0, 89.0), st.floats(-180.0, 180.0)),
            st.tuples(st.floats(-1.0, 1.0), st.sampled_from([-180.0, -179.9999, 179.9999, 180.0])),
        ),
        st.booleans(),  # remove instead of move
    ),
    max_size=60,
)


def replay(
    ops: list[tuple[str, tuple[float, float], bool]],
) -> tuple[PositionIndex, dict[str, tuple[float, float]]]:
    index = PositionIndex()
    latest: dict[str, tuple[float, float]] = {}
    for device_id, (lat, lon), remove in ops:
        if remove:
            assert index.remove(device_id) == (device_id in latest)
            latest.pop(device_id, None)
        else:
            index.update(device_id, lat, lon)
            latest[device_id] = (lat, lon)
    return index, latest


@SETTINGS
@given(moves, st.floats(31.0, 31.05), st.floats(121.0, 121.05), st.floats(10.0, 5000.0))
def test_inside_equals_brute_force(
    ops: list[tuple[str, tuple[float, float], bool]], lat: float, lon: float, radius_m: float
) -> None:
    index, latest = replay(ops)
    assert len(index) == len(latest)
    for device_id, position in latest.items():
        assert index.position(device_id) == position
    fence = impound(lat, lon, radius_m)
    expected = sorted(
        d
        for d, (p_lat, p_lon) in latest.items()
        if shapely.contains_xy(fence.geometry, p_lon, p_lat)
    )
    assert index.inside(fence) == expected


@SETTINGS
@given(
    moves,
    st.one_of(
        st.tuples(st.floats(31.0, 31.05), st.floats(121.0, 121.05)),
        st.tuples(st.floats(-89.99, 89.99), st.floats(-180.0, 180.0)),
        st.tuples(st.floats(-1.0, 1.0), st.sampled_from([-180.0, 179.99995])),
    ),
    st.floats(0.0, 100_000.0) | st.sampled_from([0.0, 25.0]),
)
def test_near_equals_brute_force(
    ops: list[tuple[str, tuple[float, float], bool]],
    center: tuple[float, float],
    radius_m: float,
) -> None:
    index, latest = replay(ops)
    lat, lon = center
    distances = {d: haversine_m(lat, lon, p_lat, p_lon) for d, (p_lat, p_lon) in latest.items()}
    expected = sorted(
        ((d, m) for d, m in distances.items() if m <= radius_m), key=lambda x: (x[1], x[0])
    )
    found = index.near(lat, lon, radius_m)
    assert [d for d, _ in found] == [d for d, _ in expected]
    for (_, got_m), (_, want_m) in zip(found, expected, strict=True):
        assert got_m == pytest.approx(want_m, rel=1e-9, abs=1e-6)


def test_few_moves_among_many_cars_are_applied_one_by_one() -> None:
    # Many cars: the tree is bulk-built once; a few later moves (and a removal) are then
    # applied one by one (below an eighth pending), and queries see exactly the latest state.
    rnd = random.Random(7)
    index = PositionIndex()
    truth: dict[str, tuple[float, float]] = {}
    for i in range(5000):
        truth[f"car-{i}"] = (31.0 + rnd.random() * 0.5, 121.0 + rnd.random() * 0.5)
    for d, (lat, lon) in truth.items():
        index.update(d, lat, lon)
    assert len(index.near(31.25, 121.25, 100_000)) == 5000  # bulk build
    for _ in range(3):
        for i in rnd.sample(range(5000), 100):
            truth[f"car-{i}"] = (31.0 + rnd.random() * 0.5, 121.0 + rnd.random() * 0.5)
            index.update(f"car-{i}", *truth[f"car-{i}"])
        index.remove("car-1")
        truth.pop("car-1", None)
        got = index.near(31.2, 121.2, 8_000)
        want = sorted(
            ((d, haversine_m(31.2, 121.2, lat, lon)) for d, (lat, lon) in truth.items()),
            key=lambda item: (item[1], item[0]),
        )
        assert [d for d, _ in got] == [d for d, m in want if m <= 8_000]
    assert len(index) == 4999
