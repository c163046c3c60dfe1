"""Routes of `/v1/operators` (admin only): the people who sign in to the console.

`PUT /v1/operators/{name}` creates an operator (`role` and `password`) or changes one
(`role`, and `password` to replace it, which ends the operator's sessions). The password
is hashed here with scrypt and a random salt (`engine.api.credentials`); it is never
stored or answered in clear. The first admin is made without the API:
`pledgewatch operators add NAME --role admin` (`engine.cli.operators`).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import FastAPI, Path
from starlette.responses import Response

from alerts.model import iso_ms
from engine.api.context import ApiContext
from engine.api.credentials import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, hash_password
from engine.api.openapi import BODY_ERRORS, OPERATOR_SCHEMA, body_doc, error_responses
from engine.api.principals import Caller, audit_entry
from engine.api.problems import not_found, validation
from engine.api.roles import NAME_RE, ROLES, Role
from engine.api.schemas import JsonBody, created, page_response
from engine.store.console_types import Operator, PutOperator
from geofence.fence import short_repr

Name = Annotated[
    str,
    Path(
        description="The operator's name (letters, digits, _ . @ -; at most 64)",
        json_schema_extra={"pattern": f"^{NAME_RE.pattern}$"},  # checked by `check_name`
    ),
]


def add_operator_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the operator routes."""

    @app.put(
        "/v1/operators/{name}",
        summary="Create an operator or change its role or password (admin)",
        tags=["console"],
        responses=error_responses(*BODY_ERRORS),
        openapi_extra=body_doc(OPERATOR_SCHEMA),
    )
    def put_operator(name: Name, doc: JsonBody, who: Caller) -> Response:
        """201 for a new operator, 200 for a changed one; never the password."""
        check_name(name, "name")
        role, password = parse_operator(doc)
        existed = api.store.get_operator(name) is not None
        action = "operator.update" if existed else "operator.create"
        detail = {"role": role.value, "password_changed": password is not None}
        audit = audit_entry(who, api.engine.now_ms(), action, f"operator:{name}", **detail)
        hashed = None if password is None else hash_password(password)
        outcome = api.store.put_operator(name, role.value, hashed, audit)
        if outcome is PutOperator.NEEDS_PASSWORD:
            raise validation("password: required to create an operator", "password")
        stored = api.store.get_operator(name)
        if stored is None:  # deleted in between
            raise not_found(f"operator {name!r} does not exist")
        existed = outcome is PutOperator.UPDATED
        return created(operator_json(stored), existed, f"/v1/operators/{quote(name)}")

    @app.get(
        "/v1/operators",
        summary="List operators by name (admin)",
        tags=["console"],
        responses=error_responses(),
    )
    def list_operators() -> Response:
        """Every operator, in one page."""
        return page_response([operator_json(o) for o in api.store.list_operators()], None)

    @app.delete(
        "/v1/operators/{name}",
        summary="Delete an operator and end its sessions (admin)",
        tags=["console"],
        status_code=204,
        response_class=Response,
        responses=error_responses(404),
    )
    def delete_operator(name: Name, who: Caller) -> Response:
        """The operator can no longer sign in; its sessions end at once."""
        audit = audit_entry(who, api.engine.now_ms(), "operator.delete", f"operator:{name}")
        if not api.store.delete_operator(name, audit):
            raise not_found(f"operator {name!r} does not exist")
        return Response(status_code=204)


def check_name(name: str, field: str) -> None:
    """A 422 naming `field` when `name` is not a valid operator or token name."""
    if not NAME_RE.fullmatch(name):
        detail = (
            f"{field}: {short_repr(name)} is not a valid name (letters, digits, _ . @ -; "
            "at most 64, starting with a letter or digit)"
        )
        raise validation(detail, field)


def parse_role(value: object) -> Role:
    """A role from a body; a 422 naming `role` otherwise."""
    if not isinstance(value, str) or value not in ROLES:
        raise validation(f"role: must be one of {list(ROLES)}, got {short_repr(value)}", "role")
    return Role(value)


def parse_operator(doc: object) -> tuple[Role, str | None]:
    """(role, password or None) of a `PUT /v1/operators/{name}` body."""
    if not isinstance(doc, dict):
        raise validation('the body must be a JSON object like {"role": ..., "password": ...}', None)
    password = doc.get("password")
    if password is not None and (
        not isinstance(password, str)
        or not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS
    ):
        detail = (
            f"password: must be a string of {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )
        raise validation(detail, "password")
    return parse_role(doc.get("role")), password


def operator_json(operator: Operator) -> dict[str, object]:
    """An operator as the API shows it: never its password."""
    return {
        "name": operator.name,
        "role": operator.role,
        "created_at": iso_ms(operator.created_ms),
        "updated_at": iso_ms(operator.updated_ms),
    }
