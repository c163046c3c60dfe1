"""Routes of `/v1/tokens` (admin only): named API tokens with a role, for machines.

A loan-servicing system that only reads alerts gets a `viewer` token, a ticketing bridge
that works cases an `operator` one; neither needs the admin's `--api-token`. `POST` makes
one and answers it once: it is `pwt_` and 32 random bytes, and only its SHA-256 is stored
(`engine.api.credentials`, as device tokens). `DELETE` revokes it at once, in every process
on the same database (the guard reads it at each request, `engine.api.principals`).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import FastAPI, Path
from starlette.responses import Response

from alerts.model import iso_ms
from engine.api.context import ApiContext
from engine.api.credentials import new_token, token_sha256
from engine.api.openapi import BODY_ERRORS, TOKEN_SCHEMA, body_doc, error_responses
from engine.api.operators import check_name, parse_role
from engine.api.principals import API_TOKEN_PREFIX, Caller, audit_entry
from engine.api.problems import JsonResponse, Problem, not_found, validation
from engine.api.roles import NAME_RE
from engine.api.schemas import JsonBody, page_response
from engine.store.console_types import ApiToken

_NO_STORE = {"Cache-Control": "no-store"}
TokenName = Annotated[
    str,
    Path(
        description="The token's name",
        json_schema_extra={"pattern": f"^{NAME_RE.pattern}$"},  # checked by `check_name`
    ),
]


def add_api_token_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the API token routes."""

    @app.post(
        "/v1/tokens",
        summary="Make a named API token with a role (admin); the token is answered once",
        tags=["console"],
        status_code=201,
        responses=error_responses(*BODY_ERRORS, 409),
        openapi_extra=body_doc(TOKEN_SCHEMA),
    )
    def create_token(doc: JsonBody, who: Caller) -> Response:
        """A new token; its name must be new (revoke the old one to replace it)."""
        if not isinstance(doc, dict):
            raise validation('the body must be a JSON object like {"name": ..., "role": ...}', None)
        name = doc.get("name")
        if not isinstance(name, str):
            raise validation("name: must be a string", "name")
        check_name(name, "name")
        role = parse_role(doc.get("role"))
        token = new_token(API_TOKEN_PREFIX)
        now_ms = api.engine.now_ms()
        audit = audit_entry(who, now_ms, "token.create", f"token:{name}", role=role.value)
        if not api.store.create_api_token(name, role.value, token_sha256(token), audit):
            detail = f"a token named {name!r} exists: revoke it first (DELETE /v1/tokens/{name})"
            raise Problem(409, "conflict", detail)
        body = {
            "name": name,
            "role": role.value,
            "token": token,
            "created_at": iso_ms(now_ms),
            "created_by": who.name,
        }
        headers = {**_NO_STORE, "Location": f"/v1/tokens/{quote(name)}"}
        return JsonResponse(body, status_code=201, headers=headers)

    @app.get(
        "/v1/tokens",
        summary="List API tokens by name (admin; never the tokens)",
        tags=["console"],
        responses=error_responses(),
    )
    def list_tokens() -> Response:
        """Every machine token, in one page."""
        return page_response([token_json(t) for t in api.store.list_api_tokens()], None)

    @app.delete(
        "/v1/tokens/{name}",
        summary="Revoke an API token (admin)",
        tags=["console"],
        status_code=204,
        response_class=Response,
        responses=error_responses(404),
    )
    def delete_token(name: TokenName, who: Caller) -> Response:
        """The token is refused (401) from now on."""
        audit = audit_entry(who, api.engine.now_ms(), "token.delete", f"token:{name}")
        if not api.store.delete_api_token(name, audit):
            raise not_found(f"there is no token named {name!r}")
        return Response(status_code=204)


def token_json(token: ApiToken) -> dict[str, object]:
    """A machine token as listed: never the token."""
    return {
        "name": token.name,
        "role": token.role,
        "created_at": iso_ms(token.created_ms),
        "created_by": token.created_by,
    }
