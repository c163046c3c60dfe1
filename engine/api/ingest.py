"""Routes of `/v1/ingest`: trackers that do not speak our MQTT (DESIGN §9 "Other inputs").

`POST /v1/ingest/traccar` takes Traccar's position and event forwarding (`devices.traccar`);
`GET` and `POST /v1/ingest/osmand` the OsmAnd protocol and Traccar Client's JSON
(`devices.osmand`). A request is mapped to messages of the MQTT wire format and submitted
to the engine, which decodes them with the MQTT decoder, counts and stores them (rejects
too) in its next batch, and commits; only then does the route answer 200 with
`{"accepted": n, "rejected": [{"reason", "detail", "device_id", "index"}]}`.

- Junk is answered 200 with its rejects listed, and counted and kept like MQTT junk: these
  clients resend whatever did not get a 2xx, so a 4xx would make them send junk forever.
  `index` is the document's index in the request's array (null for a lone document).
- A commit that does not come within the timeout (the store is down or locked) is a 503
  problem: nothing was acknowledged, and the client sends again. Should the batch commit
  after all, the resend is counted as a duplicate, never stored twice.
- The API token guards these routes like any other (Traccar sends it with
  `forward.header`); OsmAnd and Traccar Client cannot send headers, so `/v1/ingest/osmand`
  also takes it as the `token` query parameter (`engine.api.guard`).
- A device's own token (`engine.api.device_tokens`) is taken the same ways, for readings
  of that device only: a request in which any document names another device (OsmAnd's
  `id`, Traccar's `device.uniqueId`, Traccar Client's `device_id`) is refused whole with a
  403 that names the token's device, before anything reaches the engine. A document that
  names no device at all (junk: no id, an id that cannot be one, a body that is not JSON)
  is listed as rejected, counted and kept, as with the API token.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import Scope

from devices.osmand import map_osmand
from devices.readings import Reject
from devices.topics import TopicRoute, parse_topic
from devices.traccar import map_traccar
from devices.wire import Mapped
from engine.api.context import ApiContext
from engine.api.guard import ADMITTED_DEVICE, OSMAND_PATH, TRACCAR_PATH
from engine.api.openapi import error_responses
from engine.api.problems import JsonResponse, Problem
from engine.runtime.submitted import EngineUnavailableError, Outcome

INGEST_TIMEOUT_S = 30.0
RETRY_AFTER_S = 5

_NUMBER_OR_TEXT: dict[str, object] = {"type": ["number", "string"]}
_TRACCAR_DOCUMENT: dict[str, object] = {
    "type": "object",
    "description": "Traccar's PositionData or EventData (forward.json, event.forward.url)",
    "required": ["device"],
    "properties": {
        "device": {
            "type": "object",
            "required": ["uniqueId"],
            "properties": {"uniqueId": {"type": "string", "description": "the device_id"}},
        },
        "position": {
            "type": "object",
            "properties": {
                "fixTime": {
                    "type": ["string", "integer"],
                    "description": "ISO-8601 with offset, or epoch ms",
                },
                "latitude": {"type": "number"},
                "longitude": {"type": "number"},
                "speed": {"type": "number", "description": "knots"},
                "course": {"type": "number"},
                "valid": {"type": "boolean"},
                "outdated": {"type": "boolean"},
                "attributes": {
                    "type": "object",
                    "properties": {
                        "ignition": {"type": "boolean"},
                        "odometer": {"type": "number", "description": "metres"},
                        "alarm": {
                            "type": "string",
                            "description": "comma-separated: vibration, shock, accident, tow, "
                            "powerCut, powerRestored, tampering, removing, gpsAntennaCut map",
                        },
                    },
                },
            },
        },
        "event": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "examples": ["alarm", "ignitionOff"]},
                "eventTime": {"type": "string"},
                "attributes": {"type": "object", "properties": {"alarm": {"type": "string"}}},
            },
        },
    },
}
_OSMAND_PARAMETERS: dict[str, tuple[dict[str, object], str]] = {
    "id": ({"type": "string"}, "the device_id (required, or deviceid)"),
    "deviceid": ({"type": "string"}, "the device_id, when id is absent"),
    "lat": (_NUMBER_OR_TEXT, "WGS84 latitude"),
    "lon": (_NUMBER_OR_TEXT, "WGS84 longitude"),
    "location": ({"type": "string"}, "lat,lon when lat and lon are absent"),
    "timestamp": (
        {"type": "string"},
        "unix seconds, milliseconds (from 2^31), or ISO-8601 with offset; default: arrival",
    ),
    "speed": (_NUMBER_OR_TEXT, "knots"),
    "bearing": (_NUMBER_OR_TEXT, "degrees (or heading)"),
    "hdop": (_NUMBER_OR_TEXT, "horizontal dilution of precision"),
    "ignition": ({"type": "string", "enum": ["true", "false", "1", "0"]}, "ignition on/off"),
    "valid": ({"type": "string"}, "false or 0: no GPS fix (nothing is mapped)"),
}
_OSMAND_FORM: dict[str, object] = {
    "type": "object",
    "properties": {
        name: {**schema, "description": text} for name, (schema, text) in _OSMAND_PARAMETERS.items()
    },
}
_TRACCAR_CLIENT: dict[str, object] = {
    "type": "object",
    "description": "Traccar Client 9+",
    "required": ["device_id", "location"],
    "properties": {
        "device_id": {"type": "string"},
        "location": {
            "type": ["object", "array"],
            "description": "one location, or an array of them",
            "properties": {
                "timestamp": {"type": "string", "description": "ISO-8601 with offset"},
                "coords": {
                    "type": "object",
                    "properties": {
                        "latitude": {"type": "number"},
                        "longitude": {"type": "number"},
                        "speed": {"type": "number", "description": "m/s; negative: unknown"},
                        "heading": {"type": "number", "description": "degrees; negative: unknown"},
                    },
                },
            },
        },
    },
}
_RESULT: dict[str, object] = {
    "description": "Committed: the readings accepted, and each reject (counted and kept)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["accepted", "rejected"],
                "properties": {
                    "accepted": {"type": "integer"},
                    "rejected": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "reason": {"type": "string"},
                                "detail": {"type": "string"},
                                "device_id": {"type": ["string", "null"]},
                                "index": {"type": ["integer", "null"]},
                            },
                        },
                    },
                },
            }
        }
    },
}
_QUERY_TOKEN = {
    "name": "token",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "the API token or the device's own token, for clients that cannot send "
    "an Authorization header (the header wins when both are sent)",
}


def add_ingest_routes(app: FastAPI, api: ApiContext, timeout_s: float = INGEST_TIMEOUT_S) -> None:
    """Register the Traccar and OsmAnd input routes."""

    async def ingest(mapped: Mapped, scope: Scope) -> Response:
        """Submit a mapped request and answer once its batch is committed."""
        _admit(mapped, scope.get(ADMITTED_DEVICE))
        messages = [(m.topic, m.payload) for m in mapped.messages]
        future = api.engine.submit(messages, mapped.rejects)
        try:
            async with asyncio.timeout(timeout_s):
                outcome = await asyncio.wrap_future(future)
        except TimeoutError:
            detail = (
                f"the input was not committed within {timeout_s:g} s (the store is not "
                "taking commits); nothing was acknowledged: send it again"
            )
            headers = {"Retry-After": str(RETRY_AFTER_S)}
            raise Problem(503, "store-unavailable", detail, headers=headers) from None
        except EngineUnavailableError as exc:
            raise Problem(503, "engine-down", f"{exc}; send the input again later") from None
        return JsonResponse(_result(mapped, outcome))

    @app.post(
        TRACCAR_PATH,
        summary="Traccar position and event forwarding (forward.json, event.forward.url)",
        tags=["ingest"],
        responses={200: _RESULT, **error_responses(403, 413, 503)},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                _TRACCAR_DOCUMENT,
                                {"type": "array", "items": _TRACCAR_DOCUMENT, "maxItems": 1000},
                            ]
                        }
                    }
                },
            }
        },
    )
    async def traccar(request: Request) -> Response:
        """Map each document to gps, vib and status readings and commit them; junk is
        listed as rejected (and counted and kept), not refused."""
        return await ingest(map_traccar(await request.body()), request.scope)

    params = [
        {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
        for name, (schema, text) in _OSMAND_PARAMETERS.items()
    ]

    @app.get(
        OSMAND_PATH,
        summary="OsmAnd / Traccar Client position as query parameters",
        tags=["ingest"],
        responses={200: _RESULT, **error_responses(403, 503)},
        openapi_extra={"parameters": [*params, _QUERY_TOKEN]},
    )
    async def osmand_get(request: Request) -> Response:
        """Map the query parameters to a gps reading and commit it."""
        return await osmand(request)

    @app.post(
        OSMAND_PATH,
        summary="OsmAnd / Traccar Client position: query, form body, or Traccar Client JSON",
        tags=["ingest"],
        responses={200: _RESULT, **error_responses(403, 413, 503)},
        openapi_extra={
            "parameters": [*params, _QUERY_TOKEN],
            "requestBody": {
                "required": False,
                "content": {
                    "application/x-www-form-urlencoded": {"schema": _OSMAND_FORM},
                    "application/json": {"schema": _TRACCAR_CLIENT},
                },
            },
        },
    )
    async def osmand_post(request: Request) -> Response:
        """Map the query parameters, else the form or JSON body, and commit the reading."""
        return await osmand(request)

    async def osmand(request: Request) -> Response:
        body = await request.body()
        query = request.scope.get("query_string", b"").decode("utf-8", "replace")
        content_type = request.headers.get("content-type")
        mapped = map_osmand(query, body, content_type, api.engine.now_ms())
        return await ingest(mapped, request.scope)


def _admit(mapped: Mapped, token_device: str | None) -> None:
    """A 403 when a device token (of `token_device`) sent readings of other devices."""
    if token_device is None:
        return
    named = {r.device_id for r in mapped.rejects if r.device_id is not None}
    for message in mapped.messages:
        route = parse_topic(message.topic)
        named.add(route.device_id if isinstance(route, TopicRoute) else message.topic)
    others = sorted(named - {token_device})
    if others:
        shown = ", ".join(repr(d) for d in others[:5]) + (", ..." if len(others) > 5 else "")
        detail = (
            f"the token is the device token of {token_device!r}, and admits only its readings; "
            f"this request holds readings of {shown}: nothing was taken. Send each device's "
            "readings with its own token, or use the API token"
        )
        raise Problem(403, "forbidden", detail)


def _result(mapped: Mapped, outcome: Outcome) -> dict[str, object]:
    """The answer: readings accepted, and the rejects in document order."""
    rejected: list[tuple[int, Reject, int | None]] = [
        (_order(r.index), r, r.index) for r in outcome.rejects
    ]
    for message, decoded in zip(mapped.messages, outcome.decoded, strict=True):
        rejected += [(_order(message.document), r, message.document) for r in decoded.rejects]
    rejected.sort(key=lambda item: item[0])
    return {
        "accepted": outcome.accepted,
        "rejected": [
            {"reason": r.reason.value, "detail": r.detail, "device_id": r.device_id, "index": i}
            for _, r, i in rejected
        ],
    }


def _order(index: int | None) -> int:
    return -1 if index is None else index
