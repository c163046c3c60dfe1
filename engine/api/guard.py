"""The guard in front of every route: auth and roles, body size limits, a 500 problem on a
crash.

A pure ASGI middleware: it checks the bearer token and a declared Content-Length before any
handler runs, and counts the bytes of a streamed body as they arrive, so an oversized body
is refused, never buffered whole. Before the 413 goes out, the rest of the body is read and
thrown away (up to `DRAIN_BYTES` within `DRAIN_S`): a client still sending when the
server answers and closes sees a broken pipe, not the problem that says why.

OsmAnd and Traccar Client cannot send headers: `OSMAND_PATH` also takes the token as the
`token` query parameter (the Authorization header wins when there is one).

The API token admits every route. A device token (`engine.api.device_tokens`) admits only
`DEVICE_TOKEN_PATHS`, the HTTP inputs: the guard finds its device (a store read, in a worker
thread) and leaves it in the scope under `ADMITTED_DEVICE` for the route, which refuses
readings of any other device. A device token anywhere else is a 403, an unknown or revoked
one a 401.

Operators and machines (`engine.api.principals`): a machine token (`pwt_…`) or, without an
Authorization header, an operator's session cookie names a principal with a role; the
guard leaves it in the scope under `PRINCIPAL` and answers 403, naming the role needed,
when the role does not admit the request. A request that rides on the cookie with an
unsafe method must carry the session's CSRF token in `X-CSRF-Token` (else 403); bearer
requests need none. `POST /v1/session` (signing in) needs no credential, nor do the
console's page and files under `/console`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.api.device_tokens import DEVICE_TOKEN_PREFIX
from engine.api.principals import (
    ANONYMOUS,
    API_TOKEN,
    API_TOKEN_PREFIX,
    CSRF_HEADER,
    PRINCIPAL,
    SAFE_METHODS,
    SESSION_COOKIE,
    SESSION_PATH,
    Principal,
    required_role,
)
from engine.api.problems import Problem, problem_response
from engine.store.port import StoreError

_log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_BODY_LIMIT = 1 * MiB
FENCE_BODY_LIMIT = 16 * MiB  # one real boundary: New York's Queens alone is 1.2 MB of GeoJSON
IMPORT_BODY_LIMIT = 64 * MiB
DRAIN_BYTES = 64 * MiB  # of a refused body, read and discarded so the client sees the 413
DRAIN_S = 10.0
FENCES_IMPORT_PATH = "/v1/fences:import"
LOANS_IMPORT_PATH = "/v1/loans:import"
IMPORT_PATHS = frozenset({FENCES_IMPORT_PATH, LOANS_IMPORT_PATH})
FENCE_PATH_PREFIX = "/v1/fences/"  # PUT of one fence: `FENCE_BODY_LIMIT`
"""The paths whose bodies may reach the import limit rather than the default one."""
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""The paths that need no bearer token."""
CONSOLE_PATH = "/console"
"""The console's page and files (`engine.api.console_files`) under it need no credential:
the page signs in through the API."""
OSMAND_PATH = "/v1/ingest/osmand"
TRACCAR_PATH = "/v1/ingest/traccar"
QUERY_TOKEN_PATHS = frozenset({OSMAND_PATH})
"""The paths that also take the token as `?token=`: their clients cannot send headers."""
DEVICE_TOKEN_PATHS = frozenset({OSMAND_PATH, TRACCAR_PATH})
"""The paths a device token admits (for its own device's readings only)."""
ADMITTED_DEVICE = "pledgewatch.admitted_device"
"""The scope key of the device whose token admitted the request (absent for the API token)."""
_CHALLENGE = 'Bearer realm="pledgewatch"'


class Guard:
    """Pure ASGI middleware: auth and roles, body size limits, and a 500 problem for crashes."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        body_limit: int,
        import_limit: int,
        fence_limit: int = FENCE_BODY_LIMIT,
        device_for: Callable[[str], str | None] | None = None,
        token_for: Callable[[str], Principal | None] | None = None,
        session_for: Callable[[str], Principal | None] | None = None,
    ) -> None:
        """`device_for`: the device whose token a credential is, or None (a blocking read);
        None: no device tokens. `token_for` and `session_for`: the principal of a machine
        token and of a session id, or None (blocking reads); None: no such credentials."""
        self.app = app
        self.token = None if token is None else token.encode()
        self.device_for = device_for
        self.token_for = token_for
        self.session_for = session_for
        self.body_limit = body_limit
        self.import_limit = import_limit
        self.fence_limit = fence_limit

    def _limit(self, method: str, path: str) -> int:
        """The body limit of a request: imports, one fence, or anything else."""
        if path in IMPORT_PATHS:
            return self.import_limit
        if method == "PUT" and path.startswith(FENCE_PATH_PREFIX):
            return max(self.fence_limit, self.body_limit)
        return self.body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then run the app with a receive that counts body bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            headers = Headers(scope=scope)
            limit = self._limit(scope.get("method", ""), path)
            refused = (
                _nul_in_path(path)
                or await self._authorize(scope.get("method", ""), path, headers, scope)
                or _refuse_length(headers, limit)
                or _nul_in_query(scope)
            )
            if refused is not None:
                if refused.status == 413:
                    await _drain(receive)
                await problem_response(refused, path)(scope, receive, send)
                return
            await self.app(scope, _counting(receive, limit), tracked)
        except Exception:
            _log.exception("unhandled error on %s %s", scope.get("method"), path)
            if started:
                raise
            crash = Problem(500, "internal-error", "an unexpected error occurred; it is logged")
            await problem_response(crash, path)(scope, receive, send)

    async def _authorize(
        self, method: str, path: str, headers: Headers, scope: Scope
    ) -> Problem | None:
        """None if the request may go on, its principal (or a device token's device) noted
        in the scope."""
        if path in OPEN_PATHS or (method == "POST" and path == SESSION_PATH) or _console(path):
            return None
        principal: Principal | Problem | None = None
        session_id = _session_cookie(headers)
        if "authorization" not in headers and session_id is not None:
            principal = await self._session(method, path, headers, session_id)
        if principal is None and self.token is None:
            principal = ANONYMOUS
        if principal is None:
            principal = await self._bearer(path, headers, scope)
        if principal is None or isinstance(principal, Problem):
            return principal
        needed = required_role(method, path)
        if not principal.role.admits(needed):
            detail = (
                f"{principal.describe()} has the {principal.role.value} role; "
                f"{method} {path} needs the {needed.value} role"
            )
            extra = {"required_role": needed.value, "role": principal.role.value}
            return Problem(403, "forbidden", detail, extra=extra)
        scope[PRINCIPAL] = principal
        return None

    async def _session(
        self, method: str, path: str, headers: Headers, session_id: str
    ) -> Principal | Problem | None:
        """The principal of a session cookie; a 401 for one that is unknown or ended (None
        in dev mode: the request goes on anonymously), a 403 for an unsafe request without
        its CSRF token."""
        principal = None
        if self.session_for is not None:
            found = await self._lookup(self.session_for, session_id, path)
            if isinstance(found, Problem):
                return found
            principal = found
        if principal is None:
            if self.token is None:
                return None
            detail = "the session has ended or expired: sign in again (POST /v1/session)"
            return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": _CHALLENGE})
        if method not in SAFE_METHODS:
            sent = headers.get(CSRF_HEADER, "")
            expected = principal.csrf_token or ""
            if not (sent and hmac.compare_digest(sent.encode(), expected.encode())):
                detail = (
                    f"{method} with the session cookie needs the session's CSRF token in "
                    "X-CSRF-Token (from POST or GET /v1/session)"
                )
                return Problem(403, "forbidden", detail)
        return principal

    async def _lookup(
        self, find: Callable[[str], Principal | None], credential: str, path: str
    ) -> Principal | Problem | None:
        """A blocking principal lookup in a worker thread; a 503 when the store fails."""
        try:
            return await run_in_threadpool(find, credential)
        except StoreError as exc:
            _log.warning("credential lookup failed on %s: %s", path, exc)
            detail = "the store did not answer while checking the credential; retry shortly"
            return Problem(503, "store-unavailable", detail, headers={"Retry-After": "1"})

    async def _bearer(
        self, path: str, headers: Headers, scope: Scope
    ) -> Principal | Problem | None:
        """The principal of the bearer token (the API token or a machine token); None
        for a device token admitted to an input (its device noted in the scope)."""
        credential = _credential(path, headers, scope)
        if isinstance(credential, Problem):
            return credential
        if self.token is not None and hmac.compare_digest(credential.encode(), self.token):
            return API_TOKEN
        if self.token_for is not None and credential.startswith(API_TOKEN_PREFIX):
            found = await self._lookup(self.token_for, credential, path)
            if found is not None:
                return found
        device_id = None
        if self.device_for is not None and credential.startswith(DEVICE_TOKEN_PREFIX):
            try:
                device_id = await run_in_threadpool(self.device_for, credential)
            except StoreError as exc:
                _log.warning("device token lookup failed on %s: %s", path, exc)
                detail = "the store did not answer while checking the token; retry shortly"
                return Problem(503, "store-unavailable", detail, headers={"Retry-After": "1"})
        if device_id is None:
            return Problem(
                401,
                "unauthorized",
                "the bearer token is not valid (not the API token, an API token of /v1/tokens, "
                "nor a device's current token)",
                headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
            )
        if path not in DEVICE_TOKEN_PATHS:
            inputs = ", ".join(sorted(DEVICE_TOKEN_PATHS))
            detail = (
                f"this is the token of device {device_id!r}: it admits only the HTTP inputs "
                f"({inputs}); use the API token"
            )
            challenge = f'{_CHALLENGE}, error="insufficient_scope"'
            return Problem(403, "forbidden", detail, headers={"WWW-Authenticate": challenge})
        scope[ADMITTED_DEVICE] = device_id
        return None


def _credential(path: str, headers: Headers, scope: Scope) -> str | Problem:
    """The bearer token of the Authorization header; without one, on `QUERY_TOKEN_PATHS`,
    the `token` query parameter; else a 401."""
    authorization = headers.get("authorization")
    if authorization is None:
        if path in QUERY_TOKEN_PATHS:
            query: bytes = scope.get("query_string", b"")
            for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                if key == "token":
                    return value
        detail = "the Authorization header is missing: send 'Authorization: Bearer <token>'"
        return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": _CHALLENGE})
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        detail = "the Authorization header must be 'Bearer <token>'"
        return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": _CHALLENGE})
    return credentials.strip()


def _session_cookie(headers: Headers) -> str | None:
    """The session id of the request's session cookie, if it has one."""
    cookie = headers.get("cookie")
    if not cookie:
        return None
    return cookie_parser(cookie).get(SESSION_COOKIE) or None


def _console(path: str) -> bool:
    return path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/")


def _nul_in_path(path: str) -> Problem | None:
    if "\x00" in path:
        return Problem(400, "malformed-request", "the path contains a NUL character (%00)")
    return None


def _refuse_length(headers: Headers, limit: int) -> Problem | None:
    """A 400 for a Content-Length that is not a number, a 413 for one over `limit`."""
    length = headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit() and len(length) <= 18):
            return Problem(400, "malformed-request", f"Content-Length {length!r} is not valid")
        if int(length) > limit:
            return _too_large(limit)
    return None


def _nul_in_query(scope: Scope) -> Problem | None:
    """A 400 for a query string holding a NUL (`%00`): no parameter of ours takes one, and
    PostgreSQL text cannot hold it."""
    query: bytes = scope.get("query_string", b"")
    if b"\x00" in query or b"%00" in query:
        return Problem(400, "invalid-parameter", "the query string contains a NUL character (%00)")
    return None


def _too_large(limit: int) -> Problem:
    detail = f"the request body exceeds this endpoint's limit of {limit} bytes"
    if limit % MiB == 0:
        detail += f" ({limit // MiB} MiB)"
    return Problem(413, "payload-too-large", detail, extra={"limit_bytes": limit})


def _counting(receive: Receive, limit: int) -> Callable[[], Awaitable[Message]]:
    """A receive that fails with 413 as soon as the streamed body passes `limit` bytes."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                if message.get("more_body", False):
                    await _drain(receive)
                raise _too_large(limit)
        return message

    return wrapped


async def _drain(receive: Receive) -> None:
    """Read and discard what is left of a refused body, within `DRAIN_BYTES` and `DRAIN_S`."""
    seen = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_S):
            while seen <= DRAIN_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return
                seen += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
