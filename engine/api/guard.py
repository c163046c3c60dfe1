"""The guard in front of every route: bearer auth, body size limits, a 500 problem on a crash.

A pure ASGI middleware: it checks the bearer token and a declared Content-Length before any
handler runs, and counts the bytes of a streamed body as they arrive, so an oversized body
is refused, never buffered whole. Before the 413 goes out, the rest of the body is read and
thrown away (up to `DRAIN_BYTES` within `DRAIN_S`): a client still sending when the
server answers and closes sees a broken pipe, not the problem that says why.

OsmAnd and Traccar Client cannot send headers: `OSMAND_PATH` also takes the token as the
`token` query parameter.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.api.problems import Problem, problem_response

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
OSMAND_PATH = "/v1/ingest/osmand"
QUERY_TOKEN_PATHS = frozenset({OSMAND_PATH})
"""The paths that also take the token as `?token=`: their clients cannot send headers."""


class Guard:
    """Pure ASGI middleware: bearer auth, body size limits, and a 500 problem for crashes."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        body_limit: int,
        import_limit: int,
        fence_limit: int = FENCE_BODY_LIMIT,
    ) -> None:
        self.app = app
        self.token = None if token is None else token.encode()
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
            refused = self._refuse(path, headers, limit, scope) or _nul_in_query(scope)
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

    def _refuse(self, path: str, headers: Headers, limit: int, scope: Scope) -> Problem | None:
        if "\x00" in path:
            return Problem(400, "malformed-request", "the path contains a NUL character (%00)")
        if self.token is not None and path not in OPEN_PATHS and not self._query_token(scope):
            problem = self._unauthorized(headers.get("authorization"))
            if problem is not None:
                return problem
        length = headers.get("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit() and len(length) <= 18):
                return Problem(400, "malformed-request", f"Content-Length {length!r} is not valid")
            if int(length) > limit:
                return _too_large(limit)
        return None

    def _query_token(self, scope: Scope) -> bool:
        """Whether the request is to a `QUERY_TOKEN_PATHS` path and carries the token there."""
        if scope["path"] not in QUERY_TOKEN_PATHS:
            return False
        query: bytes = scope.get("query_string", b"")
        assert self.token is not None
        for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if key == "token":
                return hmac.compare_digest(value.encode(), self.token)
        return False

    def _unauthorized(self, authorization: str | None) -> Problem | None:
        challenge = 'Bearer realm="pledgewatch"'
        if authorization is None:
            detail = "the Authorization header is missing: send 'Authorization: Bearer <token>'"
            return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": challenge})
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            detail = "the Authorization header must be 'Bearer <token>'"
            return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": challenge})
        assert self.token is not None
        if hmac.compare_digest(credentials.strip().encode(), self.token):
            return None
        return Problem(
            401,
            "unauthorized",
            "the bearer token is not valid",
            headers={"WWW-Authenticate": f'{challenge}, error="invalid_token"'},
        )


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
