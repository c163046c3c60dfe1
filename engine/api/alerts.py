"""Routes of `/v1/alerts`: list and get alerts, and the operator's acknowledgement."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query
from starlette.responses import Response

from engine.api.context import ApiContext
from engine.api.openapi import ACK_SCHEMA, BODY_ERRORS, body_doc, error_responses
from engine.api.problems import JsonResponse, bad_parameter, not_found, validation
from engine.api.schemas import (
    ALERT_TYPES,
    MAX_NOTE_CHARS,
    CursorParam,
    LimitParam,
    OptionalJsonBody,
    alert_json,
    page_response,
    paged,
    parse_limit,
    parse_since_ms,
)
from engine.store.port import AlertQuery


def add_alert_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the alert routes."""

    @app.get(
        "/v1/alerts",
        summary="List alerts, newest first",
        tags=["alerts"],
        responses=error_responses(400),
    )
    def list_alerts(
        type_: Annotated[str | None, Query(alias="type", description="An alert type.")] = None,
        loan_id: Annotated[str | None, Query(description="Alerts of this loan.")] = None,
        device_id: Annotated[str | None, Query(description="Alerts of this tracker.")] = None,
        since: Annotated[
            str | None,
            Query(description="Event time from: epoch ms or ISO-8601 with offset."),
        ] = None,
        limit: LimitParam = None,
        cursor: CursorParam = None,
    ) -> Response:
        """Alerts filtered by type, loan, device and event time, newest first."""
        if type_ is not None and type_ not in ALERT_TYPES:
            raise bad_parameter(
                "type", f"type {type_!r} is not an alert type; known: {sorted(ALERT_TYPES)}"
            )
        query = AlertQuery(
            type=type_,
            loan_id=loan_id,
            device_id=device_id,
            since_ms=parse_since_ms(since),
            limit=parse_limit(limit),
            cursor=cursor,
        )
        page = paged(lambda: api.store.list_alerts(query))
        return page_response([alert_json(a) for a in page.items], page.next)

    @app.get(
        "/v1/alerts/{alert_id}",
        summary="Get an alert",
        tags=["alerts"],
        responses=error_responses(404),
    )
    def get_alert(alert_id: str) -> Response:
        """One alert, with its acknowledgement."""
        stored = api.store.get_alert(alert_id)
        if stored is None:
            raise not_found(f"alert {alert_id!r} does not exist")
        return JsonResponse(alert_json(stored))

    @app.post(
        "/v1/alerts/{alert_id}/ack",
        summary="Acknowledge an alert, with an optional note",
        tags=["alerts"],
        responses=error_responses(404, *BODY_ERRORS),
        openapi_extra=body_doc(ACK_SCHEMA, required=False),
    )
    def ack_alert(alert_id: str, doc: OptionalJsonBody) -> Response:
        """Record the operator's acknowledgement; returns the alert."""
        note: object = None
        if doc is not None:
            if not isinstance(doc, dict):
                raise validation('the body must be a JSON object like {"note": "..."}', None)
            note = doc.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_CHARS):
            raise validation(f"note: must be a string of at most {MAX_NOTE_CHARS} chars", "note")
        if not api.store.ack_alert(alert_id, note, api.engine.now_ms()):
            raise not_found(f"alert {alert_id!r} does not exist")
        stored = api.store.get_alert(alert_id)
        if stored is None:  # deleted in between: nothing to show
            raise not_found(f"alert {alert_id!r} does not exist")
        return JsonResponse(alert_json(stored))
