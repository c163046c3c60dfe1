"""Routes of `/v1/alerts`: the alert queue, filtered and sorted, and one alert with its case
(the case actions are in `engine.api.cases`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query
from starlette.responses import Response

from alerts.model import Severity
from engine.api.context import ApiContext
from engine.api.openapi import error_responses
from engine.api.problems import JsonResponse, bad_parameter, not_found
from engine.api.schemas import (
    ALERT_TYPES,
    CursorParam,
    LimitParam,
    PositionCoordSysParam,
    alert_in,
    alert_json,
    page_response,
    paged,
    parse_coord_sys_param,
    parse_limit,
    parse_since_ms,
)
from engine.store.console_queries import SORTS
from engine.store.console_types import CaseState
from engine.store.port import AlertQuery

STATES = tuple(s.value for s in CaseState)
SEVERITIES = tuple(s.value for s in Severity)


def add_alert_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the alert routes."""

    @app.get(
        "/v1/alerts",
        summary="List alerts, newest first (or most severe first), with their cases",
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
        state: Annotated[
            str | None, Query(description=f"The case's state: {', '.join(STATES)}.")
        ] = None,
        assignee: Annotated[
            str | None, Query(description="Cases assigned to this operator.")
        ] = None,
        severity: Annotated[
            str | None, Query(description=f"One of {', '.join(SEVERITIES)}.")
        ] = None,
        fence_id: Annotated[str | None, Query(description="Alerts about this fence.")] = None,
        sort: Annotated[
            str | None,
            Query(
                description="`ts` (default): newest first; `severity`: most severe first, "
                "then newest."
            ),
        ] = None,
        coord_sys: PositionCoordSysParam = None,
    ) -> Response:
        """Alerts filtered by type, loan, device, fence, event time, case state, assignee
        and severity; each with its `case` (without notes: `GET /v1/alerts/{id}` has them),
        its positions in the `coord_sys` asked for."""
        system = parse_coord_sys_param(coord_sys)
        _check_choice("type", type_, tuple(sorted(ALERT_TYPES)), "an alert type")
        _check_choice("state", state, STATES, "a case state")
        _check_choice("severity", severity, SEVERITIES, "a severity")
        _check_choice("sort", sort, SORTS, "a sort order")
        query = AlertQuery(
            type=type_,
            loan_id=loan_id,
            device_id=device_id,
            since_ms=parse_since_ms(since),
            limit=parse_limit(limit),
            cursor=cursor,
            state=state,
            assignee=assignee,
            severity=severity,
            fence_id=fence_id,
            sort=sort or "ts",
        )
        page = paged(lambda: api.store.list_alerts(query))
        return page_response([alert_in(alert_json(a), system) for a in page.items], page.next)

    @app.get(
        "/v1/alerts/{alert_id}",
        summary="Get an alert with its case and the case's notes",
        tags=["alerts"],
        responses=error_responses(400, 404),
    )
    def get_alert(alert_id: str, coord_sys: PositionCoordSysParam = None) -> Response:
        """One alert, with its acknowledgement and its case (notes oldest first), its
        positions in the `coord_sys` asked for."""
        system = parse_coord_sys_param(coord_sys)
        stored = api.store.get_alert(alert_id)
        if stored is None:
            raise not_found(f"alert {alert_id!r} does not exist")
        return JsonResponse(alert_in(alert_json(stored, notes=True), system))


def _check_choice(name: str, value: str | None, choices: tuple[str, ...], what: str) -> None:
    """A 400 naming the parameter when `value` is not one of `choices`."""
    if value is not None and value not in choices:
        raise bad_parameter(name, f"{name} {value!r} is not {what}; known: {list(choices)}")
