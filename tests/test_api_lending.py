"""The lending routes of the HTTP API (DESIGN §3, §8) over real connections: an in-process
Engine WITH the lending consumer, a SqliteStore, uvicorn. Readings reach the engine through
the queue source of tests/test_api.py, in arrays, at fixed event times (November 2026)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from geofence.geo import haversine_m
from lending.consumer import LendingConsumer
from lending.params import DEFAULT_PARAMS
from lending.params import TIERS as TIER_NAMES
from simulator.harness.prometheus import Metrics
from simulator.vehicles import make_vin
from tests.factories import offset
from tests.test_api import (
    Live,
    assert_problem,
    live,  # noqa: F401  # the plain fixture: an engine without the lending consumer
    polygon_feature,
    run_live,
    wait_for,
)

MIN = 60_000
YEAR_MS = 365.25 * 86_400_000
T0 = int(datetime(2026, 11, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)  # a Monday, 10:00 CST
ZONE = (31.3000, 121.4000)  # the permitted zone of the risky loans, 600 m across
NIGHT_SPOT = (40.7128, -74.0060)  # where the places car sleeps (New York)
SITE_A = (22.5400, 114.0500)  # unmarked places where several loans' cars park long
SITE_B = (23.1300, 113.2600)
SITE_C = (23.2500, 113.4500)
PRICE = DEFAULT_PARAMS.price


@pytest.fixture(scope="module")
def lending(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """test_api's `live` fixture, with `consumer=LendingConsumer()`."""
    yield from run_live(tmp_path_factory.mktemp("lending"), LendingConsumer())


# -- helpers


def vin_of(loan_id: str) -> str:
    return make_vin(random.Random(loan_id), "LSV", 2022)  # one VIN per loan: no conflicts


def put_loan(lv: Live, loan_id: str, device: str, **extra: Any) -> dict[str, Any]:
    doc = {"vin": vin_of(loan_id), "device_ids": [device], "status": "active", **extra}
    response = lv.http.put(f"/v1/loans/{loan_id}", json=doc)
    assert response.status_code == 201, response.text
    wait_for(lambda: lv.engine.loan_for(device) is not None, f"loan {loan_id} in the engine")
    body: dict[str, Any] = response.json()
    return body


def fix(ts_ms: int, at: tuple[float, float], *, parked: bool) -> dict[str, Any]:
    return {
        "ts": ts_ms,
        "lat": at[0],
        "lon": at[1],
        "ignition": not parked,
        "speed_kmh": 0.0 if parked else 40.0,
    }


def gps(lv: Live, device: str, fixes: list[dict[str, Any]]) -> None:
    """Publish an array of fixes and wait until the engine committed it."""
    lv.source.publish(f"telematics/{device}/gps", fixes)


def put_fence(lv: Live, fence_id: str, feature: Any) -> None:
    response = lv.http.put(f"/v1/fences/{fence_id}", json=feature)
    assert response.status_code in {200, 201}, response.text
    wait_for(lambda: fence_id in lv.engine.pipeline.index.by_id, f"fence {fence_id} indexed")


def leave_zone(lv: Live, device: str) -> None:
    """Inside the zone, then 1 km and 2 km north of it: outside for 360 s of event time."""
    north_1, north_2 = offset(*ZONE, 1000.0, 0.0), offset(*ZONE, 2000.0, 0.0)
    fixes = [
        fix(T0, ZONE, parked=False),
        fix(T0 + MIN, north_1, parked=False),
        fix(T0 + 7 * MIN, north_2, parked=False),
    ]
    gps(lv, device, fixes)


def make_risky(lv: Live, loan_id: str, device: str, **extra: Any) -> None:
    put_fence(lv, "rz-zone", polygon_feature(ZONE, 300.0, name="permitted"))
    put_loan(lv, loan_id, device, zone_ids=["rz-zone"], **extra)
    leave_zone(lv, device)


def alerts_of(lv: Live, loan_id: str, alert_type: str) -> list[dict[str, Any]]:
    params = {"loan_id": loan_id, "type": alert_type}
    response = lv.http.get("/v1/alerts", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def all_pages(lv: Live, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a list, following `next`; each page as returned."""
    pages: list[dict[str, Any]] = []
    cursor = None
    for _ in range(200):
        query = params if cursor is None else {**params, "cursor": cursor}
        response = lv.http.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"items", "next"}
        pages.append(page)
        cursor = page["next"]
        if cursor is None:
            return pages
    pytest.fail("the cursors never ended")


def tier_ids(lv: Live, tier: str) -> list[str]:
    items = [i for p in all_pages(lv, "/v1/loans", tier=tier, limit=1000) for i in p["items"]]
    assert all(i["tier"] == tier for i in items)
    return [i["loan_id"] for i in items]


def candidates(lv: Live, **params: Any) -> list[dict[str, Any]]:
    response = lv.http.get("/v1/risk-sites/candidates", params=params)
    assert response.status_code == 200, response.text
    assert response.json()["next"] is None
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def park_long(lv: Live, device: str, spot: tuple[float, float], start_ms: int) -> None:
    """Parked 40 minutes at `spot` (a fix every 5 min), then driven 300 m away."""
    fixes = [fix(start_ms + k * 5 * MIN, spot, parked=True) for k in range(8)]
    fixes.append(fix(start_ms + 40 * MIN, offset(*spot, 300.0, 0.0), parked=False))
    gps(lv, device, fixes)


def park_loans(lv: Live, prefix: str, spot: tuple[float, float], n: int) -> list[str]:
    """`n` loans whose cars each park long within ~45 m of `spot`."""
    loan_ids = []
    for i in range(n):
        loan_id, device = f"{prefix}-{i}", f"{prefix.lower()}-trk-{i}"
        put_loan(lv, loan_id, device)
        near = offset(*spot, 30.0 * (i % 2), 30.0 * (i // 2 % 2))
        park_long(lv, device, near, T0 + i * 10 * MIN)
        loan_ids.append(loan_id)
    return loan_ids


VEHICLE = {"make": "BYD", "model": "Qin", "year": 2023, "mileage_km": 40000}


# -- GET /v1/loans/{id}: risk, collateral, price


def test_a_loan_carries_risk_collateral_and_price_and_goes_high_on_zone_left(
    lending: Live,
) -> None:
    vehicle = {**VEHICLE, "value": 100000, "valued_at": "2025-11-02"}
    put_fence(lending, "rz-zone", polygon_feature(ZONE, 300.0, name="permitted"))
    put_loan(
        lending, "RISK-1", "risk-trk-1", zone_ids=["rz-zone"], principal=70000, vehicle=vehicle
    )

    new = lending.http.get("/v1/loans/RISK-1").json()
    assert new["risk"] == {"score": 0, "tier": "low", "as_of": None, "reasons": []}
    assert new["collateral"] == {
        "value": 100000,  # no event yet: the assessed value, not depreciated
        "currency": "CNY",
        "mileage_km": 40000,
        "ltv": 0.7,
    }
    apr = PRICE.base_apr["low"] + PRICE.ltv_apr_slope * (0.7 - PRICE.ltv_knee)
    assert new["price"] == {"apr": pytest.approx(apr, abs=1e-4), "max_principal": 80000}
    assert alerts_of(lending, "RISK-1", "risk.tier_changed") == []  # a new loan: no alert

    leave_zone(lending, "risk-trk-1")
    [left] = alerts_of(lending, "RISK-1", "zone.left")
    got = lending.http.get("/v1/loans/RISK-1").json()
    risk = got["risk"]
    assert risk["tier"] == "high"  # a critical alert this week: at least high
    assert 30 <= risk["score"] < 50
    assert risk["as_of"] == "2026-11-02T02:07:00Z"
    [reason] = risk["reasons"]
    assert reason["code"] == "zone_left"
    assert reason["alert_id"] == left["id"]
    assert reason["points"] == 35
    assert reason["evidence"]["device_id"] == "risk-trk-1"

    [changed] = alerts_of(lending, "RISK-1", "risk.tier_changed")
    assert changed["details"]["from"] == "low"
    assert changed["details"]["to"] == "high"
    assert changed["details"]["score"] == risk["score"]
    assert [r["code"] for r in changed["details"]["reasons"]] == ["zone_left"]
    assert changed["details"]["reasons"][0]["alert_id"] == left["id"]

    # a year of event time since valued_at: the value depreciated; 2 km of GPS were driven
    age_years = (T0 + 7 * MIN - datetime(2025, 11, 2, tzinfo=UTC).timestamp() * 1000) / YEAR_MS
    value = 100000 * (1 - DEFAULT_PARAMS.collateral.annual_depreciation) ** age_years
    collateral = got["collateral"]
    assert abs(collateral["value"] - value) <= 2
    assert collateral["mileage_km"] == 40002
    assert collateral["ltv"] == pytest.approx(70000 / value, abs=1e-3)
    apr = PRICE.base_apr["high"] + PRICE.ltv_apr_slope * (70000 / value - PRICE.ltv_knee)
    assert got["price"]["apr"] == pytest.approx(apr, abs=1e-3)
    assert abs(got["price"]["max_principal"] - value * PRICE.max_ltv["high"]) <= 2


# -- GET /v1/loans?tier=


def test_loans_filter_by_tier_and_each_carries_its_tier(lending: Live) -> None:
    make_risky(lending, "TIER-HI", "tier-hi-trk")
    put_loan(lending, "TIER-QUIET", "tier-quiet-trk", zone_ids=["rz-zone"])
    gps(
        lending,
        "tier-quiet-trk",
        [fix(T0, ZONE, parked=True), fix(T0 + 10 * MIN, ZONE, parked=True)],
    )

    high, low = tier_ids(lending, "high"), tier_ids(lending, "low")
    assert "TIER-HI" in high
    assert "TIER-QUIET" not in high
    assert "TIER-QUIET" in low
    assert "TIER-HI" not in low
    everything = [i for p in all_pages(lending, "/v1/loans", limit=1000) for i in p["items"]]
    tiers = {i["loan_id"]: i["tier"] for i in everything}
    assert tiers["TIER-HI"] == "high"
    assert tiers["TIER-QUIET"] == "low"
    assert all(i["tier"] in {"low", "medium", "high", "critical"} for i in everything)

    body = assert_problem(
        lending.http.get("/v1/loans", params={"tier": "bogus"}), 400, "invalid-parameter", "tier"
    )
    assert body["errors"][0]["field"] == "tier"

    # /metrics counts, per tier, the loans the consumer has seen an event of
    metrics = Metrics.parse(lending.http.get("/metrics").text)
    by_tier = {t: metrics.value("pledgewatch_loans_by_tier", tier=t) for t in TIER_NAMES}
    assert by_tier["high"] >= 1  # TIER-HI at least
    assert by_tier["low"] >= 1  # TIER-QUIET at least
    assert sum(by_tier.values()) <= len(everything)


def test_tier_pages_with_limit_1_return_every_loan_of_the_tier(lending: Live) -> None:
    # by id, high and low loans alternate: the scan must skip the low ones between pages
    for letter in "ACE":
        make_risky(lending, f"PG-{letter}", f"pg-{letter.lower()}-trk")
    for letter in "BD":
        put_loan(lending, f"PG-{letter}", f"pg-{letter.lower()}-trk")
    every = tier_ids(lending, "high")  # one page of them all
    assert [i for i in every if i.startswith("PG-")] == ["PG-A", "PG-C", "PG-E"]
    for limit in (1, 2, 3):
        pages = all_pages(lending, "/v1/loans", tier="high", limit=limit)
        assert all(len(p["items"]) <= limit for p in pages)
        assert all(p["next"] is not None for p in pages[:-1])
        assert all(i["tier"] == "high" for p in pages for i in p["items"])
        assert [i["loan_id"] for p in pages for i in p["items"]] == every
        if limit == 1:
            assert len([p for p in pages if p["items"]]) == len(every)  # one loan a page


# -- learned places: the route of one loan


def test_places_learn_the_home_from_a_week_of_parked_nights(lending: Live) -> None:
    assert_problem(lending.http.get("/v1/loans/NOPE/places"), 404, "not-found", "NOPE")
    declared = offset(*NIGHT_SPOT, 5000.0, 0.0)  # the borrower said 5 km north
    tz = "America/New_York"
    home = {"lat": declared[0], "lon": declared[1]}
    put_loan(lending, "PL-1", "pl-trk-1", tz=tz, home=home)
    empty = lending.http.get("/v1/loans/PL-1/places")
    assert empty.status_code == 200
    assert empty.json() == {"items": [], "next": None}

    rng = random.Random(3)
    fixes = []
    for night in range(7):  # the nights of 9-15 November, 22:00-06:00 New York time
        start = datetime(2026, 11, 9, 22, 0, tzinfo=ZoneInfo(tz)) + timedelta(days=night)
        for k in range(33):  # every 15 minutes, 22:00 to 06:00, ignition off
            at = offset(*NIGHT_SPOT, rng.uniform(-10, 10), rng.uniform(-10, 10))
            ts = int((start + timedelta(minutes=15 * k)).timestamp() * 1000)
            fixes.append(fix(ts, at, parked=True))
    gps(lending, "pl-trk-1", fixes)

    items = lending.http.get("/v1/loans/PL-1/places").json()["items"]
    assert [i["kind"] for i in items] == ["home"]  # never parked in work hours
    [place] = items
    assert haversine_m(place["lat"], place["lon"], *NIGHT_SPOT) < 50
    assert 5 <= place["nights"] <= 7
    assert place["radius_m"] >= 25
    assert place["dwell_h"] >= 5 * 8
    assert place["last_seen"].startswith("2026-11-1")
    reasons = lending.http.get("/v1/loans/PL-1").json()["risk"]["reasons"]
    [mismatch] = [r for r in reasons if r["code"] == "home_mismatch"]  # learned home 5 km off
    assert 4500 < mismatch["evidence"]["distance_m"] < 5500


# -- GET /v1/risk-sites/candidates


def test_risk_site_candidates_and_their_confirmation(lending: Live) -> None:
    assert candidates(lending) == []
    site_a = park_loans(lending, "SA", SITE_A, 2)
    assert candidates(lending) == []  # two loans are not enough
    site_a += park_loans(lending, "SA3", offset(*SITE_A, 0.0, -30.0), 1)
    [found] = candidates(lending)
    assert found["loans"] == 3
    assert found["visits"] == 3
    assert sorted(found["loan_ids"]) == sorted(site_a)
    assert haversine_m(found["lat"], found["lon"], *SITE_A) < 50
    assert found["first_seen"] == "2026-11-02T02:00:00Z"
    assert found["last_seen"] == "2026-11-02T02:50:00Z"  # SA-1 parked from T0+10 for 40 min
    assert candidates(lending, min_loans=3) == [found]
    assert candidates(lending, min_loans=4) == []

    pawnshop = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [found["lon"], found["lat"]]},
        "properties": {"kind": "risk_site", "category": "pawnshop", "radius_m": 200},
    }
    put_fence(lending, "pawn-a", pawnshop)
    assert candidates(lending) == []  # confirmed: off the list

    site_b = park_loans(lending, "SB", SITE_B, 4)
    site_c = park_loans(lending, "SC", SITE_C, 3)
    listed = candidates(lending)
    assert [sorted(c["loan_ids"]) for c in listed] == [site_b, site_c]  # most loans first
    assert [c["loans"] for c in listed] == [4, 3]
    assert candidates(lending, limit=1) == listed[:1]
    assert candidates(lending, min_loans=4) == listed[:1]
    assert candidates(lending, min_loans=0) == listed

    for bad in ("abc", "-1", "2.5", ""):
        response = lending.http.get("/v1/risk-sites/candidates", params={"min_loans": bad})
        body = assert_problem(response, 400, "invalid-parameter", "min_loans")
        assert body["errors"][0]["field"] == "min_loans"
    bad_limit = lending.http.get("/v1/risk-sites/candidates", params={"limit": "0"})
    assert assert_problem(bad_limit, 400, "invalid-parameter", "limit")["errors"][0]["field"] == (
        "limit"
    )


# -- POST /v1/quotes


def test_quotes(lending: Live) -> None:
    body = {"vehicle": {**VEHICLE, "value": 120000}, "principal": 60000}
    plain = lending.http.post("/v1/quotes", json=body)
    assert plain.status_code == 200, plain.text
    quote = plain.json()
    assert quote["loan_id"] is None
    assert quote["collateral"] == {
        "value": 120000,
        "currency": "CNY",
        "mileage_km": 40000,
        "ltv": 0.5,
    }
    assert quote["price"] == {
        "apr": PRICE.base_apr["low"],  # under the LTV knee
        "max_principal": round(120000 * PRICE.max_ltv["low"]),
    }
    assert quote["risk"]["tier"] == "low"
    assert quote["risk"]["score"] == 0

    for doc, field in (
        ({"vehicle": VEHICLE, "principal": 60000}, "vehicle.value"),
        ({"principal": 60000}, "vehicle.value"),
        ({"vehicle": {"value": 120000}, "principal": -1}, "principal"),
        ({"vehicle": {"value": 120000}}, "principal"),
        ({"vehicle": {"value": -5}, "principal": 1}, "vehicle.value"),
        ({"vehicle": {"value": 1, "valued_at": "soon"}, "principal": 1}, "vehicle.valued_at"),
        ({**body, "device_id": 7}, "device_id"),
    ):
        response = lending.http.post("/v1/quotes", json=doc)
        problem = assert_problem(response, 422, "validation-error", field)
        assert problem["errors"][0]["field"] == field
    assert_problem(lending.http.post("/v1/quotes", json=[]), 422, "validation-error")
    ghost = lending.http.post("/v1/quotes", json={**body, "device_id": "ghost-trk"})
    assert_problem(ghost, 404, "not-found", "ghost-trk")

    make_risky(lending, "QT-RISKY", "qt-trk")
    risky = lending.http.post("/v1/quotes", json={**body, "device_id": "qt-trk"})
    assert risky.status_code == 200, risky.text
    priced = risky.json()
    assert priced["loan_id"] == "QT-RISKY"
    assert priced["risk"]["tier"] == "high"
    assert [r["code"] for r in priced["risk"]["reasons"]] == ["zone_left"]
    assert priced["price"]["apr"] > quote["price"]["apr"]
    assert priced["price"]["apr"] == pytest.approx(PRICE.base_apr["high"], abs=1e-3)
    assert priced["price"]["max_principal"] < quote["price"]["max_principal"]
    assert priced["collateral"]["mileage_km"] == 40002  # the car's own GPS distance counts


# -- loan fields of DESIGN §3


def test_loan_home_work_tz_and_valued_at_are_validated_and_round_trip(lending: Live) -> None:
    base = {"vin": vin_of("LF-1"), "device_ids": ["lf-trk"]}
    for extra, field in (
        ({"home": {"lat": 95, "lon": 0}}, "home.lat"),
        ({"home": {"lat": 31.2, "lon": 200}}, "home.lon"),
        ({"work": {"lat": "31", "lon": 121}}, "work.lat"),
        ({"home": [31.2, 121.4]}, "home"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"tz": 8}, "tz"),
        ({"vehicle": {"value": 1, "valued_at": "last spring"}}, "vehicle.valued_at"),
        ({"vehicle": {"valued_at": "2026-01-15T08:00:00"}}, "vehicle.valued_at"),  # no offset
    ):
        response = lending.http.put("/v1/loans/LF-1", json={**base, **extra})
        body = assert_problem(response, 422, "validation-error", field)
        assert body["errors"][0]["field"] == field
    assert_problem(lending.http.get("/v1/loans/LF-1"), 404, "not-found")

    good = {
        **base,
        "home": {"lat": 31.2304, "lon": 121.4737},
        "work": {"lat": 31.2397, "lon": 121.4998},
        "tz": "Asia/Urumqi",
        "vehicle": {**VEHICLE, "value": 90000, "valued_at": "2026-01-15T08:00:00+08:00"},
    }
    assert lending.http.put("/v1/loans/LF-1", json=good).status_code == 201
    got = lending.http.get("/v1/loans/LF-1").json()
    assert got["home"] == good["home"]
    assert got["work"] == good["work"]
    assert got["tz"] == "Asia/Urumqi"
    assert got["vehicle"]["valued_at"] == "2026-01-15T00:00:00Z"
    assert got["vehicle"]["value"] == 90000
    assert got["collateral"]["value"] == 90000


# -- an engine without the lending consumer (test_api's fixture)


def test_without_the_lending_consumer(live: Live) -> None:  # noqa: F811  # the imported fixture
    response = live.http.put(
        "/v1/loans/NOLEND-1",
        json={"vin": vin_of("NOLEND-1"), "device_ids": ["nolend-trk"], "principal": 1000},
    )
    assert response.status_code == 201, response.text
    got = live.http.get("/v1/loans/NOLEND-1").json()
    assert (got["risk"], got["collateral"], got["price"]) == (None, None, None)
    listed = [i for p in all_pages(live, "/v1/loans", limit=1000) for i in p["items"]]
    assert {i["loan_id"]: i["tier"] for i in listed}["NOLEND-1"] is None

    quote = {"vehicle": {"value": 100000}, "principal": 50000}
    for response in (
        live.http.get("/v1/risk-sites/candidates"),
        live.http.post("/v1/quotes", json=quote),
        live.http.get("/v1/loans/NOLEND-1/places"),
        live.http.get("/v1/loans", params={"tier": "high"}),
    ):
        body = assert_problem(response, 503, "lending-off", "no-lending")
        assert body["type"].endswith("lending-off")
