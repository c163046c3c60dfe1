"""The HTTP API of DESIGN §3 and §9: fences, loans, webhooks, alerts and their cases,
devices and their tracks, the console's operators, sessions, tokens, audit log and KPIs,
its live feed, health and metrics; and the console's page itself under `/console/`.

Handlers are thin: parsing and validation live in `geofence`/`lending`, persistence in the
`Store`, live state in the `Engine`. A change is written to the store first, then handed
to the engine, which applies it between batches (the next batch sees it, no restart).
Every error is an RFC 9457 problem (`engine.api.problems`); the guard
(`engine.api.guard`) checks auth, roles and body sizes before any handler runs. Each
resource's routes live in their own module; this one wires them, in the order the document
lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI

from alerts.address_policy import AddressPolicy
from alerts.dispatcher import Dispatcher
from engine.api.alerts import add_alert_routes
from engine.api.api_tokens import add_api_token_routes
from engine.api.audit import add_audit_routes
from engine.api.cases import add_case_routes
from engine.api.console import STATIC_DIR
from engine.api.console_config import ConsoleConfig
from engine.api.console_files import add_console_routes
from engine.api.context import ApiContext
from engine.api.device_tokens import add_device_token_routes, token_resolver
from engine.api.devices import add_device_routes
from engine.api.fences import add_fence_routes
from engine.api.guard import DEFAULT_BODY_LIMIT, IMPORT_BODY_LIMIT, Guard
from engine.api.ingest import INGEST_TIMEOUT_S, add_ingest_routes
from engine.api.kpis import add_kpi_routes
from engine.api.lending import add_lending_routes
from engine.api.live_feed import add_live_routes
from engine.api.loans import add_loan_routes
from engine.api.monitoring import add_monitoring_routes
from engine.api.openapi import PROBLEM_SCHEMA
from engine.api.operations import add_operation_routes
from engine.api.operators import add_operator_routes
from engine.api.principals import SESSION_COOKIE, session_principal, token_principal
from engine.api.problems import EXCEPTION_HANDLERS, TITLES, JsonResponse
from engine.api.sessions import add_session_routes
from engine.api.track import add_track_routes
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
    console: ConsoleConfig | None = None,
    console_dir: Path = STATIC_DIR,
) -> FastAPI:
    """The API app; `token` (the admin's API token) None is insecure dev mode (no auth:
    every request is an anonymous admin, unless it carries a session cookie).
    `ingest_timeout_s`: how long the input routes wait for their commit before answering
    503. `console`: the console's tile layer and live feed limits; `console_dir`: where its
    page and files are."""
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
    add_case_routes(app, api)
    add_device_routes(app, api)
    add_track_routes(app, api)
    add_device_token_routes(app, api)
    add_ingest_routes(app, api, ingest_timeout_s)
    add_operation_routes(app, api)
    add_session_routes(app, api)
    add_operator_routes(app, api)
    add_api_token_routes(app, api)
    add_audit_routes(app, api)
    add_kpi_routes(app, api)
    add_live_routes(app, api, console or ConsoleConfig())
    add_monitoring_routes(app, api)
    add_console_routes(app, console or ConsoleConfig(), console_dir)
    app.add_middleware(
        Guard,
        token=token,
        body_limit=body_limit,
        import_limit=import_limit,
        device_for=token_resolver(store),
        token_for=token_principal(store),
        session_for=session_principal(store, engine.now_ms),
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
                components["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"},
                    "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
                }
                doc["security"] = [{"bearer": []}, {"session": []}]
        return doc
