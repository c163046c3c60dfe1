"""Routes of the service itself: `/healthz` (liveness), `/readyz` (readiness), both without
auth, and `/metrics` (Prometheus).

Liveness is the engine thread being alive: restarting the process is the cure only for a
dead thread. Readiness is commits keeping up with the input: when the input in hand has
waited `stall_s` for its commit (the database is locked or stuck), `/readyz` answers 503
with the age of the last commit, while `/healthz` and `/metrics` keep answering 200 with
the same numbers, so a stall is seen rather than guessed.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.responses import Response

from engine.api.context import ApiContext
from engine.api.openapi import error_responses
from engine.api.problems import JsonResponse, Problem
from engine.runtime.metrics import counter_lines, gauge_lines, render
from engine.store.port import StoreError

_log = logging.getLogger(__name__)

PROMETHEUS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def add_monitoring_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the health, readiness and metrics routes."""
    engine = api.engine

    def backlog() -> int | None:
        """Pending webhook deliveries, or None when the store does not answer quickly."""
        try:
            return api.store.outbox_pending()
        except StoreError as exc:
            _log.warning("outbox backlog unknown: %s", exc)
        except Exception:  # noqa: BLE001  # health reports what it can; it must not fail
            _log.exception("outbox backlog unknown")
        return None

    def state() -> dict[str, object]:
        ready = engine.readiness()
        return {
            "engine_alive": ready.engine_alive,
            "mqtt_connected": None if engine.source is None else engine.source.connected,
            "last_commit_age_s": round(ready.last_commit_age_s, 3),
            "input_waiting_s": round(ready.input_waiting_s, 3),
            "outbox_pending": backlog(),
        }

    @app.get(
        "/healthz",
        summary="Liveness: engine thread, MQTT, last commit, outbox backlog (no auth)",
        tags=["service"],
        responses=error_responses(503),
        openapi_extra={"security": []},
    )
    def healthz() -> Response:
        """200 while the engine thread runs, 503 (a problem) once it has died; both with
        the age of the last commit and the outbox backlog."""
        body = state()
        if not engine.running:
            detail = "the engine thread is not running; see the logs, then restart the service"
            raise Problem(503, "engine-down", detail, extra=body)
        return JsonResponse({"status": "ok", **body})

    @app.get(
        "/readyz",
        summary="Readiness: commits keep up with the input (no auth)",
        tags=["service"],
        responses=error_responses(503),
        openapi_extra={"security": []},
    )
    def readyz() -> Response:
        """200 while commits keep up; 503 (a problem) when the input in hand has waited
        `stall_s` for its commit, or the engine thread has died."""
        ready = engine.readiness()
        body = {**state(), "stall_s": ready.stall_s}
        if not ready.engine_alive:
            detail = "the engine thread is not running; see the logs, then restart the service"
            raise Problem(503, "engine-down", detail, extra=body)
        if not ready.ready:
            detail = (
                f"no commit for {ready.last_commit_age_s:.0f} s while input has waited "
                f"{ready.input_waiting_s:.0f} s (the limit is {ready.stall_s:g} s): the "
                "database is not taking commits (a lock, a full disk?); see the engine's log"
            )
            raise Problem(503, "store-unavailable", detail, extra=body)
        return JsonResponse({"status": "ready", **body})

    def outbox() -> list[str]:
        pending = backlog()
        if pending is None:
            return []  # absent rather than wrong: the scrape itself still answers
        return gauge_lines("pledgewatch_outbox_pending", "Webhook deliveries pending.", pending)

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
        """Readings, rejects, alerts, batch latency, commit age, outbox depth, deliveries,
        sign-ins."""
        text = render([engine.metrics, outbox, deliveries, api.logins.metric_lines])
        return Response(text, media_type=PROMETHEUS_MEDIA_TYPE)
