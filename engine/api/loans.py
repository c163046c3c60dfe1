"""Routes of `/v1/loans`: put, import, get and list loans.

A PUT or an import is judged for VIN conflicts by the core's `put_conflicts`, the rule the
replay applies too, and stored with the alerts it raises in one transaction.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI
from starlette.responses import Response

from engine.api.context import ApiContext
from engine.api.guard import LOANS_IMPORT_PATH
from engine.api.openapi import (
    BODY_ERRORS,
    LOAN_SCHEMA,
    LOANS_IMPORT_SCHEMA,
    body_doc,
    error_responses,
)
from engine.api.problems import JsonResponse, not_found
from engine.api.schemas import (
    CursorParam,
    JsonBody,
    LimitParam,
    created,
    loan_problem,
    page_response,
    paged,
    parse_limit,
)
from engine.core.loan import put_conflicts
from lending.model import LoanError, loan_to_json, parse_loan, parse_loans

_NO_RISK: dict[str, object] = {"score": None, "tier": None, "reasons": [], "price": None}


def add_loan_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the loan routes."""

    @app.put(
        "/v1/loans/{loan_id}",
        summary="Create or replace a loan; raises pledge.vin_conflict on a pledged VIN",
        tags=["loans"],
        responses=error_responses(*BODY_ERRORS),
        openapi_extra=body_doc(LOAN_SCHEMA),
    )
    def put_loan(loan_id: str, doc: JsonBody) -> Response:
        """Store the loan with the VIN-conflict alert it raises, in one transaction."""
        try:
            loan = parse_loan(loan_id, doc)
        except LoanError as exc:
            raise loan_problem(exc) from None
        # One PUT at a time: two loans with one VIN, PUT together, must still see each other.
        with api.loan_lock:
            old = api.store.get_loan(loan_id)
            now = api.engine.now_ms()
            stored = api.store.loans_with_vin(loan.vin)
            if old is not None and old.vin != loan.vin:
                stored.append(old)
            alerts = put_conflicts(stored, [loan], now, now)
            api.store.put_loan(loan, alerts, now)
        api.engine.put_loan(loan)
        if alerts:
            api.wake_dispatcher()
        body = loan_to_json(loan)
        body["alerts"] = [a.to_json() for a in alerts]
        return created(body, old is not None, f"/v1/loans/{quote(loan_id)}")

    @app.post(
        LOANS_IMPORT_PATH,
        summary="Import an array of loans (each with its loan_id), all or nothing",
        tags=["loans"],
        responses=error_responses(*BODY_ERRORS),
        openapi_extra=body_doc(LOANS_IMPORT_SCHEMA),
    )
    def import_loans(doc: JsonBody) -> Response:
        """As many PUTs in array order, in one transaction: VIN conflicts are raised against
        the stored loans and the ones before in the array, exactly as the PUTs would."""
        try:
            loans = parse_loans(doc)
        except LoanError as exc:
            raise loan_problem(exc) from None
        with api.loan_lock:
            now = api.engine.now_ms()
            alerts = put_conflicts(api.store.all_loans(), loans, now, now)
            api.store.put_loans(loans, alerts, now)
        for loan in loans:
            api.engine.put_loan(loan)
        if alerts:
            api.wake_dispatcher()
        return JsonResponse(
            {
                "imported": len(loans),
                "loan_ids": [loan.loan_id for loan in loans],
                "alerts": [a.to_json() for a in alerts],
            }
        )

    @app.get(
        "/v1/loans/{loan_id}",
        summary="Get a loan with its risk score, reason codes and price",
        tags=["loans"],
        responses=error_responses(404),
    )
    def get_loan(loan_id: str) -> Response:
        """The loan; `risk` stays null until the lending consumer (a later issue) fills it."""
        loan = api.store.get_loan(loan_id)
        if loan is None:
            raise not_found(f"loan {loan_id!r} does not exist")
        return JsonResponse({**loan_to_json(loan), "risk": dict(_NO_RISK)})

    @app.get(
        "/v1/loans", summary="List loans by id", tags=["loans"], responses=error_responses(400)
    )
    def list_loans(cursor: CursorParam = None, limit: LimitParam = None) -> Response:
        """A page of loans."""
        n = parse_limit(limit)
        page = paged(lambda: api.store.list_loans(cursor, n))
        return page_response([loan_to_json(loan) for loan in page.items], page.next)
