"""Routes of `/v1/loans`: put, import, get and list loans.

A PUT or an import is judged for VIN conflicts by the core's `put_conflicts`, the rule the
replay applies too, and stored with the alerts it raises in one transaction.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated
from urllib.parse import quote

from fastapi import FastAPI, Query
from starlette.responses import Response

from engine.api.context import ApiContext
from engine.api.guard import LOANS_IMPORT_PATH
from engine.api.lending import lending_view
from engine.api.lending import loan_tier as tier_of
from engine.api.openapi import (
    BODY_ERRORS,
    LOAN_SCHEMA,
    LOANS_IMPORT_SCHEMA,
    body_doc,
    error_responses,
)
from engine.api.principals import Caller, audit_entry
from engine.api.problems import JsonResponse, Problem, bad_parameter, not_found
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
from engine.store.rows import encode_cursor
from lending.model import LoanError, loan_to_json, parse_loan, parse_loans
from lending.params import TIERS


def add_loan_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the loan routes."""

    @app.put(
        "/v1/loans/{loan_id}",
        summary="Create or replace a loan; raises pledge.vin_conflict on a pledged VIN",
        tags=["loans"],
        responses=error_responses(*BODY_ERRORS),
        openapi_extra=body_doc(LOAN_SCHEMA),
    )
    def put_loan(loan_id: str, doc: JsonBody, who: Caller) -> Response:
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
            detail = {
                "vin": loan.vin,
                "status": loan.status.value,
                "device_ids": list(loan.device_ids),
                "replaced": old is not None,
            }
            audit = audit_entry(who, now, "loan.put", f"loan:{loan_id}", **detail)
            api.store.put_loan(loan, alerts, now, audit)
        api.engine.put_loan(loan, alerts)
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
    def import_loans(doc: JsonBody, who: Caller) -> Response:
        """As many PUTs in array order, in one transaction: VIN conflicts are raised against
        the stored loans and the ones before in the array, exactly as the PUTs would."""
        try:
            loans = parse_loans(doc)
        except LoanError as exc:
            raise loan_problem(exc) from None
        with api.loan_lock:
            now = api.engine.now_ms()
            alerts = put_conflicts(api.store.all_loans(), loans, now, now)
            ids = [loan.loan_id for loan in loans]
            audit = audit_entry(who, now, "loan.import", "loans", count=len(ids), loan_ids=ids[:50])
            api.store.put_loans(loans, alerts, now, audit)
        for loan in loans:
            api.engine.put_loan(loan, alerts)
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
        """The loan with its `risk`, `collateral` and `price` (nulls with --no-lending)."""
        loan = api.store.get_loan(loan_id)
        if loan is None:
            raise not_found(f"loan {loan_id!r} does not exist")
        return JsonResponse({**loan_to_json(loan), **lending_view(api.engine, loan)})

    @app.get(
        "/v1/loans",
        summary="List loans by id, optionally of one risk tier",
        tags=["loans"],
        responses=error_responses(400, 503),
    )
    def list_loans(
        cursor: CursorParam = None,
        limit: LimitParam = None,
        tier: Annotated[str | None, Query(description=f"One of {', '.join(TIERS)}.")] = None,
    ) -> Response:
        """A page of loans, each with its `tier`; with `tier=`, only the loans of that tier."""
        n = parse_limit(limit)
        if tier is not None and tier not in TIERS:
            raise bad_parameter("tier", f"tier must be one of {list(TIERS)}, got {tier!r}")
        if tier is not None and api.engine.lending() is None:
            raise Problem(503, "lending-off", "no risk tiers: the engine runs with --no-lending")
        items: list[dict[str, object]] = []
        next_cursor = cursor
        while True:  # scan pages of the store until a page of this tier is full
            page = paged(partial(api.store.list_loans, next_cursor, n))
            for loan in page.items:
                loan_tier = tier_of(api.engine, loan.loan_id)
                if tier is None or loan_tier == tier:
                    items.append({**loan_to_json(loan), "tier": loan_tier})
            next_cursor = page.next
            if len(items) >= n or next_cursor is None:
                break
        if len(items) > n:  # a full page: resume after its last loan
            items = items[:n]
            next_cursor = encode_cursor("loan", str(items[-1]["loan_id"]))
        return page_response(items, next_cursor)
