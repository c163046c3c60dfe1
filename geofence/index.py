"""An immutable snapshot index over fences: which fences hold, or nearly hold, each point.

Units: points are WGS84 degrees (`lats`, `lons`, parallel 1-D arrays); margins are metres.
Boundary semantics: a point is *inside* a fence only if it lies in the fence's interior
(shapely `contains_xy`: a point on the boundary, or in a hole, is not inside). A point is
*near* a fence when its distance to the fence boundary (hole rings included) is at most the
margin, measured in the local tangent plane centred on the point (`geo.tangent_plane_coords`).

The index never changes after it is built: edits (`with_fences`, `without`) return a new
index, so a reader holding the old one keeps a consistent view while the new one is swapped in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple, NoReturn

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely import Point, STRtree

from geofence.fence import Fence
from geofence.geo import METRES_PER_DEGREE, cos_lat_np, metres_to_degrees_np, tangent_plane_coords

# Relative slack around the margin: pairs this close to it get the exact distance.
_SLACK = 1e-9
_ORIGIN = Point(0.0, 0.0)


class FenceHit(NamedTuple):
    """A fence a point is inside of, or within the margin of (`near` its boundary), or both.

    A named tuple rather than a dataclass: one is built per (fix, fence) pair in the hot path.
    """

    fence_id: str
    inside: bool
    near: bool


@dataclass(frozen=True, slots=True, eq=False)
class MarginHits:
    """(point, fence) pairs as parallel arrays, sorted by point index then fence index.

    Invariant: `inside | near` holds for every pair. Indices point into the queried arrays and
    into `FenceIndex.fences`.
    """

    point_idx: NDArray[np.intp]
    fence_idx: NDArray[np.intp]
    inside: NDArray[np.bool_]
    near: NDArray[np.bool_]

    def __len__(self) -> int:
        """Number of pairs."""
        return len(self.point_idx)


class HitGroups:
    """`MarginHits` grouped per point and sorted by fence id: `of(p)` is point `p`'s hits.

    The `FenceHit` tuples are built on demand, per point asked for: a caller that needs the
    hits of only some points (the slow readings of a batch) pays only for those.
    """

    __slots__ = ("_ids", "_inside", "_near", "_starts", "found")

    def __init__(self, found: MarginHits, n_points: int, ids: list[str]) -> None:
        """`found` sorted by (point, fence id); `ids`: its pairs' fence ids, in that order."""
        self.found = found
        self._starts: list[int] = np.searchsorted(
            found.point_idx, np.arange(n_points + 1), side="left"
        ).tolist()
        self._ids = ids
        self._inside: list[bool] = found.inside.tolist()
        self._near: list[bool] = found.near.tolist()

    def of(self, point: int) -> tuple[FenceHit, ...]:
        """The hits of one point, sorted by fence id."""
        start, end = self._starts[point], self._starts[point + 1]
        if start == end:
            return ()
        ids, inside, near = self._ids, self._inside, self._near
        return tuple(FenceHit(ids[k], inside[k], near[k]) for k in range(start, end))


class FenceIndex:
    """An immutable STRtree snapshot over fences with parallel arrays (`ids`, `kinds`).

    Fence index `i` in every result refers to `fences[i]`. Building is O(n log n); an edit
    builds a new snapshot (milliseconds for 100k fences).
    """

    __slots__ = (
        "_boundaries",
        "_by_id",
        "_fences",
        "_geoms",
        "_id_rank",
        "_ids",
        "_kinds",
        "_positions",
        "_tree",
    )

    _fences: tuple[Fence, ...]
    _by_id: Mapping[str, Fence]
    _ids: NDArray[np.object_]
    _kinds: NDArray[np.object_]
    _id_rank: NDArray[np.intp]
    _geoms: NDArray[np.object_]
    _boundaries: NDArray[np.object_]
    _positions: Mapping[str, int]
    _tree: STRtree

    def __init__(self, fences: Iterable[Fence] = ()) -> None:
        """Index `fences`; on a duplicate id the last one wins (at the first one's position)."""
        by_id: dict[str, Fence] = {}
        for fence in fences:
            by_id[fence.fence_id] = fence
        ordered = tuple(by_id.values())
        geoms = np.array([f.geometry for f in ordered], dtype=object)
        shapely.prepare(geoms)
        ids = np.array([f.fence_id for f in ordered], dtype=object)
        id_rank = np.empty(len(ordered), dtype=np.intp)
        id_rank[np.argsort(ids, kind="stable")] = np.arange(len(ordered), dtype=np.intp)
        boundaries = shapely.boundary(geoms) if ordered else np.array([], dtype=object)
        kinds = np.array([f.kind for f in ordered], dtype=object)
        for array in (geoms, ids, id_rank, boundaries, kinds):
            array.flags.writeable = False
        init = object.__setattr__
        init(self, "_fences", ordered)
        init(self, "_by_id", MappingProxyType(by_id))
        init(self, "_positions", MappingProxyType({f.fence_id: i for i, f in enumerate(ordered)}))
        init(self, "_ids", ids)
        init(self, "_kinds", kinds)
        init(self, "_id_rank", id_rank)
        init(self, "_geoms", geoms)
        init(self, "_boundaries", boundaries)
        init(self, "_tree", STRtree(geoms))

    @classmethod
    def build(cls, fences: Iterable[Fence]) -> FenceIndex:
        """A new index over `fences`; on a duplicate id the last one wins."""
        return cls(fences)

    def with_fences(self, fences: Iterable[Fence]) -> FenceIndex:
        """A new index with `fences` added, or replacing those with the same id."""
        by_id = dict(self._by_id)
        for fence in fences:
            by_id[fence.fence_id] = fence
        return FenceIndex(by_id.values())

    def without(self, fence_ids: Iterable[str]) -> FenceIndex:
        """A new index without the given fence ids (ids not in the index are ignored)."""
        if isinstance(fence_ids, str):
            msg = "without() takes an iterable of fence ids, not a single string"
            raise TypeError(msg)
        drop = set(fence_ids)
        return FenceIndex(f for f in self._fences if f.fence_id not in drop)

    @property
    def fences(self) -> tuple[Fence, ...]:
        """The fences, in index order."""
        return self._fences

    @property
    def by_id(self) -> Mapping[str, Fence]:
        """Read-only map from fence id to fence."""
        return self._by_id

    @property
    def positions(self) -> Mapping[str, int]:
        """Read-only map from fence id to its index in `fences` (and in every result)."""
        return self._positions

    @property
    def ids(self) -> NDArray[np.object_]:
        """Fence ids (str) parallel to `fences`, read-only."""
        return self._ids

    @property
    def kinds(self) -> NDArray[np.object_]:
        """Fence kinds (`FenceKind`) parallel to `fences`, read-only."""
        return self._kinds

    def __len__(self) -> int:
        """Number of fences."""
        return len(self._fences)

    def __repr__(self) -> str:
        """Size only: the fences can be many."""
        return f"FenceIndex({len(self._fences)} fences)"

    def __reduce__(self) -> tuple[type[FenceIndex], tuple[tuple[Fence, ...]]]:
        """Pickle as the fences; unpickling rebuilds the tree."""
        return (FenceIndex, (self._fences,))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        """Refuse: the index is an immutable snapshot."""
        msg = "FenceIndex is immutable: build a new one with with_fences() or without()"
        raise AttributeError(msg)

    def __delattr__(self, name: str) -> NoReturn:
        """Refuse: the index is an immutable snapshot."""
        msg = "FenceIndex is immutable: build a new one with with_fences() or without()"
        raise AttributeError(msg)

    def lookup(self, lats: ArrayLike, lons: ArrayLike) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """All (point_idx, fence_idx) pairs with the point strictly inside the fence.

        `lats`, `lons`: 1-D arrays of degrees. Boundary points are not inside; NaN points match
        nothing. Pairs are sorted by point index, then fence index.
        """
        lats_a, lons_a = _points(lats, lons)
        subset, v_lats, v_lons = _finite(lats_a, lons_a)
        if not self._fences or not len(v_lats):
            return _empty_idx(), _empty_idx()
        point_idx, fence_idx = self._tree.query(shapely.points(v_lons, v_lats))
        if subset is not None:
            point_idx = subset[point_idx]
        mask = shapely.contains_xy(self._geoms[fence_idx], lons_a[point_idx], lats_a[point_idx])
        return self._sorted(point_idx[mask], fence_idx[mask])

    def lookup_margin(self, lats: ArrayLike, lons: ArrayLike, margin_m: float) -> MarginHits:
        """Every (point, fence) pair with the point inside the fence or within `margin_m` metres
        of its boundary (`near`, inclusive: a point on the boundary is near, not inside).

        Distances are metric (local tangent plane at the point), not degrees. Candidates come
        from per-point boxes; most pairs are settled by degree-distance bounds, and only those
        close to the margin get an exact metric distance.
        """
        if not (margin_m >= 0.0 and math.isfinite(margin_m)):
            msg = f"margin_m must be finite and >= 0, got {margin_m!r}"
            raise ValueError(msg)
        lats_a, lons_a = _points(lats, lons)
        subset, v_lats, v_lons = _finite(lats_a, lons_a)
        if not self._fences or not len(v_lats):
            return MarginHits(_empty_idx(), _empty_idx(), _empty_bool(), _empty_bool())
        dlat, dlon = metres_to_degrees_np(v_lats, margin_m)
        # A two-point line's envelope is the box: cheaper to build than box polygons.
        diagonals = np.empty((len(v_lats), 2, 2), dtype=np.float64)
        diagonals[:, 0, 0] = v_lons - dlon
        diagonals[:, 0, 1] = v_lats - dlat
        diagonals[:, 1, 0] = v_lons + dlon
        diagonals[:, 1, 1] = v_lats + dlat
        point_idx, fence_idx = self._tree.query(shapely.linestrings(diagonals))
        # Point geometries only for the points with candidates: often far fewer than all.
        cand, inverse = np.unique(point_idx, return_inverse=True)
        points = np.asarray(shapely.points(v_lons[cand], v_lats[cand]), dtype=object)[inverse]
        if subset is not None:
            point_idx = subset[point_idx]
        lat_c, lon_c = lats_a[point_idx], lons_a[point_idx]
        inside = shapely.contains_xy(self._geoms[fence_idx], lon_c, lat_c)
        upper_m = shapely.distance(self._boundaries[fence_idx], points) * METRES_PER_DEGREE
        lower_m = upper_m * cos_lat_np(lat_c)
        near = upper_m <= margin_m * (1.0 - _SLACK)
        unsure = np.flatnonzero(~near & (lower_m <= margin_m * (1.0 + _SLACK)))
        if len(unsure):
            exact_m = self._boundary_distance_m(fence_idx[unsure], lat_c[unsure], lon_c[unsure])
            near[unsure] = exact_m <= margin_m
        keep = inside | near
        point_idx, fence_idx = point_idx[keep], fence_idx[keep]
        inside, near = inside[keep], near[keep]
        order = _order(point_idx, fence_idx, len(self._fences))
        if order is not None:
            point_idx, fence_idx = point_idx[order], fence_idx[order]
            inside, near = inside[order], near[order]
        return MarginHits(point_idx, fence_idx, inside, near)

    def hits(self, lats: ArrayLike, lons: ArrayLike, margin_m: float) -> list[tuple[FenceHit, ...]]:
        """Per point, the fences it is inside of or within `margin_m` metres of, by fence id."""
        n_points = len(_points(lats, lons)[0])
        groups = self.hit_groups(lats, lons, margin_m)
        if not len(groups.found):
            return [()] * n_points
        return [groups.of(p) for p in range(n_points)]

    def hit_groups(self, lats: ArrayLike, lons: ArrayLike, margin_m: float) -> HitGroups:
        """`lookup_margin`, sorted by (point, fence id) and grouped per point (`HitGroups`)."""
        n_points = len(_points(lats, lons)[0])
        found = self.lookup_margin(lats, lons, margin_m)
        if len(found):
            order = np.lexsort((self._id_rank[found.fence_idx], found.point_idx))
            found = MarginHits(
                found.point_idx[order],
                found.fence_idx[order],
                found.inside[order],
                found.near[order],
            )
        return HitGroups(found, n_points, self._ids[found.fence_idx].tolist())

    def containing(self, lat: float, lon: float) -> list[str]:
        """Ids of the fences whose interior holds the point, sorted."""
        _, fence_idx = self.lookup(np.array([lat]), np.array([lon]))
        return sorted(self._ids[fence_idx].tolist())

    def _boundary_distance_m(
        self, fence_idx: NDArray[np.intp], lats: NDArray[np.float64], lons: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Exact metric distance of each point to its fence's boundary, in the point's plane."""
        boundaries = self._boundaries[fence_idx]
        owner = np.repeat(np.arange(len(boundaries)), shapely.get_num_coordinates(boundaries))

        def to_plane(coords: NDArray[np.float64]) -> NDArray[np.float64]:
            x, y = tangent_plane_coords(coords[:, 1], coords[:, 0], lats[owner], lons[owner])
            return np.column_stack([x, y])

        projected: NDArray[np.object_] = shapely.transform(boundaries, to_plane)
        distances: NDArray[np.float64] = shapely.distance(projected, _ORIGIN)
        return distances

    def _sorted(
        self, point_idx: NDArray[np.intp], fence_idx: NDArray[np.intp]
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        order = _order(point_idx, fence_idx, len(self._fences))
        if order is None:
            return point_idx, fence_idx
        return point_idx[order], fence_idx[order]


def _points(lats: ArrayLike, lons: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    lats_a = np.asarray(lats, dtype=np.float64)
    lons_a = np.asarray(lons, dtype=np.float64)
    if lats_a.ndim != 1 or lats_a.shape != lons_a.shape:
        msg = (
            "lats and lons must be 1-D arrays of the same length, "
            f"got shapes {lats_a.shape} and {lons_a.shape}"
        )
        raise ValueError(msg)
    return lats_a, lons_a


def _finite(
    lats: NDArray[np.float64], lons: NDArray[np.float64]
) -> tuple[NDArray[np.intp] | None, NDArray[np.float64], NDArray[np.float64]]:
    """The finite points: their indices (None when all are) and coordinates."""
    finite = np.isfinite(lats) & np.isfinite(lons)
    if finite.all():
        return None, lats, lons
    subset = np.flatnonzero(finite)
    return subset, lats[subset], lons[subset]


def _order(
    point_idx: NDArray[np.intp], fence_idx: NDArray[np.intp], n_fences: int
) -> NDArray[np.intp] | None:
    """The permutation sorting pairs by (point, fence), or None if already sorted."""
    key = point_idx * n_fences + fence_idx
    if len(key) < 2 or bool(np.all(key[1:] > key[:-1])):
        return None
    return np.argsort(key, kind="stable")


def _empty_idx() -> NDArray[np.intp]:
    return np.empty(0, dtype=np.intp)


def _empty_bool() -> NDArray[np.bool_]:
    return np.empty(0, dtype=np.bool_)
