"""Fence parsing, validation messages, geodesic circles and the snapshot index."""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import orjson
import pytest
import shapely
from pyproj import Geod
from shapely import MultiPolygon, Polygon

from geofence.fence import (
    Fence,
    FenceError,
    FenceKind,
    fence_to_feature,
    load_fences,
    parse_feature_collection,
    parse_fence,
)
from geofence.geo import (
    EARTH_RADIUS_M,
    geodesic_circle,
    haversine_m,
    haversine_m_np,
    metres_to_degrees,
)
from geofence.index import FenceHit, FenceIndex

WGS84 = Geod(ellps="WGS84")
SQUARE = [[121.0, 31.0], [121.1, 31.0], [121.1, 31.1], [121.0, 31.1], [121.0, 31.0]]
HOLE = [[121.04, 31.04], [121.06, 31.04], [121.06, 31.06], [121.04, 31.06], [121.04, 31.04]]


def feature(geometry: object, **properties: Any) -> dict[str, Any]:
    props: dict[str, Any] = {"kind": "zone"}
    props.update(properties)
    return {"type": "Feature", "geometry": geometry, "properties": props}


def polygon(*rings: list[Any]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


def with_id(fence_id: object, doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "id": fence_id}


def square(fence_id: str, lon: float, lat: float, size: float, **properties: Any) -> Fence:
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return parse_fence(fence_id, feature(polygon(ring), **properties))


def defect_of(fence_id: str, doc: object) -> str:
    with pytest.raises(FenceError) as info:
        parse_fence(fence_id, doc)
    return str(info.value)


# --- parsing -------------------------------------------------------------------------------


def test_parse_polygon_with_defaults() -> None:
    fence = parse_fence("home-area", feature(polygon(SQUARE)))
    assert fence.fence_id == "home-area"
    assert fence.name == "home-area"
    assert fence.kind is FenceKind.ZONE
    assert fence.category is None
    assert fence.dwell_s is None
    assert fence.radius_m is None
    assert fence.center is None
    assert isinstance(fence.geometry, Polygon)
    assert fence.geometry.bounds == (121.0, 31.0, 121.1, 31.1)


def test_parse_polygon_with_hole_and_properties() -> None:
    fence = parse_fence(
        "lot:7",
        feature(
            polygon(SQUARE, HOLE),
            kind="risk_site",
            name="Pawn lot 7",
            category="pawnshop",
            dwell_s=600,
            owner="ops",
        ),
    )
    assert fence.kind is FenceKind.RISK_SITE
    assert (fence.name, fence.category, fence.dwell_s) == ("Pawn lot 7", "pawnshop", 600)
    assert len(fence.geometry.interiors) == 1  # type: ignore[union-attr]  # a Polygon here
    assert not shapely.contains_xy(fence.geometry, 121.05, 31.05)  # in the hole
    assert shapely.contains_xy(fence.geometry, 121.02, 31.02)
    assert fence.feature["properties"]["owner"] == "ops"  # type: ignore[index]


def test_parse_multipolygon() -> None:
    other = [[121.2, 31.0], [121.3, 31.0], [121.3, 31.1], [121.2, 31.0]]
    doc = feature({"type": "MultiPolygon", "coordinates": [[SQUARE, HOLE], [other]]})
    fence = parse_fence("m", doc)
    assert isinstance(fence.geometry, MultiPolygon)
    assert len(fence.geometry.geoms) == 2


def test_parse_circle() -> None:
    fence = parse_fence("c", feature(point(121.47, 31.23), radius_m=500, kind="risk_site"))
    assert fence.radius_m == 500.0
    assert fence.center == (31.23, 121.47)
    assert isinstance(fence.geometry, Polygon)
    assert fence.geometry.is_valid
    assert fence.geometry.exterior.is_ccw
    assert shapely.contains_xy(fence.geometry, 121.47, 31.23)


def test_positions_accept_altitude_and_integers() -> None:
    ring = [[0, 0, 5], [1, 0, 5], [1, 1, 5], [0, 0, 5]]
    fence = parse_fence("a", feature(polygon(ring)))
    coordinates = fence_to_feature(fence)["geometry"]["coordinates"]  # type: ignore[index]
    assert coordinates == [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]]


@pytest.mark.parametrize("lat", [0.0, 45.0, 70.0, -45.0])
def test_circle_is_500_m_at_any_latitude(lat: float) -> None:
    fence = parse_fence("c", feature(point(30.0, lat), radius_m=500))
    lons, lats = fence.geometry.exterior.xy  # type: ignore[union-attr]  # a Polygon here
    assert len(lons) == 65  # 64 vertices, closed
    _, _, dist = WGS84.inv([30.0] * len(lons), [lat] * len(lats), list(lons), list(lats))
    assert np.all(np.abs(np.asarray(dist) - 500.0) < 0.5)


def test_circle_area_is_close_to_pi_r_squared() -> None:
    circle = geodesic_circle(60.0, 10.0, 1000.0)
    area_m2, _ = WGS84.geometry_area_perimeter(circle)
    # Inscribed 64-gon: area is pi r^2 * sin(2 pi / 64) * 64 / (2 pi) ~ 0.9984 pi r^2.
    assert abs(area_m2) == pytest.approx(math.pi * 1000.0**2 * 0.99839, rel=1e-3)


@pytest.mark.parametrize(
    ("lat", "lon", "radius_m", "expected"),
    [
        (0.0, 179.999, 500.0, "crosses the antimeridian"),
        (0.0, -179.999, 500.0, "crosses the antimeridian"),
        (89.999, 0.0, 500.0, "reaches the North Pole"),
        (-89.9999, 0.0, 50.0, "reaches the South Pole"),
    ],
)
def test_circle_rejects_antimeridian_and_poles(
    lat: float, lon: float, radius_m: float, expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        geodesic_circle(lat, lon, radius_m)
    message = defect_of("c", feature(point(lon, lat), radius_m=radius_m))
    assert message.startswith("fence 'c': circle of radius")
    assert expected in message


def test_circle_near_but_not_across_the_antimeridian() -> None:
    circle = geodesic_circle(0.0, 179.99, 500.0)
    assert circle.bounds[2] < 180.0
    assert circle.is_valid


BAD_RING = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
BOW_TIE = [[121.4, 31.2], [121.5, 31.3], [121.5, 31.2], [121.4, 31.3], [121.4, 31.2]]
OUTSIDE_HOLE = [[122.0, 32.0], [122.1, 32.0], [122.1, 32.1], [122.0, 32.0]]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ([1, 2], "fence 'x': expected a GeoJSON Feature object, got an array"),
        ({"type": "FeatureCollection"}, "fence 'x': expected a GeoJSON Feature, got type"),
        ({"type": "Feature", "properties": {"kind": "zone"}}, "fence 'x': missing geometry"),
        (feature("Polygon"), "fence 'x': geometry must be an object, got a string"),
        (
            feature({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}),
            "fence 'x': unsupported geometry type 'LineString'",
        ),
        (feature({"type": "Polygon"}), "fence 'x': Polygon geometry has no coordinates"),
        (feature(polygon()), "fence 'x': polygon has no rings"),
        (
            feature(polygon(BAD_RING)),
            "fence 'x': polygon ring 0 has 3 positions, need at least 4 (closed)",
        ),
        (
            feature(polygon(SQUARE, [[121.04, 31.04], [121.06, 31.04], [121.04, 31.04]])),
            "fence 'x': polygon ring 1 has 3 positions, need at least 4 (closed)",
        ),
        (
            feature(polygon([[0, 0], [1, 0], [1, 1], [0, 1]])),
            (
                "fence 'x': polygon ring 0 is not closed: first position [0.0, 0.0] "
                "!= last position [0.0, 1.0]"
            ),
        ),
        (
            feature(polygon([[200.0, 10.0], [1, 0], [1, 1], [200.0, 10.0]])),
            (
                "fence 'x': coordinate [200.0, 10.0] out of range (lon -180..180, lat -90..90) "
                "at polygon ring 0, position 0"
            ),
        ),
        (
            feature(polygon([[0, 0], [1, 95], [1, 1], [0, 0]])),
            "fence 'x': coordinate [1.0, 95.0] out of range",
        ),
        (
            feature(polygon([[0, 0], [1, math.nan], [1, 1], [0, 0]])),
            "fence 'x': coordinate [1.0, nan] is not finite at polygon ring 0, position 1",
        ),
        (
            feature(polygon([[0, 0], ["1", 0], [1, 1], [0, 0]])),
            "fence 'x': coordinate ['1', 0] is not numeric at polygon ring 0, position 1",
        ),
        (
            feature(polygon([[0, 0], [True, 0], [1, 1], [0, 0]])),
            "fence 'x': coordinate [True, 0] is not numeric",
        ),
        (
            feature(polygon([[0, 0], [1], [1, 1], [0, 0]])),
            "fence 'x': polygon ring 0, position 1: a position must be [lon, lat], got [1]",
        ),
        (feature(polygon(BOW_TIE)), "fence 'x': self-intersection at (121.45, 31.25)"),
        (feature(polygon(SQUARE, OUTSIDE_HOLE)), "fence 'x': hole lies outside shell at (122"),
        (
            feature(polygon([[0, 0], [1, 0], [2, 0], [0, 0]])),
            "fence 'x': polygon ring 0 has zero area (its positions are collinear)",
        ),
        (
            feature({"type": "MultiPolygon", "coordinates": [[SQUARE], [BOW_TIE]]}),
            "fence 'x': polygon 1: self-intersection at (121.45, 31.25)",
        ),
        (
            feature({"type": "MultiPolygon", "coordinates": [[SQUARE], [SQUARE]]}),
            "fence 'x': the polygons overlap or share an edge: self-intersection at",
        ),
        (
            feature({"type": "MultiPolygon", "coordinates": [[SQUARE], [BAD_RING]]}),
            "fence 'x': polygon 1 ring 0 has 3 positions, need at least 4 (closed)",
        ),
        (feature({"type": "MultiPolygon", "coordinates": []}), "fence 'x': MultiPolygon has no"),
        (
            {"type": "Feature", "geometry": polygon(SQUARE), "properties": {}},
            "fence 'x': properties.kind is required: 'zone' or 'risk_site'",
        ),
        (
            feature(polygon(SQUARE), kind="pawnshop"),
            "fence 'x': properties.kind must be 'zone' or 'risk_site', got 'pawnshop'",
        ),
        (
            {"type": "Feature", "geometry": polygon(SQUARE), "properties": [1]},
            "fence 'x': properties must be an object, got an array",
        ),
        (
            feature(polygon(SQUARE), dwell_s=-1),
            "fence 'x': properties.dwell_s must be an integer number of seconds >= 0, got -1",
        ),
        (feature(polygon(SQUARE), dwell_s=1.5), "properties.dwell_s must be an integer"),
        (feature(polygon(SQUARE), dwell_s=True), "properties.dwell_s must be an integer"),
        (feature(polygon(SQUARE), name=7), "fence 'x': properties.name must be a non-empty string"),
        (feature(polygon(SQUARE), name=" "), "properties.name must be a non-empty string"),
        (feature(polygon(SQUARE), category=3), "properties.category must be a non-empty string"),
        (
            feature(polygon(SQUARE), radius_m=100),
            "fence 'x': properties.radius_m is only for Point geometries (circles), not Polygon",
        ),
        (
            feature(point(10, 10)),
            "fence 'x': a Point fence needs properties.radius_m (metres, > 0 and <= 50000)",
        ),
        (
            feature(point(10, 10), radius_m=0),
            "fence 'x': properties.radius_m must be a number > 0 and <= 50000 metres, got 0",
        ),
        (feature(point(10, 10), radius_m=-5), "properties.radius_m must be a number > 0"),
        (feature(point(10, 10), radius_m=50_001), "got 50001"),
        (feature(point(10, 10), radius_m="500"), "got '500'"),
        (feature(point(10, 10), radius_m=math.nan), "got nan"),
        (feature(point(200, 10), radius_m=5), "coordinate [200.0, 10.0] out of range"),
        (
            {
                "type": "Feature",
                "id": "y",
                "geometry": polygon(SQUARE),
                "properties": {"kind": "zone"},
            },
            "fence 'x': the feature's id 'y' differs from the fence id",
        ),
    ],
)
def test_defects_are_named(doc: object, expected: str) -> None:
    message = defect_of("x", doc)
    assert message.startswith("fence 'x': ")
    assert expected in message, message


@pytest.mark.parametrize(
    ("fence_id", "doc", "field"),
    [
        ("a b", feature(polygon(SQUARE)), "fence_id"),
        ("x", [1, 2], None),
        ("x", {"type": "Polygon", "coordinates": [SQUARE]}, None),
        ("x", with_id("y", feature(polygon(SQUARE))), "id"),
        ("x", {"type": "Feature", "geometry": polygon(SQUARE), "properties": [1]}, "properties"),
        ("x", {"type": "Feature", "properties": {"kind": "zone"}}, "geometry"),
        ("x", feature({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}), "geometry"),
        ("x", feature(polygon(BAD_RING)), "geometry"),
        ("x", feature(polygon(BOW_TIE)), "geometry"),
        ("x", feature({"type": "MultiPolygon", "coordinates": [[SQUARE], [SQUARE]]}), "geometry"),
        ("x", feature(point(200, 10), radius_m=5), "geometry"),
        ("x", feature(polygon(SQUARE), kind="pawnshop"), "properties.kind"),
        ("x", feature(polygon(SQUARE), name=" "), "properties.name"),
        ("x", feature(polygon(SQUARE), category=3), "properties.category"),
        ("x", feature(polygon(SQUARE), dwell_s=-1), "properties.dwell_s"),
        ("x", feature(polygon(SQUARE), radius_m=100), "properties.radius_m"),
        ("x", feature(point(10, 10)), "properties.radius_m"),
    ],
)
def test_fence_error_names_the_field(fence_id: str, doc: object, field: str | None) -> None:
    with pytest.raises(FenceError) as info:
        parse_fence(fence_id, doc)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], None),
        ({"type": "FeatureCollection", "features": {}}, "features"),
        (
            collection(with_id("a", feature(polygon(SQUARE))), feature(polygon(SQUARE))),
            "features[1].id",
        ),
        (
            collection(
                with_id("a", feature(polygon(SQUARE))), with_id("a", feature(polygon(SQUARE)))
            ),
            "features[1].id",
        ),
        (collection(with_id("a b", feature(polygon(SQUARE)))), "features[0].id"),
        (
            collection(
                with_id("a", feature(polygon(SQUARE))), with_id("b", feature(polygon(BAD_RING)))
            ),
            "features[1].geometry",
        ),
        (
            collection(with_id("a", feature(polygon(SQUARE), kind="lot"))),
            "features[0].properties.kind",
        ),
        (collection({"type": "Point", "id": "a"}), "features[0]"),
    ],
)
def test_collection_error_field_is_the_path_in_the_collection(
    doc: object, field: str | None
) -> None:
    with pytest.raises(FenceError) as info:
        parse_feature_collection(doc)
    assert info.value.field == field


@pytest.mark.parametrize("fence_id", ["", "a b", "x/y", "é", "a" * 129, "a\n"])
def test_bad_fence_ids(fence_id: str) -> None:
    message = defect_of(fence_id, feature(polygon(SQUARE)))
    assert message.startswith(f"fence id {fence_id!r} is invalid")


def test_fence_id_alphabet() -> None:
    fence_id = "Az09_.:-" + "a" * 120
    assert parse_fence(fence_id, feature(polygon(SQUARE))).fence_id == fence_id


def test_fence_error_carries_defect_and_id() -> None:
    with pytest.raises(FenceError) as info:
        parse_fence("x", feature(polygon(BAD_RING)))
    assert info.value.fence_id == "x"
    assert info.value.defect == "polygon ring 0 has 3 positions, need at least 4 (closed)"
    assert isinstance(info.value, ValueError)


# --- round trip ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        feature(polygon(SQUARE, HOLE), kind="risk_site", category="impound", dwell_s=0, note=[1]),
        feature({"type": "MultiPolygon", "coordinates": [[SQUARE], [OUTSIDE_HOLE]]}, name="two"),
        feature(point(121.47, 31.23), radius_m=250.5, kind="risk_site", category="border"),
    ],
)
def test_round_trip_through_feature(doc: dict[str, Any]) -> None:
    fence = parse_fence("f1", doc)
    out = fence_to_feature(fence)
    assert out["type"] == "Feature"
    assert out["id"] == "f1"
    assert out["geometry"]["type"] == doc["geometry"]["type"]  # type: ignore[index]
    again = parse_fence("f1", orjson.loads(orjson.dumps(out)))
    assert again == fence
    assert again.geometry.equals_exact(fence.geometry, 0.0)
    assert fence_to_feature(again) == out
    out["properties"]["name"] = "mutated"  # type: ignore[index]
    assert fence_to_feature(fence)["properties"]["name"] != "mutated"  # type: ignore[index]


def test_fence_to_feature_without_stored_feature() -> None:
    fence = parse_fence("f", feature(polygon(SQUARE)))
    bare = Fence("f", "f", FenceKind.ZONE, None, None, fence.geometry)
    assert bare == fence  # `feature` takes no part in equality
    assert hash(bare) == hash(fence)
    assert parse_fence("f", fence_to_feature(bare)) == fence
    circle = parse_fence("c", feature(point(10.0, 20.0), radius_m=300))
    bare_circle = Fence("c", "c", FenceKind.ZONE, None, None, circle.geometry, 300.0, (20.0, 10.0))
    assert parse_fence("c", fence_to_feature(bare_circle)) == circle


# --- collections and files -----------------------------------------------------------------


def test_feature_collection() -> None:
    fences = parse_feature_collection(
        collection(
            with_id("a", feature(polygon(SQUARE))),
            with_id("b", feature(point(121.47, 31.23), radius_m=100, kind="risk_site")),
        )
    )
    assert [f.fence_id for f in fences] == ["a", "b"]
    assert parse_feature_collection(collection()) == []


@pytest.mark.parametrize(
    ("doc", "expected", "index"),
    [
        (
            collection(
                with_id("a", feature(polygon(SQUARE))), with_id("b", feature(polygon(BAD_RING)))
            ),
            "feature 1 (id 'b'): polygon ring 0 has 3 positions, need at least 4 (closed)",
            1,
        ),
        (
            collection(with_id("a", feature(polygon(SQUARE))), feature(polygon(SQUARE))),
            "feature 1: needs a string 'id', got None",
            1,
        ),
        (
            collection(with_id(7, feature(polygon(SQUARE)))),
            "feature 0: needs a string 'id', got 7",
            0,
        ),
        (
            collection(
                with_id("a", feature(polygon(SQUARE))),
                with_id("b", feature(polygon(SQUARE))),
                with_id("a", feature(polygon(SQUARE))),
            ),
            "feature 2 (id 'a'): duplicate id, first used by feature 0",
            2,
        ),
        (
            collection(with_id("a b", feature(polygon(SQUARE)))),
            "feature 0 (id 'a b'): fence id 'a b' is invalid",
            0,
        ),
        ({"type": "Feature"}, "expected a GeoJSON FeatureCollection, got type 'Feature'", None),
        ([], "expected a GeoJSON FeatureCollection object, got an array", None),
        ({"type": "FeatureCollection"}, "FeatureCollection 'features' must be an array", None),
    ],
)
def test_feature_collection_is_all_or_nothing(
    doc: object, expected: str, index: int | None
) -> None:
    with pytest.raises(FenceError) as info:
        parse_feature_collection(doc)
    assert str(info.value).startswith(expected), str(info.value)
    assert info.value.index == index


def test_load_fences(tmp_path: Any) -> None:
    path = tmp_path / "fences.geojson"
    path.write_bytes(orjson.dumps(collection(with_id("a", feature(polygon(SQUARE))))))
    assert [f.fence_id for f in load_fences(path)] == ["a"]
    assert [f.fence_id for f in load_fences(str(path))] == ["a"]
    path.write_bytes(b"{not json")
    with pytest.raises(FenceError, match="not valid JSON"):
        load_fences(path)
    path.write_bytes(orjson.dumps(collection(with_id("a", feature(polygon(BAD_RING))))))
    with pytest.raises(
        FenceError, match=r"fences.geojson: feature 0 \(id 'a'\): polygon ring 0"
    ) as info:
        load_fences(path)
    assert info.value.field == "features[0].geometry"


# --- geo helpers ---------------------------------------------------------------------------


def test_haversine_known_distances() -> None:
    one_degree = EARTH_RADIUS_M * math.pi / 180.0
    assert haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(one_degree)
    assert haversine_m(0.0, 0.0, 0.0, 1.0) == pytest.approx(one_degree)
    assert haversine_m(60.0, 0.0, 60.0, 1.0) == pytest.approx(one_degree * 0.5, rel=1e-4)
    assert haversine_m(0.0, 179.5, 0.0, -179.5) == pytest.approx(one_degree)
    assert haversine_m(90.0, 0.0, -90.0, 0.0) == pytest.approx(math.pi * EARTH_RADIUS_M)
    assert haversine_m(31.2, 121.4, 31.2, 121.4) == 0.0
    # Shanghai to Beijing, about 1 067 km on the sphere.
    assert haversine_m(31.2304, 121.4737, 39.9042, 116.4074) == pytest.approx(1_067_000, rel=5e-3)


def test_haversine_np_matches_scalar() -> None:
    rng = np.random.default_rng(3)
    lat1, lat2 = rng.uniform(-90, 90, 200), rng.uniform(-90, 90, 200)
    lon1, lon2 = rng.uniform(-180, 180, 200), rng.uniform(-180, 180, 200)
    vector = haversine_m_np(lat1, lon1, lat2, lon2)
    scalar = [haversine_m(*args) for args in zip(lat1, lon1, lat2, lon2, strict=True)]
    np.testing.assert_allclose(vector, scalar, rtol=1e-12, atol=1e-6)


def test_metres_to_degrees() -> None:
    dlat, dlon = metres_to_degrees(0.0, 111_195.0)
    assert dlat == pytest.approx(1.0, rel=1e-4)
    assert dlon == pytest.approx(1.0, rel=1e-4)
    dlat60, dlon60 = metres_to_degrees(60.0, 1000.0)
    assert dlon60 >= 2.0 * dlat60
    assert metres_to_degrees(90.0, 25.0)[1] == 360.0  # every longitude at the pole
    assert metres_to_degrees(89.9999, 25.0)[1] <= 360.0
    assert metres_to_degrees(45.0, 0.0)[0] >= 0.0
    with pytest.raises(ValueError, match="metres"):
        metres_to_degrees(0.0, -1.0)


# --- index ---------------------------------------------------------------------------------


def test_index_build_and_edits_return_new_indexes() -> None:
    a = square("a", 121.0, 31.0, 0.1)
    b = square("b", 121.2, 31.0, 0.1)
    a2 = square("a", 121.5, 31.5, 0.1, kind="risk_site")
    index = FenceIndex.build([a, b, a2])
    assert len(index) == 2
    assert index.by_id["a"] == a2  # last one wins
    assert [f.fence_id for f in index.fences] == ["a", "b"]
    assert list(index.ids) == ["a", "b"]
    assert list(index.kinds) == [FenceKind.RISK_SITE, FenceKind.ZONE]

    c = square("c", 121.4, 31.0, 0.1)
    grown = index.with_fences([c, a])
    assert grown is not index
    assert [f.fence_id for f in grown.fences] == ["a", "b", "c"]
    assert grown.by_id["a"] == a
    assert index.by_id["a"] == a2  # the old snapshot is unchanged
    assert len(index) == 2
    assert index.containing(31.05, 121.05) == []
    assert grown.containing(31.05, 121.05) == ["a"]

    shrunk = grown.without(["a", "nope"])
    assert [f.fence_id for f in shrunk.fences] == ["b", "c"]
    assert len(grown) == 3
    assert grown.containing(31.05, 121.05) == ["a"]
    assert shrunk.containing(31.05, 121.05) == []
    with pytest.raises(TypeError):
        grown.without("a")


def test_index_is_immutable() -> None:
    index = FenceIndex.build([square("a", 0.0, 0.0, 1.0)])
    with pytest.raises(AttributeError, match="immutable"):
        index._fences = ()
    with pytest.raises(TypeError):
        index.by_id["b"] = index.by_id["a"]  # type: ignore[index]
    with pytest.raises(ValueError, match="read-only"):
        index.ids[0] = "b"


def test_index_pickles_as_its_fences() -> None:
    index = FenceIndex.build([square("a", 0.0, 0.0, 1.0), square("b", 2.0, 0.0, 1.0)])
    copy = pickle.loads(pickle.dumps(index))  # noqa: S301  # our own bytes, just made
    assert copy.fences == index.fences
    assert copy.containing(0.5, 2.5) == ["b"]


def test_empty_index() -> None:
    index = FenceIndex.build([])
    assert len(index) == 0
    assert len(FenceIndex()) == 0
    point_idx, fence_idx = index.lookup(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    assert point_idx.shape == fence_idx.shape == (0,)
    assert point_idx.dtype == np.intp
    found = index.lookup_margin([1.0], [3.0], 25.0)
    assert len(found) == 0
    assert found.inside.dtype == np.bool_
    assert index.hits([1.0, 2.0], [3.0, 4.0], 25.0) == [(), ()]
    assert index.containing(1.0, 3.0) == []
    with_one = index.with_fences([square("a", 0.0, 0.0, 1.0)])
    assert with_one.containing(0.5, 0.5) == ["a"]


def test_lookup_with_no_points_and_nan_points() -> None:
    index = FenceIndex.build([square("a", 0.0, 0.0, 1.0)])
    point_idx, _ = index.lookup(np.array([]), np.array([]))
    assert len(point_idx) == 0
    point_idx, fence_idx = index.lookup([math.nan, 0.5, 0.5], [0.5, math.nan, 0.5])
    assert point_idx.tolist() == [2]
    assert fence_idx.tolist() == [0]
    found = index.lookup_margin([math.nan, 0.5], [0.5, 0.5], 25.0)
    assert found.point_idx.tolist() == [1]
    with pytest.raises(ValueError, match="same length"):
        index.lookup([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="margin_m"):
        index.lookup_margin([1.0], [1.0], -1.0)
    with pytest.raises(ValueError, match="margin_m"):
        index.lookup_margin([1.0], [1.0], math.nan)


def test_boundary_and_hole_semantics() -> None:
    fence = parse_fence("h", feature(polygon(SQUARE, HOLE)))
    index = FenceIndex.build([fence])
    lats = [31.05, 31.05, 31.0, 31.04, 31.02]
    lons = [121.05, 121.02, 121.05, 121.05, 121.1]
    # in the hole; inside; on the outer edge; on the hole's edge; on the outer edge (east)
    point_idx, _ = index.lookup(lats, lons)
    assert point_idx.tolist() == [1]
    found = index.lookup_margin(lats, lons, 25.0)
    assert found.point_idx.tolist() == [1, 2, 3, 4]
    assert found.inside.tolist() == [True, False, False, False]
    assert found.near.tolist() == [False, True, True, True]
    found0 = index.lookup_margin(lats, lons, 0.0)
    assert found0.point_idx.tolist() == [1, 2, 3, 4]  # on the boundary: at distance 0


def test_near_is_metric_not_degrees() -> None:
    # At 60 N a degree of longitude is about half a degree of latitude in metres.
    lat, lon = 60.0, 10.0
    fence = square("a", lon, lat, 0.01)
    index = FenceIndex.build([fence])
    east_edge = lon + 0.01
    metres_per_deg_lon = EARTH_RADIUS_M * math.pi / 180.0 * math.cos(math.radians(lat))
    for offset_m, margin_m, near in [(20.0, 25.0, True), (20.0, 15.0, False), (30.0, 25.0, False)]:
        probe_lon = east_edge + offset_m / metres_per_deg_lon
        found = index.lookup_margin([lat + 0.005], [probe_lon], margin_m)
        assert (len(found) == 1) is near, (offset_m, margin_m)
        if near:
            assert found.near.tolist() == [True]
            assert found.inside.tolist() == [False]
    # Inside, 20 m from the east edge.
    inner_lon = east_edge - 20.0 / metres_per_deg_lon
    found = index.lookup_margin([lat + 0.005], [inner_lon], 25.0)
    assert (found.inside.tolist(), found.near.tolist()) == ([True], [True])
    found = index.lookup_margin([lat + 0.005], [inner_lon], 15.0)
    assert (found.inside.tolist(), found.near.tolist()) == ([True], [False])


def test_hits_and_containing_sorted_by_id() -> None:
    big = square("zeta", 0.0, 0.0, 1.0)
    small = square("alpha", 0.4, 0.4, 0.2)
    edge = square("mid", 1.0, 0.0, 1.0)  # shares big's east edge
    index = FenceIndex.build([big, small, edge])
    assert index.containing(0.5, 0.5) == ["alpha", "zeta"]
    hits = index.hits([0.5, 0.5, 5.0], [0.5, 1.0, 5.0], 25.0)
    assert hits[0] == (
        FenceHit("alpha", inside=True, near=False),
        FenceHit("zeta", inside=True, near=False),
    )
    assert hits[1] == (
        FenceHit("mid", inside=False, near=True),
        FenceHit("zeta", inside=False, near=True),
    )
    assert hits[2] == ()


def test_lookup_pairs_are_sorted() -> None:
    fences = [square(f"f{i}", 0.0, 0.0, 1.0 + i * 0.1) for i in range(5)]
    index = FenceIndex.build(reversed(fences))
    point_idx, fence_idx = index.lookup([0.5, 0.5, 0.5], [0.5, 1.05, 0.5])
    pairs = list(zip(point_idx.tolist(), fence_idx.tolist(), strict=True))
    assert pairs == sorted(pairs)
    assert len(pairs) == 5 + 4 + 5
