"""Routes of `/v1/devices/{device_id}/token`: per-device tokens of the HTTP inputs (DESIGN §9).

A phone running Traccar Client or OsmAnd must not carry the lender's API token. An admin
(the API token) gives each device a token of its own with `PUT`, which answers it once;
`DELETE` revokes it and `GET` says whether there is one and since when. A device token is
accepted by `/v1/ingest/osmand` (header or `?token=`) and `/v1/ingest/traccar` only, and
only for readings of its device: `engine.api.guard` finds the device the token belongs to,
`engine.api.ingest` refuses a request that names another device (403); every other route
answers it 403.

A token is `pwd_` and 32 random bytes in urlsafe base64 (256 bits). Only its SHA-256 is
stored: a token of 256 random bits cannot be guessed from its hash, so a slow password hash
would add cost and nothing else. The guard finds the device by looking the hash of the
presented token up in a unique index, rather than comparing it with each stored one; a
timing difference of that lookup could only tell a guesser about the hash of their own
guess, which brings them no closer to any token. The API token is still compared in
constant time.

No cache: every request that presents a device token looks its hash up, so a revoke or a
rotation takes effect at once in every process that serves the API on the same database.
Measured on 2,000 tokens: the read takes 7 µs on SQLite and 95 µs on PostgreSQL over
loopback (its pool's checkout test included); with the hop to a worker thread the guard
adds about 0.3 ms to a request, where an OsmAnd request waits about 11 ms for its commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote

from fastapi import FastAPI, Path
from starlette.responses import Response

from alerts.model import iso_ms
from devices.topics import DEVICE_ID_RE
from engine.api.context import ApiContext
from engine.api.credentials import MAX_TOKEN_CHARS, new_token, token_sha256
from engine.api.openapi import error_responses
from engine.api.principals import Caller, audit_entry
from engine.api.problems import JsonResponse, not_found, validation
from engine.api.schemas import created
from engine.store.port import Store
from geofence.fence import short_repr

DEVICE_TOKEN_PREFIX = "pwd_"  # noqa: S105  # the prefix of a token, not a secret

_TOKEN_PATH = "/v1/devices/{device_id}/token"  # noqa: S105  # a route, not a secret
_NO_STORE = {"Cache-Control": "no-store"}
DeviceId = Annotated[
    str,
    Path(
        description="the tracker's device_id",
        json_schema_extra={"pattern": f"^{DEVICE_ID_RE.pattern}$"},  # checked by `_check`
    ),
]
_ISSUED: dict[str, object] = {
    "type": "object",
    "required": ["device_id", "token", "created_at"],
    "properties": {
        "device_id": {"type": "string"},
        "token": {
            "type": "string",
            "description": "the device's token: shown this once, only its SHA-256 is stored",
        },
        "created_at": {"type": "string", "format": "date-time"},
    },
}
_SHOWN: dict[str, object] = {
    "type": "object",
    "required": ["device_id", "exists", "created_at"],
    "properties": {
        "device_id": {"type": "string"},
        "exists": {"type": "boolean"},
        "created_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def new_device_token() -> str:
    """A new random device token: `pwd_` and 32 random bytes, urlsafe base64."""
    return new_token(DEVICE_TOKEN_PREFIX)


def token_resolver(store: Store) -> Callable[[str], str | None]:
    """What the guard asks of a credential that is not the API token: the device whose token
    it is, or None (a blocking store read: the guard runs it in a worker thread)."""

    def device_for(token: str) -> str | None:
        if not token.startswith(DEVICE_TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            return None
        return store.device_for_token(token_sha256(token))

    return device_for


def add_device_token_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the device token routes."""

    @app.put(
        _TOKEN_PATH,
        summary="Create or rotate a device's token for the HTTP inputs (answered once)",
        tags=["devices"],
        responses={
            200: _content("Rotated: the old token no longer works", _ISSUED),
            201: _content("Created", _ISSUED),
            **error_responses(422),
        },
    )
    def put_device_token(device_id: DeviceId, who: Caller) -> Response:
        """Make a new token for the device, replacing (revoking) any earlier one; the
        answer is the only place the token ever appears."""
        _check(device_id)
        token = new_device_token()
        now_ms = api.engine.now_ms()
        target = f"device-token:{device_id}"
        audit = audit_entry(who, now_ms, "device_token.put", target)
        replaced = api.store.put_device_token(device_id, token_sha256(token), now_ms, audit)
        body: dict[str, object] = {
            "device_id": device_id,
            "token": token,
            "created_at": iso_ms(now_ms),
        }
        response = created(body, replaced, f"/v1/devices/{quote(device_id)}/token")
        response.headers.update(_NO_STORE)
        return response

    @app.get(
        _TOKEN_PATH,
        summary="Whether a device has a token and since when (never the token)",
        tags=["devices"],
        responses={200: _content("The device's token, if any", _SHOWN), **error_responses(422)},
    )
    def get_device_token(device_id: DeviceId) -> Response:
        """Whether the device has a token, and when it was made."""
        _check(device_id)
        issued = api.store.get_device_token(device_id)
        return JsonResponse(
            {
                "device_id": device_id,
                "exists": issued is not None,
                "created_at": None if issued is None else iso_ms(issued.created_ms),
            }
        )

    @app.delete(
        _TOKEN_PATH,
        summary="Revoke a device's token",
        tags=["devices"],
        status_code=204,
        response_class=Response,
        responses=error_responses(404, 422),
    )
    def delete_device_token(device_id: DeviceId, who: Caller) -> Response:
        """Revoke the device's token: it is refused (401) from now on."""
        _check(device_id)
        target = f"device-token:{device_id}"
        audit = audit_entry(who, api.engine.now_ms(), "device_token.delete", target)
        if not api.store.delete_device_token(device_id, audit):
            raise not_found(f"device {device_id!r} has no token")
        return Response(status_code=204)


def _check(device_id: str) -> None:
    """A 422 naming `device_id` when it cannot be a device id."""
    if not DEVICE_ID_RE.fullmatch(device_id):
        detail = (
            f"device_id: {short_repr(device_id)} is not a device id "
            f"(it must match {DEVICE_ID_RE.pattern})"
        )
        raise validation(detail, "device_id")


def _content(description: str, schema: dict[str, object]) -> dict[str, object]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}
