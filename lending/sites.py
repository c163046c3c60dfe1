"""Risk-site discovery (二押点): places where the cars of several loans park for long.

Every stay of `min_stay_s` or more is filed in a grid of `radius_m` cells, one running
aggregate per (cell, loan): its visits, the sum of their positions, first and last seen. So
memory grows with the places and loans, not with the visits, and nothing is ever compared
with everything: a candidate is grown from one cell over its 3x3 neighbourhood (a point
within `radius_m` of a centre inside a cell lies in one of those cells), and each aggregate
joins at most one candidate. Listing costs O(aggregates).

A candidate needs `min_loans` distinct loans whose stays lie within `radius_m` of one
another (DESIGN §8: "within 150 m of one another"; see `_gather`). Places inside
or within reach of a `risk_site` fence are left out (the caller says which are marked), so
confirming a candidate by PUTting it as a `risk_site` fence takes it off the list.

Pure: the event time of the stays is the clock (`keep_days` counts back from the latest).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from geofence.geo import METRES_PER_DEGREE, haversine_m
from lending.model import iso_instant
from lending.params import SitesParams

DAY_MS = 86_400_000
Cell = tuple[int, int]
_EXACT_UP_TO = 48  # aggregates in one place checked pair by pair (cubic in this, at worst)


@dataclass(slots=True)
class Visits:
    """One loan's stays in one cell."""

    visits: int
    lat_sum: float
    lon_sum: float
    first_ms: int
    last_ms: int
    longest_ms: int = 0  # the longest of the stays

    @property
    def lat(self) -> float:
        """The mean latitude of the stays."""
        return self.lat_sum / self.visits

    @property
    def lon(self) -> float:
        """The mean longitude of the stays."""
        return self.lon_sum / self.visits


@dataclass(frozen=True, slots=True)
class Candidate:
    """A place where the cars of `loans` distinct loans parked long."""

    lat: float
    lon: float
    radius_m: float
    loans: int
    visits: int
    first_ms: int
    last_ms: int
    loan_ids: tuple[str, ...]
    typical_stay_ms: int = 0  # the median of the loans' longest stays: hours at a pledge lot

    def to_json(self) -> dict[str, object]:
        """The object of `GET /v1/risk-sites/candidates`."""
        return {
            "lat": round(self.lat, 6),
            "lon": round(self.lon, 6),
            "radius_m": round(self.radius_m, 1),
            "loans": self.loans,
            "visits": self.visits,
            "first_seen": iso_instant(self.first_ms),
            "last_seen": iso_instant(self.last_ms),
            "loan_ids": list(self.loan_ids),
            "typical_stay_min": round(self.typical_stay_ms / 60_000),
        }


def _median(values: list[int]) -> int:
    """The median of sorted values (the lower middle one of an even count)."""
    return values[(len(values) - 1) // 2] if values else 0


def candidate_weight(stay_ms: int, params: SitesParams) -> float:
    """The share of `risk_site_candidate` points a car earns by its longest stay at a
    discovered place: none at `min_stay_s`, all from `full_points_stay_s` on, linear between.
    A second pledge (appraisal, papers, keys) keeps a car for hours; a mall visit rarely."""
    low, high = params.min_stay_s * 1000, params.full_points_stay_s * 1000
    if high <= low:
        return 1.0 if stay_ms >= low else 0.0
    return min(1.0, max(0.0, (stay_ms - low) / (high - low)))


IsMarked = Callable[[float, float, float], bool]
"""Whether a place (lat, lon, radius_m) is inside or near a `risk_site` fence already."""


@dataclass(slots=True)
class SiteIndex:
    """The fleet's long stays, by grid cell and loan."""

    params: SitesParams
    cells: dict[Cell, dict[str, Visits]] = field(default_factory=dict)
    clock_ms: int = -1
    dirty: set[Cell] = field(default_factory=set)  # changed since the last `take_dirty`

    def cell_of(self, lat: float, lon: float) -> Cell:
        """The grid cell of a point: rows of `radius_m` latitude, columns of `radius_m` at
        the row's latitude."""
        row = math.floor(lat * METRES_PER_DEGREE / self.params.radius_m)
        return row, math.floor(lon / self._width_deg(row))

    def _width_deg(self, row: int) -> float:
        """The width of row `row`'s columns, degrees of longitude."""
        size = self.params.radius_m
        row_lat = (row + 0.5) * size / METRES_PER_DEGREE
        return size / (METRES_PER_DEGREE * max(0.01, math.cos(math.radians(row_lat))))

    def add_stay(self, loan_id: str, lat: float, lon: float, start_ms: int, end_ms: int) -> bool:
        """File a stay; False (and nothing filed) if it was shorter than `min_stay_s`."""
        if end_ms - start_ms < self.params.min_stay_s * 1000:
            return False
        cell = self.cell_of(lat, lon)
        by_loan = self.cells.setdefault(cell, {})
        v = by_loan.get(loan_id)
        if v is None:
            by_loan[loan_id] = Visits(1, lat, lon, start_ms, end_ms, end_ms - start_ms)
        else:
            v.longest_ms = max(v.longest_ms, end_ms - start_ms)
            v.visits += 1
            v.lat_sum += lat
            v.lon_sum += lon
            v.first_ms = min(v.first_ms, start_ms)
            v.last_ms = max(v.last_ms, end_ms)
        self.clock_ms = max(self.clock_ms, end_ms)
        self._prune(cell)
        self.dirty.add(cell)
        return True

    def _prune(self, cell: Cell) -> None:
        horizon = self.clock_ms - self.params.keep_days * DAY_MS
        by_loan = self.cells[cell]
        for loan_id in [k for k, v in by_loan.items() if v.last_ms < horizon]:
            del by_loan[loan_id]
        if not by_loan:
            del self.cells[cell]

    def candidates(self, is_marked: IsMarked) -> list[Candidate]:
        """The places of at least `min_loans` loans, not marked yet: most loans first."""
        p = self.params
        horizon = self.clock_ms - p.keep_days * DAY_MS
        taken: set[tuple[Cell, str]] = set()
        found: list[Candidate] = []
        order = sorted(self.cells, key=lambda c: (-len(self.cells[c]), c))
        for cell in order:
            seeds = [
                v
                for loan_id, v in self.cells[cell].items()
                if (cell, loan_id) not in taken and v.last_ms >= horizon
            ]
            if not seeds:
                continue
            c_lat = sum(v.lat for v in seeds) / len(seeds)
            c_lon = sum(v.lon for v in seeds) / len(seeds)
            members = self._gather(cell, c_lat, c_lon, horizon, taken)
            loans = sorted({loan_id for (_, loan_id), _ in members})
            if len(loans) < p.min_loans:
                continue
            taken.update(key for key, _ in members)
            lat = sum(v.lat for _, v in members) / len(members)
            lon = sum(v.lon for _, v in members) / len(members)
            radius = max(haversine_m(lat, lon, v.lat, v.lon) for _, v in members)
            radius = max(radius, 25.0)
            if is_marked(lat, lon, radius):
                continue
            found.append(
                Candidate(
                    lat,
                    lon,
                    radius,
                    len(loans),
                    sum(v.visits for _, v in members),
                    min(v.first_ms for _, v in members),
                    max(v.last_ms for _, v in members),
                    tuple(loans),
                    _median(sorted(v.longest_ms for _, v in members)),
                )
            )
        found.sort(key=lambda c: (-c.loans, -c.visits, -c.last_ms, c.lat, c.lon))
        return found

    def loans_near(self, lat: float, lon: float) -> dict[str, int]:
        """The loans of the place around a point, as `candidates` would gather it (their
        stays within `radius_m` of one another), each with its longest stay there (ms): a
        candidate when they are `min_loans` or more."""
        horizon = self.clock_ms - self.params.keep_days * DAY_MS
        longest: dict[str, int] = {}
        for (_, loan_id), v in self._gather(self.cell_of(lat, lon), lat, lon, horizon, set()):
            longest[loan_id] = max(longest.get(loan_id, 0), v.longest_ms)
        return dict(sorted(longest.items()))

    def _gather(
        self, cell: Cell, lat: float, lon: float, horizon: int, taken: set[tuple[Cell, str]]
    ) -> list[tuple[tuple[Cell, str], Visits]]:
        """The aggregates of the place seeded at (lat, lon) in `cell`: of those within
        `radius_m` of the seed, the most that lie within `radius_m` of one another (DESIGN:
        "within 150 m of one another"): the one farthest from their centre leaves until
        they do. Past `_EXACT_UP_TO` aggregates, those within `radius_m / 2` of the centre
        (within `radius_m` of one another too, without the pairwise check)."""
        radius_m = self.params.radius_m
        members = [
            (key, v)
            for key, v in self.around(cell)
            if key not in taken
            and v.last_ms >= horizon
            and haversine_m(lat, lon, v.lat, v.lon) <= radius_m
        ]
        while members:
            c_lat = sum(v.lat for _, v in members) / len(members)
            c_lon = sum(v.lon for _, v in members) / len(members)
            if len(members) > _EXACT_UP_TO:
                half = radius_m / 2
                return [m for m in members if haversine_m(c_lat, c_lon, m[1].lat, m[1].lon) <= half]
            if all(
                haversine_m(a.lat, a.lon, b.lat, b.lon) <= radius_m
                for i, (_, a) in enumerate(members)
                for _, b in members[i + 1 :]
            ):
                return members
            far = max(members, key=lambda m: (haversine_m(c_lat, c_lon, m[1].lat, m[1].lon), m[0]))
            members.remove(far)
        return members

    def around(self, cell: Cell) -> Iterable[tuple[tuple[Cell, str], Visits]]:
        """The aggregates of a cell and of every cell a point within `radius_m` of it may
        lie in. Rows' columns differ in width, so a neighbour row's columns are found from
        the cell's longitudes (their numbers drift apart with the longitude)."""
        row, col = cell
        width = self._width_deg(row)
        reach = max(self._width_deg(r) for r in (row - 1, row, row + 1))  # radius_m, in degrees
        west, east = col * width - reach, (col + 1) * width + reach
        for r in (row - 1, row, row + 1):
            w = self._width_deg(r)
            for c in range(math.floor(west / w), math.floor(east / w) + 1):
                by_loan = self.cells.get((r, c))
                if by_loan:
                    for loan_id, v in by_loan.items():
                        yield ((r, c), loan_id), v

    # -- snapshots, one row per cell
    @staticmethod
    def key_of(cell: Cell) -> str:
        """The store key of a cell."""
        return f"{cell[0]}:{cell[1]}"

    def take_dirty(self) -> list[tuple[str, dict[str, object] | None]]:
        """The cells changed since the last call, as (key, doc or None when emptied)."""
        rows: list[tuple[str, dict[str, object] | None]] = []
        for cell in sorted(self.dirty):
            by_loan = self.cells.get(cell)
            doc: dict[str, object] | None = None
            if by_loan:
                doc = {
                    "visits": [
                        [
                            loan_id,
                            v.visits,
                            v.lat_sum,
                            v.lon_sum,
                            v.first_ms,
                            v.last_ms,
                            v.longest_ms,
                        ]
                        for loan_id, v in sorted(by_loan.items())
                    ]
                }
            rows.append((self.key_of(cell), doc))
        self.dirty.clear()
        return rows

    def restore(self, rows: Iterable[tuple[str, dict[str, object]]]) -> None:
        """Load the cells of `take_dirty` rows."""
        self.cells.clear()
        self.dirty.clear()
        for key, doc in rows:
            row, col = (int(x) for x in key.split(":"))
            items = doc.get("visits")
            if not isinstance(items, list):
                msg = f"site cell {key}: expected 'visits' to be a list"
                raise ValueError(msg)  # noqa: TRY004  # a malformed document
            by_loan: dict[str, Visits] = {}
            for item in items:
                loan_id, visits, lat_sum, lon_sum, first_ms, last_ms, *rest = item
                by_loan[str(loan_id)] = Visits(
                    int(visits),
                    float(lat_sum),
                    float(lon_sum),
                    int(first_ms),
                    int(last_ms),
                    int(rest[0]) if rest else 0,
                )
                self.clock_ms = max(self.clock_ms, int(last_ms))
            self.cells[row, col] = by_loan

    def stays(self) -> int:
        """How many (cell, loan) aggregates are held (the index's size)."""
        return sum(len(v) for v in self.cells.values())
