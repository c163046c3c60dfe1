"""The per-device fold: `step(state, reading, ...) -> Step` and `tick(state, now_ms, ...)`.

Pure: no I/O, no clock, and the state passed in is never changed (each call works on one
clone and returns it). Two clocks come in as arguments: a reading's own event time
(`ts_ms`, which drives fence, zone-grace and dwell rules) and `now_ms`, the runtime clock
(wall clock live, the largest event time seen in a replay), which drives `device.offline`
and fires the timers of a device that went silent.

Where the two clocks disagree (a stamp ahead of arrival, a clock gone far back), the
rules of `engine.core.clock` apply. `device.offline` and `device.online` are raised only
for devices of active loans; other devices go offline and online silently and are
forgotten (`evict_at`) after `evict_after_s` without a reading.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

from alerts.model import Alert, AlertType, Detail
from devices.readings import GpsFix, Reading, StatusReport, Stream, Vibration
from engine.core.clock import cap_ahead, reanchor
from engine.core.context import Context, Outcome, make_alert
from engine.core.state import DeviceState, DwellTimer, Position
from geofence.fence import Fence, FenceKind
from geofence.geo import haversine_m
from geofence.index import FenceHit

_STREAM_INDEX = {Stream.GPS: 0, Stream.VIB: 1, Stream.STATUS: 2}
_ACCEPTED, _LATE, _DUPLICATE = Outcome.ACCEPTED, Outcome.LATE, Outcome.DUPLICATE
_CLOCK_SKEW = Outcome.CLOCK_SKEW


class Step(NamedTuple):
    """The result of one step: new state, alerts raised, and when to wake the device next.

    `wake_at` is on the runtime clock; `moved` is the accepted fix that moved the car (for
    the loan stage and position index); `missing` counts readings skipped in the `seq`.
    A named tuple: one is built per reading.
    """

    state: DeviceState
    alerts: tuple[Alert, ...]
    wake_at: int | None
    outcome: Outcome
    moved: Position | None = None
    missing: int = 0


def new_state(device_id: str) -> DeviceState:
    """The state of a device never seen before."""
    return DeviceState(device_id=device_id)


def step(
    state: DeviceState,
    reading: Reading,
    ctx: Context,
    now_ms: int,
    hits: tuple[FenceHit, ...] = (),
) -> Step:
    """Fold one reading into a device's state. `hits` are the fix's fences (gps only)."""
    stream_i = _STREAM_INDEX[reading.stream]
    ts = reading.ts_ms
    key = ts * 3 + stream_i
    # Only a reading no newer than the stream's last, the device's last event time (a held
    # back clock-skew reading) or a stamp capped as ahead of the clock can repeat a recent one.
    if (
        ts <= state.last_ts[stream_i] or ts <= state.event_ms or ts <= state.ahead_ms
    ) and key in state.recent:
        return Step(state, (), wake_at(state, ctx), _DUPLICATE)
    s = state.clone()
    cfg = ctx.config
    keep = cfg.recent_readings_kept
    s.recent = (*state.recent[-(keep - 1) :], key) if keep > 1 else (key,)
    alerts: list[Alert] = []
    if s.offline:
        s.offline = False
        if _watched(s, ctx):
            # Stamped no earlier than the offline alert it ends (a catch-up upload carries
            # old event times); both come from committed state, so a replay gets the same id.
            offline_ts = s.arrived_ms + cfg.offline_s * 1000
            online_ts = max(ts, offline_ts)
            alerts.append(make_alert(AlertType.DEVICE_ONLINE, s, ctx, online_ts, now_ms))
    s.arrived_ms = max(s.arrived_ms, now_ms)
    if (
        ts < state.event_ms - cfg.max_clock_skew_s * 1000
        and now_ms - state.arrived_ms <= cfg.max_clock_skew_s * 1000  # it arrives fresh
        and not reanchor(s, ts, ctx, now_ms - state.arrived_ms, now_ms, alerts)
    ):
        return Step(s, tuple(alerts), wake_at(s, ctx), _CLOCK_SKEW)
    if s.event_ms > ts > state.arrived_ms + cfg.max_clock_ahead_s * 1000:
        # stamped after the previous arrival, yet older than the device's last event: the
        # stamps since that arrival ran ahead of the clock
        cap_ahead(s, state.arrived_ms + cfg.max_clock_ahead_s * 1000)
    if ts <= s.last_ts[stream_i]:
        return Step(s, tuple(alerts), wake_at(s, ctx), _LATE)
    if s.skew:  # the old clock goes on: no new one
        s.skew, s.skew_ms = (), 0
    gps_ts, vib_ts, status_ts = s.last_ts
    if stream_i == 0:
        s.last_ts = (reading.ts_ms, vib_ts, status_ts)
    elif stream_i == 1:
        s.last_ts = (gps_ts, reading.ts_ms, status_ts)
    else:
        s.last_ts = (gps_ts, vib_ts, reading.ts_ms)
    moved: Position | None = None
    missing = 0
    if isinstance(reading, GpsFix):
        if reading.seq is not None:
            missing = _count_seq(s, reading.seq)
        moved = _on_fix(s, reading, hits, ctx, now_ms, alerts)
    else:
        s.event_ms = max(s.event_ms, reading.ts_ms)
        _fire_timers(s, reading.ts_ms, ctx, now_ms, alerts)
        if isinstance(reading, Vibration):
            _on_vibration(s, reading, ctx, now_ms, alerts)
        elif isinstance(reading, StatusReport):
            _on_status(s, reading, ctx, now_ms, alerts)
    return Step(s, tuple(alerts), wake_at(s, ctx), _ACCEPTED, moved, missing)


def tick(state: DeviceState, now_ms: int, ctx: Context) -> Step:
    """Fire what is due on the runtime clock: offline, and the timers of a silent device."""
    alerts: list[Alert] = []
    s = state.clone()
    cfg = ctx.config
    if s.arrived_ms >= 0 and not s.offline and now_ms >= s.arrived_ms + cfg.offline_s * 1000:
        if _watched(s, ctx):
            due = s.arrived_ms + cfg.offline_s * 1000
            details: dict[str, Detail] = {
                "last_arrival_ms": s.arrived_ms,
                "offline_s": cfg.offline_s,
            }
            alerts.append(
                make_alert(AlertType.DEVICE_OFFLINE, s, ctx, due, now_ms, details=details)
            )
        s.offline = True
    if s.arrived_ms >= 0 and now_ms >= s.arrived_ms + cfg.zone_grace_s * 1000:
        _fire_timers(s, now_ms, ctx, now_ms, alerts)
    return Step(s, tuple(alerts), wake_at(s, ctx), _ACCEPTED)


def wake_at(state: DeviceState, ctx: Context) -> int | None:
    """When, on the runtime clock, `tick` has something to do for this device."""
    if state.arrived_ms < 0:
        return None
    cfg = ctx.config
    wake = None if state.offline else state.arrived_ms + cfg.offline_s * 1000
    if state.dwell or (state.zone_out_ms is not None and not state.zone_alerted):
        due = next_due(state, ctx)
        if due is not None:
            timers = max(due, state.arrived_ms + cfg.zone_grace_s * 1000)
            wake = timers if wake is None else min(wake, timers)
    # An online device wakes for `offline_s` first, unless `evict_after_s` is the shorter:
    # the common case needs no loan lookup here.
    if state.offline or cfg.evict_after_s < cfg.offline_s:
        evict = evict_at(state, ctx)
        if evict is not None:
            wake = evict if wake is None else min(wake, evict)
    return wake


def evict_at(state: DeviceState, ctx: Context) -> int | None:
    """When, on the runtime clock, a device on no active loan is forgotten; None: never.

    A device is forgotten after `evict_after_s` without a reading; the runtime drops its
    state (a later reading starts afresh, as a device never seen). Devices of active loans
    are kept: their silence is what `device.offline` reports.
    """
    if state.arrived_ms < 0 or _watched(state, ctx):
        return None
    return state.arrived_ms + ctx.config.evict_after_s * 1000


def _watched(s: DeviceState, ctx: Context) -> bool:
    """Whether the device is a tracker of an active loan (offline and online are raised)."""
    loan = ctx.loan_for(s.device_id)
    return loan is not None and loan.active


def _zone_due(s: DeviceState, ctx: Context) -> int | None:
    """When zone grace runs out: outside all zones, not yet alerted, loan still active."""
    if s.zone_out_ms is None or s.zone_alerted:
        return None
    loan = ctx.loan_for(s.device_id)
    if loan is None or not loan.active:
        return None
    return s.zone_out_ms + ctx.config.zone_grace_s * 1000


def next_due(s: DeviceState, ctx: Context) -> int | None:
    """When, in the device's event time, its next zone-grace or dwell timer falls due."""
    dues = [d.due_ms for d in s.dwell if not d.alerted]
    zone_due = _zone_due(s, ctx)
    if zone_due is not None:
        dues.append(zone_due)
    return min(dues) if dues else None


def _count_seq(s: DeviceState, seq: int) -> int:
    """Record a fix's `seq`; return how many readings the gap since the last one skipped."""
    missing = seq - s.seq - 1 if s.seq is not None and seq > s.seq + 1 else 0
    s.seq = seq
    return missing


def _fire_timers(
    s: DeviceState, upto_ms: int, ctx: Context, now_ms: int, alerts: list[Alert]
) -> None:
    """Raise the zone-grace and dwell timers due at or before `upto_ms`, in due order."""
    if not s.dwell and (s.zone_out_ms is None or s.zone_alerted):
        return  # nothing pending: the common case
    due: list[tuple[int, str, DwellTimer | None]] = [
        (d.due_ms, d.fence_id, d) for d in s.dwell if not d.alerted and d.due_ms <= upto_ms
    ]
    zone_due = _zone_due(s, ctx)
    if zone_due is not None and zone_due <= upto_ms:
        due.append((zone_due, "", None))
    if not due:
        return
    due.sort(key=lambda t: (t[0], t[1]))
    dwell = list(s.dwell)
    for ts, _, timer in due:
        if timer is None:
            alerts.append(_zone_left_alert(s, ts, ctx, now_ms))
            s.zone_alerted = True
        else:
            alerts.append(_dwell_alert(s, timer, ctx, now_ms))
            alerted = DwellTimer(timer.fence_id, timer.since_ms, timer.due_ms, alerted=True)
            dwell[dwell.index(timer)] = alerted
    s.dwell = tuple(dwell)


def _zone_left_alert(s: DeviceState, due_ms: int, ctx: Context, now_ms: int) -> Alert:
    loan = ctx.loan_for(s.device_id)
    details: dict[str, Detail] = {
        "zone_ids": list(loan.zone_ids) if loan else [],
        "outside_since_ms": s.zone_out_ms,
        "grace_s": ctx.config.zone_grace_s,
    }
    return make_alert(
        AlertType.ZONE_LEFT, s, ctx, due_ms, now_ms, fence_id=s.last_zone_id, details=details
    )


def _dwell_alert(s: DeviceState, timer: DwellTimer, ctx: Context, now_ms: int) -> Alert:
    fence = ctx.fences.get(timer.fence_id)
    details: dict[str, Detail] = {
        "category": fence.category if fence else None,
        "name": fence.name if fence else None,
        "inside_since_ms": timer.since_ms,
        "dwell_s": (timer.due_ms - timer.since_ms) // 1000,
    }
    return make_alert(
        AlertType.RISK_SITE_DWELL,
        s,
        ctx,
        timer.due_ms,
        now_ms,
        fence_id=timer.fence_id,
        details=details,
    )


def implied_kmh(a: Position, fix: GpsFix) -> float:
    """The speed a fix implies from an earlier position (inf if it is not later)."""
    dt_s = (fix.ts_ms - a.ts_ms) / 1000
    dist_m = haversine_m(a.lat, a.lon, fix.lat, fix.lon)
    return math.inf if dt_s <= 0 else dist_m / dt_s * 3.6


def _believe(s: DeviceState, fix: GpsFix, ctx: Context, now_ms: int, alerts: list[Alert]) -> bool:
    """Whether to accept a fix, judged against the last accepted one.

    A fix implying more than `max_speed_kmh` raises `gps.impossible_travel` (once per
    episode) and is ignored. After `reanchor_fixes` consecutive impossible fixes that agree
    with each other the device is believed again (the earlier anchor was the wrong one).
    """
    cfg = ctx.config
    if s.fix is None:
        return True
    speed = implied_kmh(s.fix, fix)
    if speed <= cfg.max_speed_kmh:
        s.spoof = ()
        return True
    pos = Position(fix.ts_ms, fix.lat, fix.lon)
    if not s.spoof:
        details: dict[str, Detail] = {
            "implied_speed_kmh": round(speed, 1),
            "from_lat": s.fix.lat,
            "from_lon": s.fix.lon,
            "from_ts_ms": s.fix.ts_ms,
        }
        alerts.append(
            make_alert(
                AlertType.IMPOSSIBLE_TRAVEL,
                s,
                ctx,
                fix.ts_ms,
                now_ms,
                lat=fix.lat,
                lon=fix.lon,
                details=details,
            )
        )
        s.spoof = (pos,)
        return False
    if implied_kmh(s.spoof[-1], fix) > cfg.max_speed_kmh:
        s.spoof = (pos,)  # jumping around: still the same episode, start agreeing afresh
        return False
    s.spoof = (*s.spoof, pos)
    if len(s.spoof) >= cfg.reanchor_fixes:
        s.spoof = ()
        return True
    return False


def _on_fix(
    s: DeviceState,
    fix: GpsFix,
    hits: tuple[FenceHit, ...],
    ctx: Context,
    now_ms: int,
    alerts: list[Alert],
) -> Position | None:
    if not _believe(s, fix, ctx, now_ms, alerts):
        return None
    # Timers that fell due before this fix fire first, then the fix applies, then the
    # timers it started with no delay (zero dwell, zero grace).
    s.event_ms = max(s.event_ms, fix.ts_ms)
    # (the `if`s in front of calls skip a function call in the common case: this runs per fix)
    if s.dwell or s.zone_out_ms is not None:
        _fire_timers(s, fix.ts_ms, ctx, now_ms, alerts)
    pos = Position(fix.ts_ms, fix.lat, fix.lon)
    if s.ignition is False:
        _tow_by_fix(s, fix, ctx, now_ms, alerts)
    if hits or s.inside:
        _update_fences(s, fix, hits, ctx, now_ms, alerts)
    s.fix = pos
    _update_zone(s, fix, ctx, now_ms, alerts)
    if s.dwell or s.zone_out_ms is not None:
        _fire_timers(s, fix.ts_ms, ctx, now_ms, alerts)
    if fix.ignition is not None or s.ignition is False:
        _update_ignition(s, fix.ignition, at_fix=True)
    return pos


def _update_fences(
    s: DeviceState,
    fix: GpsFix,
    hits: tuple[FenceHit, ...],
    ctx: Context,
    now_ms: int,
    alerts: list[Alert],
) -> None:
    """Apply the fix's fence hits with hysteresis; raise enter/exit; start dwell timers."""
    if not hits and not s.inside:
        return  # the common case: nowhere near any fence, before or now
    fences = ctx.fences
    if s.fix is None:  # first fix: exact containment, no enter/exit
        s.inside = frozenset(h.fence_id for h in hits if h.inside and h.fence_id in fences)
        entered = sorted(s.inside)
    else:
        inside = inside_after(s.inside, hits, fences)
        if inside == s.inside:
            return  # no crossing: the common case for a car near or in its fences
        # fences in `s.inside` without a hit are far away now: exited (or deleted: forgotten)
        entered = sorted(inside - s.inside)
        exited = [f for f in sorted(s.inside - inside) if f in fences]
        crossings = [(AlertType.GEOFENCE_EXIT, f) for f in exited]
        crossings += [(AlertType.GEOFENCE_ENTER, f) for f in entered]
        alerts.extend(
            make_alert(
                type_,
                s,
                ctx,
                fix.ts_ms,
                now_ms,
                fence_id=fence_id,
                lat=fix.lat,
                lon=fix.lon,
                details=_fence_details(fence_id, ctx),
            )
            for type_, fence_id in crossings
        )
        s.inside = frozenset(inside)
    dwell = [d for d in s.dwell if d.fence_id in s.inside]
    for fence in (fences[f] for f in entered):
        if fence.kind is FenceKind.RISK_SITE:
            dwell_ms = ctx.config.dwell_s(fence.category, fence.dwell_s) * 1000
            dwell.append(DwellTimer(fence.fence_id, fix.ts_ms, fix.ts_ms + dwell_ms))
    s.dwell = tuple(dwell)


def inside_after(
    inside: frozenset[str], hits: tuple[FenceHit, ...], fences: Mapping[str, Fence]
) -> set[str]:
    """The fences a car (not on its first fix) is inside of after a fix with these hits.

    Hysteresis: a hit near a boundary keeps the fence's state; a fence without a hit is
    far away (or deleted, then forgotten).
    """
    return {
        h.fence_id
        for h in hits
        if (h.fence_id in inside if h.near else h.inside) and h.fence_id in fences
    }


def _fence_details(fence_id: str, ctx: Context) -> dict[str, Detail]:
    fence = ctx.fences[fence_id]
    return {"name": fence.name, "kind": fence.kind.value, "category": fence.category}


def zone_now(s: DeviceState, ctx: Context) -> tuple[bool, str | None]:
    """Where the car stands for its loan's zones, from `inside`: (outside all of the active
    loan's known zones, the first of them it is in). (False, None): nothing to judge."""
    loan = ctx.loan_for(s.device_id)
    if loan is None or not loan.active:
        return False, None
    # `inside` holds known fences only (fresh from `_update_fences`)
    zone_id = next((z for z in loan.zone_ids if z in s.inside), None)
    outside = zone_id is None and any(z in ctx.fences for z in loan.zone_ids)
    return outside, zone_id


def _update_zone(
    s: DeviceState, fix: GpsFix, ctx: Context, now_ms: int, alerts: list[Alert]
) -> None:
    """Start or end the zone-grace timer of an active loan's car."""
    outside, zone_id = zone_now(s, ctx)
    if outside:
        if s.zone_out_ms is None:
            s.zone_out_ms = fix.ts_ms  # outside all its zones: grace starts
        return
    if zone_id is not None:
        if s.zone_alerted:
            alerts.append(
                make_alert(
                    AlertType.ZONE_RETURNED,
                    s,
                    ctx,
                    fix.ts_ms,
                    now_ms,
                    fence_id=zone_id,
                    details={"outside_since_ms": s.zone_out_ms},
                )
            )
        s.last_zone_id = zone_id
    # back in a zone, or nothing to judge (no loan, closed, or none of its zones is known)
    if s.zone_out_ms is not None or s.zone_alerted:
        s.zone_out_ms, s.zone_alerted = None, False


def _update_ignition(s: DeviceState, ignition: bool | None, at_fix: bool) -> None:
    """Track parking: ignition off parks the car; ignition on ends it.

    The parking spot is the fix that reported ignition off; when a vibration or status
    reading reported it, the last fix may be a stretch of driving old, so the spot is taken
    from the next fix instead.
    """
    if ignition is None or ignition == s.ignition:
        if s.ignition is False and s.parked is None and at_fix:
            s.parked = s.fix  # the first fix since the engine went off
        return
    s.ignition = ignition
    s.parked = s.fix if not ignition and at_fix else None
    s.tow_alerted = False


def _tow_alert(
    s: DeviceState,
    ts_ms: int,
    ctx: Context,
    now_ms: int,
    alerts: list[Alert],
    reason: str,
    value: float,
    at: GpsFix | None = None,
) -> None:
    parked = s.parked  # None: parked by a non-gps reading, no fix since
    details: dict[str, Detail] = {
        "reason": reason,
        "value": round(value, 2),
        "parked_lat": parked.lat if parked else None,
        "parked_lon": parked.lon if parked else None,
        "parked_since_ms": parked.ts_ms if parked else None,
    }
    lat, lon = (at.lat, at.lon) if at is not None else (None, None)
    alerts.append(
        make_alert(
            AlertType.TOW_SUSPECTED, s, ctx, ts_ms, now_ms, lat=lat, lon=lon, details=details
        )
    )
    s.tow_alerted = True


def _tow_by_fix(
    s: DeviceState, fix: GpsFix, ctx: Context, now_ms: int, alerts: list[Alert]
) -> None:
    if s.ignition is not False or s.parked is None or s.tow_alerted or fix.ignition:
        return  # not parked, or this fix says the engine runs: the owner is driving
    cfg = ctx.config
    moved_m = haversine_m(s.parked.lat, s.parked.lon, fix.lat, fix.lon)
    if moved_m > cfg.tow_distance_m:
        _tow_alert(s, fix.ts_ms, ctx, now_ms, alerts, "moved_m", moved_m, fix)
    elif fix.speed_kmh is not None and fix.speed_kmh > cfg.tow_speed_kmh:
        _tow_alert(s, fix.ts_ms, ctx, now_ms, alerts, "speed_kmh", fix.speed_kmh, fix)


def _on_vibration(
    s: DeviceState, vib: Vibration, ctx: Context, now_ms: int, alerts: list[Alert]
) -> None:
    if vib.g >= ctx.config.shock_g:
        details: dict[str, Detail] = {"g": vib.g}
        if vib.duration_ms is not None:
            details["duration_ms"] = vib.duration_ms
        alerts.append(make_alert(AlertType.SHOCK, s, ctx, vib.ts_ms, now_ms, details=details))
        if s.ignition is False and not s.tow_alerted:
            _tow_alert(s, vib.ts_ms, ctx, now_ms, alerts, "shock_g", vib.g)
    _update_ignition(s, vib.ignition, at_fix=False)


def _on_status(
    s: DeviceState, st: StatusReport, ctx: Context, now_ms: int, alerts: list[Alert]
) -> None:
    if st.ext_power is not None:
        if st.ext_power is False and s.ext_power is not False:
            details: dict[str, Detail] = {}
            if st.battery_v is not None:
                details["battery_v"] = st.battery_v
            alerts.append(
                make_alert(AlertType.POWER_DISCONNECTED, s, ctx, st.ts_ms, now_ms, details=details)
            )
        s.ext_power = st.ext_power
    if st.tamper is not None:
        if st.tamper and s.tamper is not True:
            alerts.append(make_alert(AlertType.TAMPER, s, ctx, st.ts_ms, now_ms))
        s.tamper = st.tamper
    loan = ctx.loan_for(s.device_id)
    if st.vin is None or loan is None or not loan.active:
        return
    if st.vin == loan.vin:
        s.bad_vin = None
    elif st.vin != s.bad_vin:
        details = {"reason": "tracker_vin_mismatch", "reported_vin": st.vin, "loan_vin": loan.vin}
        alerts.append(
            make_alert(
                AlertType.VIN_CONFLICT, s, ctx, st.ts_ms, now_ms, extra=st.vin, details=details
            )
        )
        s.bad_vin = st.vin
