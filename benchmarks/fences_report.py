"""The fence lookup benchmark's tables: points per second by method and fence count, then
`FenceIndex.lookup`'s rate over each other method's, against the targets."""

from __future__ import annotations

import math

from benchmarks.common import fmt_rate, fmt_ratio, table

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
    parses = []
    for s in sizes:
        p = s["parse_s"]
        assert isinstance(p, dict)
        same = "" if p["same_fences"] else " DIFFERENT"
        parses.append(f"{p['one_by_one']:.2f} / {p['collection']:.2f} s{same}")
    rows.append(["parse one by one / as a collection", *parses])
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
