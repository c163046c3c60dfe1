"""Chinese map coordinates (DESIGN §9): WGS84, GCJ-02 and BD-09, for fences and readings.

Reference pairs come from published sources, each named where it is used; the forward
formulas are exact, so they must agree with the references to float precision (or to the
rounding of a 6-decimal document), and the inverses must round-trip to well under 1 cm.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st

from alerts.model import Alert
from devices.decode import decode
from devices.readings import GpsFix, Reject
from engine.core.config import Config
from engine.runtime.replay import Replay
from geofence.coords import (
    CHINA_BOX,
    CoordSys,
    bd09_to_gcj02,
    bd09_to_gcj02_np,
    bd09_to_wgs84,
    from_wgs84,
    from_wgs84_np,
    gcj02_to_bd09,
    gcj02_to_bd09_np,
    gcj02_to_wgs84,
    gcj02_to_wgs84_np,
    in_china,
    to_wgs84,
    to_wgs84_np,
    wgs84_to_bd09,
    wgs84_to_gcj02,
    wgs84_to_gcj02_np,
)
from geofence.fence import FenceError, fence_to_feature, load_fences, parse_fence
from geofence.geo import haversine_m
from geofence.index import FenceIndex
from lending.model import parse_loans
from tests.factories import T0, VIN, offset, property_settings

SETTINGS = property_settings(300)

# googollee/eviltransform, test suites of every port (go/transform_test.go, python/test.py):
# (wgs_lat, wgs_lon, gcj_lat, gcj_lon).
EVILTRANSFORM = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),  # Shanghai
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),  # Shenzhen
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),  # Beijing
]
# wandergis/coordtransform README, each function applied to (116.404, 39.915), near Tiananmen.
TIANANMEN = (39.915, 116.404)
CT_WGS84_TO_GCJ02 = (39.91640428150164, 116.41024449916938)
CT_GCJ02_TO_BD09 = (39.92133699351021, 116.41036949371029)
CT_BD09_TO_GCJ02 = (39.90865673957631, 116.39762729119315)  # Baidu's one-step inverse
CT_GCJ02_TO_WGS84 = (39.91359571849836, 116.39775550083061)  # the one-step inverse
# AMap Web Service "coordinate/convert" documentation, its example request and answer
# (coordsys=gps, locations=116.481499,39.990475|116.481499,39.990375), as mirrored at
# https://apifox.com/apidoc/project-759159/api-14671355: AMap's own server, 12 decimals.
AMAP_GPS_TO_GCJ02 = [
    ((39.990475, 116.481499), (39.991754014757, 116.487585177952)),
    ((39.990375, 116.481499), (39.991653917101, 116.487585177952)),
]
# Aliyun address purification TransferCoord documentation example (Hangzhou), 6 decimals:
# https://help.aliyun.com/zh/address-purification/addrpapi/developer-reference/coordinate-system-conversion
ALIYUN_GCJ02 = (30.279164, 120.026268)
ALIYUN_BD09 = (30.285238, 120.032768)
ALIYUN_WGS84 = (30.281543, 120.021519)  # the one-step inverse, ~1.4 m from the exact one

SHANGHAI = (31.2304, 121.4737)  # People's Square, WGS84
SHANGHAI_GCJ = wgs84_to_gcj02(*SHANGHAI)

MIN_LAT, MIN_LON, MAX_LAT, MAX_LON = CHINA_BOX
# Away from the box's edge, where the forward maps jump from offset to identity.
inside_lat = st.floats(MIN_LAT + 0.05, MAX_LAT - 0.05)
inside_lon = st.floats(MIN_LON + 0.05, MAX_LON - 0.05)


def off_by(got: tuple[float, float], want: tuple[float, float]) -> float:
    """The larger of the two coordinate differences, degrees."""
    return max(abs(got[0] - want[0]), abs(got[1] - want[1]))


# -- published reference pairs


@pytest.mark.parametrize(("wgs_lat", "wgs_lon", "gcj_lat", "gcj_lon"), EVILTRANSFORM)
def test_eviltransform_pairs(
    wgs_lat: float, wgs_lon: float, gcj_lat: float, gcj_lon: float
) -> None:
    assert off_by(wgs84_to_gcj02(wgs_lat, wgs_lon), (gcj_lat, gcj_lon)) < 1e-12
    assert off_by(gcj02_to_wgs84(gcj_lat, gcj_lon), (wgs_lat, wgs_lon)) < 1e-12
    # eviltransform asks 0.5 m of its own exact inverse; this one is at float precision
    assert haversine_m(*gcj02_to_wgs84(gcj_lat, gcj_lon), wgs_lat, wgs_lon) < 1e-6


def test_coordtransform_readme_tiananmen() -> None:
    assert off_by(wgs84_to_gcj02(*TIANANMEN), CT_WGS84_TO_GCJ02) < 1e-12
    assert off_by(gcj02_to_bd09(*TIANANMEN), CT_GCJ02_TO_BD09) < 1e-12
    # coordtransform's inverses are one-step estimates; ours are exact, so they differ a
    # little (4e-7 and 5e-7 degrees here) and ours round-trip where theirs do not
    assert off_by(bd09_to_gcj02(*TIANANMEN), CT_BD09_TO_GCJ02) < 1e-6
    assert off_by(gcj02_to_bd09(*bd09_to_gcj02(*TIANANMEN)), TIANANMEN) < 1e-12
    assert off_by(gcj02_to_bd09(*CT_BD09_TO_GCJ02), TIANANMEN) > 1e-7
    assert off_by(gcj02_to_wgs84(*TIANANMEN), CT_GCJ02_TO_WGS84) < 1e-6
    assert off_by(wgs84_to_gcj02(*gcj02_to_wgs84(*TIANANMEN)), TIANANMEN) < 1e-12


@pytest.mark.parametrize(("wgs", "gcj"), AMAP_GPS_TO_GCJ02)
def test_amap_convert_api_example(wgs: tuple[float, float], gcj: tuple[float, float]) -> None:
    # AMap's own server: the published formula agrees to 4e-7 degrees (about 4 cm)
    assert off_by(wgs84_to_gcj02(*wgs), gcj) < 1e-6
    assert haversine_m(*gcj02_to_wgs84(*gcj), *wgs) < 0.1


def test_aliyun_transfer_coord_example() -> None:
    assert off_by(gcj02_to_bd09(*ALIYUN_GCJ02), ALIYUN_BD09) <= 5e-7  # 6-decimal rounding
    assert off_by(bd09_to_gcj02(*ALIYUN_BD09), ALIYUN_GCJ02) <= 1e-6
    # Aliyun's WGS84 is the one-step estimate: 1.3e-5 degrees (1.4 m) from the exact inverse
    assert 1e-6 < off_by(gcj02_to_wgs84(*ALIYUN_GCJ02), ALIYUN_WGS84) < 2e-5
    assert haversine_m(*gcj02_to_wgs84(*ALIYUN_GCJ02), *ALIYUN_WGS84) < 2.0


# -- properties


@SETTINGS
@given(inside_lat, inside_lon)
def test_gcj02_round_trips_inside_china(lat: float, lon: float) -> None:
    assert off_by(gcj02_to_wgs84(*wgs84_to_gcj02(lat, lon)), (lat, lon)) < 1e-9
    assert off_by(wgs84_to_gcj02(*gcj02_to_wgs84(lat, lon)), (lat, lon)) < 1e-9


@SETTINGS
@given(inside_lat, inside_lon)
def test_bd09_round_trips_inside_china(lat: float, lon: float) -> None:
    assert off_by(bd09_to_wgs84(*wgs84_to_bd09(lat, lon)), (lat, lon)) < 1e-9
    assert off_by(gcj02_to_bd09(*bd09_to_gcj02(lat, lon)), (lat, lon)) < 1e-9
    assert off_by(to_wgs84(*from_wgs84(lat, lon, CoordSys.BD09), CoordSys.BD09), (lat, lon)) < 1e-9


@SETTINGS
@given(inside_lat, inside_lon)
def test_offsets_inside_china(lat: float, lon: float) -> None:
    gcj_m = haversine_m(lat, lon, *wgs84_to_gcj02(lat, lon))
    bd_m = haversine_m(lat, lon, *wgs84_to_bd09(lat, lon))
    assert 0.0 < gcj_m < 750.0  # 5-730 m over the whole box
    assert 400.0 < bd_m < 1600.0
    if 100.0 <= lon <= 125.0 and 20.0 <= lat <= 45.0:  # where the cars and the lenders are
        assert 100.0 < gcj_m < 700.0


def test_offset_in_shanghai_is_about_500_m() -> None:
    assert 450.0 < haversine_m(*SHANGHAI, *SHANGHAI_GCJ) < 520.0


@SETTINGS
@given(st.floats(-90.0, 90.0), st.floats(-180.0, 180.0))
def test_outside_china_every_system_is_wgs84(lat: float, lon: float) -> None:
    if in_china(lat, lon):
        return
    for system in CoordSys:
        assert to_wgs84(lat, lon, system) == (lat, lon)
        assert from_wgs84(lat, lon, system) == (lat, lon)


def test_box_edges_are_inside_and_wgs84_is_the_identity() -> None:
    assert in_china(MIN_LAT, MIN_LON)
    assert in_china(MAX_LAT, MAX_LON)
    assert not in_china(MIN_LAT - 1e-9, 100.0)
    assert not in_china(30.0, MAX_LON + 1e-9)
    assert to_wgs84(*SHANGHAI, CoordSys.WGS84) == SHANGHAI
    assert from_wgs84(*SHANGHAI, CoordSys.WGS84) == SHANGHAI


def test_arrays_agree_with_points() -> None:
    rng = np.random.default_rng(7)
    lats = np.concatenate([rng.uniform(-80, 80, 500), rng.uniform(MIN_LAT, MAX_LAT, 1500)])
    lons = np.concatenate([rng.uniform(-179, 179, 500), rng.uniform(MIN_LON, MAX_LON, 1500)])
    pairs = [
        (wgs84_to_gcj02_np, wgs84_to_gcj02),
        (gcj02_to_wgs84_np, gcj02_to_wgs84),
        (gcj02_to_bd09_np, gcj02_to_bd09),
        (bd09_to_gcj02_np, bd09_to_gcj02),
    ]
    for vectorized, scalar in pairs:
        got_lat, got_lon = vectorized(lats, lons)
        want = np.array([scalar(a, b) for a, b in zip(lats, lons, strict=True)])
        assert np.abs(got_lat - want[:, 0]).max() < 1e-11, vectorized.__name__
        assert np.abs(got_lon - want[:, 1]).max() < 1e-11, vectorized.__name__
    for system in CoordSys:
        back_lat, back_lon = to_wgs84_np(*from_wgs84_np(lats, lons, system), system)
        assert np.abs(back_lat - lats).max() < 1e-9
        assert np.abs(back_lon - lons).max() < 1e-9
    empty = wgs84_to_gcj02_np([], [])
    assert empty[0].shape == (0,)
    assert gcj02_to_wgs84_np([], [])[0].shape == (0,)


# -- fences


def square_ring(center: tuple[float, float], half_m: float) -> list[list[float]]:
    corners = [(-half_m, -half_m), (-half_m, half_m), (half_m, half_m), (half_m, -half_m)]
    ring = [offset(*center, n, e) for n, e in corners]
    return [[lon, lat] for lat, lon in [*ring, ring[0]]]


def feature(geometry: dict[str, Any], **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": {"kind": "zone", **props}}


@pytest.mark.parametrize("system", [CoordSys.GCJ02, CoordSys.BD09])
def test_polygon_in_a_chinese_system_is_stored_in_wgs84(system: CoordSys) -> None:
    ring = square_ring(from_wgs84(*SHANGHAI, system), 150.0)
    fence = parse_fence(
        "lot", feature({"type": "Polygon", "coordinates": [ring]}, coord_sys=system.value)
    )
    assert fence.geometry.contains(shapely.Point(SHANGHAI[1], SHANGHAI[0]))
    stored: Any = fence_to_feature(fence)
    assert stored["properties"] == {
        "name": "lot",
        "kind": "zone",
        "category": None,
        "dwell_s": None,
        "coord_sys": "wgs84",
        "declared_coord_sys": system.value,
    }
    wgs_ring = stored["geometry"]["coordinates"][0]
    for (lon, lat), (glon, glat) in zip(wgs_ring, ring, strict=True):
        assert off_by((lat, lon), to_wgs84(glat, glon, system)) < 1e-12
    assert wgs_ring[0] == wgs_ring[-1]
    # as a store keeps it: parsing the normalised Feature again changes nothing
    again = parse_fence("lot", stored)
    assert again == fence
    assert fence_to_feature(again) == stored
    back: Any = fence_to_feature(again, system)
    assert back["properties"]["coord_sys"] == system.value
    for (lon, lat), (glon, glat) in zip(back["geometry"]["coordinates"][0], ring, strict=True):
        assert off_by((lat, lon), (glat, glon)) < 1e-10


def test_circle_in_gcj02_is_centred_on_the_wgs84_point() -> None:
    point = {"type": "Point", "coordinates": [SHANGHAI_GCJ[1], SHANGHAI_GCJ[0]]}
    fence = parse_fence("c", feature(point, radius_m=300, coord_sys="gcj02"))
    assert fence.center is not None
    assert off_by(fence.center, SHANGHAI) < 1e-10
    back: Any = fence_to_feature(fence, CoordSys.GCJ02)
    lon, lat = back["geometry"]["coordinates"]
    assert off_by((lat, lon), SHANGHAI_GCJ) < 1e-10
    assert back["properties"]["radius_m"] == 300.0
    naive = parse_fence("n", feature(point, radius_m=300)).center
    assert naive is not None
    assert haversine_m(*naive, *SHANGHAI) > 450.0


def test_multipolygon_converts_every_ring_and_explicit_wgs84_is_echoed() -> None:
    west, east = square_ring(SHANGHAI_GCJ, 100.0), square_ring(offset(*SHANGHAI_GCJ, 0, 500), 100)
    doc = feature({"type": "MultiPolygon", "coordinates": [[west], [east]]}, coord_sys="gcj02")
    fence = parse_fence("m", doc)
    back: Any = fence_to_feature(fence, CoordSys.GCJ02)
    for got, want in zip(back["geometry"]["coordinates"], [[west], [east]], strict=True):
        assert np.abs(np.array(got) - np.array(want)).max() < 1e-10
    plain = parse_fence("p", feature({"type": "Polygon", "coordinates": [west]}))
    unasked: Any = fence_to_feature(plain)
    assert "coord_sys" not in unasked["properties"]
    asked: Any = fence_to_feature(plain, CoordSys.WGS84)
    assert asked["properties"]["coord_sys"] == "wgs84"
    assert asked["geometry"]["coordinates"] == [[list(p) for p in west]]


@pytest.mark.parametrize(
    ("props", "field"),
    [
        ({"coord_sys": "GCJ-02"}, "properties.coord_sys"),
        ({"coord_sys": 2}, "properties.coord_sys"),
        ({"coord_sys": ["gcj02"]}, "properties.coord_sys"),
        ({"coord_sys": "gcj02", "declared_coord_sys": "amap"}, "properties.declared_coord_sys"),
    ],
)
def test_unknown_coord_sys_names_the_property(props: dict[str, Any], field: str) -> None:
    doc = feature({"type": "Polygon", "coordinates": [square_ring(SHANGHAI, 100.0)]}, **props)
    with pytest.raises(FenceError) as caught:
        parse_fence("bad", doc)
    assert caught.value.field == field
    assert "'wgs84', 'gcj02' (AMap, Tencent) or 'bd09' (Baidu)" in str(caught.value)


def test_self_intersection_is_placed_in_wgs84_and_says_so() -> None:
    lat, lon = SHANGHAI_GCJ
    bow_tie = [[lon, lat], [lon + 0.01, lat + 0.01], [lon + 0.01, lat], [lon, lat + 0.01]]
    doc = feature({"type": "Polygon", "coordinates": [[*bow_tie, bow_tie[0]]]}, coord_sys="gcj02")
    with pytest.raises(
        FenceError, match=r"self-intersection at .* \(WGS84, converted from gcj02\)"
    ):
        parse_fence("bow", doc)


# -- readings


def gps_payload(at: tuple[float, float], t_s: int = 0, **extra: object) -> dict[str, object]:
    return {"ts": T0 + t_s * 1000, "lat": at[0], "lon": at[1], **extra}


def line(topic: str, payload: object) -> bytes:
    return orjson.dumps({"topic": topic, "payload": payload})


@pytest.mark.parametrize("system", list(CoordSys))
def test_reading_in_any_system_lands_on_the_wgs84_point(system: CoordSys) -> None:
    at = from_wgs84(*SHANGHAI, system)
    decoded = decode(
        "telematics/trk-9/gps", orjson.dumps(gps_payload(at, coord_sys=system.value)), None
    )
    assert decoded.rejects == []
    (fix,) = decoded.readings
    assert isinstance(fix, GpsFix)
    assert off_by((fix.lat, fix.lon), SHANGHAI) < 1e-10


@pytest.mark.parametrize(
    ("value", "reason"),
    [("GCJ02", "out_of_range"), ("baidu", "out_of_range"), (2, "wrong_type"), ({}, "wrong_type")],
)
def test_reading_with_unknown_coord_sys_is_rejected(value: object, reason: str) -> None:
    payload = [gps_payload(SHANGHAI_GCJ, coord_sys=value), gps_payload(SHANGHAI_GCJ, 1)]
    decoded = decode("telematics/trk-9/gps", orjson.dumps(payload), None)
    (reject,) = decoded.rejects
    assert (reject.reason.value, reject.index) == (reason, 0)
    assert reject.detail.startswith("coord_sys: ")
    (sibling,) = decoded.readings  # still taken, as sent (WGS84)
    assert isinstance(sibling, GpsFix)
    assert sibling.lat == SHANGHAI_GCJ[0]


def test_out_of_range_lat_is_refused_before_coord_sys_is_looked_at() -> None:
    payload = gps_payload((95.0, 121.0), coord_sys="martian")
    (reject,) = decode("telematics/trk-9/gps", orjson.dumps(payload), None).rejects
    assert reject.detail.startswith("lat: ")


def test_null_coord_sys_is_wgs84() -> None:
    payload = gps_payload(SHANGHAI, coord_sys=None)
    (fix,) = decode("telematics/trk-9/gps", orjson.dumps(payload), None).readings
    assert isinstance(fix, GpsFix)
    assert (fix.lat, fix.lon) == SHANGHAI


# -- end to end: a fence drawn on AMap catches the car a naive engine misses by ~500 m


def test_replay_gcj02_fence_catches_the_car_a_naive_fence_misses(tmp_path: Path) -> None:
    center = [SHANGHAI_GCJ[1], SHANGHAI_GCJ[0]]  # as read off AMap
    lot = {"kind": "risk_site", "category": "impound", "radius_m": 300}
    fences = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "impound-amap",
                "geometry": {"type": "Point", "coordinates": center},
                "properties": {**lot, "coord_sys": "gcj02"},
            },
            {
                "type": "Feature",
                "id": "impound-naive",  # the same numbers taken for WGS84
                "geometry": {"type": "Point", "coordinates": center},
                "properties": lot,
            },
        ],
    }
    (tmp_path / "fences.geojson").write_bytes(orjson.dumps(fences))
    loans = parse_loans([{"loan_id": "L-9", "vin": VIN, "device_ids": ["trk-9", "amap-9"]}])
    far = offset(*SHANGHAI, -3000.0, 0.0)
    lines = [
        # a WGS84 tracker drives in from 3 km south and parks at the lot, ignition off
        *(
            line("telematics/trk-9/gps", gps_payload(at, t, ignition=True))
            for t, at in [(0, far), (120, offset(*SHANGHAI, -1500.0, 0.0))]
        ),
        *(
            line("telematics/trk-9/gps", gps_payload(SHANGHAI, t, ignition=False))
            for t in range(300, 1500, 300)
        ),
        # a phone app reporting AMap coordinates at the same spot
        line("telematics/amap-9/gps", gps_payload(far, 0, coord_sys="gcj02")),
        line("telematics/amap-9/gps", gps_payload(SHANGHAI_GCJ, 600, coord_sys="gcj02")),
    ]
    alerts: list[Alert] = []
    rejects: list[Reject] = []
    index = FenceIndex.build(load_fences(tmp_path / "fences.geojson"))
    replay = Replay(index, loans, Config(), alerts.append, rejects.append)
    replay.feed(lines)
    replay.finish()

    assert rejects == []
    by_fence = {(a.device_id, a.type, a.fence_id) for a in alerts}
    for device in ("trk-9", "amap-9"):
        assert (device, "geofence.enter", "impound-amap") in by_fence
        assert (device, "pledge.risk_site_dwell", "impound-amap") in by_fence
    assert not [a for a in alerts if a.fence_id == "impound-naive"]
    entered = next(a for a in alerts if a.device_id == "amap-9" and a.type == "geofence.enter")
    assert entered.lat is not None
    assert entered.lon is not None
    assert off_by((entered.lat, entered.lon), SHANGHAI) < 1e-9  # stored and shown in WGS84
    # the naive centre is ~480 m away: beyond 300 m and the 25 m of hysteresis
    naive_center = index.by_id["impound-naive"].center
    assert naive_center is not None
    assert math.isclose(haversine_m(*naive_center, *SHANGHAI), 482, abs_tol=15)
