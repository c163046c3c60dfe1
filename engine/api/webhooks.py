"""Routes of `/v1/webhooks`: the endpoints alerts are delivered to (secrets never shown)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI
from starlette.responses import Response

from engine.api.context import ApiContext
from engine.api.openapi import BODY_ERRORS, WEBHOOK_SCHEMA, body_doc, error_responses
from engine.api.principals import Caller, audit_entry
from engine.api.problems import JsonResponse, not_found, validation
from engine.api.schemas import JsonBody, created, page_response, parse_webhook, webhook_json


def add_webhook_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the webhook routes."""

    @app.put(
        "/v1/webhooks/{hook_id}",
        summary="Create or replace a webhook endpoint",
        tags=["webhooks"],
        responses=error_responses(*BODY_ERRORS),
        openapi_extra=body_doc(WEBHOOK_SCHEMA),
    )
    def put_webhook(hook_id: str, doc: JsonBody, who: Caller) -> Response:
        """Store the endpoint; the dispatcher starts delivering to it at once."""
        hook = parse_webhook(hook_id, doc)
        refused = api.webhook_addresses.check_url(hook.url)
        if refused is not None:
            raise validation(f"url: {refused}", "url")
        existed = api.store.get_webhook(hook_id) is not None
        # The detail is the webhook as shown: never its secret.
        audit = audit_entry(
            who, api.engine.now_ms(), "webhook.put", f"webhook:{hook_id}", **webhook_json(hook)
        )
        api.store.put_webhook(hook, audit)
        api.sync_dispatcher()
        return created(webhook_json(hook), existed, f"/v1/webhooks/{quote(hook_id)}")

    @app.get(
        "/v1/webhooks",
        summary="List webhooks (secrets omitted)",
        tags=["webhooks"],
        responses=error_responses(),
    )
    def list_webhooks() -> Response:
        """Every webhook, by id, in one page."""
        hooks = sorted(api.store.list_webhooks(), key=lambda h: h.hook_id)
        return page_response([webhook_json(h) for h in hooks], None)

    @app.get(
        "/v1/webhooks/{hook_id}",
        summary="Get a webhook (secret omitted)",
        tags=["webhooks"],
        responses=error_responses(404),
    )
    def get_webhook(hook_id: str) -> Response:
        """One webhook."""
        hook = api.store.get_webhook(hook_id)
        if hook is None:
            raise not_found(f"webhook {hook_id!r} does not exist")
        return JsonResponse(webhook_json(hook))

    @app.delete(
        "/v1/webhooks/{hook_id}",
        summary="Delete a webhook and its pending deliveries",
        tags=["webhooks"],
        status_code=204,
        response_class=Response,
        responses=error_responses(404),
    )
    def delete_webhook(hook_id: str, who: Caller) -> Response:
        """Delete the endpoint; its worker stops."""
        audit = audit_entry(who, api.engine.now_ms(), "webhook.delete", f"webhook:{hook_id}")
        if not api.store.delete_webhook(hook_id, audit):
            raise not_found(f"webhook {hook_id!r} does not exist")
        api.sync_dispatcher()
        return Response(status_code=204)
