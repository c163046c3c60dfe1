"""Loans secured by cars: which trackers sit in which car and where the car may stay."""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alerts.model import iso_ms
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
    valued_at_ms: int | None = None  # when `value` and `mileage_km` were assessed


@dataclass(frozen=True, slots=True)
class GeoPoint:
    """A declared address as a point, WGS84 degrees."""

    lat: float
    lon: float


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
    home: GeoPoint | None = None  # where the borrower declared the car sleeps
    work: GeoPoint | None = None  # where the borrower declared the car spends work hours
    tz: str | None = None  # IANA zone for "night" and "weekday"; None: the configured default

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


MAX_AMOUNT = 1e15
"""The largest money amount (value, principal) or mileage a loan may state: far above any
car, and small enough for every figure derived from it to stay a 64-bit integer in JSON."""


def _number(loan_id: str, doc: dict[str, object], key: str, where: str = "") -> float | None:
    """The non-negative number at `key`, at most `MAX_AMOUNT`; `where` is the path of `doc`
    in the loan."""
    value = doc.get(key)
    if value is None:
        return None
    number = _finite(value)
    if number is None or not 0.0 <= number <= MAX_AMOUNT:
        detail = f"must be a non-negative number up to {MAX_AMOUNT:.0e}, got {short_repr(value)}"
        raise _fail(loan_id, where + key, detail)
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
        valued_at_ms=_instant(loan_id, doc.get("valued_at"), "vehicle.valued_at"),
    )


def _instant(loan_id: str, value: object, field: str) -> int | None:
    """An ISO-8601 date (`2025-11-01`, midnight UTC) or date-time with offset, as epoch ms."""
    if value is None:
        return None
    parsed: datetime | None = None
    if isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is None:
            # a bare date is midnight UTC; a date-time without an offset is ambiguous
            parsed = parsed.replace(tzinfo=UTC) if len(value) == 10 else None
    if parsed is None:
        raise _fail(
            loan_id,
            field,
            f"{short_repr(value)} is not an ISO-8601 date or a date-time with an offset",
        )
    return int(parsed.timestamp() * 1000)


def _point(loan_id: str, doc: object, field: str) -> GeoPoint | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise _fail(loan_id, field, "must be an object with 'lat' and 'lon'")
    lat, lon = _finite(doc.get("lat")), _finite(doc.get("lon"))
    if lat is None or not -90.0 <= lat <= 90.0:
        raise _fail(
            loan_id, f"{field}.lat", f"must be a latitude, got {short_repr(doc.get('lat'))}"
        )
    if lon is None or not -180.0 <= lon <= 180.0:
        raise _fail(
            loan_id, f"{field}.lon", f"must be a longitude, got {short_repr(doc.get('lon'))}"
        )
    return GeoPoint(lat, lon)


@cache
def known_tz(name: str) -> bool:
    """Whether `name` is an IANA time zone this machine knows (`Asia/Shanghai`)."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _tz(loan_id: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not known_tz(value):
        raise _fail(loan_id, "tz", f"{short_repr(value)} is not an IANA time zone (Asia/Shanghai)")
    return value


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
        home=_point(loan_id, doc.get("home"), "home"),
        work=_point(loan_id, doc.get("work"), "work"),
        tz=_tz(loan_id, doc.get("tz")),
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
            # milliseconds kept when given, so the document parses back to the same loan
            "valued_at": None if v.valued_at_ms is None else iso_ms(v.valued_at_ms),
        }
    for key, point in (("home", loan.home), ("work", loan.work)):
        if point is not None:
            out[key] = {"lat": point.lat, "lon": point.lon}
    if loan.tz is not None:
        out["tz"] = loan.tz
    return out


def iso_instant(ts_ms: int) -> str:
    """Epoch ms as ISO-8601 UTC with a `Z` (seconds precision)."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class QuoteRequest:
    """The body of `POST /v1/quotes`: a prospective loan on a car."""

    vehicle: Vehicle
    principal: float
    device_id: str | None = None


def parse_quote(doc: object) -> QuoteRequest:
    """Validate the body of `POST /v1/quotes`; LoanError names the field."""
    if not isinstance(doc, dict):
        raise LoanError("quote: the body must be a JSON object", None)
    try:
        vehicle = _vehicle("quote", doc.get("vehicle"))
        principal = _number("quote", doc, "principal")
    except LoanError as exc:
        raise LoanError(str(exc).replace("loan 'quote': ", "quote: ", 1), exc.field) from None
    if vehicle is None or vehicle.value is None:
        raise LoanError(
            "quote: vehicle.value: the car's assessed value is required", "vehicle.value"
        )
    if principal is None:
        raise LoanError("quote: principal: a non-negative number is required", "principal")
    device_id = doc.get("device_id")
    if device_id is not None and (
        not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id)
    ):
        detail = f"quote: device_id: {short_repr(device_id)} is not a device id"
        raise LoanError(detail, "device_id")
    return QuoteRequest(vehicle, principal, device_id)
