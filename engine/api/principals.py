"""Who is calling, and what their role admits (DESIGN §9 "Console").

A request is made by a principal: the API token of `--api-token` (an admin), a named
machine token of `/v1/tokens` (`pwt_…`, its role), an operator's session cookie (the
operator's role, read from the store at each request, so a role change or a deletion takes
effect at once), or, in insecure dev mode, an anonymous admin. The guard finds the
principal and leaves it in the scope under `PRINCIPAL`; a route asks for it with `Caller`.

What each role admits is `required_role` below (the roles: `engine.api.roles`).

A session cookie's CSRF token is derived from the session id (an HMAC keyed by it), so
the page can get it again from `GET /v1/session` and the server keeps nothing more: only
a script of the engine's origin can read it, and a request that rides on the cookie must
carry it in `X-CSRF-Token` when its method is unsafe.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from engine.api.credentials import MAX_TOKEN_CHARS, token_sha256
from engine.api.roles import Role
from engine.store.console_types import Actor, ActorKind, AuditEntry
from engine.store.port import Store

PRINCIPAL = "pledgewatch.principal"
"""The scope key of the request's `Principal` (set by the guard)."""
API_TOKEN_PREFIX = "pwt_"  # noqa: S105  # the prefix of a token, not a secret
SESSION_COOKIE = "pw_session"
CSRF_HEADER = "x-csrf-token"
SESSION_PATH = "/v1/session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request. `session_sha256` and `csrf_token` are set for a session only."""

    name: str
    role: Role
    kind: ActorKind
    session_sha256: str | None = None
    csrf_token: str | None = None

    @property
    def actor(self) -> Actor:
        """This principal as the audit log names it."""
        return Actor(self.name, self.kind)

    def describe(self) -> str:
        """How a problem names the caller."""
        if self.kind is ActorKind.OPERATOR:
            return f"operator {self.name!r}"
        if self.kind is ActorKind.TOKEN:
            return f"API token {self.name!r}"
        return f"the {self.kind.value}"


API_TOKEN = Principal("api-token", Role.ADMIN, ActorKind.API_TOKEN)
ANONYMOUS = Principal("anonymous", Role.ADMIN, ActorKind.ANONYMOUS)

_CASE_ACTION = re.compile(r"/v1/alerts/[^/]+/(ack|assign|resolve|reopen|notes)")
_ADMIN_READS = re.compile(r"/v1/(operators|tokens)(/.*)?|/v1/devices/[^/]+/token")


def required_role(method: str, path: str) -> Role:
    """The least role a request needs, by method and path (before any route matched)."""
    if path == SESSION_PATH:
        return Role.VIEWER  # whoever is signed in may see and end their session
    if method in SAFE_METHODS:
        if _ADMIN_READS.fullmatch(path):
            return Role.ADMIN
        return Role.OPERATOR if path == "/v1/audit" else Role.VIEWER
    if method == "POST" and _CASE_ACTION.fullmatch(path):
        return Role.OPERATOR
    if method == "POST" and path == "/v1/quotes":
        return Role.VIEWER  # a price, computed: nothing changes
    return Role.ADMIN


def caller(request: Request) -> Principal:
    """The request's principal, as the guard found it."""
    principal = request.scope.get(PRINCIPAL)
    return principal if isinstance(principal, Principal) else ANONYMOUS


Caller = Annotated[Principal, Depends(caller)]


def audit_entry(
    who: Principal, at_ms: int, action: str, target: str, **detail: object
) -> AuditEntry:
    """The audit entry of a change `who` makes to `target` at `at_ms`."""
    return AuditEntry(at_ms, who.actor, action, target, detail)


def csrf_token(session_id: str) -> str:
    """The CSRF token of a session: an HMAC keyed by its id (so only its holder has it)."""
    mac = hmac.new(session_id.encode(), b"pledgewatch csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def token_principal(store: Store) -> Callable[[str], Principal | None]:
    """What the guard asks of a `pwt_` credential: its machine token's principal, or None
    (a blocking store read: the guard runs it in a worker thread)."""

    def principal_for(token: str) -> Principal | None:
        if not token.startswith(API_TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            return None
        found = store.api_token_role(token_sha256(token))
        return None if found is None else _principal(found, ActorKind.TOKEN)

    return principal_for


def session_principal(store: Store, now_ms: Callable[[], int]) -> Callable[[str], Principal | None]:
    """What the guard asks of a session cookie: its operator's principal, or None when the
    session is unknown, expired or ended (a blocking store read)."""

    def principal_for(session_id: str) -> Principal | None:
        if not session_id or len(session_id) > MAX_TOKEN_CHARS:
            return None
        digest = token_sha256(session_id)
        found = store.session_operator(digest, now_ms())
        if found is None:
            return None
        name, role = found
        return Principal(name, _role(role), ActorKind.OPERATOR, digest, csrf_token(session_id))

    return principal_for


def _principal(found: tuple[str, str], kind: ActorKind) -> Principal:
    name, role = found
    return Principal(name, _role(role), kind)


def _role(stored: str) -> Role:
    """A stored role; one this version does not know admits the least."""
    try:
        return Role(stored)
    except ValueError:
        return Role.VIEWER
