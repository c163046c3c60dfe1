"""Operator extensions: dead webhook deliveries (and sending them again), rejected input."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Path
from starlette.responses import Response

from alerts.model import iso_ms
from engine.api.context import ApiContext
from engine.api.openapi import error_responses
from engine.api.principals import Caller, audit_entry
from engine.api.problems import JsonResponse, not_found
from engine.api.schemas import (
    CursorParam,
    LimitParam,
    delivery_json,
    page_response,
    paged,
    parse_limit,
)

MAX_ROW_ID = 2**63 - 1  # a row id is a signed 64-bit integer in both stores


def add_operation_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the operator routes."""

    @app.get(
        "/v1/deliveries/dead",
        summary="Webhook deliveries that gave up, newest first",
        tags=["operations"],
        responses=error_responses(400),
    )
    def list_dead(cursor: CursorParam = None, limit: LimitParam = None) -> Response:
        """Dead-lettered deliveries with their last error and the alert."""
        n = parse_limit(limit)
        page = paged(lambda: api.store.list_dead(cursor, n))
        return page_response([delivery_json(d) for d in page.items], page.next)

    @app.post(
        "/v1/deliveries/{delivery_id}:redeliver",
        summary="Send a dead delivery again",
        tags=["operations"],
        status_code=202,
        responses=error_responses(404, 422),
    )
    def redeliver(
        delivery_id: Annotated[
            int, Path(description="From GET /v1/deliveries/dead.", ge=1, le=MAX_ROW_ID)
        ],
        who: Caller,
    ) -> Response:
        """Move a dead delivery back to pending, due now."""
        now_ms = api.engine.now_ms()
        audit = audit_entry(who, now_ms, "delivery.redeliver", f"delivery:{delivery_id}")
        if not api.store.redeliver(delivery_id, now_ms, audit):
            raise not_found(f"there is no dead delivery {delivery_id}")
        api.wake_dispatcher()
        return JsonResponse({"delivery_id": delivery_id, "state": "pending"}, status_code=202)

    @app.get(
        "/v1/rejects",
        summary="Rejected input (dead letters), newest first",
        tags=["operations"],
        responses=error_responses(400),
    )
    def list_rejects(cursor: CursorParam = None, limit: LimitParam = None) -> Response:
        """Refused readings with reason, detail, raw bytes as text (backslash escapes) and
        the time they were received."""
        n = parse_limit(limit)
        page = paged(lambda: api.store.list_rejects(cursor, n))
        items: list[object] = [
            {**r.reject.to_json(), "received_at": iso_ms(r.received_ms)} for r in page.items
        ]
        return page_response(items, page.next)
