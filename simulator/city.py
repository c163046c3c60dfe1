"""A synthetic Shanghai-like city: a street grid, home zones and risk sites, and routes on it.

Layout (all in street-grid metres, see `frame`): the city is a grid of square cells of
`CELL_M`; each car's home zone (a 1.3-2.8 km circle or a convex polygon) sits in its own
cell, so zones never overlap and leave at least 600 m between them. Risk sites (pawnshops,
lender lots, used-car markets, auctions, impound lots) sit at cell corners, far from every
zone, each inside a city block at least 120 m from any street: a car on the road never
touches a risk site unless it turns into the site's driveway.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

import shapely
from shapely import LineString, MultiPoint, Polygon
from shapely import Point as ShapelyPoint
from shapely.geometry.polygon import orient

from geofence.fence import CIRCLE_SEGMENTS, FenceKind
from geofence.geo import geodesic_circle
from simulator.frame import LocalFrame, Point, distance_m

CELL_M = 7_000.0
STREET_SPACING_M = 600.0
STREET_JITTER_M = 60.0
BORDER_M = 1_500.0  # streets reach this far beyond the outermost cell corners
ZONE_MARGIN_M = 200.0  # a car that keeps to its zone drives this far inside the boundary
SITE_STREET_CLEARANCE_M = 120.0  # a risk site's edge keeps this far from every street
CITY_CENTRE = (31.23, 121.47)

DISTRICTS = (
    "xuhui",
    "changning",
    "jingan",
    "putuo",
    "hongkou",
    "yangpu",
    "minhang",
    "baoshan",
    "jiading",
    "pudong",
    "songjiang",
    "qingpu",
    "fengxian",
    "jinshan",
    "huangpu",
    "chongming",
)
SITE_NAMES: dict[str, tuple[str, ...]] = {
    "pawnshop": ("Huaxin Pawnshop", "Jinlong Pawn", "Baoli Pawn House", "Dingtai Pawnshop"),
    "lender": ("Xinda Auto Finance lot", "Hengfeng Car Loans yard", "Anjie Credit lot"),
    "used_car_market": ("Qibao Used Car Market", "Wanchang Used Car Market", "Chezhu Market"),
    "auction": ("Dongfang Auto Auction", "Shenhua Vehicle Auction"),
    "impound": ("Traffic Police Impound Lot", "Municipal Vehicle Pound"),
    "scrapyard": ("Hongda Vehicle Recycling Yard", "Lvneng Scrapyard"),
}
REQUIRED_SITE_CATEGORIES = ("pawnshop", "impound", "lender", "used_car_market", "auction")
EXTRA_SITE_CATEGORIES = ("pawnshop", "lender", "used_car_market", "scrapyard", "auction")
SCRAPYARD_DWELL_S = 1200  # a fence's own dwell_s: scrapyards have no category default

Node = tuple[int, int]
"""A street intersection: (index into `City.us`, index into `City.vs`)."""


@dataclass(frozen=True, slots=True)
class Area:
    """A fence in the grid frame: a circle (`radius_m`) or a convex polygon (`ring`)."""

    fence_id: str
    name: str
    kind: FenceKind
    category: str | None
    dwell_s: int | None
    center: Point
    radius_m: float | None
    ring: tuple[Point, ...]  # counter-clockwise, not closed; empty for a circle
    shape: Polygon = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a car can stop, and how it is reached from the street grid.

    Each access is (intersection, polyline from that intersection's point to `point`).
    """

    name: str
    point: Point
    accesses: tuple[tuple[Node, tuple[Point, ...]], ...]


@dataclass(frozen=True, slots=True)
class Path:
    """A drivable polyline; `junction[i]` tells whether vertex i is an intersection passed."""

    points: tuple[Point, ...]
    junction: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class City:
    """The street grid (`us`, `vs`: street positions, ascending), zones and risk sites."""

    frame: LocalFrame
    us: tuple[float, ...]
    vs: tuple[float, ...]
    zones: tuple[Area, ...]  # zones[slot]: the home zone of the car in that slot
    sites: tuple[Area, ...]

    @property
    def areas(self) -> tuple[Area, ...]:
        """Every fence: zones first, then risk sites."""
        return self.zones + self.sites

    def node_point(self, node: Node) -> Point:
        """The grid point of an intersection."""
        return self.us[node[0]], self.vs[node[1]]


def _streets(rng: random.Random, lo: float, hi: float) -> tuple[float, ...]:
    count = int((hi - lo) / STREET_SPACING_M) + 1
    return tuple(
        lo + k * STREET_SPACING_M + rng.uniform(-STREET_JITTER_M, STREET_JITTER_M)
        for k in range(count)
    )


def _engine_circle(frame: LocalFrame, center: Point, radius_m: float) -> Polygon:
    """The circle the engine builds for a Point fence (a geodesic one around the exported,
    rounded centre), in grid metres: far from the frame's origin a circle drawn in the
    frame would be off by metres, more than the margins the scenarios keep."""
    lat, lon = frame.to_latlon(*center)
    ring = geodesic_circle(round(lat, 7), round(lon, 7), radius_m, CIRCLE_SEGMENTS)
    return Polygon([frame.to_grid(y, x) for x, y in ring.exterior.coords[:-1]])


def _zone(rng: random.Random, slot: int, center: Point, frame: LocalFrame | None = None) -> Area:
    district = DISTRICTS[slot % len(DISTRICTS)]
    suffix = "" if slot < len(DISTRICTS) else f"-{slot // len(DISTRICTS) + 1}"
    fence_id = f"zone-{district}{suffix}"
    name = f"{district.capitalize()}{suffix} permitted area"
    cu, cv = center
    if rng.random() < 0.5:
        radius = round(rng.uniform(1_300.0, 2_800.0), 1)
        shape = (
            ShapelyPoint(cu, cv).buffer(radius, quad_segs=16)
            if frame is None
            else _engine_circle(frame, center, radius)
        )
        return Area(fence_id, name, FenceKind.ZONE, "home", None, center, radius, (), shape)
    base = rng.uniform(1_500.0, 2_500.0)
    n = rng.randint(7, 10)
    corners = []
    for k in range(n):
        angle = 2 * math.pi * (k + rng.uniform(-0.25, 0.25)) / n
        r = base * rng.uniform(0.88, 1.1)
        corners.append((round(cu + r * math.cos(angle), 1), round(cv + r * math.sin(angle), 1)))
    hull = MultiPoint(corners).convex_hull
    assert isinstance(hull, Polygon)
    hull = orient(hull, sign=1.0)  # counter-clockwise exterior
    ring = tuple((float(x), float(y)) for x, y in hull.exterior.coords[:-1])
    return Area(fence_id, name, FenceKind.ZONE, "home", None, center, None, ring, Polygon(ring))


def _site(
    rng: random.Random, city_us: tuple[float, ...], city_vs: tuple[float, ...], corner: Point
) -> tuple[Point, float, float]:
    """The block holding `corner`: its centre and the half sizes a site may use."""
    i = bisect_right(city_us, corner[0]) - 1
    j = bisect_right(city_vs, corner[1]) - 1
    cu = (city_us[i] + city_us[i + 1]) / 2 + rng.uniform(-20.0, 20.0)
    cv = (city_vs[j] + city_vs[j + 1]) / 2 + rng.uniform(-20.0, 20.0)
    hu = min(cu - city_us[i], city_us[i + 1] - cu) - SITE_STREET_CLEARANCE_M
    hv = min(cv - city_vs[j], city_vs[j + 1] - cv) - SITE_STREET_CLEARANCE_M
    return (cu, cv), hu, hv


def build_city(rng: random.Random, slots: int, *, engine_circles: bool = False) -> City:
    """A city with `slots` home zones (one per car) and a risk site at every cell corner.

    `engine_circles`: circles take the engine's own shape (see `_engine_circle`), for a city
    of more than a few cells; the goldens keep the frame's circles they were made with.
    """
    cols = max(2, math.ceil(math.sqrt(slots)))
    rows = max(2, math.ceil(slots / cols))
    frame = LocalFrame(CITY_CENTRE[0], CITY_CENTRE[1], round(rng.uniform(8.0, 24.0), 1))
    half_u, half_v = cols * CELL_M / 2, rows * CELL_M / 2
    us = _streets(rng, -half_u - BORDER_M, half_u + BORDER_M)
    vs = _streets(rng, -half_v - BORDER_M, half_v + BORDER_M)
    zones = []
    for slot in range(slots):
        r, c = divmod(slot, cols)
        center = (
            (c - (cols - 1) / 2) * CELL_M + rng.uniform(-400.0, 400.0),
            (r - (rows - 1) / 2) * CELL_M + rng.uniform(-400.0, 400.0),
        )
        zones.append(_zone(rng, slot, center, frame if engine_circles else None))
    corners = [
        ((c - cols / 2) * CELL_M, (r - rows / 2) * CELL_M)
        for r in range(rows + 1)
        for c in range(cols + 1)
    ]
    categories = list(REQUIRED_SITE_CATEGORIES)
    rng.shuffle(categories)
    categories += [rng.choice(EXTRA_SITE_CATEGORIES) for _ in range(len(corners) - len(categories))]
    order = list(range(len(corners)))
    rng.shuffle(order)
    sites = []
    counts: dict[str, int] = {}
    for k, corner_index in enumerate(sorted(order[: len(categories)])):
        category = categories[k]
        counts[category] = counts.get(category, 0) + 1
        n = counts[category]
        names = SITE_NAMES[category]
        name = names[(n - 1) % len(names)] + ("" if n <= len(names) else f" {n}")
        fence_id = f"{category.replace('_', '-')}-{n:02d}"
        dwell_s = SCRAPYARD_DWELL_S if category == "scrapyard" else None
        (cu, cv), hu, hv = _site(rng, us, vs, corners[corner_index])
        if rng.random() < 0.5:
            radius = round(rng.uniform(50.0, min(150.0, hu, hv)), 1)
            shape = (
                _engine_circle(frame, (cu, cv), radius)
                if engine_circles
                else ShapelyPoint(cu, cv).buffer(radius, quad_segs=16)
            )
            site = Area(
                fence_id, name, FenceKind.RISK_SITE, category, dwell_s, (cu, cv), radius, (), shape
            )
        else:
            wu = rng.uniform(40.0, min(110.0, hu - 12.0))
            wv = rng.uniform(40.0, min(110.0, hv - 12.0))
            ring = tuple(
                (round(cu + su * wu + rng.uniform(-10, 10), 1), round(cv + sv * wv, 1))
                for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1))
            )
            site = Area(
                fence_id,
                name,
                FenceKind.RISK_SITE,
                category,
                dwell_s,
                (cu, cv),
                None,
                ring,
                Polygon(ring),
            )
        sites.append(site)
    return City(frame, us, vs, tuple(zones), tuple(sites))


def interior(area: Area, margin_m: float = ZONE_MARGIN_M) -> Polygon:
    """The part of an area at least `margin_m` inside its boundary (convex for a zone)."""
    shrunk = area.shape.buffer(-margin_m)
    assert isinstance(shrunk, Polygon)
    return shrunk


def _edge_place(city: City, name: str, a: Node, b: Node, fraction: float) -> Place:
    pa, pb = city.node_point(a), city.node_point(b)
    point = (pa[0] + (pb[0] - pa[0]) * fraction, pa[1] + (pb[1] - pa[1]) * fraction)
    return Place(name, point, ((a, (pa, point)), (b, (pb, point))))


def street_spot(
    city: City,
    rng: random.Random,
    name: str,
    accept: Callable[[Point], bool],
    *,
    corners_too: bool = True,
    box: tuple[float, float, float, float] | None = None,
) -> Place:
    """A kerbside spot mid-block that passes `accept`, and so do both intersections of its
    block if `corners_too`; only blocks with a corner in `box` (u0, v0, u1, v1) if given.

    Blocks are tried in random order until one fits; RuntimeError if none does.
    """
    nu, nv = len(city.us), len(city.vs)
    i0, j0, i1, j1 = 0, 0, nu, nv
    if box is not None:
        i0, i1 = bisect_right(city.us, box[0]), bisect_right(city.us, box[2])
        j0, j1 = bisect_right(city.vs, box[1]), bisect_right(city.vs, box[3])
    edges: list[tuple[Node, Node]] = [
        ((i, j), (i + 1, j)) for i in range(i0, min(i1, nu - 1)) for j in range(j0, j1)
    ]
    edges += [((i, j), (i, j + 1)) for i in range(i0, i1) for j in range(j0, min(j1, nv - 1))]
    rng.shuffle(edges)
    for a, b in edges:
        if corners_too and not (accept(city.node_point(a)) and accept(city.node_point(b))):
            continue
        place = _edge_place(city, name, a, b, rng.uniform(0.3, 0.7))
        if accept(place.point):
            return place
    msg = f"no street spot for {name!r} satisfies the constraints: widen them"
    raise RuntimeError(msg)


def site_place(city: City, site: Area) -> Place:
    """The middle of a risk site, reached by a driveway from the street south of it."""
    cu, cv = site.center
    i = bisect_right(city.us, cu) - 1
    j = bisect_right(city.vs, cv) - 1
    gate = (cu, city.vs[j])
    return Place(
        site.name,
        site.center,
        (
            ((i, j), (city.node_point((i, j)), gate, site.center)),
            ((i + 1, j), (city.node_point((i + 1, j)), gate, site.center)),
        ),
    )


def clear_of(city: City, point: Point, clearance_m: float) -> bool:
    """True when `point` is at least `clearance_m` from every fence (inside none)."""
    p = ShapelyPoint(*point)
    return all(area.shape.distance(p) >= clearance_m for area in city.areas)


def _length(points: tuple[Point, ...]) -> float:
    return sum(distance_m(a, b) for a, b in itertools.pairwise(points))


_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # direction k: -u, +u, -v, +v
_OPPOSITE = (1, 0, 3, 2)
TURN_PENALTY_M = 250.0  # drivers prefer long straights to zigzags
_State = tuple[Node, int]  # an intersection and the direction the car arrived in


def _direction(a: Point, b: Point) -> int:
    """The street direction (index into `_STEPS`) of travel from `a` to `b`."""
    du, dv = b[0] - a[0], b[1] - a[1]
    if abs(du) >= abs(dv):
        return 1 if du > 0 else 0
    return 3 if dv > 0 else 2


def route(
    city: City, start: Place, end: Place, rng: random.Random, region: Polygon | None = None
) -> Path:
    """A street route from `start` to `end`, kept inside `region` if given.

    Cheapest by street length (randomly perturbed per street, so two trips between the same
    places need not take the same streets) plus a penalty per turn; no U-turns.
    """
    nu, nv = len(city.us), len(city.vs)
    allowed: Callable[[Node], bool]
    if region is None:

        def allowed(node: Node) -> bool:
            return 0 <= node[0] < nu and 0 <= node[1] < nv
    else:
        shapely.prepare(region)

        def allowed(node: Node) -> bool:
            return (
                0 <= node[0] < nu
                and 0 <= node[1] < nv
                and bool(shapely.contains_xy(region, *city.node_point(node)))
            )

    factors: dict[tuple[Node, Node], float] = {}

    def weight(a: Node, b: Node) -> float:
        key = (a, b) if a < b else (b, a)
        if key not in factors:
            factors[key] = rng.uniform(1.0, 1.15)
        return distance_m(city.node_point(a), city.node_point(b)) * factors[key]

    ends = [
        (e_node, e_access, _direction(e_access[0], e_access[1]), _length(e_access))
        for e_node, e_access in end.accesses
        if allowed(e_node)
    ]
    targets = [(city.node_point(e[0]), e[3]) for e in ends]

    def lower_bound(node: Node) -> float:
        """Street distance is at least the grid (Manhattan) distance: A* stays exact."""
        u, v = city.node_point(node)
        return min(abs(u - q[0]) + abs(v - q[1]) + tail for q, tail in targets)

    best: tuple[float, list[Node], tuple[Point, ...], tuple[Point, ...]] | None = None
    for s_node, s_access in start.accesses:
        if not allowed(s_node) or not ends:
            continue
        first: _State = (s_node, _direction(s_access[1], s_access[0]))  # arriving at s_node
        dist: dict[_State, float] = {first: _length(s_access)}
        prev: dict[_State, _State] = {}
        heap: list[tuple[float, float, _State]] = [
            (dist[first] + lower_bound(s_node), dist[first], first)
        ]
        while heap:
            f, d, state = heapq.heappop(heap)
            if best is not None and f >= best[0]:
                break
            if d > dist[state]:
                continue
            node, heading = state
            for e_node, e_access, leave, tail in ends:
                if e_node != node or heading == _OPPOSITE[leave]:
                    continue
                cost = d + (TURN_PENALTY_M if heading != leave else 0.0) + tail
                if best is None or cost < best[0]:
                    nodes = [e_node]
                    back = state
                    while back != first:
                        back = prev[back]
                        nodes.append(back[0])
                    best = (cost, nodes[::-1], s_access, e_access)
            i, j = node
            for k, (di, dj) in enumerate(_STEPS):
                nxt = (i + di, j + dj)
                if k == _OPPOSITE[heading] or not allowed(nxt):
                    continue
                nd = d + weight(node, nxt) + (TURN_PENALTY_M if k != heading else 0.0)
                if nd < dist.get((nxt, k), math.inf):
                    dist[nxt, k] = nd
                    prev[nxt, k] = state
                    heapq.heappush(heap, (nd + lower_bound(nxt), nd, (nxt, k)))
    if best is None:
        msg = f"no route from {start.name!r} to {end.name!r} within the region"
        raise RuntimeError(msg)
    _, nodes, s_access, e_access = best
    points: list[Point] = list(reversed(s_access))
    junction = [False] * len(points)
    for node in nodes[1:]:
        points.append(city.node_point(node))
        junction.append(True)
    points.extend(e_access[1:])
    junction.extend([False] * (len(e_access) - 1))
    cleaned_p: list[Point] = []
    cleaned_j: list[bool] = []
    for p, jn in zip(points, junction, strict=True):
        if cleaned_p and distance_m(cleaned_p[-1], p) < 0.5:
            continue
        cleaned_p.append(p)
        cleaned_j.append(jn)
    cleaned_j[-1] = False
    return Path(tuple(cleaned_p), tuple(cleaned_j))


def path_line(points: list[Point]) -> LineString:
    """A shapely line through `points` (a single point is doubled)."""
    return LineString(points if len(points) > 1 else [points[0], points[0]])


def fence_features(city: City) -> list[dict[str, object]]:
    """The city's fences as GeoJSON Features with ids (zones first)."""
    features: list[dict[str, object]] = []
    for area in city.areas:
        props: dict[str, object] = {"name": area.name, "kind": area.kind.value}
        if area.category is not None:
            props["category"] = area.category
        if area.dwell_s is not None:
            props["dwell_s"] = area.dwell_s
        geometry: dict[str, object]
        if area.radius_m is not None:
            lat, lon = city.frame.to_latlon(*area.center)
            props["radius_m"] = area.radius_m
            geometry = {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]}
        else:
            ring = []
            for u, v in (*area.ring, area.ring[0]):
                lat, lon = city.frame.to_latlon(u, v)
                ring.append([round(lon, 7), round(lat, 7)])
            geometry = {"type": "Polygon", "coordinates": [ring]}
        features.append(
            {"type": "Feature", "id": area.fence_id, "geometry": geometry, "properties": props}
        )
    return features
