"""Routes of `/v1/session`: an operator signs in to the console, sees who is signed in,
and signs out (DESIGN §9 "Console").

Signing in sets the session cookie `pw_session`: a random id of 256 bits, stored only as
its SHA-256 with its expiry (`SESSION_TTL_S`), `HttpOnly`, `SameSite=Strict`, `Path=/`, and
`Secure` unless the request came over plain http to a loopback address (a browser drops a
Secure cookie there). The answer carries the session's CSRF token, which every unsafe
request riding on the cookie must send back in `X-CSRF-Token` (`engine.api.principals`).

A failed sign-in is counted and slowed per name (`engine.api.login_throttle`), and its
answer is the same whether the name exists or not, after as long (an unknown name is
checked against a dummy hash).
"""

from __future__ import annotations

import ipaddress
import math
import secrets

from fastapi import FastAPI, Request
from starlette.responses import Response

from alerts.model import iso_ms
from engine.api.context import ApiContext
from engine.api.credentials import (
    MAX_PASSWORD_CHARS,
    TOKEN_BYTES,
    dummy_hash,
    token_sha256,
    verify_password,
)
from engine.api.openapi import BODY_ERRORS, LOGIN_SCHEMA, body_doc, error_responses
from engine.api.principals import (
    SESSION_COOKIE,
    SESSION_PATH,
    Caller,
    Principal,
    audit_entry,
    csrf_token,
)
from engine.api.problems import JsonResponse, Problem, validation
from engine.api.schemas import JsonBody
from engine.store.console_types import Actor, ActorKind, AuditEntry

SESSION_TTL_S = 12 * 3600
_NO_STORE = {"Cache-Control": "no-store"}
_WRONG = "the name or the password is wrong"


def add_session_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the session routes."""

    @app.post(
        SESSION_PATH,
        summary="Sign in: set the session cookie; answers the operator and the CSRF token",
        tags=["console"],
        responses=error_responses(*BODY_ERRORS, 429),
        openapi_extra={**body_doc(LOGIN_SCHEMA), "security": []},
    )
    def sign_in(request: Request, doc: JsonBody) -> Response:
        """Check the password; on success a new session, its cookie and its CSRF token."""
        name, password = _credentials(doc)
        wait_s = api.logins.wait_s(name)
        if wait_s > 0:
            detail = f"too many failed sign-ins for this name: retry in {math.ceil(wait_s)} s"
            retry = {"Retry-After": str(math.ceil(wait_s))}
            raise Problem(429, "too-many-requests", detail, headers=retry)
        found = api.store.operator_login(name)
        good = verify_password(password, found[1] if found else dummy_hash())
        session_id = secrets.token_urlsafe(TOKEN_BYTES)
        now_ms = api.engine.now_ms()
        expires_ms = now_ms + SESSION_TTL_S * 1000
        audit = AuditEntry(
            now_ms, Actor(name, ActorKind.OPERATOR), "session.start", f"operator:{name}"
        )
        if (
            found is None
            or not good
            or not api.store.create_session(token_sha256(session_id), name, expires_ms, audit)
        ):
            api.logins.failed(name)
            raise Problem(401, "unauthorized", _WRONG)
        api.logins.succeeded(name)
        body = {
            "name": name,
            "role": found[0],
            "csrf_token": csrf_token(session_id),
            "expires_at": iso_ms(expires_ms),
        }
        response = JsonResponse(body, headers=_NO_STORE)
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=SESSION_TTL_S,
            path="/",
            secure=not _plain_loopback(request),
            httponly=True,
            samesite="strict",
        )
        return response

    @app.get(
        SESSION_PATH,
        summary="Who is signed in (or which token calls), with the session's CSRF token",
        tags=["console"],
        responses=error_responses(),
    )
    def get_session(who: Caller) -> Response:
        """The caller: name, role, how it signed in, and its CSRF token (sessions only)."""
        return JsonResponse(_shown(who), headers=_NO_STORE)

    @app.delete(
        SESSION_PATH,
        summary="Sign out: end the session and clear its cookie",
        tags=["console"],
        status_code=204,
        response_class=Response,
        responses=error_responses(),
    )
    def sign_out(request: Request, who: Caller) -> Response:
        """End the caller's session (a bearer token has none: nothing to end)."""
        if who.session_sha256 is not None:
            target = f"operator:{who.name}"
            audit = audit_entry(who, api.engine.now_ms(), "session.end", target)
            api.store.delete_session(who.session_sha256, audit)
        response = Response(status_code=204)
        response.delete_cookie(
            SESSION_COOKIE,
            path="/",
            secure=not _plain_loopback(request),
            httponly=True,
            samesite="strict",
        )
        return response


def _credentials(doc: object) -> tuple[str, str]:
    """(name, password) of a sign-in body; a 422 naming the field otherwise."""
    if not isinstance(doc, dict):
        raise validation('the body must be a JSON object like {"name": ..., "password": ...}', None)
    name, password = doc.get("name"), doc.get("password")
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise validation("name: must be a string of 1 to 64 characters", "name")
    if not isinstance(password, str) or not 0 < len(password) <= MAX_PASSWORD_CHARS:
        detail = f"password: must be a string of 1 to {MAX_PASSWORD_CHARS} characters"
        raise validation(detail, "password")
    return name, password


def _shown(who: Principal) -> dict[str, object]:
    return {
        "name": who.name,
        "role": who.role.value,
        "kind": who.kind.value,
        "csrf_token": who.csrf_token,
    }


def _plain_loopback(request: Request) -> bool:
    """Whether the request came over plain http to a loopback address (a Secure cookie
    would not be kept there)."""
    if request.url.scheme != "http":
        return False
    server = request.scope.get("server")
    host = str(server[0]) if server else ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
