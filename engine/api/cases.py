"""Routes of an alert's case: acknowledge, assign, resolve, reopen, and notes (role
`operator` or above; `engine.api.principals`).

A case goes open → acknowledged → resolved, and back to open when reopened. Each action
records who and when, adds its note (if any) to the notes history, and writes its audit
entry in the same transaction (`Store.change_case`). Every route answers the alert with
its case and notes. Resolving a resolved case or reopening an open one is a 409; an
acknowledgement of a resolved case only keeps its note.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

from engine.api.context import ApiContext
from engine.api.openapi import (
    ACK_SCHEMA,
    ASSIGN_SCHEMA,
    BODY_ERRORS,
    NOTE_SCHEMA,
    body_doc,
    error_responses,
)
from engine.api.principals import Caller, Principal, audit_entry
from engine.api.problems import JsonResponse, Problem, not_found, validation
from engine.api.roles import Role
from engine.api.schemas import MAX_NOTE_CHARS, JsonBody, OptionalJsonBody, alert_json
from engine.store.console_types import CaseAction, CaseChange, CaseResult
from geofence.fence import short_repr

_PATH = "/v1/alerts/{alert_id}/"


def add_case_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the case routes."""

    def act(alert_id: str, change: CaseChange, who: Principal) -> Response:
        detail: dict[str, object] = {}
        if change.note is not None:
            detail["note"] = change.note[:200]
        if change.action is CaseAction.ASSIGN:
            detail["assignee"] = change.assignee
        action = f"alert.{change.action.value}"
        audit = audit_entry(who, api.engine.now_ms(), action, f"alert:{alert_id}", **detail)
        result = api.store.change_case(alert_id, change, audit)
        if result is CaseResult.CONFLICT:
            verb = "resolved" if change.action is CaseAction.RESOLVE else "open"
            raise Problem(409, "conflict", f"the case of alert {alert_id!r} is {verb} already")
        stored = api.store.get_alert(alert_id)
        if result is CaseResult.MISSING or stored is None:
            raise not_found(f"alert {alert_id!r} does not exist")
        return JsonResponse(alert_json(stored, notes=True))

    @app.post(
        _PATH + "ack",
        summary="Acknowledge an alert, with an optional note (operator)",
        tags=["alerts"],
        responses=error_responses(404, *BODY_ERRORS),
        openapi_extra=body_doc(ACK_SCHEMA, required=False),
    )
    def ack_alert(alert_id: str, doc: OptionalJsonBody, who: Caller) -> Response:
        """Record who acknowledged, and when (the first acknowledgement's time is kept)."""
        note = _note(doc, "note", required=False)
        return act(alert_id, CaseChange(CaseAction.ACK, note=note), who)

    @app.post(
        _PATH + "assign",
        summary="Assign an alert's case to an operator, or unassign it (operator)",
        tags=["alerts"],
        responses=error_responses(404, *BODY_ERRORS),
        openapi_extra=body_doc(ASSIGN_SCHEMA),
    )
    def assign_alert(alert_id: str, doc: JsonBody, who: Caller) -> Response:
        """`assignee`: an operator with role operator or admin; null unassigns."""
        if not isinstance(doc, dict) or "assignee" not in doc:
            raise validation('the body must be a JSON object like {"assignee": "alice"}', None)
        assignee = doc["assignee"]
        if assignee is not None:
            operator = api.store.get_operator(assignee) if isinstance(assignee, str) else None
            if operator is None:
                detail = f"assignee: there is no operator named {short_repr(assignee)}"
                raise validation(detail, "assignee")
            if operator.role == Role.VIEWER.value:
                detail = f"assignee: {assignee!r} is a viewer; assign cases to an operator"
                raise validation(detail, "assignee")
        return act(alert_id, CaseChange(CaseAction.ASSIGN, assignee=assignee), who)

    @app.post(
        _PATH + "resolve",
        summary="Resolve an alert's case, with an optional note (operator)",
        tags=["alerts"],
        responses=error_responses(404, 409, *BODY_ERRORS),
        openapi_extra=body_doc(ACK_SCHEMA, required=False),
    )
    def resolve_alert(alert_id: str, doc: OptionalJsonBody, who: Caller) -> Response:
        """Close the case (acknowledging it too if nobody had); 409 if it is resolved."""
        note = _note(doc, "note", required=False)
        return act(alert_id, CaseChange(CaseAction.RESOLVE, note=note), who)

    @app.post(
        _PATH + "reopen",
        summary="Reopen an alert's case, with an optional note (operator)",
        tags=["alerts"],
        responses=error_responses(404, 409, *BODY_ERRORS),
        openapi_extra=body_doc(ACK_SCHEMA, required=False),
    )
    def reopen_alert(alert_id: str, doc: OptionalJsonBody, who: Caller) -> Response:
        """Back to open: its acknowledgement and resolution are cleared (the audit log and
        the notes keep them); 409 if it is open."""
        note = _note(doc, "note", required=False)
        return act(alert_id, CaseChange(CaseAction.REOPEN, note=note), who)

    @app.post(
        _PATH + "notes",
        summary="Add a note to an alert's case (operator)",
        tags=["alerts"],
        responses=error_responses(404, *BODY_ERRORS),
        openapi_extra=body_doc(NOTE_SCHEMA),
    )
    def add_note(alert_id: str, doc: JsonBody, who: Caller) -> Response:
        """Append `text` to the case's notes, with who and when."""
        text = _note(doc, "text", required=True)
        return act(alert_id, CaseChange(CaseAction.NOTE, note=text), who)


def _note(doc: object, field: str, *, required: bool) -> str | None:
    """The note of a body (`{field: "..."}`, or no body when not `required`); a 422 naming
    the field otherwise."""
    if doc is None and not required:
        return None
    if not isinstance(doc, dict):
        raise validation(f'the body must be a JSON object like {{"{field}": "..."}}', None)
    value = doc.get(field)
    if value is None and not required:
        return None
    least = 1 if required else 0
    if not isinstance(value, str) or not least <= len(value) <= MAX_NOTE_CHARS:
        detail = f"{field}: must be a string of {least} to {MAX_NOTE_CHARS} characters"
        raise validation(detail, field)
    return value or None  # an empty optional note is no note
