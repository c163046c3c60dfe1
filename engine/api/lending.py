"""Routes of the lending consumer (DESIGN §8): places, risk-site candidates and quotes.

The risk, collateral and price of a loan ride on `GET /v1/loans/{id}` (`engine.api.loans`
asks `lending_view`). Without a lending consumer (`--no-lending`) these routes answer 503
naming the flag, and a loan's `risk`, `collateral` and `price` are null.
"""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import FastAPI, Query
from starlette.responses import Response

from engine.api.context import ApiContext
from engine.api.openapi import BODY_ERRORS, QUOTE_SCHEMA, body_doc, error_responses
from engine.api.problems import JsonResponse, Problem, bad_parameter, not_found
from engine.api.schemas import JsonBody, LimitParam, loan_problem, page_response, parse_limit
from engine.runtime.live import Engine
from lending.consumer import LendingConsumer
from lending.model import Loan, LoanError, parse_quote

NO_LENDING: dict[str, object] = {"risk": None, "collateral": None, "price": None}


def _lending(engine: Engine) -> tuple[LendingConsumer, threading.Lock]:
    lending = engine.lending()
    if lending is None:
        detail = "the lending consumers are off (the engine runs with --no-lending)"
        raise Problem(503, "lending-off", detail)
    return lending


def lending_view(engine: Engine, loan: Loan) -> dict[str, object]:
    """`risk`, `collateral` and `price` of a loan, or nulls without a lending consumer."""
    lending = engine.lending()
    if lending is None:
        return dict(NO_LENDING)
    consumer, lock = lending
    with lock:
        return consumer.loan_view(loan)


def loan_tier(engine: Engine, loan_id: str) -> str | None:
    """The loan's risk tier, or None without a lending consumer."""
    lending = engine.lending()
    if lending is None:
        return None
    consumer, lock = lending
    with lock:
        return consumer.tier(loan_id)


def add_lending_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the lending routes."""
    engine = api.engine

    @app.get(
        "/v1/loans/{loan_id}/places",
        summary="Where the car sleeps, works and often parks, learned from its parked fixes",
        tags=["lending"],
        responses=error_responses(404, 503),
    )
    def get_places(loan_id: str) -> Response:
        """Home, work, then frequent places (one page holds them all)."""
        consumer, lock = _lending(engine)
        if api.store.get_loan(loan_id) is None:
            raise not_found(f"loan {loan_id!r} does not exist")
        with lock:
            items = consumer.places(loan_id)
        return page_response(items, None)

    @app.get(
        "/v1/risk-sites/candidates",
        summary="Unmarked places where the cars of several loans parked long (二押点)",
        tags=["lending"],
        responses=error_responses(400, 503),
    )
    def list_candidates(
        limit: LimitParam = None,
        min_loans: Annotated[
            str | None, Query(description="Only candidates of at least this many loans.")
        ] = None,
    ) -> Response:
        """Most loans first; a place confirmed as a `risk_site` fence leaves the list."""
        n = parse_limit(limit)
        least = 0
        if min_loans is not None:
            if not (min_loans.isascii() and min_loans.isdigit() and len(min_loans) <= 6):
                detail = f"min_loans must be a whole number, got {min_loans!r}"
                raise bad_parameter("min_loans", detail)
            least = int(min_loans)
        consumer, lock = _lending(engine)
        with lock:
            found = consumer.candidates(consumer.is_marked)
        items = [c.to_json() for c in found if c.loans >= least]
        return page_response(items[:n], None)

    @app.post(
        "/v1/quotes",
        summary="Price a prospective loan: collateral, APR and maximum principal",
        tags=["lending"],
        responses=error_responses(*BODY_ERRORS, 404, 503),
        openapi_extra=body_doc(QUOTE_SCHEMA),
    )
    def post_quote(doc: JsonBody) -> Response:
        """With `device_id`, the risk and mileage of that tracker's loan count."""
        try:
            request = parse_quote(doc)
        except LoanError as exc:
            raise loan_problem(exc) from None
        consumer, lock = _lending(engine)
        loan_id = None
        if request.device_id is not None:
            loan = engine.loan_for(request.device_id)
            if loan is None and engine.device(request.device_id) is None:
                detail = f"device {request.device_id!r} has not reported and is on no loan"
                raise not_found(detail)
            loan_id = None if loan is None else loan.loan_id
        with lock:
            book = None if loan_id is None else consumer.books.get(loan_id)
            at_ms = book.clock_ms if book is not None and book.clock_ms >= 0 else engine.now_ms()
            quote = consumer.quote(request.vehicle, request.principal, loan_id, at_ms)
        return JsonResponse({**quote, "loan_id": loan_id})
