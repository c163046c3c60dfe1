"""Loan documents: validation names the field; JSON round trip."""

from __future__ import annotations

import re

import orjson
import pytest

from lending.model import (
    GeoPoint,
    LoanError,
    LoanStatus,
    known_tz,
    loan_to_json,
    parse_loan,
    parse_loans,
    parse_quote,
)

GOOD = {
    "vin": "lsvab4182e2123456",
    "device_ids": ["trk-1", "trk-2"],
    "zone_ids": ["home"],
    "status": "active",
    "principal": 50000,
    "vehicle": {"make": "VW", "model": "Lavida", "year": 2019, "mileage_km": 61000, "value": 70000},
}


def test_parse_and_round_trip() -> None:
    loan = parse_loan("L-1", GOOD)
    assert loan.vin == "LSVAB4182E2123456"
    assert loan.status is LoanStatus.ACTIVE
    assert loan.device_ids == ("trk-1", "trk-2")
    assert parse_loan("L-1", loan_to_json(loan)) == loan


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"vin": "SHORT"}, "vin"),
        ({"vin": "LSVAB4182E212345O"}, "vin"),  # O is never in a VIN
        ({"device_ids": []}, "device_ids"),
        ({"device_ids": ["ok", "bad id"]}, "device_ids"),
        ({"device_ids": ["a", "a"]}, "device_ids"),
        ({"zone_ids": "home"}, "zone_ids"),
        ({"status": "paid"}, "status"),
        ({"principal": -1}, "principal"),
        ({"vehicle": {"year": 1700}}, "vehicle.year"),
        ({"vehicle": []}, "vehicle"),
    ],
)
def test_errors_name_the_field(patch: dict[str, object], field: str) -> None:
    with pytest.raises(LoanError, match=rf"loan 'L-1': {field}:") as info:
        parse_loan("L-1", {**GOOD, **patch})
    assert info.value.field == field


@pytest.mark.parametrize(
    ("loan_id", "doc", "field"),
    [
        ("L-1", {**GOOD, "vehicle": {"mileage_km": -1}}, "vehicle.mileage_km"),
        ("L-1", {**GOOD, "vehicle": {"value": "much"}}, "vehicle.value"),
        ("L-1", {**GOOD, "vehicle": {"make": 3}}, "vehicle.make"),
        ("L-1", {**GOOD, "zone_ids": ["bad zone"]}, "zone_ids"),
        ("bad id", GOOD, "loan_id"),
        ("L-1", [GOOD], None),
    ],
)
def test_error_field_attribute(loan_id: str, doc: object, field: str | None) -> None:
    with pytest.raises(LoanError) as info:
        parse_loan(loan_id, doc)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"loan_id": "A"}, "loans"),
        ([{**GOOD, "loan_id": "A"}, {**GOOD, "loan_id": "B", "vin": "SHORT"}], "loans[1].vin"),
        ([{**GOOD, "loan_id": "A", "vehicle": {"year": 1}}], "loans[0].vehicle.year"),
        ([{**GOOD, "loan_id": "A"}, GOOD], "loans[1].loan_id"),
        ([{**GOOD, "loan_id": "A"}, {**GOOD, "loan_id": "A"}], "loans[1].loan_id"),
        ([{**GOOD, "loan_id": "a b"}], "loans[0].loan_id"),
        ([{**GOOD, "loan_id": "A"}, "not an object"], "loans[1].loan_id"),
    ],
)
def test_loans_error_field_is_the_path_in_the_array(doc: object, field: str) -> None:
    with pytest.raises(LoanError) as info:
        parse_loans(doc)
    assert info.value.field == field


def test_loans_file_is_all_or_nothing() -> None:
    assert [
        ln.loan_id for ln in parse_loans([{**GOOD, "loan_id": "A"}, {**GOOD, "loan_id": "B"}])
    ] == [
        "A",
        "B",
    ]
    with pytest.raises(LoanError, match="appears twice"):
        parse_loans([{**GOOD, "loan_id": "A"}, {**GOOD, "loan_id": "A"}])
    with pytest.raises(LoanError, match=r"loans\[1\]: missing"):
        parse_loans([{**GOOD, "loan_id": "A"}, GOOD])


# -- declared places, time zone and valuation date (DESIGN §8)

FULL = {
    **GOOD,
    "vehicle": {**GOOD["vehicle"], "valued_at": "2025-11-01T08:00:00+08:00"},  # type: ignore[dict-item]
    "home": {"lat": 31.23, "lon": 121.47},
    "work": {"lat": -33.87, "lon": 151.2},
    "tz": "Asia/Shanghai",
}
NOV_1_UTC_MS = 1_761_955_200_000  # 2025-11-01T00:00:00Z


def test_home_work_tz_and_valued_at_parse_and_round_trip() -> None:
    loan = parse_loan("L-1", FULL)
    assert loan.home == GeoPoint(31.23, 121.47)
    assert loan.work == GeoPoint(-33.87, 151.2)
    assert loan.tz == "Asia/Shanghai"
    assert loan.vehicle is not None
    assert loan.vehicle.valued_at_ms == NOV_1_UTC_MS
    doc = loan_to_json(loan)
    assert doc["home"] == {"lat": 31.23, "lon": 121.47}
    assert doc["tz"] == "Asia/Shanghai"
    assert doc["vehicle"]["valued_at"] == "2025-11-01T00:00:00Z"  # type: ignore[index]
    assert parse_loan("L-1", doc) == loan
    assert parse_loan("L-1", orjson.loads(orjson.dumps(doc))) == loan


def test_without_the_new_fields_they_are_absent() -> None:
    loan = parse_loan("L-1", GOOD)
    assert (loan.home, loan.work, loan.tz) == (None, None, None)
    assert loan.vehicle is not None
    assert loan.vehicle.valued_at_ms is None
    doc = loan_to_json(loan)
    assert "home" not in doc
    assert "work" not in doc
    assert "tz" not in doc
    assert doc["vehicle"]["valued_at"] is None  # type: ignore[index]
    explicit_nulls = {**GOOD, "home": None, "work": None, "tz": None}
    assert parse_loan("L-1", explicit_nulls) == loan


@pytest.mark.parametrize(
    ("valued_at", "ms"),
    [
        ("2025-11-01", NOV_1_UTC_MS),  # a date: midnight UTC
        ("2025-11-01T00:00:00Z", NOV_1_UTC_MS),
        ("2025-11-01T00:00:00+00:00", NOV_1_UTC_MS),
        ("2025-10-31T19:00:00-05:00", NOV_1_UTC_MS),
        ("2025-11-01T08:00:00.250+08:00", NOV_1_UTC_MS + 250),
    ],
)
def test_valued_at_is_a_date_or_a_date_time_with_offset(valued_at: str, ms: int) -> None:
    loan = parse_loan("L-1", {**GOOD, "vehicle": {"value": 1, "valued_at": valued_at}})
    assert loan.vehicle is not None
    assert loan.vehicle.valued_at_ms == ms
    assert parse_loan("L-1", loan_to_json(loan)) == loan  # milliseconds survive the trip


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"home": {"lat": 91, "lon": 0}}, "home.lat"),
        ({"home": {"lat": -90.5, "lon": 0}}, "home.lat"),
        ({"home": {"lat": "31.2", "lon": 121.4}}, "home.lat"),
        ({"home": {"lat": True, "lon": 121.4}}, "home.lat"),
        ({"home": {"lon": 121.4}}, "home.lat"),
        ({"home": {"lat": 31.2, "lon": 180.01}}, "home.lon"),
        ({"home": {"lat": 31.2}}, "home.lon"),
        ({"home": {"lat": 31.2, "lon": float("nan")}}, "home.lon"),
        ({"home": [31.2, 121.4]}, "home"),
        ({"home": "Shanghai"}, "home"),
        ({"work": {"lat": 100, "lon": 0}}, "work.lat"),
        ({"work": {"lat": 0, "lon": -181}}, "work.lon"),
        ({"work": 5}, "work"),
        ({"tz": "Mars/Olympus_Mons"}, "tz"),
        ({"tz": "asia/shanghai"}, "tz"),
        ({"tz": "../../etc/passwd"}, "tz"),
        ({"tz": "/etc/localtime"}, "tz"),
        ({"tz": ""}, "tz"),
        ({"tz": 8}, "tz"),
        ({"tz": "+08:00"}, "tz"),
        ({"vehicle": {"valued_at": "2025-11-01T08:00:00"}}, "vehicle.valued_at"),  # no offset
        ({"vehicle": {"valued_at": "last spring"}}, "vehicle.valued_at"),
        ({"vehicle": {"valued_at": "2025-13-01"}}, "vehicle.valued_at"),
        ({"vehicle": {"valued_at": 1761955200000}}, "vehicle.valued_at"),
        ({"vehicle": {"valued_at": "2025-11-01T08:00:00+08:00" + " " * 40}}, "vehicle.valued_at"),
    ],
)
def test_new_field_errors_name_the_field(patch: dict[str, object], field: str) -> None:
    with pytest.raises(LoanError, match=rf"loan 'L-1': {re.escape(field)}:") as info:
        parse_loan("L-1", {**GOOD, **patch})
    assert info.value.field == field


def test_new_field_errors_in_a_loans_file_name_the_path() -> None:
    with pytest.raises(LoanError) as info:
        parse_loans(
            [{**GOOD, "loan_id": "A"}, {**GOOD, "loan_id": "B", "home": {"lat": 95, "lon": 0}}]
        )
    assert info.value.field == "loans[1].home.lat"


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/New_York", "Europe/Berlin", "UTC"])
def test_known_time_zones_are_accepted(tz: str) -> None:
    assert known_tz(tz)
    assert parse_loan("L-1", {**GOOD, "tz": tz}).tz == tz


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"principal": 1.4e308}, "principal"),
        ({"vehicle": {"value": 2e15}}, "vehicle.value"),
        ({"vehicle": {"mileage_km": 1e300}}, "vehicle.mileage_km"),
    ],
)
def test_amounts_past_any_car_are_refused(patch: dict[str, object], field: str) -> None:
    # every figure derived from them must stay a 64-bit integer in the API's JSON
    with pytest.raises(LoanError) as info:
        parse_loan("L-1", {**GOOD, **patch})
    assert info.value.field == field
    with pytest.raises(LoanError) as quoted:
        parse_quote({"vehicle": {"value": 1e308}, "principal": 1.0})
    assert quoted.value.field == "vehicle.value"
