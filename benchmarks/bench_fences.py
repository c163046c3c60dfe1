"""Fence lookup, side by side: naive loop, raw shapely STRtree, FenceIndex, PostGIS.

    python -m benchmarks.bench_fences [--sizes 1000,10000,100000] [--points N] [--seed S]
                                      [--no-postgis]

Every method's answer is checked against the raw STRtree answer (itself checked against the
naive brute-force loop on a sample) before its rate is reported. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from benchmarks.common import (
    RESULTS_DIR,
    fmt_rate,
    fmt_ratio,
    log,
    machine_info,
    random_fences,
    rate,
    table,
    write_json,
)
from geofence.geo import METRES_PER_DEGREE, cos_lat_np, tangent_plane_coords
from geofence.index import FenceIndex, MarginHits

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
MARGIN_M = 25.0
"""The engine's hysteresis margin (DESIGN §4), used for `lookup_margin`."""

Pairs = NDArray[np.int64]
"""(point, fence) pairs encoded as sorted keys `point * n_fences + fence`."""


@dataclass(slots=True)
class MethodResult:
    """One method at one fence count: what it was timed on and whether its answer was right."""

    method: str
    points: int
    seconds: list[float] = field(default_factory=list)
    pairs: int = 0
    check: str = "not run"
    note: str = ""

    @property
    def ok(self) -> bool:
        """True when the answer was checked equal to the reference."""
        return self.check == "ok"

    @property
    def median_s(self) -> float:
        """Median of the timed runs."""
        return statistics.median(self.seconds) if self.seconds else math.nan

    @property
    def points_per_s(self) -> float | None:
        """Points per second (median run), or None if unchecked or wrong: never report those."""
        if not self.ok or not self.seconds:
            return None
        return rate(self.points, self.median_s)

    def as_json(self) -> dict[str, object]:
        """The result as a JSON object."""
        pps = self.points_per_s
        return {
            "method": self.method,
            "points": self.points,
            "seconds": [round(s, 6) for s in self.seconds],
            "median_s": round(self.median_s, 6) if self.seconds else None,
            "points_per_s": round(pps, 1) if pps is not None else None,
            "pairs": self.pairs,
            "check": self.check,
            "note": self.note,
        }


def keys(point_idx: NDArray[np.integer], fence_idx: NDArray[np.integer], n_fences: int) -> Pairs:
    """Sorted pair keys, so that two answers compare with one `array_equal`."""
    k = point_idx.astype(np.int64) * n_fences + fence_idx.astype(np.int64)
    k.sort()
    return k


def compare(got: Pairs, want: Pairs, what: str) -> str:
    """'ok', or what differs between two pair sets (counts and a few example keys)."""
    if got.shape == want.shape and np.array_equal(got, want):
        return "ok"
    missing = np.setdiff1d(want, got)
    extra = np.setdiff1d(got, want)
    return (
        f"WRONG {what}: {len(got)} pairs, reference {len(want)}; "
        f"missing {len(missing)} (e.g. {missing[:3].tolist()}), "
        f"extra {len(extra)} (e.g. {extra[:3].tolist()})"
    )


def timed(func: Callable[[], object]) -> tuple[float, object]:
    """Seconds taken by `func()` and its result."""
    start = time.perf_counter()
    out = func()
    return time.perf_counter() - start, out


def naive_lookup(geoms: Sequence[BaseGeometry], points: Sequence[BaseGeometry]) -> Pairs:
    """Brute force: for each point, a Python loop over every (prepared) fence's `contains`."""
    found: list[tuple[int, int]] = []
    for i, point in enumerate(points):
        for j, geom in enumerate(geoms):
            if geom.contains(point):
                found.append((i, j))
    arr = np.array(found, dtype=np.int64).reshape(-1, 2)
    return keys(arr[:, 0], arr[:, 1], len(geoms))


def brute_margin(
    geoms: NDArray[np.object_],
    lats: NDArray[np.float64],
    lons: NDArray[np.float64],
    margin_m: float,
) -> set[tuple[int, int, bool, bool]]:
    """(point, fence, inside, near) by brute force over every fence, with the metric of
    `FenceIndex` (distance to the boundary in the tangent plane at the point)."""
    bounds = shapely.bounds(geoms)
    boundaries = shapely.boundary(geoms)
    origin = shapely.Point(0.0, 0.0)
    out: set[tuple[int, int, bool, bool]] = set()
    for i, (lat, lon) in enumerate(zip(lats.tolist(), lons.tolist(), strict=True)):
        dlat = margin_m / METRES_PER_DEGREE * 1.01
        dlon = dlat / float(cos_lat_np(lat))
        cand = np.flatnonzero(
            (bounds[:, 0] <= lon + dlon)
            & (bounds[:, 2] >= lon - dlon)
            & (bounds[:, 1] <= lat + dlat)
            & (bounds[:, 3] >= lat - dlat)
        )
        if not len(cand):
            continue
        inside = shapely.contains_xy(geoms[cand], lon, lat)

        def to_plane(
            c: NDArray[np.float64], lat: float = lat, lon: float = lon
        ) -> NDArray[np.float64]:
            x, y = tangent_plane_coords(c[:, 1], c[:, 0], lat, lon)
            return np.column_stack([x, y])

        dist = shapely.distance(shapely.transform(boundaries[cand], to_plane), origin)
        near = dist <= margin_m
        for f, ins, nr in zip(cand.tolist(), inside.tolist(), near.tolist(), strict=True):
            if ins or nr:
                out.add((i, f, bool(ins), bool(nr)))
    return out


def margin_set(hits: MarginHits, below: int) -> set[tuple[int, int, bool, bool]]:
    """The margin pairs of points with index < `below`, as a set."""
    sel = hits.point_idx < below
    return set(
        zip(
            hits.point_idx[sel].tolist(),
            hits.fence_idx[sel].tolist(),
            hits.inside[sel].tolist(),
            hits.near[sel].tolist(),
            strict=True,
        )
    )


class PostGis:
    """A PostGIS session holding the points (binary COPY) and one fence set at a time."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        with self.conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            cur.execute("SELECT postgis_lib_version(), current_setting('server_version')")
            row = cur.fetchone()
            cur.execute("SHOW max_parallel_workers_per_gather")
            workers = cur.fetchone()
        self.version = f"PostGIS {row[0]} on PostgreSQL {row[1]}" if row else "unknown"
        self.parallel_workers = workers[0] if workers else None
        self.n_points = 0

    def close(self) -> None:
        """Close the session (its temp tables go with it)."""
        self.conn.close()

    def load_points(self, lats: NDArray[np.float64], lons: NDArray[np.float64]) -> float:
        """Binary COPY of the points into a temp table with a geometry column; seconds taken."""
        start = time.perf_counter()
        with self.conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS bench_pts_raw, bench_pts")
            cur.execute("CREATE TEMP TABLE bench_pts_raw (id int4, lon float8, lat float8)")
            with cur.copy("COPY bench_pts_raw (id, lon, lat) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["int4", "float8", "float8"])
                for row in zip(range(len(lats)), lons.tolist(), lats.tolist(), strict=True):
                    cp.write_row(row)
            cur.execute(
                "CREATE TEMP TABLE bench_pts AS SELECT id, "
                "ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geometry(Point, 4326) AS geom "
                "FROM bench_pts_raw"
            )
            cur.execute("DROP TABLE bench_pts_raw")
            cur.execute("VACUUM ANALYZE bench_pts")
        self.n_points = len(lats)
        return time.perf_counter() - start

    def load_fences(self, geoms: NDArray[np.object_]) -> float:
        """Fences as geometry(Geometry, 4326) from WKB, GiST index, ANALYZE; seconds taken."""
        start = time.perf_counter()
        wkbs = shapely.to_wkb(geoms).tolist()
        with self.conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS bench_fences_raw, bench_fences")
            cur.execute("CREATE TEMP TABLE bench_fences_raw (id int4, wkb bytea)")
            with cur.copy("COPY bench_fences_raw (id, wkb) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["int4", "bytea"])
                for row in enumerate(wkbs):
                    cp.write_row(row)
            cur.execute(
                "CREATE TEMP TABLE bench_fences AS SELECT id, "
                "ST_GeomFromWKB(wkb, 4326)::geometry(Geometry, 4326) AS geom "
                "FROM bench_fences_raw"
            )
            cur.execute("DROP TABLE bench_fences_raw")
            cur.execute("CREATE INDEX ON bench_fences USING gist (geom)")
            cur.execute("VACUUM ANALYZE bench_fences")
        return time.perf_counter() - start

    _JOIN = "FROM bench_pts p JOIN bench_fences f ON ST_Contains(f.geom, p.geom)"

    def plan(self) -> list[str]:
        """The plan of the join (to see the GiST index is used)."""
        with self.conn.cursor() as cur:
            cur.execute(f"EXPLAIN SELECT count(*) {self._JOIN}")
            return [str(r[0]) for r in cur.fetchall()]

    def join_count(self) -> int:
        """Pairs counted by one set-based join."""
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT count(*) {self._JOIN}")
            row = cur.fetchone()
        return int(row[0]) if row else -1

    def join_pairs(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(point, fence) pairs fetched from one set-based join."""
        with self.conn.cursor(binary=True) as cur:
            cur.execute(f"SELECT p.id, f.id {self._JOIN}")
            rows = cur.fetchall()
        arr = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]

    def per_point(
        self, lats: NDArray[np.float64], lons: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """One prepared query per point: the fences containing it."""
        found: list[tuple[int, int]] = []
        sql = (
            "SELECT id FROM bench_fences "
            "WHERE ST_Contains(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326))"
        )
        with self.conn.cursor(binary=True) as cur:
            for i, (lat, lon) in enumerate(zip(lats.tolist(), lons.tolist(), strict=True)):
                cur.execute(sql, (lon, lat), prepare=True)
                found.extend((i, int(r[0])) for r in cur.fetchall())
        arr = np.array(found, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]


def connect_postgis(dsn: str) -> tuple[PostGis | None, str]:
    """A PostGIS session, or None and why not."""
    try:
        import psycopg
    except ImportError:
        return None, "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        return PostGis(dsn), ""
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, (
            f"PostGIS unavailable at {dsn}: {reason} "
            "(install it with `bash scripts/services.sh postgres postgis`)"
        )


def run_size(
    n_fences: int,
    args: argparse.Namespace,
    lats: NDArray[np.float64],
    lons: NDArray[np.float64],
    pg: PostGis | None,
    pg_reason: str,
) -> dict[str, object]:
    """Every method at one fence count; returns the JSON record of this size."""
    rng = np.random.default_rng([args.seed, n_fences])
    log(f"{n_fences} fences: generating (seeded) and parsing")
    fs = random_fences(rng, n_fences, args.coverage)
    # The same seeded points in [-1, 1]^2, rescaled to this fence set's region.
    p_lats = fs.region.lat0 + lats * fs.region.half_dlat
    p_lons = fs.region.lon0 + lons * fs.region.half_dlon
    n_points = len(p_lats)
    geoms = np.array([f.geometry for f in fs.fences], dtype=object)

    build_tree_s, tree_obj = timed(lambda: STRtree(geoms))
    tree: STRtree = tree_obj  # type: ignore[assignment]  # timed() returns object
    build_index_s, index_obj = timed(lambda: FenceIndex.build(fs.fences))
    index: FenceIndex = index_obj  # type: ignore[assignment]  # timed() returns object
    points: NDArray[np.object_] = np.asarray(shapely.points(p_lons, p_lats), dtype=object)

    results: dict[str, MethodResult] = {
        "raw_strtree": MethodResult("raw_strtree", n_points),
        "fenceindex_lookup": MethodResult("fenceindex_lookup", n_points),
        "fenceindex_lookup_margin": MethodResult(
            "fenceindex_lookup_margin", n_points, note=f"margin {MARGIN_M} m"
        ),
    }
    outputs: dict[str, object] = {}
    runs: list[tuple[str, Callable[[], object]]] = [
        ("raw_strtree", lambda: tree.query(points, predicate="within")),
        ("fenceindex_lookup", lambda: index.lookup(p_lats, p_lons)),
        ("fenceindex_lookup_margin", lambda: index.lookup_margin(p_lats, p_lons, MARGIN_M)),
    ]
    warm = slice(0, min(n_points, 1000))  # first calls pay one-off costs: not timed
    tree.query(points[warm], predicate="within")
    index.lookup(p_lats[warm], p_lons[warm])
    index.lookup_margin(p_lats[warm], p_lons[warm], MARGIN_M)
    for r in range(args.repeat):
        for name, func in runs:  # interleaved, so load on the machine hits every method alike
            log(f"{n_fences} fences: {name} over {n_points} points (run {r + 1}/{args.repeat})")
            seconds, out = timed(func)
            results[name].seconds.append(seconds)
            outputs[name] = out

    raw = outputs["raw_strtree"]
    assert isinstance(raw, np.ndarray)
    reference = keys(raw[0], raw[1], n_fences)
    results["raw_strtree"].pairs = len(reference)

    # The reference itself is checked against brute force on a sample (the naive method).
    n_naive = min(n_points, max(args.naive_min, int(args.naive_work / max(n_fences, 1))))
    naive = MethodResult("naive_loop", n_naive, note="per point, every fence's prepared contains")
    log(f"{n_fences} fences: naive loop over {n_naive} points")
    geoms_list = list(geoms)
    sample_points = list(points[:n_naive])
    seconds, naive_obj = timed(lambda: naive_lookup(geoms_list, sample_points))
    naive_keys: Pairs = naive_obj  # type: ignore[assignment]  # timed() returns object
    naive.seconds.append(seconds)
    naive.pairs = len(naive_keys)
    ref_sample = reference[reference < n_naive * n_fences]
    naive.check = compare(naive_keys, ref_sample, "naive vs raw STRtree on the sample")
    results["raw_strtree"].check = (
        "ok" if naive.ok else f"reference disagrees with brute force: {naive.check}"
    )
    results["raw_strtree"].note = f"query(points, predicate='within'); brute-forced on {n_naive}"
    results["naive_loop"] = naive

    found = outputs["fenceindex_lookup"]
    assert isinstance(found, tuple)
    lookup_keys = keys(found[0], found[1], n_fences)
    results["fenceindex_lookup"].pairs = len(lookup_keys)
    results["fenceindex_lookup"].check = compare(lookup_keys, reference, "lookup")

    margin = outputs["fenceindex_lookup_margin"]
    assert isinstance(margin, MarginHits)
    mres = results["fenceindex_lookup_margin"]
    mres.pairs = len(margin)
    inside_keys = keys(margin.point_idx[margin.inside], margin.fence_idx[margin.inside], n_fences)
    mres.check = compare(inside_keys, reference, "lookup_margin inside pairs")
    n_margin = min(n_points, args.margin_check_points)
    if mres.ok:
        log(f"{n_fences} fences: brute-force margin check on {n_margin} points")
        want = brute_margin(geoms, p_lats[:n_margin], p_lons[:n_margin], MARGIN_M)
        got = margin_set(margin, n_margin)
        if got != want:
            mres.check = (
                f"WRONG lookup_margin near pairs on {n_margin} points: "
                f"missing {sorted(want - got)[:3]}, extra {sorted(got - want)[:3]}"
            )
    n_near_only = int(np.count_nonzero(margin.near & ~margin.inside))
    mres.note = (
        f"margin {MARGIN_M} m; {n_near_only} near-only pairs; inside pairs = reference, "
        f"near pairs brute-forced on {n_margin} points"
    )

    postgis: dict[str, object] = {"available": pg is not None, "reason": pg_reason}
    if pg is not None:
        postgis.update(run_postgis(pg, geoms, p_lats, p_lons, reference, n_fences, args, results))

    coverage = len(reference) / n_points if n_points else 0.0
    return {
        "fences": n_fences,
        "points": n_points,
        "region_side_km": round(fs.region.side_m / 1000, 1),
        "mean_fence_area_km2": round(fs.mean_area_m2 / 1e6, 3),
        "fences_per_point": round(coverage, 4),
        "margin_pairs_per_point": round(len(margin) / n_points, 4) if n_points else 0.0,
        "build_s": {"raw_strtree": round(build_tree_s, 4), "fenceindex": round(build_index_s, 4)},
        "postgis": postgis,
        "methods": {name: res.as_json() for name, res in results.items()},
        "_results": results,
    }


def run_postgis(
    pg: PostGis,
    geoms: NDArray[np.object_],
    lats: NDArray[np.float64],
    lons: NDArray[np.float64],
    reference: Pairs,
    n_fences: int,
    args: argparse.Namespace,
    results: dict[str, MethodResult],
) -> dict[str, object]:
    """The set-based join (count, then the pairs) and one query per point; checked."""
    n_points = len(lats)
    log(f"{n_fences} fences: PostGIS load ({n_points} points by binary COPY; fences, GiST)")
    load_points_s = pg.load_points(lats, lons)
    load_s = pg.load_fences(geoms)
    plan = pg.plan()
    join_count = MethodResult("postgis_join_count", n_points, note="SELECT count(*) ... JOIN")
    log(f"{n_fences} fences: PostGIS join count over {n_points} points")
    seconds, count_obj = timed(pg.join_count)
    join_count.seconds.append(seconds)
    join_count.pairs = int(count_obj)  # type: ignore[call-overload]  # timed() returns object
    join_count.check = (
        "ok"
        if join_count.pairs == len(reference)
        else f"WRONG count: {join_count.pairs}, reference {len(reference)}"
    )
    results["postgis_join_count"] = join_count

    join_fetch = MethodResult("postgis_join_fetch", n_points, note="the pairs fetched to Python")
    log(f"{n_fences} fences: PostGIS join fetching the pairs")
    seconds, pairs_obj = timed(pg.join_pairs)
    join_fetch.seconds.append(seconds)
    assert isinstance(pairs_obj, tuple)
    fetched = keys(pairs_obj[0], pairs_obj[1], n_fences)
    join_fetch.pairs = len(fetched)
    join_fetch.check = compare(fetched, reference, "PostGIS join pairs")
    results["postgis_join_fetch"] = join_fetch

    n_sample = min(n_points, args.pg_point_queries)
    per_point = MethodResult("postgis_per_point", n_sample, note="one prepared query per point")
    log(f"{n_fences} fences: PostGIS one query per point, {n_sample} points")
    seconds, pp_obj = timed(lambda: pg.per_point(lats[:n_sample], lons[:n_sample]))
    per_point.seconds.append(seconds)
    assert isinstance(pp_obj, tuple)
    pp_keys = keys(pp_obj[0], pp_obj[1], n_fences)
    per_point.pairs = len(pp_keys)
    per_point.check = compare(
        pp_keys, reference[reference < n_sample * n_fences], "PostGIS per point on the sample"
    )
    results["postgis_per_point"] = per_point
    return {
        "load_points_s": round(load_points_s, 3),
        "load_fences_s": round(load_s, 3),
        "plan": plan,
    }


ROWS = (
    ("naive_loop", "(a) naive loop, prepared contains"),
    ("raw_strtree", "(b) raw shapely STRtree (within)"),
    ("fenceindex_lookup", "(c) FenceIndex.lookup"),
    ("fenceindex_lookup_margin", "(d) FenceIndex.lookup_margin 25 m"),
    ("postgis_join_count", "(e) PostGIS join, count(*)"),
    ("postgis_join_fetch", "(e) PostGIS join, fetch pairs"),
    ("postgis_per_point", "(f) PostGIS one query per point"),
)

RATIOS = (
    ("raw_strtree", "lookup / raw STRtree", "target >= 0.67 (within 1.5x)", 1 / 1.5),
    ("naive_loop", "lookup / naive loop", "target > 100 at 10k", 100.0),
    ("postgis_join_count", "lookup / PostGIS join count", "target > 1 (faster)", 1.0),
    ("postgis_join_fetch", "lookup / PostGIS join fetch", "target > 1 (faster)", 1.0),
    ("postgis_per_point", "lookup / PostGIS per point", "", math.nan),
)


def ratios(size: dict[str, object]) -> dict[str, float | None]:
    """FenceIndex.lookup's rate over each other method's (and margin over lookup)."""
    res = size["_results"]
    assert isinstance(res, dict)
    lookup = res["fenceindex_lookup"].points_per_s
    out: dict[str, float | None] = {}
    for key, label, _, _ in RATIOS:
        other = res[key].points_per_s if key in res else None
        out[label] = lookup / other if lookup and other else None
    margin = res["fenceindex_lookup_margin"].points_per_s
    out["lookup_margin / lookup"] = margin / lookup if margin and lookup else None
    return out


def report(sizes: list[dict[str, object]], pg_reason: str) -> str:
    """The result tables: points/s per method and size, then the ratios with their targets."""
    header = ["points/s (points timed)", *(f"{s['fences']:,} fences" for s in sizes)]
    rows: list[list[str]] = []
    for key, label in ROWS:
        cells = [label]
        for s in sizes:
            res = s["_results"]
            assert isinstance(res, dict)
            m = res.get(key)
            if m is None:
                cells.append("n/a")
            elif not m.ok:
                cells.append("WRONG")
            else:
                cells.append(f"{fmt_rate(m.points_per_s)} ({m.points:,})")
        rows.append(cells)
    rows.append(["fences per point (coverage)", *(f"{s['fences_per_point']}" for s in sizes)])
    rows.append(["margin pairs per point", *(f"{s['margin_pairs_per_point']}" for s in sizes)])
    builds = []
    for s in sizes:
        b = s["build_s"]
        assert isinstance(b, dict)
        builds.append(f"{b['raw_strtree'] * 1e3:.1f} / {b['fenceindex'] * 1e3:.1f} ms")
    rows.append(["build STRtree / FenceIndex", *builds])
    lines = [table(header, rows), ""]
    ratio_header = [
        "ratio (rate of lookup / other)",
        *(f"{s['fences']:,}" for s in sizes),
        "target",
    ]
    ratio_rows: list[list[str]] = []
    all_ratios = [ratios(s) for s in sizes]
    for _, label, target, _ in RATIOS:
        ratio_rows.append([label, *(fmt_ratio(r[label]) for r in all_ratios), target])
    ratio_rows.append(
        [
            "lookup_margin / lookup",
            *(fmt_ratio(r["lookup_margin / lookup"]) for r in all_ratios),
            "(cost of the margin)",
        ]
    )
    lines.append(table(ratio_header, ratio_rows))
    if pg_reason:
        lines.extend(["", f"PostGIS: NOT MEASURED: {pg_reason}"])
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_fences", description=__doc__)
    p.add_argument("--sizes", default="1000,10000,100000", help="fence counts, comma-separated")
    p.add_argument("--points", type=int, default=1_000_000, help="points for the fast methods")
    p.add_argument("--seed", type=int, default=20261130)
    p.add_argument("--coverage", type=float, default=0.6, help="expected fences per point")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of the fast methods")
    p.add_argument(
        "--naive-work",
        type=float,
        default=2e7,
        help="points x fences for the naive loop (its sample is this / fences)",
    )
    p.add_argument("--naive-min", type=int, default=200, help="fewest naive sample points")
    p.add_argument("--margin-check-points", type=int, default=300)
    p.add_argument("--pg-point-queries", type=int, default=5000)
    p.add_argument("--no-postgis", action="store_true", help="skip PostGIS")
    p.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL with PostGIS")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write `<out-dir>/bench_fences.json`."""
    args = parse_args(argv)
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    started = time.perf_counter()
    info = machine_info()
    rng = np.random.default_rng(args.seed)
    # Points in the unit square [-1, 1]^2, rescaled to each fence set's region.
    unit_lats = rng.uniform(-1.0, 1.0, args.points)
    unit_lons = rng.uniform(-1.0, 1.0, args.points)
    pg: PostGis | None = None
    pg_reason = "skipped (--no-postgis)" if args.no_postgis else ""
    if not args.no_postgis:
        pg, pg_reason = connect_postgis(args.dsn)
        if pg is None:
            log(pg_reason)
    records: list[dict[str, object]] = []
    try:
        records.extend(run_size(n, args, unit_lats, unit_lons, pg, pg_reason) for n in sizes)
    finally:
        if pg is not None:
            pg.close()
    text = report(records, pg_reason)
    print(text)
    checks_passed = all(
        m.ok
        for r in records
        for m in r["_results"].values()  # type: ignore[attr-defined]  # dict of MethodResult
    )
    doc: dict[str, object] = {
        "benchmark": "bench_fences",
        "checks_passed": checks_passed,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "machine": info,
        "parameters": {
            "sizes": sizes,
            "points": args.points,
            "seed": args.seed,
            "coverage_target": args.coverage,
            "repeat": args.repeat,
            "naive_work": args.naive_work,
            "margin_m": MARGIN_M,
            "pg_point_queries": args.pg_point_queries,
            "postgis": not args.no_postgis,
            "fences": "50% geodesic circles, 50% star polygons (5% with a hole), "
            "radius 100 m-2 km uniform, region sized for the coverage target",
        },
        "postgis": {
            "available": pg is not None,
            "reason": pg_reason,
            "version": pg.version if pg is not None else None,
            "max_parallel_workers_per_gather": pg.parallel_workers if pg is not None else None,
        },
        "sizes": [{k: v for k, v in r.items() if k != "_results"} for r in records],
        "ratios": {str(r["fences"]): ratios(r) for r in records},
        "table": text,
    }
    write_json(args.out_dir / "bench_fences.json", doc)
    if not checks_passed:
        print("SOME CHECKS FAILED: see 'check' in the JSON", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
