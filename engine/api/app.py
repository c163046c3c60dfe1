"""The HTTP API of DESIGN §3: fences, loans, webhooks, alerts, devices, health and metrics.

Handlers are thin: parsing and validation live in `geofence`/`lending`, persistence in the
`Store`, live state in the `Engine`. A change is written to the store first, then handed
to the engine, which applies it between batches (the next batch sees it, no restart).
Every error is an RFC 9457 problem (`engine.api.problems`). One ASGI middleware checks the
bearer token and a declared Content-Length before any handler runs, and counts the bytes
of a streamed body as they arrive: an oversized body is refused, never buffered whole.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlsplit

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alerts.dispatcher import Dispatcher
from alerts.model import Alert, AlertType, iso_ms
from alerts.outbox import Delivery, Webhook
from engine.api.problems import (
    EXCEPTION_HANDLERS,
    PROBLEM_MEDIA_TYPE,
    TITLES,
    FieldError,
    JsonResponse,
    Problem,
    bad_parameter,
    not_found,
    problem_response,
    validation,
)
from engine.core.loan import vin_conflict
from engine.core.state import DeviceState
from engine.runtime.live import Engine
from engine.runtime.metrics import counter_lines, gauge_lines, render
from engine.store.port import AlertQuery, Page, Store, StoredAlert
from engine.store.rows import CursorError
from geofence.fence import (
    FENCE_ID_PATTERN,
    MAX_RADIUS_M,
    FenceError,
    fence_to_feature,
    parse_feature_collection,
    parse_fence,
)
from lending.model import Loan, LoanError, loan_to_json, parse_loan, parse_loans

_log = logging.getLogger(__name__)
T = TypeVar("T")

MiB = 1024 * 1024
DEFAULT_BODY_LIMIT = 1 * MiB
IMPORT_BODY_LIMIT = 8 * MiB
IMPORT_PATH = "/v1/fences:import"
LOANS_IMPORT_PATH = "/v1/loans:import"
IMPORT_PATHS = frozenset({IMPORT_PATH, LOANS_IMPORT_PATH})
OPEN_PATHS = frozenset({"/healthz"})
DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_NOTE_CHARS = 4000
MAX_URL_CHARS = 2048
HOOK_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
PROMETHEUS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_ALERT_TYPES = frozenset(t.value for t in AlertType)
_LOAN_FIELD_RE = re.compile(r"loan '[^']*': ([A-Za-z_.]+): ")
_IMPORT_INDEX_RE = re.compile(r"(loans\[\d+\])")
_FENCE_FIELD_RE = re.compile(r"(properties\.[a-z_]+)")
_GEOMETRY_WORDS = re.compile(
    r"geometry|polygon|ring|coordinate|position|point|area|intersection|hole|shell", re.IGNORECASE
)


def create_app(
    engine: Engine,
    store: Store,
    dispatcher: Dispatcher | None,
    token: str | None,
    *,
    body_limit: int = DEFAULT_BODY_LIMIT,
    import_limit: int = IMPORT_BODY_LIMIT,
) -> FastAPI:
    """The API app; `token` None is insecure dev mode (no auth)."""
    app = _App(
        title="pledgewatch",
        version="1",
        summary="Telematics and geofence alerts for car-secured loans (DESIGN.md §3).",
        description=f"Errors are RFC 9457 problems; their types: {', '.join(sorted(TITLES))} "
        "under https://pledgewatch.dev/problems/.",
        docs_url=None,  # the UI cannot send the bearer token; /openapi.json is the contract
        redoc_url=None,
        default_response_class=JsonResponse,
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    api = _Api(engine, store, dispatcher)
    _fence_routes(app, api)
    _loan_routes(app, api)
    _webhook_routes(app, api)
    _alert_routes(app, api)
    _device_routes(app, api)
    _operator_routes(app, api)
    _service_routes(app, api)
    app.add_middleware(_Guard, token=token, body_limit=body_limit, import_limit=import_limit)
    app.secured = token is not None
    return app


@dataclass(slots=True)
class _Api:
    """What the handlers work with."""

    engine: Engine
    store: Store
    dispatcher: Dispatcher | None
    loan_lock: threading.Lock = field(default_factory=threading.Lock)

    def wake_dispatcher(self) -> None:
        """New outbox rows are committed: let the webhook workers look now."""
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def sync_dispatcher(self) -> None:
        """Webhooks changed: start or stop their workers now rather than at the next poll."""
        if self.dispatcher is not None:
            self.dispatcher.sync()


# -- the guard: auth, size limits, uncaught errors


class _Guard:
    """Pure ASGI middleware: bearer auth, body size limits, and a 500 problem for crashes."""

    def __init__(self, app: ASGIApp, token: str | None, body_limit: int, import_limit: int) -> None:
        self.app = app
        self.token = None if token is None else token.encode()
        self.body_limit = body_limit
        self.import_limit = import_limit

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
            limit = self.import_limit if path in IMPORT_PATHS else self.body_limit
            refused = self._refuse(path, headers, limit)
            if refused is not None:
                await problem_response(refused, path)(scope, receive, send)
                return
            await self.app(scope, _counting(receive, limit), tracked)
        except Exception:
            _log.exception("unhandled error on %s %s", scope.get("method"), path)
            if started:
                raise
            crash = Problem(500, "internal-error", "an unexpected error occurred; it is logged")
            await problem_response(crash, path)(scope, receive, send)

    def _refuse(self, path: str, headers: Headers, limit: int) -> Problem | None:
        if self.token is not None and path not in OPEN_PATHS:
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
                raise _too_large(limit)
        return message

    return wrapped


# -- request bodies and query parameters


def _json_media_type(content_type: str) -> bool:
    base = content_type.partition(";")[0].strip().lower()
    return base in {"", "application/json"} or base.endswith("+json")


async def _json_body(request: Request) -> object:
    """The request body parsed as JSON (required)."""
    doc = await _optional_json_body(request)
    if doc is None:
        raise Problem(400, "malformed-request", "the request body is empty: send a JSON document")
    return doc


async def _optional_json_body(request: Request) -> object:
    """The request body parsed as JSON, or None when there is none."""
    content_type = request.headers.get("content-type", "")
    raw = await request.body()
    if not raw.strip():
        return None
    if not _json_media_type(content_type):
        detail = f"Content-Type {content_type!r} is not supported: send application/json"
        raise Problem(415, "unsupported-media-type", detail)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "malformed-request", f"the body is not valid JSON: {exc}") from None


JsonBody = Annotated[object, Depends(_json_body)]
OptionalJsonBody = Annotated[object, Depends(_optional_json_body)]
CursorParam = Annotated[
    str | None, Query(description="Opaque cursor from the previous page's `next`.")
]
LimitParam = Annotated[
    str | None, Query(description=f"Page size, 1 to {MAX_PAGE} (default {DEFAULT_PAGE}).")
]


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_PAGE
    if not (
        value.isascii() and value.isdigit() and len(value) <= 6 and 1 <= int(value) <= MAX_PAGE
    ):
        raise bad_parameter(
            "limit", f"limit must be an integer from 1 to {MAX_PAGE}, got {value!r}"
        )
    return int(value)


def _since_ms(value: str | None) -> int | None:
    """`since` as epoch ms: an integer of milliseconds, or ISO-8601 with a UTC offset."""
    if value is None:
        return None
    if value.isascii() and value.isdigit() and len(value) <= 15:
        return int(value)
    # An unencoded '+' in a query string arrives as a space: "08:00:00 08:00" meant "+08:00".
    text = re.sub(r"(T[0-9:.]+) ([0-9]{2}:?[0-9]{2})$", r"\1+\2", value.strip())
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is not None:
            return int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError):
        pass
    detail = (
        "since must be epoch milliseconds or an ISO-8601 time with a UTC offset "
        f"(e.g. 2026-11-29T08:15:00Z), got {value!r}"
    )
    raise bad_parameter("since", detail)


def _page(items: list[object], next_cursor: str | None) -> JsonResponse:
    return JsonResponse({"items": items, "next": next_cursor})


def _paged(fetch: Callable[[], Page[T]]) -> Page[T]:
    """Call a store list; a cursor it did not hand out is a 400 naming `cursor`."""
    try:
        return fetch()
    except CursorError as exc:
        raise bad_parameter("cursor", str(exc)) from None


def _created(body: dict[str, object], existed: bool, location: str) -> JsonResponse:
    if existed:
        return JsonResponse(body)
    return JsonResponse(body, status_code=201, headers={"Location": location})


# -- OpenAPI documentation of the bodies the handlers parse themselves

_NULLABLE_STR: dict[str, object] = {"type": ["string", "null"]}
FEATURE_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["type", "geometry", "properties"],
    "properties": {
        "type": {"const": "Feature"},
        "id": {"type": "string", "pattern": FENCE_ID_PATTERN},
        "geometry": {
            "type": "object",
            "description": "Polygon, MultiPolygon, or Point with properties.radius_m (circle)",
            "properties": {
                "type": {"enum": ["Polygon", "MultiPolygon", "Point"]},
                "coordinates": {"type": "array"},
            },
        },
        "properties": {
            "type": "object",
            "required": ["kind"],
            "properties": {
                "name": {"type": "string"},
                "kind": {"enum": ["zone", "risk_site"]},
                "category": {"type": "string", "examples": ["pawnshop", "impound", "lender"]},
                "dwell_s": {"type": "integer", "minimum": 0},
                "radius_m": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_RADIUS_M},
            },
        },
    },
}
COLLECTION_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["type", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {"type": "array", "items": {**FEATURE_SCHEMA, "required": ["id", "type"]}},
    },
}
LOAN_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["vin", "device_ids"],
    "properties": {
        "vin": {"type": "string", "pattern": "^[A-HJ-NPR-Z0-9]{17}$"},
        "device_ids": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "zone_ids": {"type": "array", "items": {"type": "string"}},
        "status": {"enum": ["active", "closed"], "default": "active"},
        "principal": {"type": "number", "minimum": 0},
        "vehicle": {
            "type": "object",
            "properties": {
                "make": _NULLABLE_STR,
                "model": _NULLABLE_STR,
                "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
                "mileage_km": {"type": "number", "minimum": 0},
                "value": {"type": "number", "minimum": 0},
            },
        },
    },
}
LOANS_IMPORT_SCHEMA: dict[str, object] = {
    "type": "array",
    "items": {
        **LOAN_SCHEMA,
        "required": ["loan_id", "vin", "device_ids"],
        "properties": {"loan_id": {"type": "string"}, **LOAN_SCHEMA["properties"]},  # type: ignore[dict-item]  # our dict literal above
    },
}
WEBHOOK_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["url", "secret"],
    "properties": {
        "url": {"type": "string", "format": "uri", "description": "http:// or https://"},
        "secret": {"type": "string", "minLength": 1, "description": "HMAC key; never returned"},
        "types": {
            "type": ["array", "null"],
            "items": {"enum": sorted(_ALERT_TYPES)},
            "description": "Alert types to send; omit or null for all.",
        },
    },
}
ACK_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"note": {"type": "string", "maxLength": MAX_NOTE_CHARS}},
}


def _body_doc(schema: dict[str, object], *, required: bool = True) -> dict[str, object]:
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }


def _errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses` for the problems a route may answer (401 and 500 always)."""
    descriptions = {
        400: "Malformed request or invalid query parameter",
        401: "Missing or invalid bearer token",
        404: "Not found",
        413: "Request body too large",
        415: "Unsupported media type",
        422: "Validation error naming the field",
        500: "Internal error",
        503: "Unavailable",
    }
    content = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {
        code: {"description": descriptions[code], "content": content}
        for code in sorted({*codes, 401, 500})
    }


_BODY_ERRORS = (400, 413, 415, 422)
PROBLEM_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": _NULLABLE_STR, "message": {"type": "string"}},
            },
        },
    },
}


class _App(FastAPI):
    """FastAPI with the Problem schema and the bearer scheme in its OpenAPI document."""

    secured = True

    def openapi(self) -> dict[str, Any]:
        """The generated document (cached by FastAPI), completed once."""
        doc = super().openapi()
        components: dict[str, Any] = doc.setdefault("components", {})
        if "Problem" not in components.setdefault("schemas", {}):
            components["schemas"]["Problem"] = PROBLEM_SCHEMA
            if self.secured:
                components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                doc["security"] = [{"bearer": []}]
        return doc


# -- fences


def _fence_problem(exc: FenceError, prefix: str = "") -> Problem:
    match = _FENCE_FIELD_RE.search(exc.defect)
    if match is not None:
        fld: str | None = match[1]
    elif exc.defect.startswith("fence id"):
        fld = "fence_id"
    elif _GEOMETRY_WORDS.search(exc.defect):
        fld = "geometry"
    else:
        fld = None
    if prefix and exc.index is not None:
        fld = f"{prefix}[{exc.index}]" + (f".{fld}" if fld else "")
    return Problem(422, "validation-error", str(exc), errors=(FieldError(fld, exc.defect),))


def _fence_routes(app: FastAPI, api: _Api) -> None:
    @app.put(
        "/v1/fences/{fence_id}",
        summary="Create or replace a fence (GeoJSON Feature)",
        tags=["fences"],
        responses=_errors(*_BODY_ERRORS),
        openapi_extra=_body_doc(FEATURE_SCHEMA),
    )
    def put_fence(fence_id: str, doc: JsonBody) -> Response:
        """Validate the Feature, store it, and hand it to the engine's next batch."""
        try:
            fence = parse_fence(fence_id, doc)
        except FenceError as exc:
            raise _fence_problem(exc) from None
        existed = api.store.get_fence(fence_id) is not None
        api.store.put_fences([fence])
        api.engine.put_fences([fence])
        return _created(fence_to_feature(fence), existed, f"/v1/fences/{quote(fence_id)}")

    @app.post(
        IMPORT_PATH,
        summary="Import a FeatureCollection of fences, all or nothing",
        tags=["fences"],
        responses=_errors(*_BODY_ERRORS),
        openapi_extra=_body_doc(COLLECTION_SCHEMA),
    )
    def import_fences(doc: JsonBody) -> Response:
        """Every feature must carry an `id`; one bad feature rejects the whole collection."""
        try:
            fences = parse_feature_collection(doc)
        except FenceError as exc:
            raise _fence_problem(exc, "features") from None
        api.store.put_fences(fences)
        api.engine.put_fences(fences)
        ids: list[object] = [f.fence_id for f in fences]
        return JsonResponse({"imported": len(fences), "fence_ids": ids})

    @app.get("/v1/fences", summary="List fences by id", tags=["fences"], responses=_errors(400))
    def list_fences(cursor: CursorParam = None, limit: LimitParam = None) -> Response:
        """A page of fences as GeoJSON Features."""
        n = _limit(limit)
        page = _paged(lambda: api.store.list_fences(cursor, n))
        return _page([fence_to_feature(f) for f in page.items], page.next)

    @app.get(
        "/v1/fences/{fence_id}",
        summary="Get a fence (GeoJSON Feature)",
        tags=["fences"],
        responses=_errors(404),
    )
    def get_fence(fence_id: str) -> Response:
        """One fence."""
        fence = api.store.get_fence(fence_id)
        if fence is None:
            raise not_found(f"fence {fence_id!r} does not exist")
        return JsonResponse(fence_to_feature(fence))

    @app.delete(
        "/v1/fences/{fence_id}",
        summary="Delete a fence",
        tags=["fences"],
        status_code=204,
        response_class=Response,
        responses=_errors(404),
    )
    def delete_fence(fence_id: str) -> Response:
        """Delete from the store, then from the engine's next batch."""
        if not api.store.delete_fence(fence_id):
            raise not_found(f"fence {fence_id!r} does not exist")
        api.engine.delete_fence(fence_id)
        return Response(status_code=204)


# -- loans


_NO_RISK: dict[str, object] = {"score": None, "tier": None, "reasons": [], "price": None}


def _loan_routes(app: FastAPI, api: _Api) -> None:
    @app.put(
        "/v1/loans/{loan_id}",
        summary="Create or replace a loan; raises pledge.vin_conflict on a pledged VIN",
        tags=["loans"],
        responses=_errors(*_BODY_ERRORS),
        openapi_extra=_body_doc(LOAN_SCHEMA),
    )
    def put_loan(loan_id: str, doc: JsonBody) -> Response:
        """Store the loan with the VIN-conflict alert it raises, in one transaction."""
        try:
            loan = parse_loan(loan_id, doc)
        except LoanError as exc:
            match = _LOAN_FIELD_RE.match(str(exc))
            raise validation(str(exc), match[1] if match else "loan_id") from None
        # One PUT at a time: two loans with one VIN, PUT together, must still see each other.
        with api.loan_lock:
            old = api.store.get_loan(loan_id)
            now = api.engine.now_ms()
            stored = api.store.loans_with_vin(loan.vin)
            if old is not None and old.vin != loan.vin:
                stored.append(old)
            alerts = import_conflicts(stored, [loan], now)
            api.store.put_loan(loan, alerts, now)
        api.engine.put_loan(loan)
        if alerts:
            api.wake_dispatcher()
        body = loan_to_json(loan)
        body["alerts"] = [a.to_json() for a in alerts]
        return _created(body, old is not None, f"/v1/loans/{quote(loan_id)}")

    @app.post(
        LOANS_IMPORT_PATH,
        summary="Import an array of loans (each with its loan_id), all or nothing",
        tags=["loans"],
        responses=_errors(*_BODY_ERRORS),
        openapi_extra=_body_doc(LOANS_IMPORT_SCHEMA),
    )
    def import_loans(doc: JsonBody) -> Response:
        """As many PUTs in array order, in one transaction: VIN conflicts are raised against
        the stored loans and the ones before in the array, exactly as the PUTs would."""
        try:
            loans = parse_loans(doc)
        except LoanError as exc:
            raise validation(str(exc), _import_field(str(exc))) from None
        with api.loan_lock:
            now = api.engine.now_ms()
            alerts = import_conflicts(api.store.all_loans(), loans, now)
            api.store.put_loans(loans, alerts, now)
        for loan in loans:
            api.engine.put_loan(loan)
        if alerts:
            api.wake_dispatcher()
        return JsonResponse(
            {
                "imported": len(loans),
                "loan_ids": [loan.loan_id for loan in loans],
                "alerts": [a.to_json() for a in alerts],
            }
        )

    @app.get(
        "/v1/loans/{loan_id}",
        summary="Get a loan with its risk score, reason codes and price",
        tags=["loans"],
        responses=_errors(404),
    )
    def get_loan(loan_id: str) -> Response:
        """The loan; `risk` stays null until the lending consumer (a later issue) fills it."""
        loan = api.store.get_loan(loan_id)
        if loan is None:
            raise not_found(f"loan {loan_id!r} does not exist")
        return JsonResponse({**loan_to_json(loan), "risk": dict(_NO_RISK)})

    @app.get("/v1/loans", summary="List loans by id", tags=["loans"], responses=_errors(400))
    def list_loans(cursor: CursorParam = None, limit: LimitParam = None) -> Response:
        """A page of loans."""
        n = _limit(limit)
        page = _paged(lambda: api.store.list_loans(cursor, n))
        return _page([loan_to_json(loan) for loan in page.items], page.next)


def import_conflicts(stored: Sequence[Loan], loans: Sequence[Loan], now_ms: int) -> list[Alert]:
    """The `pledge.vin_conflict` alerts of PUTting `loans` one after another over `stored`
    (which must hold every stored loan with one of their VINs or ids)."""
    by_id = {loan.loan_id: loan for loan in stored}
    by_vin: dict[str, dict[str, Loan]] = {}
    for loan in stored:
        by_vin.setdefault(loan.vin, {})[loan.loan_id] = loan
    alerts: list[Alert] = []
    for loan in loans:
        old = by_id.get(loan.loan_id)
        # Re-PUT of an active loan with the same VIN: its conflict was reported already.
        if old is None or not old.active or old.vin != loan.vin:
            conflict = vin_conflict(loan, by_vin.get(loan.vin, {}).values(), now_ms, now_ms)
            if conflict is not None:
                alerts.append(conflict)
        if old is not None:
            by_vin[old.vin].pop(old.loan_id, None)
        by_id[loan.loan_id] = loan
        by_vin.setdefault(loan.vin, {})[loan.loan_id] = loan
    return alerts


def _import_field(message: str) -> str:
    """The field a `parse_loans` error names: `loans[3]` or `loans[3].vin`."""
    index = _IMPORT_INDEX_RE.match(message)
    if index is None:
        return "loans"
    inner = _LOAN_FIELD_RE.search(message)
    return index[1] + (f".{inner[1]}" if inner else "")


# -- webhooks


def parse_webhook(hook_id: str, doc: object) -> Webhook:
    """Validate the body of `PUT /v1/webhooks/{hook_id}`; a 422 problem names the field."""
    if not HOOK_ID_RE.fullmatch(hook_id):
        detail = f"webhook id {hook_id!r} is not valid ({HOOK_ID_RE.pattern})"
        raise validation(detail, "hook_id")
    if not isinstance(doc, dict):
        raise validation("the body must be a JSON object with url and secret", None)
    url = doc.get("url")
    if not isinstance(url, str):
        raise validation(f"url: must be an http(s) URL string, got {url!r}", "url")
    parts = urlsplit(url)
    if (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or len(url) > MAX_URL_CHARS
        or any(c.isspace() for c in url)
    ):
        raise validation(
            f"url: {url[:100]!r} is not an http:// or https:// URL with a host "
            f"(at most {MAX_URL_CHARS} characters, no spaces)",
            "url",
        )
    secret = doc.get("secret")
    if not isinstance(secret, str) or not secret.strip():
        raise validation("secret: must be a non-empty string (the HMAC key)", "secret")
    types = doc.get("types")
    wanted: frozenset[str] | None = None
    if types is not None:
        if not isinstance(types, list) or not types:
            detail = "types: must be a non-empty list of alert types; omit it for all types"
            raise validation(detail, "types")
        unknown = [t for t in types if not isinstance(t, str) or t not in _ALERT_TYPES]
        if unknown:
            detail = f"types: {unknown!r} are not alert types; known: {sorted(_ALERT_TYPES)}"
            raise validation(detail, "types")
        wanted = frozenset(str(t) for t in types)
    return Webhook(hook_id=hook_id, url=url, secret=secret, types=wanted)


def _webhook_json(hook: Webhook) -> dict[str, object]:
    """A webhook as the API shows it: never its secret."""
    types = None if hook.types is None else sorted(hook.types)
    return {"hook_id": hook.hook_id, "url": hook.url, "types": types}


def _webhook_routes(app: FastAPI, api: _Api) -> None:
    @app.put(
        "/v1/webhooks/{hook_id}",
        summary="Create or replace a webhook endpoint",
        tags=["webhooks"],
        responses=_errors(*_BODY_ERRORS),
        openapi_extra=_body_doc(WEBHOOK_SCHEMA),
    )
    def put_webhook(hook_id: str, doc: JsonBody) -> Response:
        """Store the endpoint; the dispatcher starts delivering to it at once."""
        hook = parse_webhook(hook_id, doc)
        existed = api.store.get_webhook(hook_id) is not None
        api.store.put_webhook(hook)
        api.sync_dispatcher()
        return _created(_webhook_json(hook), existed, f"/v1/webhooks/{quote(hook_id)}")

    @app.get(
        "/v1/webhooks",
        summary="List webhooks (secrets omitted)",
        tags=["webhooks"],
        responses=_errors(),
    )
    def list_webhooks() -> Response:
        """Every webhook, by id, in one page."""
        hooks = sorted(api.store.list_webhooks(), key=lambda h: h.hook_id)
        return _page([_webhook_json(h) for h in hooks], None)

    @app.get(
        "/v1/webhooks/{hook_id}",
        summary="Get a webhook (secret omitted)",
        tags=["webhooks"],
        responses=_errors(404),
    )
    def get_webhook(hook_id: str) -> Response:
        """One webhook."""
        hook = api.store.get_webhook(hook_id)
        if hook is None:
            raise not_found(f"webhook {hook_id!r} does not exist")
        return JsonResponse(_webhook_json(hook))

    @app.delete(
        "/v1/webhooks/{hook_id}",
        summary="Delete a webhook and its pending deliveries",
        tags=["webhooks"],
        status_code=204,
        response_class=Response,
        responses=_errors(404),
    )
    def delete_webhook(hook_id: str) -> Response:
        """Delete the endpoint; its worker stops."""
        if not api.store.delete_webhook(hook_id):
            raise not_found(f"webhook {hook_id!r} does not exist")
        api.sync_dispatcher()
        return Response(status_code=204)


# -- alerts


def _alert_json(stored: StoredAlert) -> dict[str, object]:
    """The DESIGN §4 alert plus `ack` ({at, note} or null)."""
    ack = None
    if stored.acked_ms is not None:
        ack = {"at": iso_ms(stored.acked_ms), "note": stored.ack_note}
    return {**stored.alert, "ack": ack}


def _alert_routes(app: FastAPI, api: _Api) -> None:
    @app.get(
        "/v1/alerts", summary="List alerts, newest first", tags=["alerts"], responses=_errors(400)
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
    ) -> Response:
        """Alerts filtered by type, loan, device and event time, newest first."""
        if type_ is not None and type_ not in _ALERT_TYPES:
            raise bad_parameter(
                "type", f"type {type_!r} is not an alert type; known: {sorted(_ALERT_TYPES)}"
            )
        query = AlertQuery(
            type=type_,
            loan_id=loan_id,
            device_id=device_id,
            since_ms=_since_ms(since),
            limit=_limit(limit),
            cursor=cursor,
        )
        page = _paged(lambda: api.store.list_alerts(query))
        return _page([_alert_json(a) for a in page.items], page.next)

    @app.get(
        "/v1/alerts/{alert_id}", summary="Get an alert", tags=["alerts"], responses=_errors(404)
    )
    def get_alert(alert_id: str) -> Response:
        """One alert, with its acknowledgement."""
        stored = api.store.get_alert(alert_id)
        if stored is None:
            raise not_found(f"alert {alert_id!r} does not exist")
        return JsonResponse(_alert_json(stored))

    @app.post(
        "/v1/alerts/{alert_id}/ack",
        summary="Acknowledge an alert, with an optional note",
        tags=["alerts"],
        responses=_errors(404, *_BODY_ERRORS),
        openapi_extra=_body_doc(ACK_SCHEMA, required=False),
    )
    def ack_alert(alert_id: str, doc: OptionalJsonBody) -> Response:
        """Record the operator's acknowledgement; returns the alert."""
        note: object = None
        if doc is not None:
            if not isinstance(doc, dict):
                raise validation('the body must be a JSON object like {"note": "..."}', None)
            note = doc.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_CHARS):
            raise validation(f"note: must be a string of at most {MAX_NOTE_CHARS} chars", "note")
        if not api.store.ack_alert(alert_id, note, api.engine.now_ms()):
            raise not_found(f"alert {alert_id!r} does not exist")
        stored = api.store.get_alert(alert_id)
        if stored is None:  # deleted in between: nothing to show
            raise not_found(f"alert {alert_id!r} does not exist")
        return JsonResponse(_alert_json(stored))


# -- devices


def _fix_json(state: DeviceState | None) -> dict[str, object] | None:
    if state is None or state.fix is None:
        return None
    return {"ts": iso_ms(state.fix.ts_ms), "lat": state.fix.lat, "lon": state.fix.lon}


def _status_json(state: DeviceState | None) -> dict[str, object] | None:
    if state is None or state.last_ts[2] < 0:
        return None
    return {"ts": iso_ms(state.last_ts[2]), "ext_power": state.ext_power, "tamper": state.tamper}


def _near(value: str) -> tuple[float, float, float]:
    """`lat,lon,radius_m` in degrees and metres."""
    parts = value.split(",")
    try:
        lat, lon, radius_m = (float(p) for p in parts)
    except ValueError:
        detail = f"near must be 'lat,lon,radius_m' (three numbers), got {value!r}"
        raise bad_parameter("near", detail) from None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        detail = f"near: lat must be in -90..90 and lon in -180..180, got {lat!r}, {lon!r}"
        raise bad_parameter("near", detail)
    if not (math.isfinite(radius_m) and 0.0 < radius_m <= MAX_RADIUS_M):
        detail = f"near: radius_m must be > 0 and <= {MAX_RADIUS_M:.0f} metres, got {radius_m!r}"
        raise bad_parameter("near", detail)
    return lat, lon, radius_m


def _device_routes(app: FastAPI, api: _Api) -> None:
    engine = api.engine

    def summary(device_id: str) -> dict[str, object]:
        state = engine.device(device_id)
        loan = engine.loan_for(device_id)
        return {
            "device_id": device_id,
            "loan_id": loan.loan_id if loan else None,
            "online": state is not None and not state.offline,
            "last_fix": _fix_json(state),
        }

    @app.get(
        "/v1/devices/{device_id}",
        summary="A tracker's last fix, last status, fences it is inside, online state",
        tags=["devices"],
        responses=_errors(404),
    )
    def get_device(device_id: str) -> Response:
        """What the engine knows of a tracker now; `inside` holds its last fix exactly."""
        state = engine.device(device_id)
        loan = engine.loan_for(device_id)
        if state is None and loan is None:
            raise not_found(f"device {device_id!r} has not reported and is on no loan")
        inside: list[str] = []
        if state is not None and state.fix is not None:
            inside = engine.pipeline.index.containing(state.fix.lat, state.fix.lon)
        return JsonResponse(
            {
                **summary(device_id),
                "vin": loan.vin if loan else None,
                "last_seen_at": iso_ms(state.arrived_ms)
                if state and state.arrived_ms >= 0
                else None,
                "last_status": _status_json(state),
                "inside": inside,
            }
        )

    @app.get(
        "/v1/devices",
        summary="The cars inside a fence or near a point now, by last fix",
        tags=["devices"],
        responses=_errors(400, 404),
    )
    def list_devices(
        inside: Annotated[str | None, Query(description="A fence id.")] = None,
        near: Annotated[
            str | None, Query(description="'lat,lon,radius_m': degrees and metres.")
        ] = None,
    ) -> Response:
        """Exactly one of `inside` or `near`; one page holds every match."""
        if (inside is None) == (near is None):
            detail = "give exactly one of inside={fence_id} or near={lat},{lon},{radius_m}"
            raise Problem(
                400,
                "invalid-parameter",
                detail,
                errors=(FieldError("inside", detail), FieldError("near", detail)),
            )
        if inside is not None:
            fence = api.store.get_fence(inside)
            if fence is None:
                raise not_found(f"fence {inside!r} does not exist")
            items: list[object] = [summary(d) for d in engine.devices_inside(fence)]
            return _page(items, None)
        assert near is not None
        lat, lon, radius_m = _near(near)
        items = [
            {**summary(d), "distance_m": round(m, 1)}
            for d, m in engine.devices_near(lat, lon, radius_m)
        ]
        return _page(items, None)


# -- operator extensions: dead deliveries, rejected input


def _delivery_json(d: Delivery) -> dict[str, object]:
    try:
        alert: object = orjson.loads(d.body)
    except orjson.JSONDecodeError:
        alert = d.body.decode("utf-8", "backslashreplace")
    return {
        "delivery_id": d.delivery_id,
        "hook_id": d.hook_id,
        "alert_id": d.alert_id,
        "alert_type": d.alert_type,
        "order_key": d.order_key,
        "state": d.state.value,
        "attempts": d.attempts,
        "created_at": iso_ms(d.created_ms),
        "next_at": iso_ms(d.next_at_ms),
        "last_error": d.last_error,
        "last_status": d.last_status,
        "alert": alert,
    }


def _operator_routes(app: FastAPI, api: _Api) -> None:
    @app.get(
        "/v1/deliveries/dead",
        summary="Webhook deliveries that gave up, newest first",
        tags=["operations"],
        responses=_errors(400),
    )
    def list_dead(cursor: CursorParam = None, limit: LimitParam = None) -> Response:
        """Dead-lettered deliveries with their last error and the alert."""
        n = _limit(limit)
        page = _paged(lambda: api.store.list_dead(cursor, n))
        return _page([_delivery_json(d) for d in page.items], page.next)

    @app.post(
        "/v1/deliveries/{delivery_id}:redeliver",
        summary="Send a dead delivery again",
        tags=["operations"],
        status_code=202,
        responses=_errors(404, 422),
    )
    def redeliver(
        delivery_id: Annotated[int, Path(description="From GET /v1/deliveries/dead.")],
    ) -> Response:
        """Move a dead delivery back to pending, due now."""
        if not api.store.redeliver(delivery_id, api.engine.now_ms()):
            raise not_found(f"there is no dead delivery {delivery_id}")
        api.wake_dispatcher()
        return JsonResponse({"delivery_id": delivery_id, "state": "pending"}, status_code=202)

    @app.get(
        "/v1/rejects",
        summary="Rejected input (dead letters), newest first",
        tags=["operations"],
        responses=_errors(400),
    )
    def list_rejects(cursor: CursorParam = None, limit: LimitParam = None) -> Response:
        """Refused readings with reason, detail, raw bytes as text (backslash escapes) and
        the time they were received."""
        n = _limit(limit)
        page = _paged(lambda: api.store.list_rejects(cursor, n))
        items: list[object] = [
            {**r.reject.to_json(), "received_at": iso_ms(r.received_ms)} for r in page.items
        ]
        return _page(items, page.next)


# -- health and metrics


def _service_routes(app: FastAPI, api: _Api) -> None:
    engine = api.engine

    @app.get(
        "/healthz",
        summary="Liveness: engine thread and MQTT connection (no auth)",
        tags=["service"],
        responses=_errors(503),
        openapi_extra={"security": []},
    )
    def healthz() -> Response:
        """200 while the engine thread runs, 503 (a problem) once it has died."""
        mqtt = None if engine.source is None else engine.source.connected
        if not engine.running:
            detail = "the engine thread is not running; see the logs, then restart the service"
            extra: dict[str, object] = {"engine_alive": False, "mqtt_connected": mqtt}
            raise Problem(503, "engine-down", detail, extra=extra)
        return JsonResponse({"status": "ok", "engine_alive": True, "mqtt_connected": mqtt})

    def outbox() -> list[str]:
        return gauge_lines(
            "pledgewatch_outbox_pending", "Webhook deliveries pending.", api.store.outbox_pending()
        )

    def deliveries() -> list[str]:
        counts = api.dispatcher.counters.snapshot() if api.dispatcher is not None else {}
        return counter_lines(
            "pledgewatch_deliveries_total",
            "Webhook delivery attempts, by result.",
            "result",
            counts,
        )

    @app.get(
        "/metrics",
        summary="Prometheus text exposition",
        tags=["service"],
        response_class=Response,
        responses={
            200: {"content": {PROMETHEUS_MEDIA_TYPE: {}}, "description": "Prometheus text"},
            **_errors(),
        },
    )
    def metrics() -> Response:
        """Readings, rejects, alerts, batch latency, outbox depth, deliveries, devices online."""
        text = render([engine.metrics, outbox, deliveries])
        return Response(text, media_type=PROMETHEUS_MEDIA_TYPE)
