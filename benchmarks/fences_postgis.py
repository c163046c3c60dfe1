"""The fence lookup benchmark's PostGIS side: a session holding the points and one fence
set, the set-based join and one prepared query per point, each checked against the
reference. PostgreSQL runs with its defaults."""

from __future__ import annotations

import argparse
import time

import numpy as np
import shapely
from numpy.typing import NDArray

from benchmarks.common import log
from benchmarks.fences_methods import MethodResult, Pairs, compare, keys, timed


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
