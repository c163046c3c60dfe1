"""The batch fence path (`geofence/batch_shapes.py`) against the one-fence-at-a-time parser:
the same fences bit for bit, and the same first error, for well-formed and malformed features."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any
from unittest.mock import patch

import numpy as np
import orjson
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.batch_shapes import batch_shapes
from geofence.fence import (
    CIRCLE_SEGMENTS,
    Fence,
    parse_feature_collection,
    parse_fence,
    parse_fences,
)
from geofence.geo import geodesic_circle, geodesic_circles
from tests.test_geofence_properties import star_ring, to_degrees

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
Feature = dict[str, Any]
Outcome = tuple[object, ...]


@st.composite
def star_polygon(draw: st.DrawFn, lat0: float, lon0: float, scale_m: float) -> list[Any]:
    if draw(st.booleans()):
        shell = draw(star_ring(lat0, lon0, 0.3 * scale_m, scale_m, 6))
        hole = draw(star_ring(lat0, lon0, 0.05 * scale_m, 0.2 * scale_m, 3))
        return [shell, hole[::-1]]
    return [draw(star_ring(lat0, lon0, 0.3 * scale_m, scale_m, 3))]


@st.composite
def integer_square(draw: st.DrawFn) -> list[Any]:
    """Integer degrees (JSON ints), some zeros negative (0.0 == -0.0 closes a ring)."""
    x = draw(st.sampled_from([0, -1]) | st.integers(-180, 177))
    y = draw(st.sampled_from([0, -1]) | st.integers(-90, 87))
    s = draw(st.integers(1, 3))
    ring: list[list[Any]] = [[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]
    for position in ring:
        for k in (0, 1):
            if position[k] == 0 and draw(st.booleans()):
                position[k] = -0.0
    return [ring]


CIRCLE = ("circle",)
POLYGONAL = ("polygon", "square", "multipolygon")
SHAPES = POLYGONAL + CIRCLE + CIRCLE
SYSTEMS = (None, None, None, "wgs84", "gcj02", "bd09")
"""Most features in WGS84, as sent; other systems are converted, by the parser alone."""


@st.composite
def geometry(draw: st.DrawFn, shapes: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A GeoJSON geometry and the properties it needs (radius_m for a circle)."""
    lat0 = draw(st.floats(-80.0, 80.0))
    lon0 = draw(st.floats(-179.0, 179.0))
    scale_m = draw(st.floats(20.0, 3000.0))
    shape = draw(st.sampled_from(shapes))
    if shape == "circle":
        radius: float = draw(st.floats(1.0, 20_000.0))
        if draw(st.integers(0, 5)) == 0:  # nanometres collapse; 50 km may reach too far
            radius = draw(st.sampled_from([1e-9, 1e-6, 0.01, 1, 50_000]))
        centre: list[Any] = [lon0, lat0]
        if draw(st.integers(0, 7)) == 0:  # near the antimeridian or a pole, or integers
            centre = draw(
                st.sampled_from(
                    [[179.99, 10.0], [-179.999, -5.0], [30.0, 89.9], [0, 0], [-0.0, -0.0], [7, -3]]
                )
            )
        return {"type": "Point", "coordinates": centre}, {"radius_m": radius}
    if shape == "polygon":
        return {"type": "Polygon", "coordinates": draw(star_polygon(lat0, lon0, scale_m))}, {}
    if shape == "square":
        return {"type": "Polygon", "coordinates": draw(integer_square())}, {}
    parts = []
    for k in range(draw(st.integers(1, 3))):
        lon_k, lat_k = to_degrees(lat0, lon0, 2.5 * scale_m * k, 0.0)
        parts.append(draw(star_polygon(lat_k, lon_k, scale_m)))
    return {"type": "MultiPolygon", "coordinates": parts}, {}


def polygons(feature: Feature) -> list[list[Any]]:
    """The polygons of a feature's geometry (none for a circle), to change in place."""
    geometry = feature["geometry"]
    if geometry["type"] == "Point":
        return []
    coordinates = geometry["coordinates"]
    return coordinates if geometry["type"] == "MultiPolygon" else [coordinates]


def rings(feature: Feature) -> list[list[Any]]:
    return [ring for polygon in polygons(feature) for ring in polygon]


def positions(feature: Feature) -> list[list[Any]]:
    if feature["geometry"]["type"] == "Point":
        return [feature["geometry"]["coordinates"]]
    return [position for ring in rings(feature) for position in ring]


@st.composite
def well_formed(
    draw: st.DrawFn, shapes: tuple[str, ...] = SHAPES, systems: tuple[str | None, ...] = SYSTEMS
) -> Feature:
    """A feature as a client sends it; most parse, a few are refused by the geometry checks
    alone (a circle of nanometres, or over a pole or the antimeridian)."""
    geom, props = draw(geometry(shapes))
    props["kind"] = draw(st.sampled_from(["zone", "risk_site"]))
    if draw(st.booleans()):
        props["name"] = draw(st.sampled_from(["depot", "Lot 7"]))
        props["category"] = "pawnshop"
        props["dwell_s"] = draw(st.integers(0, 3600))
        props["note"] = {"tags": ["a", 1, None], "n": 1.5}
    coord_sys = draw(st.sampled_from(systems))
    if coord_sys is not None:
        props["coord_sys"] = coord_sys
    if draw(st.booleans()):
        props["declared_coord_sys"] = draw(st.sampled_from(["wgs84", "gcj02"]))
    feature: Feature = {"type": "Feature", "geometry": geom, "properties": props}
    altitude = draw(st.sampled_from([None, "all", "some"]))
    if altitude is not None:
        for position in positions(feature):
            if altitude == "all" or draw(st.booleans()):
                position.append(draw(st.sampled_from([0, 12.5, -3, 10**400])))
    return feature


BAD_POSITIONS: list[object] = [
    [True, 0.0],
    ["1", 0],
    [1.0],
    [1.0, 2.0, 3.0, 4.0],
    None,
    [math.nan, 0.0],
    [0.0, math.inf],
    [-180.5, 10.0],
    [10.0, 90.01],
    [10**400, 0],
    (1.0, 2.0),  # accepted by the parser, left to it by the batch path
    [1.0, 2.0, "x"],
    [1.0, 2.0, False],
    {"lon": 1.0},
    "1,2",
]
BAD_RINGS: list[object] = [
    [],
    [[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]],
    [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.0]],
    [[121.4, 31.2], [121.5, 31.3], [121.5, 31.2], [121.4, 31.3], [121.4, 31.2]],
    [[5, 5], [5, 5], [5, 5], [5, 5]],
    [[50.0, 50.0], [51.0, 50.0], [51.0, 51.0], [50.0, 50.0]],  # as a hole: outside the shell
    7,
    "ring",
    ([0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]),
]


def put_position(feature: Feature, draw: st.DrawFn, bad: object) -> Feature:
    if feature["geometry"]["type"] == "Point":
        feature["geometry"]["coordinates"] = bad
    else:
        ring = draw(st.sampled_from(rings(feature)))
        ring[draw(st.integers(0, len(ring) - 1))] = bad
    return feature


def put_ring(feature: Feature, draw: st.DrawFn, bad: object) -> Feature:
    """The ring in place of one of a polygon's rings, or added as a hole."""
    polygon = draw(st.sampled_from(polygons(feature)))
    k = draw(st.integers(0, len(polygon)))
    if k == len(polygon):
        polygon.append(bad)
    else:
        polygon[k] = bad
    return feature


def open_ring(feature: Feature, draw: st.DrawFn) -> object:
    del draw(st.sampled_from(rings(feature)))[-1]
    return feature


def overlapping_parts(feature: Feature, draw: st.DrawFn) -> object:
    polygon = draw(st.sampled_from(polygons(feature)))
    feature["geometry"] = {"type": "MultiPolygon", "coordinates": [polygon, copy.deepcopy(polygon)]}
    return feature


def nested_too_deep(feature: Feature, _draw: st.DrawFn) -> object:
    feature["geometry"]["coordinates"] = [feature["geometry"]["coordinates"]]
    return feature


def bad_coordinates(feature: Feature, draw: st.DrawFn) -> object:
    feature["geometry"]["coordinates"] = draw(
        st.sampled_from([[], None, "x", {}, [[]], [7], [[[[0, 0]]]], [[], []]])
    )
    return feature


def other_geometry_type(feature: Feature, draw: st.DrawFn) -> object:
    feature["geometry"]["type"] = draw(st.sampled_from(["Point", "Polygon", "MultiPolygon"]))
    return feature


DEEP: list[object] = [1]
for _ in range(40):
    DEEP = [DEEP]


def bad_property(feature: Feature, draw: st.DrawFn) -> object:
    key, value = draw(
        st.sampled_from(
            [
                ("kind", None),
                ("kind", "pawnshop"),
                ("radius_m", None),
                ("radius_m", 0),
                ("radius_m", "500"),
                ("radius_m", True),
                ("radius_m", 1e-12),
                ("radius_m", 50_001),
                ("radius_m", 10**400),
                ("radius_m", math.nan),
                ("radius_m", 100),
                ("coord_sys", "foo"),
                ("declared_coord_sys", 1),
                ("dwell_s", -1),
                ("name", " "),
                ("extra", DEEP),
            ]
        )
    )
    feature["properties"][key] = value
    return feature


def bad_member(feature: Feature, draw: st.DrawFn) -> object:
    key = draw(st.sampled_from(["type", "geometry", "properties"]))
    feature[key] = draw(st.sampled_from([None, "Foo", [1], {"type": "LineString"}]))
    return feature


def not_a_feature(_feature: Feature, draw: st.DrawFn) -> object:
    return draw(st.sampled_from([None, [1, 2], "feature"]))


Defect = Callable[[Feature, st.DrawFn], object]
DEFECTS: dict[str, tuple[tuple[str, ...], Defect]] = {
    "open ring": (POLYGONAL, open_ring),
    "overlapping parts": (POLYGONAL, overlapping_parts),
    "nested too deep": (POLYGONAL, nested_too_deep),
    "bad coordinates": (SHAPES, bad_coordinates),
    "other geometry type": (SHAPES, other_geometry_type),
    "bad property": (SHAPES, bad_property),
    "bad member": (SHAPES, bad_member),
    "not a feature": (SHAPES, not_a_feature),
}
"""Defects by name: the shapes each applies to, and what makes it (given a deep copy)."""


def spoil(feature: Feature, draw: st.DrawFn, which: str) -> object:
    """The feature with one defect (or one odd but accepted spelling), if `which` applies."""
    if which == "position":
        return put_position(feature, draw, copy.deepcopy(draw(st.sampled_from(BAD_POSITIONS))))
    if which == "ring":
        bad = copy.deepcopy(draw(st.sampled_from(BAD_RINGS)))
        return put_ring(feature, draw, bad) if rings(feature) else feature
    shapes, defect = DEFECTS[which]
    return defect(feature, draw) if shapes is SHAPES or rings(feature) else feature


@st.composite
def features(draw: st.DrawFn) -> list[object]:
    """A few features, now and then one or two with a defect of any kind."""
    docs: list[object] = [draw(well_formed()) for _ in range(draw(st.integers(1, 6)))]
    broken = draw(st.sampled_from([0, 1, 1, 2]))
    for k in draw(st.lists(st.integers(0, len(docs) - 1), max_size=broken, unique=True)):
        feature = copy.deepcopy(docs[k])
        assert isinstance(feature, dict)
        docs[k] = spoil(feature, draw, draw(st.sampled_from(["position", "ring", *DEFECTS])))
    return docs


def snapshot(fence: Fence) -> tuple[object, ...]:
    """Everything a fence holds, exactly: geometry as WKB, the feature as JSON and as values
    (which tells tuples from lists), the centre as text (which tells -0.0 from 0.0)."""
    return (
        fence.fence_id,
        fence.name,
        fence.kind,
        fence.category,
        fence.dwell_s,
        fence.radius_m,
        repr(fence.center),
        type(fence.geometry),
        shapely.to_wkb(fence.geometry),
        orjson.dumps(fence.feature),
        fence.feature,
    )


def outcome(parse: Callable[[], list[Fence]]) -> Outcome:
    try:
        fences = parse()
    except Exception as exc:  # noqa: BLE001  # whatever either path raises must match
        attrs = tuple(getattr(exc, a, None) for a in ("defect", "fence_id", "index", "field"))
        return ("error", type(exc).__name__, str(exc), *attrs)
    return ("ok", *map(snapshot, fences))


def one_by_one(items: Sequence[tuple[str, object]]) -> Outcome:
    """What parsing each feature alone gives: the fences, or the first error."""
    snapshots = []
    for fence_id, feature in items:
        result = outcome(partial(_alone, fence_id, feature))
        if result[0] == "error":
            return result
        snapshots.append(result[1])
    return ("ok", *snapshots)


def _alone(fence_id: str, feature: object) -> list[Fence]:
    return [parse_fence(fence_id, feature)]


def scalar_collection(doc: object) -> list[Fence]:
    """`parse_feature_collection` with no shape built ahead: the parser as it was."""
    with patch("geofence.fence.batch_shapes", lambda feats, _segments: [None] * len(feats)):
        return parse_feature_collection(doc)


@SETTINGS
@given(features())
def test_parse_fences_equals_parse_fence_one_by_one(docs: list[object]) -> None:
    items = [(f"f{i}", doc) for i, doc in enumerate(docs)]
    assert outcome(lambda: parse_fences(items)) == one_by_one(items)


@SETTINGS
@given(features(), st.data())
def test_feature_collection_equals_the_scalar_path(docs: list[object], data: st.DataObject) -> None:
    for i, doc in enumerate(docs):
        if isinstance(doc, dict):
            doc["id"] = f"f{i}"
    if data.draw(st.integers(0, 4)) == 0 and isinstance(docs[-1], dict):
        docs[-1]["id"] = data.draw(st.sampled_from([None, 7, "f0"]))  # bad or repeated id
    collection = {"type": "FeatureCollection", "features": docs}
    expected = outcome(lambda: scalar_collection(collection))
    assert outcome(lambda: parse_feature_collection(collection)) == expected


FEW = settings(SETTINGS, max_examples=25)


@st.composite
def one_spoilt(draw: st.DrawFn, which: str, bad: object = None) -> list[object]:
    """WGS84 features (which the batch path takes), one of them spoilt by `which`."""
    polygonal = which == "ring" or (which in DEFECTS and DEFECTS[which][0] is POLYGONAL)
    wgs84: tuple[str | None, ...] = (None, "wgs84")
    docs: list[object] = draw(st.lists(well_formed(systems=wgs84), max_size=3))
    target = draw(well_formed(POLYGONAL if polygonal else SHAPES, wgs84))
    spoilt: object
    if which == "position":
        spoilt = put_position(target, draw, copy.deepcopy(bad))
    elif which == "ring":
        spoilt = put_ring(target, draw, copy.deepcopy(bad))
    else:
        spoilt = spoil(target, draw, which)
    docs.insert(draw(st.integers(0, len(docs))), spoilt)
    return docs


def assert_refused_alike(docs: list[object]) -> None:
    """The batch parser refuses `docs` with the error the one-by-one parser gives first."""
    items = [(f"f{i}", doc) for i, doc in enumerate(docs)]
    assert outcome(lambda: parse_fences(items)) == one_by_one(items)


@FEW
@pytest.mark.parametrize(
    ("which", "bad"),
    [("position", b) for b in BAD_POSITIONS] + [("ring", b) for b in BAD_RINGS],
    ids=repr,
)
@given(data=st.data())
def test_a_bad_position_or_ring_is_refused_alike(
    which: str, bad: object, data: st.DataObject
) -> None:
    assert_refused_alike(data.draw(one_spoilt(which, bad)))


@FEW
@pytest.mark.parametrize("which", list(DEFECTS))
@given(data=st.data())
def test_each_defect_is_refused_alike(which: str, data: st.DataObject) -> None:
    assert_refused_alike(data.draw(one_spoilt(which)))


@SETTINGS
@given(st.lists(well_formed(), min_size=1, max_size=6))
def test_well_formed_wgs84_features_take_the_batch_path(docs: list[Feature]) -> None:
    """Without this the comparisons above would hold for a batch path that never answers."""
    shapes = batch_shapes(docs, CIRCLE_SEGMENTS)
    for i, (doc, shape) in enumerate(zip(docs, shapes, strict=True)):
        if doc["properties"].get("coord_sys") not in (None, "wgs84"):
            assert shape is None
            continue
        try:
            fence = parse_fence(f"f{i}", doc)
        except ValueError:
            continue
        assert shape is not None
        assert shapely.to_wkb(shape.geometry) == shapely.to_wkb(fence.geometry)


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.floats(-90.0, 90.0) | st.sampled_from([0.0, -0.0, 89.99, -89.99]),
            st.floats(-180.0, 180.0) | st.sampled_from([0.0, -0.0, 180.0, -180.0, 179.99]),
            st.floats(1e-9, 60_000.0) | st.sampled_from([1e-9, 0.5, 50_000.0]),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_geodesic_circles_equal_geodesic_circle_bit_for_bit(
    circles: list[tuple[float, float, float]],
) -> None:
    lats, lons, radii = (np.array(column) for column in zip(*circles, strict=True))
    vertices, fits = geodesic_circles(lats, lons, radii, CIRCLE_SEGMENTS)
    for k, (lat, lon, radius_m) in enumerate(circles):
        try:
            circle = geodesic_circle(lat, lon, radius_m, CIRCLE_SEGMENTS)
        except ValueError:
            assert not fits[k]
            continue
        assert fits[k]
        # The ring is closed by repeating the first vertex, unless the last rounds onto it.
        coords = shapely.get_coordinates(circle)[:CIRCLE_SEGMENTS]
        assert coords.tobytes() == vertices[k].tobytes()
        assert shapely.to_wkb(circle) == shapely.to_wkb(shapely.polygons(vertices[k]))


def test_one_odd_position_sends_every_polygon_to_the_parser() -> None:
    """A tuple where JSON has arrays is accepted by the parser but not by the batch path."""
    square = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
    odd = [[0.0, 0.0], (1.0, 0.0), [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
    docs = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"kind": "zone"},
        }
        for ring in (square, odd)
    ]
    assert batch_shapes(docs, CIRCLE_SEGMENTS) == [None, None]
    items = [("a", docs[0]), ("b", docs[1])]
    assert outcome(lambda: parse_fences(items)) == one_by_one(items)


@pytest.mark.parametrize("count", [0, 1])
def test_empty_and_single_collections(count: int) -> None:
    square = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
    docs = [
        {
            "type": "Feature",
            "id": "a",
            "geometry": {"type": "Polygon", "coordinates": [square]},
            "properties": {"kind": "zone"},
        }
    ][:count]
    collection = {"type": "FeatureCollection", "features": docs}
    assert outcome(lambda: parse_feature_collection(collection)) == outcome(
        lambda: scalar_collection(collection)
    )
    assert parse_fences([]) == []
