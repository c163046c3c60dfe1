"""Loan documents: validation names the field; JSON round trip."""

from __future__ import annotations

import pytest

from lending.model import LoanError, LoanStatus, loan_to_json, parse_loan, parse_loans

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
