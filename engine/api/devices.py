"""Routes of `/v1/devices`: what the engine knows of a tracker, and the cars in a place now."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query
from starlette.responses import Response

from alerts.model import iso_ms
from engine.api.context import ApiContext
from engine.api.openapi import error_responses
from engine.api.problems import FieldError, JsonResponse, Problem, not_found
from engine.api.schemas import (
    PositionCoordSysParam,
    fix_json,
    page_response,
    parse_coord_sys_param,
    parse_near,
    position_in,
    status_json,
)
from geofence.coords import CoordSys, to_wgs84


def add_device_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the device routes."""
    engine = api.engine

    def summary(device_id: str, coord_sys: CoordSys | None = None) -> dict[str, object]:
        state = engine.device(device_id)
        loan = engine.loan_for(device_id)
        fix = fix_json(state)
        return {
            "device_id": device_id,
            "loan_id": loan.loan_id if loan else None,
            "online": state is not None and not state.offline,
            "last_fix": None if fix is None else position_in(fix, coord_sys),
        }

    @app.get(
        "/v1/devices/{device_id}",
        summary="A tracker's last fix, last status, fences it is inside, online state",
        tags=["devices"],
        responses=error_responses(400, 404),
    )
    def get_device(device_id: str, coord_sys: PositionCoordSysParam = None) -> Response:
        """What the engine knows of a tracker now; `inside` holds its last fix exactly (in
        WGS84, as stored); `last_fix` in the `coord_sys` asked for."""
        system = parse_coord_sys_param(coord_sys)
        state = engine.device(device_id)
        loan = engine.loan_for(device_id)
        if state is None and loan is None:
            raise not_found(f"device {device_id!r} has not reported and is on no loan")
        inside: list[str] = []
        if state is not None and state.fix is not None:
            inside = engine.pipeline.index.containing(state.fix.lat, state.fix.lon)
        return JsonResponse(
            {
                **summary(device_id, system),
                "vin": loan.vin if loan else None,
                "last_seen_at": iso_ms(state.arrived_ms)
                if state and state.arrived_ms >= 0
                else None,
                "last_status": status_json(state),
                "inside": inside,
            }
        )

    @app.get(
        "/v1/devices",
        summary="The cars inside a fence or near a point now, by last fix",
        tags=["devices"],
        responses=error_responses(400, 404),
    )
    def list_devices(
        inside: Annotated[str | None, Query(description="A fence id.")] = None,
        near: Annotated[
            str | None,
            Query(
                description="'lat,lon,radius_m': degrees (in `coord_sys`) and metres; "
                "`distance_m` is in metres between the WGS84 points."
            ),
        ] = None,
        coord_sys: PositionCoordSysParam = None,
    ) -> Response:
        """Exactly one of `inside` or `near`; one page holds every match. `near`'s point and
        each `last_fix` are in `coord_sys`: the point is converted to WGS84 before the
        search, which compares only WGS84."""
        system = parse_coord_sys_param(coord_sys)
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
            items: list[object] = [summary(d, system) for d in engine.devices_inside(fence)]
            return page_response(items, None)
        assert near is not None
        lat, lon, radius_m = parse_near(near)
        if system is not None:
            lat, lon = to_wgs84(lat, lon, system)
        items = [
            {**summary(d, system), "distance_m": round(m, 1)}
            for d, m in engine.devices_near(lat, lon, radius_m)
        ]
        return page_response(items, None)
