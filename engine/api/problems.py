"""RFC 9457 problem details: every error of the HTTP API, in one shape.

`{"type": "https://pledgewatch.dev/problems/<slug>", "title", "status", "detail",
"instance"}` with media type `application/problem+json`; a validation problem adds
`errors`, a list of `{"field", "message"}`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from engine.store.port import StoreError

_log = logging.getLogger(__name__)

PROBLEM_BASE = "https://pledgewatch.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

TITLES: dict[str, str] = {
    "malformed-request": "Malformed request",
    "invalid-parameter": "Invalid query parameter",
    "unauthorized": "Missing or invalid credentials",
    "forbidden": "The credentials do not admit this request",
    "not-found": "Not found",
    "conflict": "Conflict with the resource's state",
    "too-many-requests": "Too many attempts",
    "too-many-streams": "Too many live feeds open",
    "method-not-allowed": "Method not allowed",
    "payload-too-large": "Request body too large",
    "unsupported-media-type": "Unsupported media type",
    "validation-error": "The request body or path is not valid",
    "internal-error": "Internal server error",
    "store-unavailable": "The store is unavailable",
    "engine-down": "The engine is not running",
    "lending-off": "The lending consumers are off",
    "http-error": "HTTP error",
}
"""Every problem type the API emits, by slug, with its title."""


class JsonResponse(Response):
    """A JSON response serialised with orjson."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        """Serialise with orjson (NaN and Inf become null)."""
        return orjson.dumps(content)


class ProblemResponse(JsonResponse):
    """An `application/problem+json` response."""

    media_type = PROBLEM_MEDIA_TYPE


@dataclass(frozen=True, slots=True)
class FieldError:
    """One defect of a request: the field or parameter, and what is wrong with it."""

    field: str | None
    message: str


class Problem(Exception):  # noqa: N818  # it is the problem, not an error about one
    """Raised by a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{status} {slug}: {detail}")
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = tuple(errors)
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def validation(detail: str, fld: str | None) -> Problem:
    """A 422 naming the field that is wrong."""
    return Problem(422, "validation-error", detail, errors=(FieldError(fld, detail),))


def bad_parameter(name: str, detail: str) -> Problem:
    """A 400 naming the query parameter that is wrong."""
    return Problem(400, "invalid-parameter", detail, errors=(FieldError(name, detail),))


def not_found(detail: str) -> Problem:
    """A 404 saying what does not exist."""
    return Problem(404, "not-found", detail)


def problem_body(problem: Problem, instance: str) -> dict[str, object]:
    """The problem document."""
    body: dict[str, object] = {
        "type": PROBLEM_BASE + problem.slug,
        "title": TITLES.get(problem.slug, TITLES["http-error"]),
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
    }
    if problem.errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in problem.errors]
    body.update(problem.extra)
    return body


def problem_response(problem: Problem, instance: str) -> ProblemResponse:
    """The problem as a response."""
    return ProblemResponse(
        problem_body(problem, instance), status_code=problem.status, headers=problem.headers
    )


async def on_problem(request: Request, exc: Exception) -> Response:
    """Exception handler for `Problem`."""
    if not isinstance(exc, Problem):  # pragma: no cover  # registered for Problem only
        raise exc
    return problem_response(exc, request.url.path)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own HTTP errors (unknown route, 405) as problems."""
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover  # registered for it only
        raise exc
    path, method = request.url.path, request.method
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        problem = not_found(f"no route matches {method} {path}")
    elif exc.status_code == 405:
        allowed = allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
        detail = f"{method} is not allowed on {path}; allowed: {', '.join(allowed) or 'none'}"
        problem = Problem(405, "method-not-allowed", detail)
    else:
        problem = Problem(exc.status_code, "http-error", str(exc.detail))
    problem.headers = headers
    return problem_response(problem, path)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts on this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        regex = getattr(route, "path_regex", None)
        route_methods = getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(request.url.path):
            methods.update(str(m) for m in route_methods)
    return sorted(methods)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's request validation errors as a 422 problem with `errors`."""
    if not isinstance(exc, RequestValidationError):  # pragma: no cover  # registered for it only
        raise exc
    errors: list[FieldError] = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in {"body", "query", "path", "header"}:
            loc = loc[1:]
        errors.append(FieldError(".".join(loc) or None, str(err.get("msg", "invalid"))))
    detail = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
    return problem_response(
        Problem(422, "validation-error", detail or "invalid request", errors=errors),
        request.url.path,
    )


async def on_store_error(request: Request, exc: Exception) -> Response:
    """A store that is down or locked: 503, worth retrying."""
    _log.warning("store error on %s %s: %s", request.method, request.url.path, exc)
    problem = Problem(
        503,
        "store-unavailable",
        "the store did not answer; retry shortly",
        headers={"Retry-After": "1"},
    )
    return problem_response(problem, request.url.path)


Handler = Callable[[Request, Exception], Coroutine[object, object, Response]]

EXCEPTION_HANDLERS: dict[int | type[Exception], Handler] = {
    Problem: on_problem,
    StarletteHTTPException: on_http_exception,
    RequestValidationError: on_validation_error,
    StoreError: on_store_error,
}
"""What `create_app` registers; uncaught exceptions are answered by the API's middleware."""
