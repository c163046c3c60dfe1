"""`?coord_sys=` on the routes that answer positions (issue 14): a device's `last_fix`, the
cars `inside` a fence or `near` a point (whose point is given in that system), a track's
points and an alert's `lat`/`lon` come back in GCJ-02 or BD-09 for a Chinese map client,
named by a `coord_sys` field; WGS84 answers stay byte for byte as they were.

Over real connections: test_api's `live` engine on SQLite, fed readings through its queue."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.api.schemas import alert_in, position_in
from geofence.coords import CHINA_BOX, CoordSys, from_wgs84, to_wgs84, wgs84_to_gcj02
from geofence.geo import haversine_m
from tests.factories import OTHER_VIN, offset, property_settings
from tests.test_api import (
    Live,
    assert_problem,
    live,  # noqa: F401  # the plain fixture: an engine on SQLite fed by a queue
    loan_doc,
    polygon_feature,
    wait_for,
)

SHANGHAI = (31.2397, 121.4998)  # Lujiazui, WGS84
BEIJING = (39.9087, 116.3975)  # Tiananmen, WGS84
CHENGDU = (30.6586, 104.0648)  # Tianfu Square, WGS84: the alerts' fence
SYSTEMS = (CoordSys.GCJ02, CoordSys.BD09)
BAD_VALUES = ("GCJ02", "baidu", "")
MIN_MS = 60_000
EDGE_DEG = 0.05


def gps(lv: Live, device: str, at: tuple[float, float], ts_ms: int, **extra: Any) -> None:
    """Publish one gps reading of `device` at WGS84 `at`, committed when this returns."""
    fix = {"ts": ts_ms, "lat": at[0], "lon": at[1], **extra}
    lv.source.publish(f"telematics/{device}/gps", fix)


def assert_bad_coord_sys(lv: Live, path: str, params: dict[str, str]) -> None:
    for value in BAD_VALUES:
        response = lv.http.get(path, params={**params, "coord_sys": value})
        body = assert_problem(response, 400, "invalid-parameter", "coord_sys")
        assert body["errors"][0]["field"] == "coord_sys"


# -- the pure helpers

CHINA_POINT_IN = (
    # inside the box by more than the offsets: across its edge the systems jump (coords.py)
    st.floats(CHINA_BOX[0] + EDGE_DEG, CHINA_BOX[2] - EDGE_DEG),
    st.floats(CHINA_BOX[1] + EDGE_DEG, CHINA_BOX[3] - EDGE_DEG),
    st.sampled_from(SYSTEMS),
)
"""(lat, lon, system): a WGS84 point in China and a system to give it in."""


@property_settings(200)
@given(*CHINA_POINT_IN)
def test_position_in_converts_lat_lon_only_and_round_trips(
    lat: float, lon: float, system: CoordSys
) -> None:
    body: dict[str, object] = {"id": "a1", "lat": lat, "lon": lon, "details": {"from_lat": lat}}
    before = dict(body)
    out = position_in(body, system)
    assert body == before  # the stored document is not touched
    assert out["coord_sys"] == system.value
    got_lat, got_lon = out["lat"], out["lon"]
    assert isinstance(got_lat, float)
    assert isinstance(got_lon, float)
    assert (got_lat, got_lon) == from_wgs84(lat, lon, system)
    back = to_wgs84(got_lat, got_lon, system)
    assert abs(back[0] - lat) < 1e-6
    assert abs(back[1] - lon) < 1e-6
    assert {k: v for k, v in out.items() if k not in {"lat", "lon", "coord_sys"}} == {
        "id": "a1",
        "details": {"from_lat": lat},
    }
    assert position_in(body, None) is body
    assert position_in(body, CoordSys.WGS84) is body
    no_fix = position_in({"lat": None, "lon": None}, system)
    assert no_fix == {"lat": None, "lon": None, "coord_sys": system.value}


@property_settings(100)
@given(*CHINA_POINT_IN)
def test_alert_in_converts_every_lat_lon_pair_of_details(
    lat: float, lon: float, system: CoordSys
) -> None:
    details: dict[str, object] = {
        "from_lat": lat,
        "from_lon": lon,
        "parked_lat": None,  # a tow alert without a parked fix
        "parked_lon": None,
        "other_lat": lat,  # a half pair is not a position
        "speed_kmh": 120.0,
        "reasons": [{"lat": lat, "lon": lon}],  # deeper evidence stays as it is
    }
    body: dict[str, object] = {"id": "a1", "lat": lat, "lon": lon, "details": details}
    before = {**body, "details": dict(details)}
    out = alert_in(body, system)
    assert body == before  # the stored document is not touched
    assert (out["lat"], out["lon"]) == from_wgs84(lat, lon, system)
    moved = out["details"]
    assert isinstance(moved, dict)
    assert (moved["from_lat"], moved["from_lon"]) == from_wgs84(lat, lon, system)
    unchanged = ("parked_lat", "parked_lon", "other_lat", "speed_kmh", "reasons")
    assert {k: moved[k] for k in unchanged} == {k: details[k] for k in unchanged}
    assert alert_in(body, None) is body
    assert alert_in(body, CoordSys.WGS84) is body


# -- devices


def test_a_device_fix_comes_back_in_the_system_asked_for(live: Live) -> None:  # noqa: F811  # the imported fixture
    device = "cs-dev"
    gps(live, device, SHANGHAI, int(time.time() * 1000))
    path = f"/v1/devices/{device}"
    plain = live.http.get(path)
    assert plain.status_code == 200, plain.text
    fix = plain.json()["last_fix"]
    assert (fix["lat"], fix["lon"]) == SHANGHAI
    assert "coord_sys" not in fix
    assert "coord_sys" not in plain.json()
    assert live.http.get(path, params={"coord_sys": "wgs84"}).content == plain.content

    for system in SYSTEMS:
        response = live.http.get(path, params={"coord_sys": system.value})
        assert response.status_code == 200, response.text
        body = response.json()
        got = body["last_fix"]
        assert got["coord_sys"] == system.value
        assert (got["lat"], got["lon"]) == from_wgs84(*SHANGHAI, system)
        assert haversine_m(got["lat"], got["lon"], *SHANGHAI) > 300  # really moved
        back = to_wgs84(got["lat"], got["lon"], system)
        assert abs(back[0] - SHANGHAI[0]) < 1e-6
        assert abs(back[1] - SHANGHAI[1]) < 1e-6
        assert got["ts"] == fix["ts"]
        # only the fix changes: `inside` and the rest are as in the WGS84 answer
        assert {k: v for k, v in body.items() if k != "last_fix"} == {
            k: v for k, v in plain.json().items() if k != "last_fix"
        }
    assert_bad_coord_sys(live, path, {})


def test_near_takes_its_point_in_the_system_asked_for(live: Live) -> None:  # noqa: F811  # the imported fixture
    """A point read off AMap finds the car 100 m from it; the same numbers taken as WGS84
    lie ~500 m away and miss it."""
    car = offset(*BEIJING, 100.0, 0.0)
    gps(live, "cs-near", car, int(time.time() * 1000))
    for system in SYSTEMS:
        lat, lon = from_wgs84(*BEIJING, system)
        assert haversine_m(lat, lon, *car) > 400  # as WGS84, out of the 200 m radius
        near = f"{lat},{lon},200"
        as_wgs = live.http.get("/v1/devices", params={"near": near})
        assert as_wgs.status_code == 200, as_wgs.text
        assert "cs-near" not in [d["device_id"] for d in as_wgs.json()["items"]]

        response = live.http.get("/v1/devices", params={"near": near, "coord_sys": system.value})
        assert response.status_code == 200, response.text
        (found,) = [d for d in response.json()["items"] if d["device_id"] == "cs-near"]
        assert abs(found["distance_m"] - 100.0) < 1.0  # metres between the WGS84 points
        assert found["last_fix"]["coord_sys"] == system.value
        assert (found["last_fix"]["lat"], found["last_fix"]["lon"]) == from_wgs84(*car, system)

    wgs_near = {"near": f"{BEIJING[0]},{BEIJING[1]},200"}
    plain = live.http.get("/v1/devices", params=wgs_near)
    (found,) = [d for d in plain.json()["items"] if d["device_id"] == "cs-near"]
    assert (found["last_fix"]["lat"], found["last_fix"]["lon"]) == car
    assert "coord_sys" not in found["last_fix"]
    wgs = live.http.get("/v1/devices", params={**wgs_near, "coord_sys": "wgs84"})
    assert wgs.content == plain.content
    assert_bad_coord_sys(live, "/v1/devices", wgs_near)


def test_inside_gives_each_fix_in_the_system_asked_for(live: Live) -> None:  # noqa: F811  # the imported fixture
    lot = offset(*SHANGHAI, 0.0, 3000.0)
    assert live.http.put("/v1/fences/cs-lot", json=polygon_feature(lot)).status_code == 201
    wait_for(lambda: "cs-lot" in live.engine.pipeline.index.by_id, "the fence in the index")
    now = int(time.time() * 1000)
    spots = {"cs-in-a": lot, "cs-in-b": offset(*lot, 30.0, -40.0)}
    for device, at in spots.items():
        gps(live, device, at, now)
    plain = live.http.get("/v1/devices", params={"inside": "cs-lot"})
    assert [d["device_id"] for d in plain.json()["items"]] == sorted(spots)
    wgs = live.http.get("/v1/devices", params={"inside": "cs-lot", "coord_sys": "wgs84"})
    assert wgs.content == plain.content
    response = live.http.get("/v1/devices", params={"inside": "cs-lot", "coord_sys": "gcj02"})
    items = response.json()["items"]
    assert [d["device_id"] for d in items] == sorted(spots)
    for item in items:
        fix = item["last_fix"]
        assert fix["coord_sys"] == "gcj02"
        assert (fix["lat"], fix["lon"]) == wgs84_to_gcj02(*spots[item["device_id"]])
    assert_bad_coord_sys(live, "/v1/devices", {"inside": "cs-lot"})


# -- tracks


def test_track_points_come_back_in_the_system_asked_for(live: Live) -> None:  # noqa: F811  # the imported fixture
    device = "cs-track"
    start = int(time.time() * 1000) - 30 * MIN_MS
    route = [offset(*SHANGHAI, 50.0 * i, 20.0 * (i % 3)) for i in range(12)]
    for i, at in enumerate(route):
        gps(live, device, at, start + i * MIN_MS, speed_kmh=float(i))
    path = f"/v1/devices/{device}/track"
    period = {"since": str(start), "until": str(start + 20 * MIN_MS)}  # not "now": fixed
    plain = live.http.get(path, params=period)
    assert plain.status_code == 200, plain.text
    assert [(p["lat"], p["lon"]) for p in plain.json()["items"]] == route
    assert "coord_sys" not in plain.json()
    assert live.http.get(path, params={**period, "coord_sys": "wgs84"}).content == plain.content

    for system in SYSTEMS:
        response = live.http.get(path, params={**period, "coord_sys": system.value})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["coord_sys"] == system.value
        assert len(body["items"]) == len(route)
        for point, was, at in zip(body["items"], plain.json()["items"], route, strict=True):
            want = from_wgs84(*at, system)
            # vectorized: equal to the scalar formula to the last bits
            assert abs(point["lat"] - want[0]) < 1e-12
            assert abs(point["lon"] - want[1]) < 1e-12
            back = to_wgs84(point["lat"], point["lon"], system)
            assert abs(back[0] - at[0]) < 1e-6
            assert abs(back[1] - at[1]) < 1e-6
            assert (point["ts"], point["speed_kmh"]) == (was["ts"], was["speed_kmh"])
        rest = {k: v for k, v in body.items() if k not in {"items", "coord_sys"}}
        assert rest == {k: v for k, v in plain.json().items() if k != "items"}
    empty = live.http.get("/v1/devices/cs-nobody/track", params={"coord_sys": "bd09"}).json()
    assert (empty["items"], empty["coord_sys"]) == ([], "bd09")
    assert_bad_coord_sys(live, path, {})


# -- alerts


def test_alert_positions_come_back_in_the_system_asked_for(live: Live) -> None:  # noqa: F811  # the imported fixture
    """An enter alert's lat/lon convert; its id, details and the stored alert do not; an
    alert without a position keeps its nulls."""
    assert live.http.put("/v1/fences/cs-zone", json=polygon_feature(CHENGDU)).status_code == 201
    wait_for(lambda: "cs-zone" in live.engine.pipeline.index.by_id, "the fence in the index")
    now = int(time.time() * 1000)
    gps(live, "cs-alert", offset(*CHENGDU, -800.0, 0.0), now - 2 * MIN_MS)
    gps(live, "cs-alert", CHENGDU, now - MIN_MS)
    query = {"device_id": "cs-alert", "type": "geofence.enter"}
    plain = live.http.get("/v1/alerts", params=query)
    assert plain.status_code == 200, plain.text
    (alert,) = plain.json()["items"]
    assert (alert["lat"], alert["lon"]) == CHENGDU
    assert "coord_sys" not in alert
    assert live.http.get("/v1/alerts", params={**query, "coord_sys": "wgs84"}).content == (
        plain.content
    )
    one = f"/v1/alerts/{alert['id']}"
    plain_one = live.http.get(one)
    assert live.http.get(one, params={"coord_sys": "wgs84"}).content == plain_one.content

    for system in SYSTEMS:
        lat, lon = from_wgs84(*CHENGDU, system)
        converted = {"lat": lat, "lon": lon, "coord_sys": system.value}
        listed = live.http.get("/v1/alerts", params={**query, "coord_sys": system.value})
        assert listed.status_code == 200, listed.text
        assert listed.json()["items"] == [{**alert, **converted}]
        got = live.http.get(one, params={"coord_sys": system.value})
        assert got.status_code == 200, got.text
        assert got.json() == {**plain_one.json(), **converted}  # the same id, case, details
    stored = live.store.get_alert(alert["id"])
    assert stored is not None
    assert (stored.alert["lat"], stored.alert["lon"]) == CHENGDU  # still WGS84 as stored

    # a loan's VIN conflict has no position: its nulls stay, and the system is named
    assert live.http.put("/v1/loans/CS-1", json=loan_doc(["cs-v1"], OTHER_VIN)).status_code == 201
    response = live.http.put("/v1/loans/CS-2", json=loan_doc(["cs-v2"], OTHER_VIN))
    (conflict,) = response.json()["alerts"]
    got = live.http.get(f"/v1/alerts/{conflict['id']}", params={"coord_sys": "gcj02"}).json()
    assert (got["lat"], got["lon"], got["coord_sys"]) == (None, None, "gcj02")
    assert_bad_coord_sys(live, "/v1/alerts", {})
    assert_bad_coord_sys(live, one, {})


# -- the OpenAPI document


@pytest.mark.parametrize(
    "path",
    [
        "/v1/devices/{device_id}",
        "/v1/devices",
        "/v1/devices/{device_id}/track",
        "/v1/alerts",
        "/v1/alerts/{alert_id}",
    ],
)
def test_openapi_documents_coord_sys(live: Live, path: str) -> None:  # noqa: F811  # the imported fixture
    operation = live.http.get("/openapi.json").json()["paths"][path]["get"]
    (param,) = [p for p in operation["parameters"] if p["name"] == "coord_sys"]
    assert param["in"] == "query"
    assert not param.get("required", False)
    for name in ("wgs84", "gcj02", "bd09"):
        assert name in param["description"]
    assert "400" in operation["responses"]
