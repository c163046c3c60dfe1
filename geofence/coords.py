"""The coordinate systems of Chinese web maps, and conversions between them and WGS84.

- `wgs84`: what GPS receivers report and what pledgewatch stores and compares.
- `gcj02` (the "Mars" datum of the Chinese surveying bureau): AMap (Gaode), Tencent, Google
  Maps on .cn. WGS84 shifted by a smooth, non-linear offset of 100-700 m.
- `bd09`: Baidu. GCJ-02 shifted once more (about 1 km at Beijing).

The forward formulas (WGS84 -> GCJ-02 on the Krasovsky 1940 ellipsoid, GCJ-02 -> BD-09 with
x_pi = pi * 3000 / 180) are the published ones that every open implementation shares. They
apply only inside `CHINA_BOX`, the box of the open implementations (eviltransform and the
code it came from); outside it the three systems are the same, so a conversion is the
identity. The inverses have no closed form: they are solved by fixed-point iteration to
`INVERSE_TOL_DEG` (the forward maps move a point by a near-constant offset, so each step
shrinks the error at least 50-fold; three or four steps reach 1e-12 degrees).

Pure: no I/O, no clock. `lat`/`lon` in degrees; every function takes and returns (lat, lon).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

KRASOVSKY_A: Final = 6378245.0
"""Semi-major axis of the Krasovsky 1940 ellipsoid, metres (the GCJ-02 formula's `a`)."""
KRASOVSKY_EE: Final = 0.00669342162296594323
"""First eccentricity squared of the Krasovsky 1940 ellipsoid (the formula's `ee`)."""
X_PI: Final = math.pi * 3000.0 / 180.0
"""The constant of Baidu's GCJ-02 -> BD-09 formula."""
BD_DLON: Final = 0.0065
BD_DLAT: Final = 0.006

CHINA_BOX: Final = (0.8293, 72.004, 55.8271, 137.8347)
"""(min_lat, min_lon, max_lat, max_lon), inclusive: where GCJ-02 and BD-09 differ from WGS84."""

INVERSE_TOL_DEG: Final = 1e-11
"""An inverse stops when the forward map of its answer is this close to the input, degrees."""
INVERSE_MAX_STEPS: Final = 12
"""The iteration is bounded: near the box's edge (where the forward map jumps) it may not
converge, and the last estimate is returned."""

_MIN_LAT, _MIN_LON, _MAX_LAT, _MAX_LON = CHINA_BOX
_DEG = math.pi / 180.0
_LAT_SCALE = KRASOVSKY_A * (1.0 - KRASOVSKY_EE) * _DEG  # metres of a degree of latitude / magic^1.5
_LON_SCALE = KRASOVSKY_A * _DEG  # metres of a degree of longitude * sqrt(magic) / cos(lat)

F64 = NDArray[np.float64]


class CoordSys(StrEnum):
    """A coordinate system a fence or a reading may be given in."""

    WGS84 = "wgs84"
    GCJ02 = "gcj02"
    BD09 = "bd09"


_BY_NAME: Final = {c.value: c for c in CoordSys}


def parse_coord_sys(value: object) -> CoordSys | None:
    """The coordinate system a JSON value names ('wgs84', 'gcj02', 'bd09'), else None."""
    return _BY_NAME.get(value) if type(value) is str else None


def in_china(lat: float, lon: float) -> bool:
    """Whether (lat, lon) is inside `CHINA_BOX`, where the Chinese systems are offset."""
    return _MIN_LAT <= lat <= _MAX_LAT and _MIN_LON <= lon <= _MAX_LON


# -- one point


def _gcj_offset(lat: float, lon: float) -> tuple[float, float]:
    """(dlat, dlon) in degrees that WGS84 -> GCJ-02 adds at (lat, lon), box not checked."""
    x = lon - 105.0
    y = lat - 35.0
    x_pi = x * math.pi
    y_pi = y * math.pi
    common = (20.0 * math.sin(6.0 * x_pi) + 20.0 * math.sin(2.0 * x_pi)) * 2.0 / 3.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    dlat += common + (20.0 * math.sin(y_pi) + 40.0 * math.sin(y_pi / 3.0)) * 2.0 / 3.0
    dlat += (160.0 * math.sin(y_pi / 12.0) + 320.0 * math.sin(y_pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    dlon += common + (20.0 * math.sin(x_pi) + 40.0 * math.sin(x_pi / 3.0)) * 2.0 / 3.0
    dlon += (150.0 * math.sin(x_pi / 12.0) + 300.0 * math.sin(x_pi / 30.0)) * 2.0 / 3.0
    rad_lat = lat * _DEG
    sin_lat = math.sin(rad_lat)
    magic = 1.0 - KRASOVSKY_EE * sin_lat * sin_lat
    sqrt_magic = math.sqrt(magic)
    dlat = dlat * (magic * sqrt_magic) / _LAT_SCALE
    dlon = dlon * sqrt_magic / (_LON_SCALE * math.cos(rad_lat))
    return dlat, dlon


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """WGS84 -> GCJ-02 (the published formula); the identity outside `CHINA_BOX`."""
    if not in_china(lat, lon):
        return lat, lon
    dlat, dlon = _gcj_offset(lat, lon)
    return lat + dlat, lon + dlon


def gcj02_to_wgs84(lat: float, lon: float) -> tuple[float, float]:
    """GCJ-02 -> WGS84, the exact inverse of `wgs84_to_gcj02` by iteration."""
    if not in_china(lat, lon):
        return lat, lon
    dlat, dlon = _gcj_offset(lat, lon)
    w_lat, w_lon = lat - dlat, lon - dlon  # the usual one-step estimate, off by metres
    for _ in range(INVERSE_MAX_STEPS):
        g_lat, g_lon = wgs84_to_gcj02(w_lat, w_lon)
        err_lat, err_lon = g_lat - lat, g_lon - lon
        w_lat -= err_lat
        w_lon -= err_lon
        if abs(err_lat) < INVERSE_TOL_DEG and abs(err_lon) < INVERSE_TOL_DEG:
            break
    return w_lat, w_lon


def gcj02_to_bd09(lat: float, lon: float) -> tuple[float, float]:
    """GCJ-02 -> BD-09 (Baidu's published formula); the identity outside `CHINA_BOX`."""
    if not in_china(lat, lon):
        return lat, lon
    z = math.hypot(lon, lat) + 0.00002 * math.sin(lat * X_PI)
    theta = math.atan2(lat, lon) + 0.000003 * math.cos(lon * X_PI)
    return z * math.sin(theta) + BD_DLAT, z * math.cos(theta) + BD_DLON


def bd09_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """BD-09 -> GCJ-02, the exact inverse of `gcj02_to_bd09` by iteration."""
    if not in_china(lat, lon):
        return lat, lon
    x = lon - BD_DLON
    y = lat - BD_DLAT
    z = math.hypot(x, y) - 0.00002 * math.sin(y * X_PI)
    theta = math.atan2(y, x) - 0.000003 * math.cos(x * X_PI)
    g_lat, g_lon = z * math.sin(theta), z * math.cos(theta)  # Baidu's estimate, ~1e-6 off
    for _ in range(INVERSE_MAX_STEPS):
        b_lat, b_lon = gcj02_to_bd09(g_lat, g_lon)
        err_lat, err_lon = b_lat - lat, b_lon - lon
        g_lat -= err_lat
        g_lon -= err_lon
        if abs(err_lat) < INVERSE_TOL_DEG and abs(err_lon) < INVERSE_TOL_DEG:
            break
    return g_lat, g_lon


def wgs84_to_bd09(lat: float, lon: float) -> tuple[float, float]:
    """WGS84 -> BD-09, through GCJ-02."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lat, lon))


def bd09_to_wgs84(lat: float, lon: float) -> tuple[float, float]:
    """BD-09 -> WGS84, through GCJ-02."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lat, lon))


def to_wgs84(lat: float, lon: float, coord_sys: CoordSys) -> tuple[float, float]:
    """(lat, lon) given in `coord_sys`, in WGS84."""
    if coord_sys is CoordSys.GCJ02:
        return gcj02_to_wgs84(lat, lon)
    if coord_sys is CoordSys.BD09:
        return bd09_to_wgs84(lat, lon)
    return lat, lon


def from_wgs84(lat: float, lon: float, coord_sys: CoordSys) -> tuple[float, float]:
    """WGS84 (lat, lon) in `coord_sys`."""
    if coord_sys is CoordSys.GCJ02:
        return wgs84_to_gcj02(lat, lon)
    if coord_sys is CoordSys.BD09:
        return wgs84_to_bd09(lat, lon)
    return lat, lon


# -- arrays: the same formulas, element by element (arguments broadcast)


def _arrays(lats: ArrayLike, lons: ArrayLike) -> tuple[F64, F64]:
    lat, lon = np.broadcast_arrays(
        np.asarray(lats, dtype=np.float64), np.asarray(lons, dtype=np.float64)
    )
    return lat.copy(), lon.copy()


def in_china_np(lats: ArrayLike, lons: ArrayLike) -> NDArray[np.bool_]:
    """Vectorized `in_china`."""
    lat, lon = _arrays(lats, lons)
    inside: NDArray[np.bool_] = (
        (lat >= _MIN_LAT) & (lat <= _MAX_LAT) & (lon >= _MIN_LON) & (lon <= _MAX_LON)
    )
    return inside


def _gcj_offset_np(lat: F64, lon: F64) -> tuple[F64, F64]:
    x = lon - 105.0
    y = lat - 35.0
    x_pi = x * math.pi
    y_pi = y * math.pi
    common = (20.0 * np.sin(6.0 * x_pi) + 20.0 * np.sin(2.0 * x_pi)) * 2.0 / 3.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    dlat += common + (20.0 * np.sin(y_pi) + 40.0 * np.sin(y_pi / 3.0)) * 2.0 / 3.0
    dlat += (160.0 * np.sin(y_pi / 12.0) + 320.0 * np.sin(y_pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    dlon += common + (20.0 * np.sin(x_pi) + 40.0 * np.sin(x_pi / 3.0)) * 2.0 / 3.0
    dlon += (150.0 * np.sin(x_pi / 12.0) + 300.0 * np.sin(x_pi / 30.0)) * 2.0 / 3.0
    rad_lat = lat * _DEG
    sin_lat = np.sin(rad_lat)
    magic = 1.0 - KRASOVSKY_EE * sin_lat * sin_lat
    sqrt_magic = np.sqrt(magic)
    return dlat * (magic * sqrt_magic) / _LAT_SCALE, dlon * sqrt_magic / (
        _LON_SCALE * np.cos(rad_lat)
    )


def wgs84_to_gcj02_np(lats: ArrayLike, lons: ArrayLike) -> tuple[F64, F64]:
    """Vectorized `wgs84_to_gcj02`."""
    lat, lon = _arrays(lats, lons)
    inside = in_china_np(lat, lon)
    dlat, dlon = _gcj_offset_np(lat, lon)
    return np.where(inside, lat + dlat, lat), np.where(inside, lon + dlon, lon)


def gcj02_to_wgs84_np(lats: ArrayLike, lons: ArrayLike) -> tuple[F64, F64]:
    """Vectorized `gcj02_to_wgs84`."""
    lat, lon = _arrays(lats, lons)
    inside = in_china_np(lat, lon)
    dlat, dlon = _gcj_offset_np(lat, lon)
    w_lat, w_lon = np.where(inside, lat - dlat, lat), np.where(inside, lon - dlon, lon)
    for _ in range(INVERSE_MAX_STEPS):
        g_lat, g_lon = wgs84_to_gcj02_np(w_lat, w_lon)
        err_lat = np.where(inside, g_lat - lat, 0.0)
        err_lon = np.where(inside, g_lon - lon, 0.0)
        w_lat -= err_lat
        w_lon -= err_lon
        if _converged(err_lat, err_lon):
            break
    return w_lat, w_lon


def gcj02_to_bd09_np(lats: ArrayLike, lons: ArrayLike) -> tuple[F64, F64]:
    """Vectorized `gcj02_to_bd09`."""
    lat, lon = _arrays(lats, lons)
    inside = in_china_np(lat, lon)
    z = np.hypot(lon, lat) + 0.00002 * np.sin(lat * X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * X_PI)
    b_lat = z * np.sin(theta) + BD_DLAT
    b_lon = z * np.cos(theta) + BD_DLON
    return np.where(inside, b_lat, lat), np.where(inside, b_lon, lon)


def bd09_to_gcj02_np(lats: ArrayLike, lons: ArrayLike) -> tuple[F64, F64]:
    """Vectorized `bd09_to_gcj02`."""
    lat, lon = _arrays(lats, lons)
    inside = in_china_np(lat, lon)
    x = lon - BD_DLON
    y = lat - BD_DLAT
    z = np.hypot(x, y) - 0.00002 * np.sin(y * X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * X_PI)
    g_lat = np.where(inside, z * np.sin(theta), lat)
    g_lon = np.where(inside, z * np.cos(theta), lon)
    for _ in range(INVERSE_MAX_STEPS):
        b_lat, b_lon = gcj02_to_bd09_np(g_lat, g_lon)
        err_lat = np.where(inside, b_lat - lat, 0.0)
        err_lon = np.where(inside, b_lon - lon, 0.0)
        g_lat -= err_lat
        g_lon -= err_lon
        if _converged(err_lat, err_lon):
            break
    return g_lat, g_lon


def _converged(err_lat: F64, err_lon: F64) -> bool:
    if err_lat.size == 0:
        return True
    return float(max(np.abs(err_lat).max(), np.abs(err_lon).max())) < INVERSE_TOL_DEG


def to_wgs84_np(lats: ArrayLike, lons: ArrayLike, coord_sys: CoordSys) -> tuple[F64, F64]:
    """Vectorized `to_wgs84`."""
    if coord_sys is CoordSys.GCJ02:
        return gcj02_to_wgs84_np(lats, lons)
    if coord_sys is CoordSys.BD09:
        return gcj02_to_wgs84_np(*bd09_to_gcj02_np(lats, lons))
    return _arrays(lats, lons)


def from_wgs84_np(lats: ArrayLike, lons: ArrayLike, coord_sys: CoordSys) -> tuple[F64, F64]:
    """Vectorized `from_wgs84`."""
    if coord_sys is CoordSys.GCJ02:
        return wgs84_to_gcj02_np(lats, lons)
    if coord_sys is CoordSys.BD09:
        return gcj02_to_bd09_np(*wgs84_to_gcj02_np(lats, lons))
    return _arrays(lats, lons)


def positions_to_wgs84(
    positions: Sequence[Sequence[float]], coord_sys: CoordSys
) -> list[tuple[float, float]]:
    """GeoJSON positions ([lon, lat], any more values dropped) given in `coord_sys`, as WGS84
    (lon, lat) tuples; equal positions stay equal, so a closed ring stays closed."""
    return _convert_positions(positions, coord_sys, to_wgs84_np)


def positions_from_wgs84(
    positions: Sequence[Sequence[float]], coord_sys: CoordSys
) -> list[tuple[float, float]]:
    """WGS84 GeoJSON positions as (lon, lat) tuples in `coord_sys`; equal positions stay equal."""
    return _convert_positions(positions, coord_sys, from_wgs84_np)


def _convert_positions(
    positions: Sequence[Sequence[float]],
    coord_sys: CoordSys,
    convert: Callable[[ArrayLike, ArrayLike, CoordSys], tuple[F64, F64]],
) -> list[tuple[float, float]]:
    if not positions:
        return []
    lonlat = np.asarray([(p[0], p[1]) for p in positions], dtype=np.float64)
    lats, lons = convert(lonlat[:, 1], lonlat[:, 0], coord_sys)
    out = list(zip(lons.tolist(), lats.tolist(), strict=True))
    # numpy may round an element differently by its place in the array (SIMD body and tail):
    # each distinct input gets the answer of its first occurrence.
    first: dict[tuple[float, float], tuple[float, float]] = {}
    for i, position in enumerate(map(tuple, lonlat.tolist())):
        out[i] = first.setdefault(position, out[i])
    return out
