"""Where a lending fleet's cars live and park: districts, in-district pawnshops, unmarked lots,
shopping malls, and a registry that keeps the cars' long parking spots apart.

The simulated city's home zones (`simulator.city`) are a car's neighbourhood; a lender's
permitted area spans a whole district, so `district` widens each one to a 5.2 km octagon (its
corners cut well clear of the risk sites at the cell corners). `Layout.spot` draws kerbside
spots inside a district's interior; `Spots` keeps three loans from ever parking within
`SPOT_APART_M` of one another outside the planted lots and the malls. The lots are the places
a risk-site discovery (DESIGN §8) should find; the malls (`mall_blocks`, a few per district,
where many commuters shop for half an hour) are the false positives a real fleet has too.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shapely import Point as ShapelyPoint
from shapely import Polygon

from geofence.fence import FenceKind
from simulator.city import Area, City, Place, clear_of, interior, site_place, street_spot
from simulator.frame import Point

DISTRICT_HALF_M = 2_600.0  # a permitted area spans the district: a 5.2 km octagon
DISTRICT_CUT_M = 1_000.0  # its corners cut off, well clear of the risk sites at cell corners
SPOT_APART_M = 200.0  # long parking of three loans is never this close outside the lots
RESERVED_M = 450.0  # nobody else parks this near a lot or an in-district pawnshop
STALL_SPREAD_M = 25.0  # cars at one lot park this far from its centre at most
BLOCK_DEPTH_M = 700.0  # a lot or pawnshop block lies this far inside the interior
MALL_SPREAD_M = 50.0  # shoppers park this far from a mall's centre at most
MALL_CLEAR_M = 700.0  # a mall is this far from a lot or an in-district pawnshop at least
MALL_SITE_CLEAR_M = 400.0  # and this far from every risk site's fence
MALL_APART_M = (1_200.0, 800.0)  # malls of a district keep this far apart if they can


@dataclass(frozen=True, slots=True)
class Mall:
    """A shopping mall or supermarket: a big car park, no fence, that many commuters use."""

    mall_id: str
    name: str
    zone_index: int
    center: Point
    entrance: Place


class Spots:
    """Where cars park for long, on a hash grid: a new spot may join another loan's spot, but
    never make three loans park within `SPOT_APART_M` of one another, and none comes within
    `RESERVED_M` of a reserved place (a lot, an in-district pawnshop)."""

    def __init__(self) -> None:
        self.grid: dict[tuple[int, int], list[tuple[Point, str]]] = {}
        self.reserved: list[Point] = []

    def _near(self, p: Point) -> list[tuple[Point, str]]:
        ci, cj = math.floor(p[0] / SPOT_APART_M), math.floor(p[1] / SPOT_APART_M)
        return [
            (q, loan)
            for i in (ci - 1, ci, ci + 1)
            for j in (cj - 1, cj, cj + 1)
            for q, loan in self.grid.get((i, j), ())
            if math.dist(p, q) <= SPOT_APART_M
        ]

    def ok(self, p: Point, loan_id: str) -> bool:
        """True if `loan_id` may park for long at `p`."""
        if any(math.dist(p, r) < RESERVED_M for r in self.reserved):
            return False
        near = [(q, loan) for q, loan in self._near(p) if loan != loan_id]
        if len({loan for _, loan in near}) >= 2:
            return False
        # joining a spot that already has a third loan nearby would chain a cluster
        return not any({o for _, o in self._near(q)} - {loan, loan_id} for q, loan in near)

    def add(self, p: Point, loan_id: str) -> None:
        """Record a spot where `loan_id` parks for long."""
        key = (math.floor(p[0] / SPOT_APART_M), math.floor(p[1] / SPOT_APART_M))
        self.grid.setdefault(key, []).append((p, loan_id))


def _is_corner(city: City, p: Point) -> bool:
    """True at a street intersection (`street_spot` checks a block's corners too)."""
    i, j = bisect_right(city.us, p[0]) - 1, bisect_right(city.vs, p[1]) - 1
    return 0 <= i < len(city.us) and 0 <= j < len(city.vs) and p == (city.us[i], city.vs[j])


def _both(a: Callable[[Point], bool], b: Callable[[Point], bool]) -> Callable[[Point], bool]:
    return lambda p: a(p) and b(p)


def away_from(p: Point, metres: float) -> Callable[[Point], bool]:
    """A spot check: at least `metres` from `p`."""
    return lambda q: math.dist(p, q) >= metres


class Layout:
    """The planner's workspace: the city, each district's interior, the spot registry."""

    def __init__(self, city: City, rng: random.Random) -> None:
        self.city = city
        self.rng = rng
        self.inner = tuple(interior(z) for z in city.zones)
        self.spots = Spots()

    def spot(
        self,
        name: str,
        loan_id: str,
        zone_index: int,
        accept: Callable[[Point], bool] = lambda _: True,
        *,
        register: bool = True,
    ) -> Place:
        """A kerbside spot inside the district's interior that passes `accept` and, if any
        does, the registry; RuntimeError if not even `accept` can be met."""
        inner = self.inner[zone_index]
        city = self.city

        def inside(p: Point) -> bool:
            return bool(inner.contains(ShapelyPoint(*p)))

        def spaced(p: Point) -> bool:
            return _is_corner(city, p) or self.spots.ok(p, loan_id)

        for check in (_both(inside, spaced), inside):
            try:
                place = street_spot(city, self.rng, name, _both(check, accept), box=inner.bounds)
            except RuntimeError:
                continue
            if register:
                self.spots.add(place.point, loan_id)
            return place
        msg = f"no spot for {name!r} of {loan_id} in zone {zone_index}: give more zones"
        raise RuntimeError(msg)

    def outside_spot(self, loan_id: str, zone_index: int) -> Place:
        """A kerbside spot 1.2-5 km outside the district, 300 m clear of every fence."""
        shape = self.city.zones[zone_index].shape

        def ok(p: Point) -> bool:
            d = shape.distance(ShapelyPoint(*p))
            return 1_200.0 <= d <= 5_000.0 and clear_of(self.city, p, 300.0)

        u0, v0, u1, v1 = shape.bounds
        box = (u0 - 5_000.0, v0 - 5_000.0, u1 + 5_000.0, v1 + 5_000.0)
        place = street_spot(self.city, self.rng, "another district", ok, corners_too=False, box=box)
        self.spots.add(place.point, loan_id)
        return place

    def block(self, zone_index: int, what: str, away: Sequence[Point]) -> Point:
        """The centre of a city block deep inside the district, 1.5 km from `away` if it can
        be; reserved (no car of the fleet parks near it by chance)."""
        deep = self.inner[zone_index].buffer(-BLOCK_DEPTH_M)
        us, vs = self.city.us, self.city.vs
        blocks = [
            ((us[i] + us[i + 1]) / 2, (vs[j] + vs[j + 1]) / 2)
            for i in range(len(us) - 1)
            for j in range(len(vs) - 1)
        ]
        inside = [b for b in blocks if deep.contains(ShapelyPoint(*b))]
        self.rng.shuffle(inside)
        for apart_m in (1_500.0, 900.0, 0.0):
            for b in inside:
                if all(math.dist(b, a) >= apart_m for a in away):
                    self.spots.reserved.append(b)
                    return b
        msg = f"district {zone_index} has no block left for {what}"
        raise RuntimeError(msg)


def district(zone: Area) -> Area:
    """The permitted area of a district: a 5.2 km octagon around the home zone's centre."""
    cu, cv = zone.center
    h, c = DISTRICT_HALF_M, DISTRICT_CUT_M
    quarter = ((h, c - h), (h, h - c), (h - c, h), (c - h, h))
    corners = quarter + tuple((-u, -v) for u, v in quarter)  # counter-clockwise
    ring = tuple((round(cu + u, 1), round(cv + v, 1)) for u, v in corners)
    return Area(
        zone.fence_id,
        zone.name,
        FenceKind.ZONE,
        "home",
        None,
        zone.center,
        None,
        ring,
        Polygon(ring),
    )


def pawnshop(fence_id: str, name: str, center: Point, radius_m: float) -> Area:
    """A marked pawnshop: a circle in a block, its edge well clear of every street."""
    shape = ShapelyPoint(*center).buffer(radius_m, quad_segs=16)
    return Area(fence_id, name, FenceKind.RISK_SITE, "pawnshop", None, center, radius_m, (), shape)


def lot_entrance(city: City, lot_id: str, center: Point) -> Place:
    """An unmarked lot's centre, reached by a driveway like a risk site's; it is no fence."""
    shape = ShapelyPoint(*center).buffer(STALL_SPREAD_M)
    area = Area(lot_id, lot_id, FenceKind.RISK_SITE, None, None, center, None, (), shape)
    return site_place(city, area)


def stall(rng: random.Random, lot: Place, spread_m: float = STALL_SPREAD_M) -> Place:
    """A parking stall at a lot: within `spread_m` of its centre, by the same driveway."""
    r = spread_m * math.sqrt(rng.random())
    a = rng.uniform(0.0, 2 * math.pi)
    point = (lot.point[0] + r * math.cos(a), lot.point[1] + r * math.sin(a))
    accesses = tuple((node, (*path, point)) for node, path in lot.accesses)
    return Place(f"{lot.name} stall", point, accesses)


def jitter(rng: random.Random, p: Point, lo_m: float, hi_m: float) -> Point:
    """A point `lo_m`..`hi_m` from `p` in a random direction (an address is not a kerb)."""
    r, a = rng.uniform(lo_m, hi_m), rng.uniform(0.0, 2 * math.pi)
    return p[0] + r * math.cos(a), p[1] + r * math.sin(a)


def mall_blocks(
    city: City, inner: Polygon, rng: random.Random, count: int, away: Sequence[Point]
) -> list[Point]:
    """Up to `count` block centres for malls in a district: the whole block inside the
    interior (so every drive there keeps to it), `MALL_CLEAR_M` from `away`, clear of the
    risk sites, and apart from one another if the district has room."""
    us, vs = city.us, city.vs

    def fits(i: int, j: int) -> bool:
        corners = [(us[a], vs[b]) for a in (i, i + 1) for b in (j, j + 1)]
        center = ((us[i] + us[i + 1]) / 2, (vs[j] + vs[j + 1]) / 2)
        return (
            all(inner.contains(ShapelyPoint(*c)) for c in corners)
            and all(math.dist(center, a) >= MALL_CLEAR_M for a in away)
            and all(
                s.shape.distance(ShapelyPoint(*center)) >= MALL_SITE_CLEAR_M for s in city.sites
            )
        )

    blocks = [
        ((us[i] + us[i + 1]) / 2, (vs[j] + vs[j + 1]) / 2)
        for i in range(len(us) - 1)
        for j in range(len(vs) - 1)
        if fits(i, j)
    ]
    rng.shuffle(blocks)
    chosen: list[Point] = []
    for apart_m in MALL_APART_M:
        for b in blocks:
            if len(chosen) < count and all(math.dist(b, c) >= apart_m for c in chosen):
                chosen.append(b)
    return chosen
