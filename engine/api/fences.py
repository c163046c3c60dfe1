"""Routes of `/v1/fences`: put, import, list, get and delete GeoJSON fences."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI
from starlette.responses import Response

from engine.api.context import ApiContext
from engine.api.guard import FENCES_IMPORT_PATH
from engine.api.openapi import (
    BODY_ERRORS,
    COLLECTION_SCHEMA,
    FEATURE_SCHEMA,
    body_doc,
    error_responses,
)
from engine.api.principals import Caller, audit_entry
from engine.api.problems import JsonResponse, not_found
from engine.api.schemas import (
    CoordSysParam,
    CursorParam,
    JsonBody,
    LimitParam,
    created,
    fence_problem,
    page_response,
    paged,
    parse_coord_sys_param,
    parse_limit,
)
from geofence.fence import FenceError, fence_to_feature, parse_feature_collection, parse_fence


def add_fence_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the fence routes."""

    @app.put(
        "/v1/fences/{fence_id}",
        summary="Create or replace a fence (GeoJSON Feature)",
        tags=["fences"],
        responses=error_responses(*BODY_ERRORS),
        openapi_extra=body_doc(FEATURE_SCHEMA),
    )
    def put_fence(fence_id: str, doc: JsonBody, who: Caller) -> Response:
        """Validate the Feature, store it, and hand it to the engine's next batch."""
        try:
            fence = parse_fence(fence_id, doc)
        except FenceError as exc:
            raise fence_problem(exc) from None
        existed = api.store.get_fence(fence_id) is not None
        detail = {"kind": fence.kind.value, "name": fence.name, "replaced": existed}
        audit = audit_entry(who, api.engine.now_ms(), "fence.put", f"fence:{fence_id}", **detail)
        api.store.put_fences([fence], audit)
        api.engine.put_fences([fence])
        return created(fence_to_feature(fence), existed, f"/v1/fences/{quote(fence_id)}")

    @app.post(
        FENCES_IMPORT_PATH,
        summary="Import a FeatureCollection of fences, all or nothing",
        tags=["fences"],
        responses=error_responses(*BODY_ERRORS),
        openapi_extra=body_doc(COLLECTION_SCHEMA),
    )
    def import_fences(doc: JsonBody, who: Caller) -> Response:
        """Every feature must carry an `id`; one bad feature rejects the whole collection."""
        try:
            fences = parse_feature_collection(doc)
        except FenceError as exc:
            raise fence_problem(exc) from None
        ids = [f.fence_id for f in fences]
        audit = audit_entry(
            who, api.engine.now_ms(), "fence.import", "fences", count=len(ids), fence_ids=ids[:50]
        )
        api.store.put_fences(fences, audit)
        api.engine.put_fences(fences)
        return JsonResponse({"imported": len(fences), "fence_ids": ids})

    @app.get(
        "/v1/fences", summary="List fences by id", tags=["fences"], responses=error_responses(400)
    )
    def list_fences(
        cursor: CursorParam = None, limit: LimitParam = None, coord_sys: CoordSysParam = None
    ) -> Response:
        """A page of fences as GeoJSON Features, in WGS84 or the `coord_sys` asked for."""
        n = parse_limit(limit)
        system = parse_coord_sys_param(coord_sys)
        page = paged(lambda: api.store.list_fences(cursor, n))
        return page_response([fence_to_feature(f, system) for f in page.items], page.next)

    @app.get(
        "/v1/fences/{fence_id}",
        summary="Get a fence (GeoJSON Feature)",
        tags=["fences"],
        responses=error_responses(400, 404),
    )
    def get_fence(fence_id: str, coord_sys: CoordSysParam = None) -> Response:
        """One fence, in WGS84 or the `coord_sys` asked for."""
        system = parse_coord_sys_param(coord_sys)
        fence = api.store.get_fence(fence_id)
        if fence is None:
            raise not_found(f"fence {fence_id!r} does not exist")
        return JsonResponse(fence_to_feature(fence, system))

    @app.delete(
        "/v1/fences/{fence_id}",
        summary="Delete a fence",
        tags=["fences"],
        status_code=204,
        response_class=Response,
        responses=error_responses(404),
    )
    def delete_fence(fence_id: str, who: Caller) -> Response:
        """Delete from the store, then from the engine's next batch."""
        audit = audit_entry(who, api.engine.now_ms(), "fence.delete", f"fence:{fence_id}")
        if not api.store.delete_fence(fence_id, audit):
            raise not_found(f"fence {fence_id!r} does not exist")
        api.engine.delete_fence(fence_id)
        return Response(status_code=204)
