"""The shapes of many fences at once (issue 12): the geometry `parse_fence` builds for each
well-formed WGS84 feature, computed for a whole FeatureCollection with numpy, one pyproj call
and shapely's array constructors, where the fence parser goes position by position. Parsing
every fence is a fixed cost of each replay and of each engine and worker start.

A feature gets a shape here only when the fence parser, reading the same values, would build
the same one without complaint. Anything unusual (a tuple for an array, a boolean for a number,
another coordinate system) or wrong gets None, and the fence parser does that feature alone,
as it always has, so that every error is raised by the same code and reads the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely import MultiPolygon, Polygon

from geofence.coords import CoordSys, parse_coord_sys
from geofence.geo import geodesic_circles

_NUMBER_TYPES = frozenset((int, float))
"""JSON numbers as orjson gives them; testing `type(x)` leaves out booleans (an int subclass)."""
_LIST_TYPE = frozenset((list,))

_Rings = list[list[object]]
_Entry = tuple[int, bool, list[_Rings]]
"""(feature index, whether it is a MultiPolygon, its polygons: lists of rings of positions)."""


@dataclass(frozen=True, slots=True)
class Shape:
    """A fence's valid geometry, and for a polygon its normalised GeoJSON coordinates as the
    fence parser keeps them (tuples); None for a circle, whose coordinates are its centre."""

    geometry: Polygon | MultiPolygon
    coordinates: object


def batch_shapes(features: Sequence[object], circle_segments: int) -> list[Shape | None]:
    """For each feature, the shape `parse_fence` would give it, or None: parse it alone."""
    shapes: list[Shape | None] = [None] * len(features)
    circles: list[tuple[int, float, float, float]] = []
    entries: list[_Entry] = []
    for i, feature in enumerate(features):
        parts = _wgs84_parts(feature)
        if parts is None:
            continue
        geometry, props = parts
        gtype = geometry.get("type")
        coordinates = geometry.get("coordinates")
        if gtype == "Point":
            circle = _centre_and_radius(coordinates, props.get("radius_m"))
            if circle is not None:
                circles.append((i, *circle))
        elif gtype in ("Polygon", "MultiPolygon"):
            multi = gtype == "MultiPolygon"
            polygons = _polygons(coordinates if multi else [coordinates])
            if polygons is not None:
                entries.append((i, multi, polygons))
    if circles:
        _circle_shapes(circles, circle_segments, shapes)
    if entries:
        _polygon_shapes(entries, shapes)
    return shapes


def _wgs84_parts(feature: object) -> tuple[dict[str, object], dict[str, object]] | None:
    """(geometry, properties) of a feature drawn in WGS84, else None."""
    if type(feature) is not dict:
        return None
    props = feature.get("properties")
    geometry = feature.get("geometry")
    if type(props) is not dict or type(geometry) is not dict:
        return None
    if parse_coord_sys(props.get("coord_sys")) not in (None, CoordSys.WGS84):
        return None
    return geometry, props


def _polygons(value: object) -> list[_Rings] | None:
    """The value if it is a non-empty list of polygons, each a non-empty list of lists."""
    if not _lists_of_lists(value):
        return None
    polygons: list[_Rings] = value  # type: ignore[assignment]  # checked just above
    return polygons if all(map(_lists_of_lists, polygons)) else None


def _lists_of_lists(value: object) -> bool:
    return type(value) is list and bool(value) and _LIST_TYPE.issuperset(map(type, value))


def _centre_and_radius(coordinates: object, radius: object) -> tuple[float, float, float] | None:
    """(lat, lon, radius_m) of a circle `geodesic_circle` accepts, read as the parser reads
    them (`float` of each JSON number), else None."""
    if (
        type(coordinates) is not list
        or len(coordinates) not in (2, 3)
        or not _NUMBER_TYPES.issuperset(map(type, coordinates))
        or type(radius) not in _NUMBER_TYPES
    ):
        return None
    try:
        lon, lat = float(coordinates[0]), float(coordinates[1])
        radius_m = float(radius)  # type: ignore[arg-type]  # an int or a float, checked above
    except OverflowError:  # an int past the float range
        return None
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0 and 0.0 < radius_m < math.inf):
        return None
    return lat, lon, radius_m


def _circle_shapes(
    circles: list[tuple[int, float, float, float]], segments: int, shapes: list[Shape | None]
) -> None:
    index, lats, lons, radii = (np.array(column) for column in zip(*circles, strict=True))
    vertices, fits = geodesic_circles(lats, lons, radii, segments)
    polygons = np.asarray(shapely.polygons(vertices[fits]), dtype=object)
    # A radius of nanometres rounds its vertices onto one another: the parser refuses it.
    good = np.asarray(shapely.is_valid(polygons) & (shapely.area(polygons) != 0.0), dtype=bool)
    for i, polygon in zip(index[fits][good].tolist(), polygons[good].tolist(), strict=True):
        shapes[i] = Shape(polygon, None)


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each position, ring and polygon of a list of entries belongs, as index arrays."""

    lengths: NDArray[np.intp]
    """Positions per ring."""
    ring_of_position: NDArray[np.intp]
    polygon_of_ring: NDArray[np.intp]
    entry_of_polygon: NDArray[np.intp]

    @classmethod
    def of(cls, entries: list[_Entry]) -> _Layout:
        polygons = [polygon for _, _, parts in entries for polygon in parts]
        lengths = np.array([len(ring) for polygon in polygons for ring in polygon], dtype=np.intp)
        return cls(
            lengths,
            np.repeat(np.arange(len(lengths)), lengths),
            np.repeat(np.arange(len(polygons)), [len(polygon) for polygon in polygons]),
            np.repeat(np.arange(len(entries)), [len(parts) for _, _, parts in entries]),
        )

    @property
    def entry_of_ring(self) -> NDArray[np.intp]:
        return self.entry_of_polygon[self.polygon_of_ring]


def _polygon_shapes(entries: list[_Entry], shapes: list[Shape | None]) -> None:
    """Shapes of the (Multi)Polygon features that pass every check the parser makes: rings of
    at least 4 positions, each in range, closed, not collinear; valid polygons, and a
    MultiPolygon's polygons apart."""
    positions = [
        p for _, _, parts in entries for polygon in parts for ring in polygon for p in ring
    ]
    lonlat = _lonlat(positions)
    if lonlat is None:  # something unusual somewhere: every polygon is parsed alone
        return
    # What numpy can check, first; GEOS then builds and checks only what passed.
    layout = _Layout.of(entries)
    kept = _all_per(_rings_ok(lonlat, layout), layout.entry_of_ring, len(entries))
    lonlat = lonlat[kept[layout.entry_of_ring][layout.ring_of_position]]
    entries = [entry for entry, keep in zip(entries, kept.tolist(), strict=True) if keep]
    if not entries:
        return

    layout = _Layout.of(entries)
    n = len(entries)
    rings = np.asarray(shapely.linearrings(lonlat, indices=layout.ring_of_position), dtype=object)
    # The hull, not the ring: a self-intersecting bow tie has zero signed area too. The parser
    # takes the hull of a MultiPoint of the ring's positions; GEOS hulls the same coordinates
    # in the same order either way, and a ring spares making a Point per position.
    ok = _all_per(
        np.asarray(shapely.area(shapely.convex_hull(rings))) != 0.0, layout.entry_of_ring, n
    )
    polygons = np.asarray(shapely.polygons(rings, indices=layout.polygon_of_ring), dtype=object)
    del rings  # thousands of geometries the GC need not walk again
    ok &= _all_per(np.asarray(shapely.is_valid(polygons), dtype=bool), layout.entry_of_polygon, n)
    is_multi = np.array([multi for _, multi, _ in entries], dtype=bool)
    in_multi = is_multi[layout.entry_of_polygon]
    multi_ids = np.unique(layout.entry_of_polygon[in_multi], return_inverse=True)[1]
    multis = np.asarray(shapely.multipolygons(polygons[in_multi], indices=multi_ids), dtype=object)
    ok[is_multi] &= np.asarray(shapely.is_valid(multis), dtype=bool)

    # The coordinates as the parser keeps them: a tuple of (lon, lat) tuples per ring.
    points = list(zip(lonlat[:, 0].tolist(), lonlat[:, 1].tolist(), strict=True))
    ends = np.cumsum(layout.lengths).tolist()
    ring_coords = iter(
        [tuple(points[e - k : e]) for e, k in zip(ends, layout.lengths.tolist(), strict=True)]
    )
    polygon_iter = iter(polygons.tolist())
    multi_iter = iter(multis.tolist())
    for (i, multi, parts), good in zip(entries, ok.tolist(), strict=True):
        coordinates = tuple(tuple(next(ring_coords) for _ in polygon) for polygon in parts)
        built = [next(polygon_iter) for _ in parts]
        geometry = next(multi_iter) if multi else built[0]
        if good:
            shapes[i] = Shape(geometry, coordinates if multi else coordinates[0])


def _lonlat(positions: list[object]) -> NDArray[np.float64] | None:
    """(lon, lat) of each position, an (n, 2) array, if every one is a list of 2 or 3 JSON
    numbers (the altitude is a number, as the parser wants, and dropped), else None."""
    if not _LIST_TYPE.issuperset(map(type, positions)):
        return None
    lists: list[list[object]] = positions  # type: ignore[assignment]  # checked just above
    widths = set(map(len, lists))
    if not widths <= {2, 3} or not _NUMBER_TYPES.issuperset(map(type, chain.from_iterable(lists))):
        return None
    try:
        lonlat = np.array(lists if widths == {2} else [p[:2] for p in lists], dtype=np.float64)
    except OverflowError:  # an int past the float range
        return None
    return lonlat.reshape(-1, 2)


def _rings_ok(lonlat: NDArray[np.float64], layout: _Layout) -> NDArray[np.bool_]:
    """Per ring: at least 4 positions, each in range (which NaN and infinities are not),
    the last one equal to the first."""
    lon, lat = lonlat[:, 0], lonlat[:, 1]
    in_range = (lon >= -180.0) & (lon <= 180.0) & (lat >= -90.0) & (lat <= 90.0)
    lengths = layout.lengths
    ok = (lengths >= 4) & _all_per(in_range, layout.ring_of_position, len(lengths))
    ends = np.cumsum(lengths)
    ok[ok] = (lonlat[ends[ok] - lengths[ok]] == lonlat[ends[ok] - 1]).all(axis=1)
    return ok


def _all_per(ok: NDArray[np.bool_], group: NDArray[np.intp], n_groups: int) -> NDArray[np.bool_]:
    """Per group, whether every member is ok (`group` numbers the group of each member)."""
    result: NDArray[np.bool_] = np.bincount(group[~ok], minlength=n_groups) == 0
    return result
