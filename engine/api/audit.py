"""Route of `/v1/audit` (role `operator` or above): who did what, newest first.

Every case action and note, every change of a fence, loan, webhook, operator, machine
token or device token, every redelivery and every sign-in and sign-out is an entry,
written in the transaction of its change. `actor` is an operator's or a token's name,
`api-token` for the `--api-token`, `anonymous` in dev mode; `actor_kind` says which.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query
from starlette.responses import Response

from alerts.model import iso_ms
from engine.api.context import ApiContext
from engine.api.openapi import error_responses
from engine.api.problems import bad_parameter
from engine.api.schemas import (
    CursorParam,
    LimitParam,
    page_response,
    paged,
    parse_limit,
    parse_since_ms,
)
from engine.store.console_types import AuditEntry, AuditQuery


def add_audit_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the audit route."""

    @app.get(
        "/v1/audit",
        summary="The audit log: who did what to which target, newest first (operator)",
        tags=["console"],
        responses=error_responses(400),
    )
    def list_audit(
        since: Annotated[
            str | None, Query(description="From this time: epoch ms or ISO-8601 with offset.")
        ] = None,
        until: Annotated[
            str | None, Query(description="Before this time: epoch ms or ISO-8601 with offset.")
        ] = None,
        actor: Annotated[
            str | None, Query(description="An operator's or token's name, or api-token.")
        ] = None,
        target: Annotated[
            str | None, Query(description="A target such as alert:<id>, fence:<id>, loan:<id>.")
        ] = None,
        limit: LimitParam = None,
        cursor: CursorParam = None,
    ) -> Response:
        """A page of entries, each `{id, at, actor, actor_kind, action, target, detail}`."""
        since_ms = parse_since_ms(since)
        until_ms = parse_since_ms(until, "until")
        if since_ms is not None and until_ms is not None and until_ms <= since_ms:
            raise bad_parameter("until", "until must be later than since")
        query = AuditQuery(since_ms, until_ms, actor, target, parse_limit(limit), cursor)
        page = paged(lambda: api.store.list_audit(query))
        return page_response([audit_json(e) for e in page.items], page.next)


def audit_json(entry: AuditEntry) -> dict[str, object]:
    """An audit entry as the API shows it."""
    return {
        "id": entry.id,
        "at": iso_ms(entry.at_ms),
        "actor": entry.actor.name,
        "actor_kind": entry.actor.kind.value,
        "action": entry.action,
        "target": entry.target,
        "detail": dict(entry.detail),
    }
