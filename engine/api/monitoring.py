"""Routes of the service itself: `/healthz` (liveness, no auth) and `/metrics` (Prometheus)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

from engine.api.context import ApiContext
from engine.api.openapi import error_responses
from engine.api.problems import JsonResponse, Problem
from engine.runtime.metrics import counter_lines, gauge_lines, render

PROMETHEUS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def add_monitoring_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the health and metrics routes."""
    engine = api.engine

    @app.get(
        "/healthz",
        summary="Liveness: engine thread and MQTT connection (no auth)",
        tags=["service"],
        responses=error_responses(503),
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
            **error_responses(),
        },
    )
    def metrics() -> Response:
        """Readings, rejects, alerts, batch latency, outbox depth, deliveries, devices online."""
        text = render([engine.metrics, outbox, deliveries])
        return Response(text, media_type=PROMETHEUS_MEDIA_TYPE)
