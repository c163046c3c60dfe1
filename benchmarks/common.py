"""Shared helpers of the benchmarks: progress, machine info, tables, seeded fences, JSON out."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import orjson
from numpy.typing import NDArray

from geofence.fence import Fence, parse_fence
from geofence.geo import EARTH_RADIUS_M
from simulator.harness.broker import mosquitto_binary

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where the benchmarks write their JSON results by default (committed: keep them small)."""

_STARTED = time.perf_counter()
_LIBRARIES = ("numpy", "shapely", "orjson", "psycopg", "pyproj")
_MEASURED = ("engine", "geofence", "devices", "lending", "alerts")

CATEGORIES = ("pawnshop", "lender", "used_car_market", "auction", "impound", "border")


def log(message: str) -> None:
    """Progress on stderr, with the seconds since the process started."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def machine_info() -> dict[str, object]:
    """CPU count, Python, platform and the versions of the libraries that set the pace."""
    versions: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        import shapely

        versions["geos"] = shapely.geos_version_string
    except ImportError:
        versions["geos"] = None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "source": source_state(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
        "libraries": versions,
    }


def source_state() -> dict[str, object]:
    """The git commit measured, and which files of the measured packages differ from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(  # noqa: S603  # fixed arguments, no shell
                ["git", *args],  # noqa: S607  # git from PATH, as a developer runs it
                cwd=root,
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError:
            return None
        return done.stdout.rstrip("\n") if done.returncode == 0 else None

    changed = git("status", "--porcelain", "--", *_MEASURED)
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": [line[3:] for line in changed.splitlines()] if changed else [],
    }


def write_json(path: Path, doc: dict[str, object]) -> None:
    """Write `doc` as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    log(f"wrote {path}")


def exit_status(passed: object, key: str = "checks") -> int:
    """A benchmark's exit status: 0 when its checks passed (`passed` truthy, as its JSON
    holds it), else 1 after saying on stderr which key of the JSON holds the checks."""
    if passed:
        return 0
    print(f"SOME CHECKS FAILED: see '{key}' in the JSON", file=sys.stderr)
    return 1


def work_dir(stack: ExitStack, kept: Path | None, prefix: str) -> Path:
    """Where a run keeps its files: `kept` (`--work-dir`, made if missing), else a temporary
    folder removed when `stack` closes."""
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
        return kept
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))


def rate(count: int, seconds: float) -> float:
    """Items per second (0 when nothing was timed)."""
    return count / seconds if seconds > 0 else 0.0


def fmt_rate(value: float | None) -> str:
    """A rate with a k/M suffix: 1.23M, 845k, 38.2."""
    if value is None or math.isnan(value):
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.1f}"


def fmt_ratio(value: float | None) -> str:
    """A ratio as `12.3x`, or `-` when it could not be computed."""
    if value is None or math.isnan(value) or math.isinf(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f}x"
    return f"{value:.2f}x"


def fmt_value(value: object, unit: str = "") -> str:
    """A table cell: thousands separated, floats to one decimal, `-` for None."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table, first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


@dataclass(frozen=True, slots=True)
class Region:
    """A lat/lon box centred on (`lat0`, `lon0`), `side_m` metres on a side (approximately)."""

    lat0: float
    lon0: float
    side_m: float

    @property
    def half_dlat(self) -> float:
        """Half the side in degrees of latitude."""
        return math.degrees(self.side_m / 2 / EARTH_RADIUS_M)

    @property
    def half_dlon(self) -> float:
        """Half the side in degrees of longitude at the centre."""
        return self.half_dlat / math.cos(math.radians(self.lat0))

    def uniform(
        self, rng: np.random.Generator, n: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """`n` (lats, lons) uniform in the box (uniform in degrees: close enough here)."""
        lats = self.lat0 + rng.uniform(-self.half_dlat, self.half_dlat, n)
        lons = self.lon0 + rng.uniform(-self.half_dlon, self.half_dlon, n)
        return lats, lons


@dataclass(frozen=True, slots=True)
class FenceSet:
    """Seeded random fences: parsed `Fence`s, their GeoJSON features, and where they lie."""

    fences: list[Fence]
    features: list[dict[str, object]]
    centers: NDArray[np.float64]  # (n, 2) lat, lon of each fence's centre
    region: Region
    mean_area_m2: float
    coverage: float  # expected fences per uniform point in the region


# Polygons are stars around their centre: vertex angles jittered around an even spread,
# radii in [0.5, 1] of the fence's radius, so the ring never self-intersects.
_MIN_VERTICES = 6
_MAX_VERTICES = 14
# With >= 6 vertices and +-30 % angle jitter, the star's edges stay beyond 0.33 of its radius
# from the centre, so a hole of the same star scaled by 0.2 lies inside it.
_HOLE_SCALE = 0.2
_M_PER_DLAT = EARTH_RADIUS_M * math.pi / 180


def random_fences(
    rng: np.random.Generator,
    n: int,
    coverage: float,
    lat0: float = 31.0,
    lon0: float = 121.0,
    min_radius_m: float = 100.0,
    max_radius_m: float = 2000.0,
    circle_share: float = 0.5,
    hole_share: float = 0.05,
    risk_site_share: float = 0.3,
    id_prefix: str = "f",
) -> FenceSet:
    """`n` fences (geodesic circles and star polygons, radius 100 m-2 km, uniform) spread over
    a square region sized so that a uniform point lies in `coverage` fences on average.

    Each fence goes through `parse_fence` from a GeoJSON Feature, as the API would take it.
    """
    radii = rng.uniform(min_radius_m, max_radius_m, n)
    is_circle = rng.random(n) < circle_share
    has_hole = (~is_circle) & (rng.random(n) < hole_share)
    n_vertices = rng.integers(_MIN_VERTICES, _MAX_VERTICES + 1, n)
    shapes: list[tuple[NDArray[np.float64], NDArray[np.float64]]] = []
    area_m2 = np.empty(n)
    for i in range(n):
        if is_circle[i]:
            shapes.append((np.empty(0), np.empty(0)))
            area_m2[i] = math.pi * radii[i] ** 2
            continue
        k = int(n_vertices[i])
        step = 2 * math.pi / k
        angles = np.arange(k) * step + rng.uniform(-0.3 * step, 0.3 * step, k)
        r = radii[i] * rng.uniform(0.5, 1.0, k)
        shapes.append((angles, r))
        x, y = r * np.cos(angles), r * np.sin(angles)
        area_m2[i] = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    area_m2[has_hole] *= 1 - _HOLE_SCALE**2  # a hole is the same star, scaled
    mean_area = float(area_m2.mean()) if n else 0.0
    side_m = math.sqrt(max(float(area_m2.sum()), 1.0) / coverage)
    region = Region(lat0, lon0, side_m)
    lats, lons = region.uniform(rng, n)
    kinds = np.where(rng.random(n) < risk_site_share, "risk_site", "zone")
    categories = rng.integers(0, len(CATEGORIES), n)
    features: list[dict[str, object]] = []
    fences: list[Fence] = []
    for i in range(n):
        lat, lon = float(lats[i]), float(lons[i])
        fence_id = f"{id_prefix}{i:06d}"
        props: dict[str, object] = {"name": fence_id, "kind": str(kinds[i])}
        if kinds[i] == "risk_site":
            props["category"] = CATEGORIES[int(categories[i])]
        geometry: dict[str, object]
        if is_circle[i]:
            props["radius_m"] = round(float(radii[i]), 1)
            geometry = {"type": "Point", "coordinates": [lon, lat]}
        else:
            angles, r = shapes[i]
            rings = [_star_ring(lat, lon, angles, r, 1.0)]
            if has_hole[i]:
                rings.append(_star_ring(lat, lon, angles, r, _HOLE_SCALE)[::-1])
            geometry = {"type": "Polygon", "coordinates": rings}
        feature: dict[str, object] = {
            "type": "Feature",
            "id": fence_id,
            "geometry": geometry,
            "properties": props,
        }
        features.append(feature)
        fences.append(parse_fence(fence_id, feature))
    centers = np.column_stack([lats, lons]) if n else np.empty((0, 2))
    return FenceSet(fences, features, centers, region, mean_area, coverage)


def _star_ring(
    lat: float, lon: float, angles: NDArray[np.float64], r_m: NDArray[np.float64], scale: float
) -> list[list[float]]:
    """A closed, counter-clockwise GeoJSON ring of the star (`angles`, `r_m`) around a centre."""
    m_per_dlon = _M_PER_DLAT * math.cos(math.radians(lat))
    xs = lon + scale * r_m * np.cos(angles) / m_per_dlon
    ys = lat + scale * r_m * np.sin(angles) / _M_PER_DLAT
    coords: list[list[float]] = np.column_stack([xs, ys]).tolist()
    return [*coords, coords[0]]


# Processes: CPU and memory from /proc (Linux); the private broker is simulator.harness.broker.

REPO = Path(__file__).resolve().parent.parent
"""The repository root (the working directory of the helper processes the benchmarks start)."""


def mosquitto_version() -> str | None:
    """`mosquitto version 2.0.11` from the binary's help text, or None."""
    try:
        done = subprocess.run(  # noqa: S603  # the broker binary, fixed arguments
            [mosquitto_binary(), "-h"], capture_output=True, text=True, check=False, timeout=10
        )
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return None
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else None


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) of `values`, linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
