"""The per-loan stage: what needs more than one tracker or more than one loan.

Pure, like the device fold: fixes come in from accepted device steps, alerts go out.
"""

from __future__ import annotations

from collections.abc import Iterable

from alerts.model import Alert, AlertType, alert_id
from engine.core.config import Config
from engine.core.state import LoanState, PairState, Position
from geofence.geo import haversine_m
from lending.model import Loan


def step_loan(
    state: LoanState, device_id: str, pos: Position, loan: Loan, config: Config, now_ms: int
) -> tuple[LoanState, tuple[Alert, ...]]:
    """Fold an accepted fix of one of the loan's trackers; raise tracker separation.

    Each new fix is compared with every other tracker's latest fix that is under
    `separation_max_age_s` apart; `separation_confirmations` consecutive comparisons over
    `separation_m` raise one alert per episode; a comparison under it ends the episode.
    """
    fixes = {dev: p for dev, p in state.fixes if dev in loan.device_ids}
    fixes[device_id] = pos
    pairs = {(p.a, p.b): p for p in state.pairs if p.a in fixes and p.b in fixes}
    alerts: list[Alert] = []
    max_age_ms = config.separation_max_age_s * 1000
    if loan.active:
        for other in sorted(fixes):
            other_pos = fixes[other]
            if other == device_id or abs(pos.ts_ms - other_pos.ts_ms) >= max_age_ms:
                continue
            a, b = sorted((device_id, other))
            pair = pairs.get((a, b), PairState(a, b))
            dist_m = haversine_m(pos.lat, pos.lon, other_pos.lat, other_pos.lon)
            if dist_m <= config.separation_m:
                pairs[a, b] = PairState(a, b)
                continue
            pair = PairState(a, b, pair.streak + 1, pair.alerted)
            if pair.streak >= config.separation_confirmations and not pair.alerted:
                alerts.append(
                    _separation_alert(loan, device_id, pos, other, other_pos, dist_m, now_ms)
                )
                pair = PairState(a, b, pair.streak, alerted=True)
            pairs[a, b] = pair
    new = LoanState(
        state.loan_id,
        fixes=tuple(sorted(fixes.items())),
        pairs=tuple(pairs[k] for k in sorted(pairs)),
    )
    return new, tuple(alerts)


def _separation_alert(
    loan: Loan,
    device_id: str,
    pos: Position,
    other: str,
    other_pos: Position,
    dist_m: float,
    now_ms: int,
) -> Alert:
    a, b = sorted((device_id, other))
    return Alert(
        id=alert_id(loan.loan_id, AlertType.TRACKER_SEPARATION, None, pos.ts_ms, f"{a}|{b}"),
        type=AlertType.TRACKER_SEPARATION,
        ts_ms=pos.ts_ms,
        detected_ms=now_ms,
        device_id=device_id,
        loan_id=loan.loan_id,
        vin=loan.vin,
        fence_id=None,
        lat=pos.lat,
        lon=pos.lon,
        details={
            "other_device_id": other,
            "distance_m": round(dist_m, 1),
            "other_lat": other_pos.lat,
            "other_lon": other_pos.lon,
            "other_ts_ms": other_pos.ts_ms,
        },
    )


def put_conflicts(
    stored: Iterable[Loan], loans: Iterable[Loan], ts_ms: int, now_ms: int
) -> list[Alert]:
    """The `pledge.vin_conflict` alerts of PUTting `loans` one after another over `stored`."""
    # `stored` must hold every loan already there with one of their VINs or ids.
    by_id: dict[str, Loan] = {}
    by_vin: dict[str, dict[str, Loan]] = {}
    for loan in stored:
        by_id[loan.loan_id] = loan
        by_vin.setdefault(loan.vin, {})[loan.loan_id] = loan
    alerts: list[Alert] = []
    for loan in loans:
        old = by_id.get(loan.loan_id)
        # A re-PUT of an active loan with the same VIN: its conflict was raised when first PUT.
        if old is None or not old.active or old.vin != loan.vin:
            conflict = _vin_conflict(loan, by_vin.get(loan.vin, {}).values(), ts_ms, now_ms)
            if conflict is not None:
                alerts.append(conflict)
        if old is not None:
            by_vin[old.vin].pop(old.loan_id, None)
        by_id[loan.loan_id] = loan
        by_vin.setdefault(loan.vin, {})[loan.loan_id] = loan
    return alerts


def _vin_conflict(loan: Loan, others: Iterable[Loan], ts_ms: int, now_ms: int) -> Alert | None:
    """`pledge.vin_conflict` when `loan` is active and its VIN is on another active loan."""
    if not loan.active:
        return None
    clash = sorted(
        o.loan_id for o in others if o.active and o.vin == loan.vin and o.loan_id != loan.loan_id
    )
    if not clash:
        return None
    return Alert(
        id=alert_id(loan.loan_id, AlertType.VIN_CONFLICT, None, ts_ms, loan.vin),
        type=AlertType.VIN_CONFLICT,
        ts_ms=ts_ms,
        detected_ms=now_ms,
        device_id=None,
        loan_id=loan.loan_id,
        vin=loan.vin,
        fence_id=None,
        lat=None,
        lon=None,
        details={"reason": "vin_on_other_active_loan", "other_loan_ids": clash},
    )
