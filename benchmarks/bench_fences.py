"""Fence lookup, side by side: naive loop, raw shapely STRtree, FenceIndex, PostGIS.

    python -m benchmarks.bench_fences [--sizes 1000,10000,100000] [--points N] [--seed S]
                                      [--no-postgis]

Every method's answer is checked against the raw STRtree answer (itself checked against the
naive brute-force loop on a sample) before its rate is reported. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely import STRtree

from benchmarks.common import RESULTS_DIR, exit_status, log, machine_info, random_fences, write_json
from benchmarks.fences_methods import (
    MethodResult,
    Pairs,
    brute_margin,
    compare,
    keys,
    margin_set,
    naive_lookup,
    timed,
)
from benchmarks.fences_postgis import PostGis, connect_postgis, run_postgis
from benchmarks.fences_report import ratios, report
from geofence.fence import Fence, parse_feature_collection, parse_fence
from geofence.index import FenceIndex, MarginHits

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
MARGIN_M = 25.0
"""The engine's hysteresis margin (DESIGN §4), used for `lookup_margin`."""


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

    parse = time_parsing(fs.features, fs.fences, args.repeat)
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
        "parse_s": parse,
        "postgis": postgis,
        "methods": {name: res.as_json() for name, res in results.items()},
        "_results": results,
    }


def time_parsing(
    features: list[dict[str, object]], fences: list[Fence], repeat: int
) -> dict[str, object]:
    """Median seconds to parse every fence one by one (`parse_fence`, as a store is read back)
    and as one FeatureCollection (`parse_feature_collection`, whose geometry is built in one
    batch), interleaved; and whether the collection gave the fences `random_fences` made."""
    doc = {"type": "FeatureCollection", "features": features}
    one_by_one: list[float] = []
    collection: list[float] = []
    same = True
    for r in range(repeat):
        log(f"{len(features)} fences: parsing one by one and as a collection (run {r + 1})")
        one_by_one.append(timed(lambda: [parse_fence(str(f["id"]), f) for f in features])[0])
        seconds, parsed = timed(lambda: parse_feature_collection(doc))
        collection.append(seconds)
        assert isinstance(parsed, list)
        same = (
            same and parsed == fences and [f.feature for f in parsed] == [f.feature for f in fences]
        )
    return {
        "one_by_one": round(statistics.median(one_by_one), 4),
        "collection": round(statistics.median(collection), 4),
        "same_fences": same,
    }


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
    ) and all(r["parse_s"]["same_fences"] for r in records)  # type: ignore[index]  # time_parsing
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
    return exit_status(checks_passed, "check")


if __name__ == "__main__":
    sys.exit(main())
