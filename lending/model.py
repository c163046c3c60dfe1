"""Loans secured by cars: which trackers sit in which car and where the car may stay."""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from enum import StrEnum

from devices.topics import DEVICE_ID_RE
from geofence.fence import FENCE_ID_RE, short_repr

VIN_CHAR = "[A-HJ-NPR-Z0-9]"
"""One character of a VIN: a digit or a capital letter other than I, O and Q."""
VIN_RE = re.compile(f"{VIN_CHAR}{{17}}")
"""A well-formed VIN (upper case); use with `fullmatch`."""
VIN_ALPHABET = "".join(c for c in string.ascii_uppercase + string.digits if re.match(VIN_CHAR, c))
"""The characters a VIN may hold, letters first."""
LOAN_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
"""A well-formed loan_id; use with `fullmatch`."""


class LoanError(ValueError):
    """A loan document that cannot be accepted; the message names the field.

    `field` is the path of the wrong value in the document (`vin`, `vehicle.year`,
    `loans[3].vin`), or None when the document as a whole is wrong.
    """

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


class LoanStatus(StrEnum):
    """Whether the loan is still secured by the car."""

    ACTIVE = "active"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Vehicle:
    """The pledged car as the lender recorded it; `value` is in the loan's currency."""

    make: str | None = None
    model: str | None = None
    year: int | None = None
    mileage_km: float | None = None
    value: float | None = None


@dataclass(frozen=True, slots=True)
class Loan:
    """A loan: the car's VIN, its trackers and the zones (fence ids) it may stay in."""

    loan_id: str
    vin: str
    device_ids: tuple[str, ...]
    zone_ids: tuple[str, ...]
    status: LoanStatus = LoanStatus.ACTIVE
    principal: float | None = None
    vehicle: Vehicle | None = None

    @property
    def active(self) -> bool:
        """True while the car secures an open loan."""
        return self.status is LoanStatus.ACTIVE


def _fail(loan_id: str, field: str, problem: str) -> LoanError:
    return LoanError(f"loan {loan_id!r}: {field}: {problem}", field)


def _str_list(
    loan_id: str, doc: dict[str, object], field: str, pattern: re.Pattern[str]
) -> tuple[str, ...]:
    value = doc.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(loan_id, field, "must be a list of strings")
    items: list[str] = [v for v in value if isinstance(v, str)]
    for item in items:
        if not pattern.fullmatch(item):
            raise _fail(loan_id, field, f"{short_repr(item)} is not a valid id ({pattern.pattern})")
    if len(set(items)) != len(items):
        raise _fail(loan_id, field, "lists an id twice")
    return tuple(items)


def _number(loan_id: str, doc: dict[str, object], key: str, where: str = "") -> float | None:
    """The non-negative number at `key`; `where` is the path of `doc` in the loan."""
    value = doc.get(key)
    if value is None:
        return None
    number = _finite(value)
    if number is None or number < 0.0:
        raise _fail(loan_id, where + key, f"must be a non-negative number, got {short_repr(value)}")
    return number


def _finite(value: object) -> float | None:
    """The value as a finite float if it is a JSON number (not a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer past float range, from a lenient JSON parser
        return None
    return number if math.isfinite(number) else None


def _vehicle(loan_id: str, doc: object) -> Vehicle | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise _fail(loan_id, "vehicle", "must be an object")
    for key in ("make", "model"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise _fail(loan_id, f"vehicle.{key}", "must be a string")
    year = doc.get("year")
    if year is not None and (
        isinstance(year, bool) or not isinstance(year, int) or not 1900 <= year <= 2100
    ):
        raise _fail(
            loan_id, "vehicle.year", f"must be a year between 1900 and 2100, got {short_repr(year)}"
        )
    return Vehicle(
        make=doc.get("make"),
        model=doc.get("model"),
        year=year,
        mileage_km=_number(loan_id, doc, "mileage_km", "vehicle."),
        value=_number(loan_id, doc, "value", "vehicle."),
    )


def parse_loan(loan_id: str, doc: object) -> Loan:
    """Validate a loan document (the body of `PUT /v1/loans/{loan_id}`)."""
    if not isinstance(loan_id, str) or not LOAN_ID_RE.fullmatch(loan_id):
        detail = f"loan id {short_repr(loan_id)} is not valid ({LOAN_ID_RE.pattern})"
        raise LoanError(detail, "loan_id")
    if not isinstance(doc, dict):
        raise LoanError(f"loan {loan_id!r}: the body must be a JSON object", None)
    vin = doc.get("vin")
    if not isinstance(vin, str) or not VIN_RE.fullmatch(vin.upper()):
        raise _fail(
            loan_id,
            "vin",
            f"{short_repr(vin)} is not a 17-character VIN (letters except I, O, Q; digits)",
        )
    device_ids = _str_list(loan_id, doc, "device_ids", DEVICE_ID_RE)
    if not device_ids:
        raise _fail(loan_id, "device_ids", "needs at least one tracker")
    status = doc.get("status", LoanStatus.ACTIVE.value)
    if not isinstance(status, str) or status not in {s.value for s in LoanStatus}:
        raise _fail(loan_id, "status", f"must be 'active' or 'closed', got {short_repr(status)}")
    return Loan(
        loan_id=loan_id,
        vin=vin.upper(),
        device_ids=device_ids,
        zone_ids=_str_list(loan_id, doc, "zone_ids", FENCE_ID_RE),
        status=LoanStatus(status),
        principal=_number(loan_id, doc, "principal"),
        vehicle=_vehicle(loan_id, doc.get("vehicle")),
    )


def parse_loans(doc: object) -> list[Loan]:
    """Validate a JSON array of loans, each with its `loan_id`; all or nothing."""
    if not isinstance(doc, list):
        raise LoanError("loans: expected a JSON array of loan objects", "loans")
    loans: list[Loan] = []
    seen: set[str] = set()
    for i, item in enumerate(doc):
        where = f"loans[{i}]"
        loan_id = item.get("loan_id") if isinstance(item, dict) else None
        if not isinstance(loan_id, str):
            raise LoanError(f"{where}: missing string 'loan_id'", f"{where}.loan_id")
        if loan_id in seen:
            raise LoanError(f"{where}: loan {loan_id!r} appears twice", f"{where}.loan_id")
        seen.add(loan_id)
        try:
            loans.append(parse_loan(loan_id, item))
        except LoanError as exc:
            inner = where if exc.field is None else f"{where}.{exc.field}"
            raise LoanError(f"{where}: {exc}", inner) from None
    return loans


def loan_to_json(loan: Loan) -> dict[str, object]:
    """The loan as the JSON object of the API."""
    out: dict[str, object] = {
        "loan_id": loan.loan_id,
        "vin": loan.vin,
        "device_ids": list(loan.device_ids),
        "zone_ids": list(loan.zone_ids),
        "status": loan.status.value,
        "principal": loan.principal,
    }
    if loan.vehicle is not None:
        v = loan.vehicle
        out["vehicle"] = {
            "make": v.make,
            "model": v.model,
            "year": v.year,
            "mileage_km": v.mileage_km,
            "value": v.value,
        }
    return out
