"""Part 3 of `bench_lending`: how big the lending consumer's state gets.

(a) Memory per loan, after a replay of the simulated fleet: the consumer's books and site
cells, measured two ways that should agree: the object graph reachable from them
(`sys.getsizeof` over `gc.get_referents`, types and modules left out), and `tracemalloc`
around restoring a fresh consumer from their serialized rows (what the store holds). A
traced replay would be exact, but tracemalloc slows a replay thirty-fold. Plus the size of
one loan's serialized book, and the numbers that bound it (places, nights, ledger).

(b) Risk-site discovery at fleet scale: a `SiteIndex` of synthetic stays over a 50 x 50 km
city (seeded), `add_stay` per stay and `candidates` (min of `repeat`) at growing sizes.
"""

from __future__ import annotations

import gc
import math
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterable
from types import FunctionType, ModuleType
from typing import Any

import numpy as np
import orjson

from benchmarks.common import Region, log
from geofence.geo import haversine_m
from lending.consumer import LendingConsumer
from lending.params import SitesParams
from lending.sites import SiteIndex

DAY_MS = 86_400_000
T0_MS = 1_772_409_600_000  # 2026-03-02T00:00Z
CITY_SIDE_M = 50_000.0
LOT_JITTER_M = 30.0  # a planted lot's stays lie within this of its centre
HOME_REACH_M = 2_000.0  # a background loan parks within this of its home


def deep_size(roots: Iterable[object]) -> int:
    """Bytes of every object reachable from `roots` (each once), types, modules and
    functions left out: what the roots hold alive, shared small objects counted once."""
    seen: set[int] = set()
    stack = list(roots)
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | ModuleType | FunctionType):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def state_rows(
    consumer: LendingConsumer,
) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """The consumer's durable rows, serialized: every book, then every site cell."""
    books = [(loan_id, orjson.dumps(book.to_json())) for loan_id, book in consumer.books.items()]
    sites = consumer.sites
    every = SiteIndex(sites.params, sites.cells, sites.clock_ms, set(sites.cells))
    cells = [(key, orjson.dumps(doc)) for key, doc in every.take_dirty() if doc is not None]
    return books, cells


def traced_restore(books: list[tuple[str, bytes]], cells: list[tuple[str, bytes]]) -> int:
    """Bytes a fresh consumer keeps after restoring the rows, by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    try:
        consumer = LendingConsumer()
        consumer.restore(
            ((k, orjson.loads(b)) for k, b in books), ((k, orjson.loads(b)) for k, b in cells)
        )
        gc.collect()
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del consumer
    return kept


def memory_per_loan(consumer: LendingConsumer, loans: int) -> dict[str, Any]:
    """Part 3a as a JSON object."""
    books, cells = state_rows(consumer)
    book_sizes = sorted(len(b) for _, b in books)
    books_b = deep_size([consumer.books])
    sites_b = deep_size([consumer.sites.cells])
    traced = traced_restore(books, cells)
    p = consumer.params
    held = list(consumer.books.values())
    return {
        "loans": loans,
        "books": len(held),
        "site_cells": len(consumer.sites.cells),
        "site_aggregates": consumer.sites.stays(),
        "graph_bytes": {"books": books_b, "sites": sites_b, "total": books_b + sites_b},
        "graph_bytes_per_loan": round((books_b + sites_b) / max(loans, 1)),
        "tracemalloc_restore_bytes": traced,
        "tracemalloc_restore_bytes_per_loan": round(traced / max(loans, 1)),
        "book_json_bytes": {
            "min": book_sizes[0] if book_sizes else None,
            "median": statistics.median(book_sizes) if book_sizes else None,
            "max": book_sizes[-1] if book_sizes else None,
            "total": sum(book_sizes),
        },
        "site_cells_json_bytes": sum(len(b) for _, b in cells),
        "bounds": {
            "places_max": max((len(b.places.places) for b in held), default=0),
            "places_bound": p.places.max_clusters,
            "nights_max": max((len(b.places.nights) for b in held), default=0),
            "workdays_max": max((len(b.places.workdays) for b in held), default=0),
            "nights_bound": p.places.window_days,
            "ledger_max": max((len(b.risk.ledger) for b in held), default=0),
            "ledger_max_per_code": max(
                (max(Counter(c.code for c in b.risk.ledger).values(), default=0) for b in held),
                default=0,
            ),
            "ledger_bound_per_code": p.risk.ledger_per_code,
            "open_days_max": max(
                (max(len(b.places.night_credit), len(b.places.work_credit)) for b in held),
                default=0,
            ),
        },
    }


def synthetic_stays(
    n: int, rng: np.random.Generator, lots: int
) -> tuple[list[tuple[str, float, float, int, int]], list[tuple[float, float, set[str]]]]:
    """About `n` stays of 30 min to 3 h over 60 days in a 50 x 50 km city: `lots` planted lots,
    each visited by 3-8 loans (1-2 stays each, within `LOT_JITTER_M` of its centre), and
    background loans at scattered homes, two stays each within `HOME_REACH_M` of home (half
    of them twice at the same spot). Returns the stays by end time, and the lots."""
    region = Region(31.2, 121.45, CITY_SIDE_M)
    m_lat = 111_195.0
    m_lon = m_lat * math.cos(math.radians(region.lat0))
    stays: list[tuple[str, float, float]] = []
    planted: list[tuple[float, float, set[str]]] = []
    lot_lats, lot_lons = region.uniform(rng, lots)
    for k in range(lots):
        ids = {f"P{k:03d}-{j}" for j in range(int(rng.integers(3, 9)))}
        planted.append((float(lot_lats[k]), float(lot_lons[k]), ids))
        for loan_id in sorted(ids):
            for _ in range(int(rng.integers(1, 3))):
                r = LOT_JITTER_M * math.sqrt(rng.random())
                a = rng.uniform(0, 2 * math.pi)
                lat = lot_lats[k] + r * math.sin(a) / m_lat
                lon = lot_lons[k] + r * math.cos(a) / m_lon
                stays.append((loan_id, float(lat), float(lon)))
    loans = max(0, (n - len(stays)) // 2)
    home_lat, home_lon = region.uniform(rng, loans)
    spots = rng.uniform(-HOME_REACH_M, HOME_REACH_M, (loans, 2, 2))  # (loan, spot, dy/dx)
    again = rng.random(loans) < 0.5
    for i in range(loans):
        loan_id = f"B{i:07d}"
        for s in (0, 0 if again[i] else 1):
            jitter = rng.normal(0.0, 10.0, 2)
            dy, dx = spots[i, s] + jitter
            stays.append(
                (loan_id, float(home_lat[i] + dy / m_lat), float(home_lon[i] + dx / m_lon))
            )
    starts = T0_MS + rng.integers(0, 60 * DAY_MS, len(stays))
    lengths = rng.integers(1800_000, 3 * 3600_000, len(stays))
    order = np.argsort(starts + lengths, kind="stable")
    out = [
        (stays[j][0], stays[j][1], stays[j][2], int(starts[j]), int(starts[j] + lengths[j]))
        for j in order.tolist()
    ]
    return out, planted


def neighbour_entries(index: SiteIndex) -> int:
    """(cell, loan) aggregates in the neighbourhood of every occupied cell, summed: what
    growing a candidate from each cell looks at (the inherent work, all seeds fresh)."""
    return sum(sum(1 for _ in index.around(cell)) for cell in index.cells)


def site_scaling(sizes: list[int], seed: int, lots: int, repeat: int) -> dict[str, Any]:
    """Part 3b as a JSON object: per size, the build and the search, and the planted lots."""
    params = SitesParams()
    rows: list[dict[str, Any]] = []
    for n in sizes:
        rng = np.random.default_rng([seed, n])
        stays, planted = synthetic_stays(n, rng, lots)
        index = SiteIndex(params)
        started = time.perf_counter()
        for loan_id, lat, lon, t0, t1 in stays:
            index.add_stay(loan_id, lat, lon, t0, t1)
        add_s = time.perf_counter() - started
        times = []
        found = []
        for _ in range(repeat):
            gc.collect()
            started = time.perf_counter()
            found = index.candidates(lambda _lat, _lon, _r: False)
            times.append(time.perf_counter() - started)
        aggregates = index.stays()
        entries = neighbour_entries(index)
        lots_found = lots_whole = 0
        for lat, lon, ids in planted:
            best = max(
                (
                    len(ids & set(c.loan_ids))
                    for c in found
                    if haversine_m(lat, lon, c.lat, c.lon) <= 150.0
                ),
                default=0,
            )
            lots_found += best >= params.min_loans
            lots_whole += best == len(ids)
        best_s = min(times)
        log(
            f"  sites: {len(stays):,} stays, {aggregates:,} aggregates: add {add_s:.2f} s, "
            f"candidates {best_s:.2f} s, {len(found):,} found, lots {lots_found}/{len(planted)}"
        )
        rows.append(
            {
                "stays": len(stays),
                "loans": len({s[0] for s in stays}),
                "aggregates": aggregates,
                "cells": len(index.cells),
                "neighbour_entries": entries,
                "add_stay_s": round(add_s, 4),
                "add_stay_us_per_stay": round(add_s / len(stays) * 1e6, 3),
                "candidates_s": round(best_s, 4),
                "candidates_s_by_repeat": [round(t, 4) for t in times],
                "candidates_us_per_aggregate": round(best_s / aggregates * 1e6, 3),
                "candidates_ns_per_neighbour_entry": round(best_s / entries * 1e9, 1),
                "candidates": len(found),
                "planted_lots": len(planted),
                "planted_lots_found": lots_found,
                "planted_lots_found_whole": lots_whole,
            }
        )
        del index, stays, found
    ratios: dict[str, Any] = {}
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        ratios = {
            "sizes": [a["stays"], b["stays"]],
            "stays": round(b["stays"] / a["stays"], 3),
            "aggregates": round(b["aggregates"] / a["aggregates"], 3),
            "candidates_time": round(b["candidates_s"] / a["candidates_s"], 3),
            "neighbour_entries": round(b["neighbour_entries"] / a["neighbour_entries"], 3),
            "add_stay_time": round(b["add_stay_s"] / a["add_stay_s"], 3),
            "square_would_be": round((b["aggregates"] / a["aggregates"]) ** 2, 3),
        }
    missed = [r["stays"] for r in rows if r["planted_lots_found"] != r["planted_lots"]]
    return {
        "city_side_km": CITY_SIDE_M / 1000,
        "repeat": repeat,
        "sizes": rows,
        "last_ratio": ratios,
        "checks": {
            "sites_planted_lots_found": "ok"
            if not missed
            else f"WRONG: planted lots missed at {missed} stays",
        },
    }
