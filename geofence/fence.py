"""Fences: GeoJSON in, validated `Fence` values out (DESIGN.md section 3, `PUT /v1/fences`).

Geometry is WGS84 lon/lat degrees, x = lon, y = lat, as in GeoJSON. A fence is a Polygon, a
MultiPolygon, or a Point with `properties.radius_m`, which becomes a geodesic circle.

A Feature may be drawn on a Chinese map: `properties.coord_sys` = `gcj02` (AMap, Tencent) or
`bd09` (Baidu) says so, and its positions are converted to WGS84 before anything else looks at
them (DESIGN §9). Such a fence's normalised Feature is WGS84, says so (`coord_sys` "wgs84"),
and keeps the system it was drawn in as `declared_coord_sys`, so that storing and parsing it
again changes nothing; `fence_to_feature(fence, coord_sys)` converts it back.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import shapely
from shapely import MultiPolygon, Polygon

from geofence.batch_shapes import Shape, batch_shapes
from geofence.coords import CoordSys, parse_coord_sys, positions_from_wgs84, positions_to_wgs84
from geofence.geo import geodesic_circle

FENCE_ID_PATTERN = r"[A-Za-z0-9_.:-]{1,128}"
FENCE_ID_RE = re.compile(FENCE_ID_PATTERN)
"""A well-formed fence_id; use with `fullmatch`."""
MAX_RADIUS_M = 50_000.0
CIRCLE_SEGMENTS = 64

_REASON_RE = re.compile(r"(.+?)\[(\S+) (\S+)\]")
_KNOWN_PROPERTIES = frozenset(
    ("name", "kind", "category", "dwell_s", "radius_m", "coord_sys", "declared_coord_sys")
)

Json = dict[str, object]


class FenceKind(StrEnum):
    """What a fence means: where a car may be, or where it should not sit."""

    ZONE = "zone"
    RISK_SITE = "risk_site"


_KINDS = frozenset(kind.value for kind in FenceKind)


MAX_VERTICES = 100_000
"""Per fence. A real city boundary has tens of thousands (New York's Queens, 1.2 MB of
GeoJSON, about 40k); every fix near a fence pays for its exact tests, so a 320k-vertex fence
made each such fix ~80x dearer. Simplify bigger ones before loading them."""
MAX_PROPERTY_DEPTH = 32
"""Nesting of extra `properties` values: deeper documents are refused, not stored."""


class FenceError(ValueError):
    """A fence that cannot be accepted. The message names the defect and where it is.

    `defect` is the message without the fence or feature prefix; `fence_id` and `index` (the
    position in a FeatureCollection) are set when known. `field` is the path of the wrong
    value (`geometry`, `properties.kind`, `features[2].geometry`), None when the document
    as a whole is wrong.
    """

    def __init__(
        self,
        message: str,
        *,
        defect: str | None = None,
        fence_id: str | None = None,
        index: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.defect = message if defect is None else defect
        self.fence_id = fence_id
        self.index = index
        self.field = field


class _InvalidError(Exception):
    """A defect found while parsing one fence; `parse_fence` adds the fence id."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Fence:
    """A validated fence.

    `geometry` is in lon/lat degrees and valid (shapely `is_valid`, non-zero area). Circles
    keep `radius_m` (metres, geodesic) and `center` as (lat, lon). `feature` is the normalised
    GeoJSON Feature returned by `GET /v1/fences`; it takes no part in equality or hashing.
    """

    fence_id: str
    name: str
    kind: FenceKind
    category: str | None
    dwell_s: int | None
    geometry: Polygon | MultiPolygon
    radius_m: float | None = None
    center: tuple[float, float] | None = None
    feature: Json = field(default_factory=dict, compare=False, repr=False)


def parse_fence(fence_id: str, feature: object) -> Fence:
    """Validate a GeoJSON Feature into a `Fence`; raise `FenceError` naming the defect."""
    return _parse_fence(fence_id, feature, None)


def parse_fences(items: Sequence[tuple[str, object]]) -> list[Fence]:
    """`parse_fence` of each (fence_id, feature) pair: the same fences, or the first pair's
    error; about twice as fast for thousands, their geometry being built in one batch."""
    shapes = batch_shapes([feature for _, feature in items], CIRCLE_SEGMENTS)
    return [
        _parse_fence(fence_id, feature, shape)
        for (fence_id, feature), shape in zip(items, shapes, strict=True)
    ]


def _parse_fence(fence_id: str, feature: object, shape: Shape | None) -> Fence:
    """`parse_fence`, with the feature's geometry built already if `shape` is given."""
    if not isinstance(fence_id, str) or not FENCE_ID_RE.fullmatch(fence_id):
        shown = repr(fence_id) if isinstance(fence_id, str) else short_repr(fence_id)
        defect = f"fence id {shown} is invalid: it must match {FENCE_ID_PATTERN}"
        raise FenceError(defect, defect=defect, field="fence_id")
    try:
        return _parse(fence_id, feature, shape)
    except _InvalidError as exc:
        defect = str(exc)
        raise FenceError(
            f"fence {fence_id!r}: {defect}", defect=defect, fence_id=fence_id, field=exc.field
        ) from None


def parse_feature_collection(doc: object) -> list[Fence]:
    """Validate a FeatureCollection whose features carry string ids; all or nothing. The
    geometry of every well-formed feature is built in one batch (`batch_shapes`)."""
    if not isinstance(doc, dict):
        msg = f"expected a GeoJSON FeatureCollection object, got {_json_type(doc)}"
        raise FenceError(msg)
    if doc.get("type") != "FeatureCollection":
        msg = f"expected a GeoJSON FeatureCollection, got type {short_repr(doc.get('type'))}"
        raise FenceError(msg)
    features = doc.get("features")
    if not isinstance(features, list):
        msg = f"FeatureCollection 'features' must be an array, got {_json_type(features)}"
        raise FenceError(msg, field="features")
    shapes = batch_shapes(features, CIRCLE_SEGMENTS)
    fences: list[Fence] = []
    first_index: dict[str, int] = {}
    for index, feature in enumerate(features):
        where = f"features[{index}]"
        raw_id = feature.get("id") if isinstance(feature, dict) else None
        if not isinstance(raw_id, str):
            defect = f"needs a string 'id', got {short_repr(raw_id)}"
            msg = f"feature {index}: {defect}"
            raise FenceError(msg, defect=defect, index=index, field=f"{where}.id")
        if raw_id in first_index:
            defect = f"duplicate id, first used by feature {first_index[raw_id]}"
            msg = f"feature {index} (id {raw_id!r}): {defect}"
            raise FenceError(msg, defect=defect, fence_id=raw_id, index=index, field=f"{where}.id")
        first_index[raw_id] = index
        try:
            fences.append(_parse_fence(raw_id, feature, shapes[index]))
        except FenceError as exc:
            msg = f"feature {index} (id {raw_id!r}): {exc.defect}"
            # The feature's id is the fence id parse_fence was given.
            inner = "id" if exc.field == "fence_id" else exc.field
            path = where if inner is None else f"{where}.{inner}"
            raise FenceError(
                msg, defect=exc.defect, fence_id=raw_id, index=index, field=path
            ) from None
    return fences


def fence_to_feature(fence: Fence, coord_sys: CoordSys | None = None) -> Json:
    """The fence as a normalised GeoJSON Feature (a fresh copy, safe to mutate): in WGS84,
    or in `coord_sys` with `properties.coord_sys` naming it when one is asked for."""
    feature = _wgs84_feature(fence)
    if coord_sys is None:
        return feature
    geometry: Any = feature["geometry"]
    if coord_sys is not CoordSys.WGS84:
        coords = geometry["coordinates"]
        if geometry["type"] == "Point":
            geometry["coordinates"] = list(positions_from_wgs84([coords], coord_sys)[0])
        else:
            polygons = [coords] if geometry["type"] == "Polygon" else coords
            converted = [
                [[list(p) for p in positions_from_wgs84(ring, coord_sys)] for ring in polygon]
                for polygon in polygons
            ]
            geometry["coordinates"] = converted[0] if geometry["type"] == "Polygon" else converted
    properties: Any = feature["properties"]
    properties["coord_sys"] = coord_sys.value
    return feature


def _wgs84_feature(fence: Fence) -> Json:
    if fence.feature:
        feature: Json = _json_copy(fence.feature)
        return feature
    properties: Json = {
        "name": fence.name,
        "kind": fence.kind.value,
        "category": fence.category,
        "dwell_s": fence.dwell_s,
    }
    geometry: object
    if fence.radius_m is not None and fence.center is not None:
        properties["radius_m"] = fence.radius_m
        geometry = {"type": "Point", "coordinates": [fence.center[1], fence.center[0]]}
    else:
        geometry = orjson.loads(shapely.to_geojson(fence.geometry))
    return {"type": "Feature", "id": fence.fence_id, "geometry": geometry, "properties": properties}


def load_fences(path: str | os.PathLike[str]) -> list[Fence]:
    """Read and validate a GeoJSON FeatureCollection file; all or nothing."""
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as exc:
        msg = f"{os.fspath(path)}: not valid JSON: {exc}"
        raise FenceError(msg) from None
    try:
        return parse_feature_collection(doc)
    except FenceError as exc:
        msg = f"{os.fspath(path)}: {exc}"
        raise FenceError(
            msg, defect=exc.defect, fence_id=exc.fence_id, index=exc.index, field=exc.field
        ) from None


def _parse(fence_id: str, feature: object, prepared: Shape | None) -> Fence:
    if not isinstance(feature, dict):
        msg = f"expected a GeoJSON Feature object, got {_json_type(feature)}"
        raise _InvalidError(msg, None)
    if feature.get("type") != "Feature":
        msg = f"expected a GeoJSON Feature, got type {short_repr(feature.get('type'))}"
        raise _InvalidError(msg, None)
    feature_id = feature.get("id")
    if feature_id is not None and feature_id != fence_id:
        msg = f"the feature's id {short_repr(feature_id)} differs from the fence id"
        raise _InvalidError(msg, "id")
    props = feature.get("properties")
    if props is None:
        props = {}
    if not isinstance(props, dict):
        msg = f"properties must be an object, got {_json_type(props)}"
        raise _InvalidError(msg, "properties")
    geometry = feature.get("geometry")
    if geometry is None:
        msg = "missing geometry: use a Polygon, a MultiPolygon, or a Point with radius_m"
        raise _InvalidError(msg, "geometry")
    if not isinstance(geometry, dict):
        msg = f"geometry must be an object, got {_json_type(geometry)}"
        raise _InvalidError(msg, "geometry")
    kind = _kind(props.get("kind"))
    name = _name(props.get("name"), fence_id)
    category = _category(props.get("category"))
    dwell_s = _dwell_s(props.get("dwell_s"))
    given = _coord_sys(props, "coord_sys")
    declared = _coord_sys(props, "declared_coord_sys") or given
    coord_sys = given or CoordSys.WGS84

    gtype = geometry.get("type")
    coordinates = geometry.get("coordinates")
    if gtype not in ("Polygon", "MultiPolygon", "Point"):
        msg = (
            f"unsupported geometry type {short_repr(gtype)}: use Polygon, MultiPolygon, "
            "or Point with properties.radius_m"
        )
        raise _InvalidError(msg, "geometry")
    if coordinates is None:
        msg = f"{gtype} geometry has no coordinates"
        raise _InvalidError(msg, "geometry")
    shape: Polygon | MultiPolygon
    radius_m: float | None = None
    center: tuple[float, float] | None = None
    norm_coords: object
    if gtype == "Point":
        lon, lat = _position(coordinates, "point")
        if coord_sys is not CoordSys.WGS84:
            lon, lat = positions_to_wgs84([(lon, lat)], coord_sys)[0]
        radius_m = _radius_m(props.get("radius_m"))
        shape = _circle(lat, lon, radius_m) if prepared is None else prepared.geometry
        center = (lat, lon)
        norm_coords = (lon, lat)
    else:
        if props.get("radius_m") is not None:
            msg = f"properties.radius_m is only for Point geometries (circles), not {gtype}"
            raise _InvalidError(msg, "properties.radius_m")
        if prepared is not None:
            shape, norm_coords = prepared.geometry, prepared.coordinates
        elif gtype == "Polygon":
            shape, norm_coords = _polygon(coordinates, "polygon ", coord_sys)
        else:
            shape, norm_coords = _multipolygon(coordinates, coord_sys)

    vertices = shapely.get_num_coordinates(shape)
    if vertices > MAX_VERTICES:
        msg = (
            f"the geometry has {vertices:,} vertices, more than the {MAX_VERTICES:,} a fence may "
            "have: simplify it first (e.g. shapely simplify with a 5-10 m tolerance)"
        )
        raise _InvalidError(msg, "geometry")

    # Coordinates are kept as tuples: the garbage collector stops tracking tuples of floats,
    # where nested lists for thousands of fences would slow every later collection.
    norm_props: Json = {"name": name, "kind": kind.value, "category": category, "dwell_s": dwell_s}
    if radius_m is not None:
        norm_props["radius_m"] = radius_m
    if declared is not None:
        norm_props["coord_sys"] = CoordSys.WGS84.value
        norm_props["declared_coord_sys"] = declared.value
    for key, value in props.items():
        if key not in _KNOWN_PROPERTIES:
            if _nesting(value) > MAX_PROPERTY_DEPTH:
                msg = f"properties.{key} nests deeper than {MAX_PROPERTY_DEPTH} levels"
                raise _InvalidError(msg, f"properties.{key}")
            norm_props[key] = _json_copy(value)
    normalised: Json = {
        "type": "Feature",
        "id": fence_id,
        "geometry": {"type": gtype, "coordinates": norm_coords},
        "properties": norm_props,
    }
    return Fence(
        fence_id=fence_id,
        name=name,
        kind=kind,
        category=category,
        dwell_s=dwell_s,
        geometry=shape,
        radius_m=radius_m,
        center=center,
        feature=normalised,
    )


def _circle(lat: float, lon: float, radius_m: float) -> Polygon:
    try:
        shape = geodesic_circle(lat, lon, radius_m, CIRCLE_SEGMENTS)
    except ValueError as exc:
        raise _InvalidError(str(exc), "geometry") from None
    if not shapely.is_valid(shape) or shapely.area(shape) == 0.0:
        # A radius of nanometres: its vertices round onto one another.
        msg = (
            f"properties.radius_m {radius_m!r} is too small: the circle collapses to a "
            "point at degree precision; use a radius of at least a centimetre"
        )
        raise _InvalidError(msg, "properties.radius_m")
    return shape


def _kind(value: object) -> FenceKind:
    if value is None:
        msg = "properties.kind is required: 'zone' or 'risk_site'"
        raise _InvalidError(msg, "properties.kind")
    if isinstance(value, str) and value in _KINDS:
        return FenceKind(value)
    msg = f"properties.kind must be 'zone' or 'risk_site', got {short_repr(value)}"
    raise _InvalidError(msg, "properties.kind")


def _name(value: object, fence_id: str) -> str:
    if value is None:
        return fence_id
    if not isinstance(value, str) or not value.strip():
        msg = f"properties.name must be a non-empty string, got {short_repr(value)}"
        raise _InvalidError(msg, "properties.name")
    return value


def _category(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        msg = (
            "properties.category must be a non-empty string such as 'pawnshop', 'lender', "
            f"'used_car_market', 'auction', 'impound' or 'border', got {short_repr(value)}"
        )
        raise _InvalidError(msg, "properties.category")
    return value


def _dwell_s(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = (
            f"properties.dwell_s must be an integer number of seconds >= 0, got {short_repr(value)}"
        )
        raise _InvalidError(msg, "properties.dwell_s")
    return value


def _coord_sys(props: dict[str, object], key: str) -> CoordSys | None:
    value = props.get(key)
    coord_sys = parse_coord_sys(value)
    if coord_sys is None and value is not None:
        msg = (
            f"properties.{key} must be 'wgs84', 'gcj02' (AMap, Tencent) or 'bd09' (Baidu), "
            f"got {short_repr(value)}"
        )
        raise _InvalidError(msg, f"properties.{key}")
    return coord_sys


def _radius_m(value: object) -> float:
    if value is None:
        msg = "a Point fence needs properties.radius_m (metres, > 0 and <= 50000)"
        raise _InvalidError(msg, "properties.radius_m")
    radius = _number(value)
    if radius is None or not 0.0 < radius <= MAX_RADIUS_M:
        msg = (
            f"properties.radius_m must be a number > 0 and <= 50000 metres, got {short_repr(value)}"
        )
        raise _InvalidError(msg, "properties.radius_m")
    return radius


def _number(value: object) -> float | None:
    """The value as a float if it is a JSON number (not a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _position(value: object, where: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) not in (2, 3):
        msg = f"{where}: a position must be [lon, lat], got {short_repr(value)}"
        raise _InvalidError(msg, "geometry")
    lon, lat = _number(value[0]), _number(value[1])
    if lon is None or lat is None or (len(value) == 3 and _number(value[2]) is None):
        msg = f"coordinate {short_repr(value)} is not numeric at {where}"
        raise _InvalidError(msg, "geometry")
    if not (math.isfinite(lon) and math.isfinite(lat)):
        msg = f"coordinate [{lon!r}, {lat!r}] is not finite at {where}"
        raise _InvalidError(msg, "geometry")
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        msg = f"coordinate [{lon!r}, {lat!r}] out of range (lon -180..180, lat -90..90) at {where}"
        raise _InvalidError(msg, "geometry")
    return lon, lat


def _ring(value: object, where: str, coord_sys: CoordSys) -> list[tuple[float, float]]:
    if not isinstance(value, list | tuple):
        msg = f"{where} must be an array of positions, got {_json_type(value)}"
        raise _InvalidError(msg, "geometry")
    points = [_position(p, f"{where}, position {i}") for i, p in enumerate(value)]
    if len(points) < 4:
        msg = f"{where} has {len(points)} positions, need at least 4 (closed)"
        raise _InvalidError(msg, "geometry")
    if points[0] != points[-1]:
        msg = (
            f"{where} is not closed: first position {list(points[0])} "
            f"!= last position {list(points[-1])}"
        )
        raise _InvalidError(msg, "geometry")
    if coord_sys is not CoordSys.WGS84:
        points = positions_to_wgs84(points, coord_sys)
    # The hull, not the ring: a self-intersecting bow tie has zero signed area too.
    if shapely.area(shapely.convex_hull(shapely.multipoints(points))) == 0.0:
        msg = f"{where} has zero area (its positions are collinear)"
        raise _InvalidError(msg, "geometry")
    return points


_Ring = tuple[tuple[float, float], ...]


def _polygon(value: object, prefix: str, coord_sys: CoordSys) -> tuple[Polygon, tuple[_Ring, ...]]:
    """A valid polygon and its normalised coordinates; `prefix` names it in messages."""
    if not isinstance(value, list | tuple) or not value:
        msg = f"{prefix}has no rings: expected an array of linear rings"
        raise _InvalidError(msg, "geometry")
    rings = [_ring(r, f"{prefix}ring {i}", coord_sys) for i, r in enumerate(value)]
    polygon = Polygon(rings[0], rings[1:])
    reason = shapely.is_valid_reason(polygon)
    if reason != "Valid Geometry":
        where = prefix.strip()
        text = _reason_text(reason, coord_sys)
        msg = text if where == "polygon" else f"{where}: {text}"
        raise _InvalidError(msg, "geometry")
    return polygon, tuple(tuple(ring) for ring in rings)


def _multipolygon(
    value: object, coord_sys: CoordSys
) -> tuple[MultiPolygon, tuple[tuple[_Ring, ...], ...]]:
    if not isinstance(value, list | tuple) or not value:
        msg = "MultiPolygon has no polygons: expected an array of polygons"
        raise _InvalidError(msg, "geometry")
    parts = [_polygon(p, f"polygon {i} ", coord_sys) for i, p in enumerate(value)]
    multi = MultiPolygon([polygon for polygon, _ in parts])
    reason = shapely.is_valid_reason(multi)
    if reason != "Valid Geometry":
        msg = f"the polygons overlap or share an edge: {_reason_text(reason, coord_sys)}"
        raise _InvalidError(msg, "geometry")
    return multi, tuple(coords for _, coords in parts)


def _nesting(value: object) -> int:
    """How deeply arrays and objects nest in `value` (0 for a scalar), without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_PROPERTY_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _json_copy(value: object) -> Any:
    """A fresh copy with arrays as lists (stored coordinates are tuples: see `_parse`)."""
    if isinstance(value, dict):
        return {key: _json_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_copy(item) for item in value]
    if value is None or isinstance(value, str | int | float):
        return value
    return copy.deepcopy(value)


def _reason_text(reason: str, coord_sys: CoordSys = CoordSys.WGS84) -> str:
    """GEOS 'Self-intersection[121.47 31.23]' -> 'self-intersection at (121.47, 31.23)'; the
    place is WGS84, which is said when the fence was given in another system."""
    match = _REASON_RE.fullmatch(reason)
    if match is None:
        return reason[:1].lower() + reason[1:]
    text = match[1]
    system = "" if coord_sys is CoordSys.WGS84 else f" (WGS84, converted from {coord_sys})"
    return f"{text[:1].lower()}{text[1:]} at ({match[2]}, {match[3]}){system}"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def short_repr(value: object, limit: int = 60) -> str:
    """`repr` of a value from a document, shortened for a message; never raises (a value
    nested too deeply or an int past the digit limit is named by its JSON type)."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested too deeply; an int past the digit limit
        return f"<{_json_type(value)} that cannot be shown>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
