"""Route of `/v1/kpis`: the console's key numbers over a period (default the last 24 h).

From the store, one SQL aggregate each over an index of its time: alerts per hour by type
(by event time), cases by state, time to acknowledge and to resolve (from detection; p50
and p90, nearest rank), deliveries by state (by creation) and their success rate, rejected
input by reason (by arrival). From the engine: devices online now. From the lending
consumer, when it runs: loans per risk tier (null otherwise).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

from alerts.model import iso_ms
from engine.api.context import ApiContext
from engine.api.openapi import error_responses
from engine.api.problems import JsonResponse
from engine.api.track import TimeParam, parse_period
from engine.store.console_types import Percentiles


def add_kpi_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the KPI route."""
    engine = api.engine

    @app.get(
        "/v1/kpis",
        summary="Key numbers: alerts per hour, times to acknowledge and resolve, delivery",
        tags=["console"],
        responses=error_responses(400),
    )
    def get_kpis(since: TimeParam = None, until: TimeParam = None) -> Response:
        """KPIs of `[since, until)`; `devices` and `loans_per_tier` are as of now."""
        since_ms, until_ms = parse_period(since, until, engine.now_ms())
        kpis = api.store.kpis(since_ms, until_ms)
        hours: dict[int, dict[str, int]] = {}
        for hour_ms, type_, count in kpis.alerts_per_hour:
            hours.setdefault(hour_ms, {})[type_] = count
        delivered = kpis.deliveries.get("delivered", 0)
        finished = delivered + kpis.deliveries.get("dead", 0)
        states = list(engine.pipeline.devices.values())
        return JsonResponse(
            {
                "since": iso_ms(since_ms),
                "until": iso_ms(until_ms),
                "alerts_per_hour": [
                    {"hour": iso_ms(h), "total": sum(counts.values()), "by_type": counts}
                    for h, counts in sorted(hours.items())
                ],
                "cases": {s: kpis.cases.get(s, 0) for s in ("open", "acknowledged", "resolved")},
                "time_to_acknowledge_s": _seconds(kpis.to_ack),
                "time_to_resolve_s": _seconds(kpis.to_resolve),
                "devices": {
                    "online": sum(1 for s in states if not s.offline),
                    "known": len(states),
                },
                "deliveries": {
                    **{s: kpis.deliveries.get(s, 0) for s in ("pending", "delivered", "dead")},
                    "success_rate": round(delivered / finished, 4) if finished else None,
                },
                "rejected": dict(sorted(kpis.rejected.items())),
                "loans_per_tier": _tiers(api),
            }
        )


def _seconds(p: Percentiles) -> dict[str, object]:
    def s(ms: int | None) -> float | None:
        return None if ms is None else round(ms / 1000, 3)

    return {"count": p.count, "p50": s(p.p50_ms), "p90": s(p.p90_ms)}


def _tiers(api: ApiContext) -> dict[str, int] | None:
    """Loans the lending consumer knows, per tier; None without it (`--no-lending`)."""
    lending = api.engine.lending()
    if lending is None:
        return None
    consumer, lock = lending
    with lock:
        return consumer.tier_counts()
