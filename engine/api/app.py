"""The HTTP API of DESIGN §3: fences, loans, webhooks, alerts, devices, health and metrics.

Handlers are thin: parsing and validation live in `geofence`/`lending`, persistence in the
`Store`, live state in the `Engine`. A change is written to the store first, then handed
to the engine, which applies it between batches (the next batch sees it, no restart).
Every error is an RFC 9457 problem (`engine.api.problems`); the guard
(`engine.api.guard`) checks auth and body sizes before any handler runs. Each resource's
routes live in their own module; this one wires them, in the order the document lists them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from alerts.address_policy import AddressPolicy
from alerts.dispatcher import Dispatcher
from engine.api.alerts import add_alert_routes
from engine.api.context import ApiContext
from engine.api.device_tokens import add_device_token_routes, token_resolver
from engine.api.devices import add_device_routes
from engine.api.fences import add_fence_routes
from engine.api.guard import DEFAULT_BODY_LIMIT, IMPORT_BODY_LIMIT, Guard
from engine.api.ingest import INGEST_TIMEOUT_S, add_ingest_routes
from engine.api.lending import add_lending_routes
from engine.api.loans import add_loan_routes
from engine.api.monitoring import add_monitoring_routes
from engine.api.openapi import PROBLEM_SCHEMA
from engine.api.operations import add_operation_routes
from engine.api.problems import EXCEPTION_HANDLERS, TITLES, JsonResponse
from engine.api.webhooks import add_webhook_routes
from engine.runtime.live import Engine
from engine.store.port import Store


def create_app(
    engine: Engine,
    store: Store,
    dispatcher: Dispatcher | None,
    token: str | None,
    *,
    body_limit: int = DEFAULT_BODY_LIMIT,
    import_limit: int = IMPORT_BODY_LIMIT,
    webhook_addresses: AddressPolicy | None = None,
    ingest_timeout_s: float = INGEST_TIMEOUT_S,
) -> FastAPI:
    """The API app; `token` None is insecure dev mode (no auth). `ingest_timeout_s`: how long
    the input routes wait for their commit before answering 503."""
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
    api = ApiContext(engine, store, dispatcher, webhook_addresses or AddressPolicy())
    add_fence_routes(app, api)
    add_loan_routes(app, api)
    add_lending_routes(app, api)
    add_webhook_routes(app, api)
    add_alert_routes(app, api)
    add_device_routes(app, api)
    add_device_token_routes(app, api)
    add_ingest_routes(app, api, ingest_timeout_s)
    add_operation_routes(app, api)
    add_monitoring_routes(app, api)
    app.add_middleware(
        Guard,
        token=token,
        body_limit=body_limit,
        import_limit=import_limit,
        device_for=token_resolver(store),
    )
    app.secured = token is not None
    return app


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
