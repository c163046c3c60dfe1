"""The device's own clock against the runtime clock: stamps ahead, clocks gone back.

Helpers of the per-device fold (`engine.core.device.step`), pure like it: they edit the
clone of the state that `step` works on.

Where the two clocks disagree:
- Ahead of arrival. A reading may be stamped up to the decoder's 5 minutes after it
  arrives, and is taken as stamped. A later reading stamped more than `max_clock_ahead_s`
  after the device's previous arrival cannot be older than what had arrived by then; if
  the device's last event time is later than it, those stamps ran ahead of the clock: the
  device's timeline is capped at that arrival plus `max_clock_ahead_s` and the reading is
  taken as new, not late. So one fix stamped minutes ahead does not make the device's
  next ordinary readings late, and a tracker whose clock runs steadily ahead (never
  contradicted) keeps its own stamps. Duplicates are still judged by the ts they carry.
- Far behind. A reading more than `max_clock_skew_s` behind the device's last event time
  that arrives fresh (within `max_clock_skew_s` of the device's previous reading on the
  runtime clock) is held back and counted as `clock_skew`, not as late. When
  `clock_skew_readings` of them come in a row consistently (each newer than the one before
  and within `max_clock_skew_s` of it), the device re-anchors on the new clock: its whole
  timeline (last event time, last fix, parking, zone-grace and dwell timers) moves back by
  the skew, estimated at the episode's first reading as the old clock run on by the
  runtime clock since the device's previous reading, minus that reading's ts. It raises
  `device.clock_skew` and the reading that completed the episode is then taken as any
  other, so pending timers keep running on the new clock. A reading on the old clock
  that is accepted in between ends the episode.
"""

from __future__ import annotations

from collections.abc import Callable

from alerts.model import Alert, AlertType, Detail
from engine.core.context import Context, make_alert
from engine.core.state import DeviceState, DwellTimer, Position


def cap_ahead(s: DeviceState, cap_ms: int) -> None:
    """Cap the device's timeline at `cap_ms`: the stamps after it ran ahead of the clock.

    The latest of them is kept in `ahead_ms`, for duplicates of those readings.
    """
    s.ahead_ms = max(s.ahead_ms, s.event_ms, *s.last_ts)
    retime(s, lambda t: min(t, cap_ms))


def reanchor(
    s: DeviceState, ts: int, ctx: Context, silence_ms: int, now_ms: int, alerts: list[Alert]
) -> bool:
    """Count a fresh reading far behind the device's clock; True when it re-anchors.

    It joins the episode in `s.skew` or starts one. `silence_ms` is the runtime clock
    since the device's previous reading: how long the old clock is taken to have run on
    when an episode starts.
    """
    cfg = ctx.config
    if s.skew and s.skew[-1] < ts <= s.skew[-1] + cfg.max_clock_skew_s * 1000:
        s.skew = (*s.skew, ts)
    else:  # a new episode
        s.skew = (ts,)
        s.skew_ms = s.event_ms + max(silence_ms, 0) - ts
    if len(s.skew) < cfg.clock_skew_readings:
        return False
    details: dict[str, Detail] = {
        "old_clock_ms": s.event_ms,
        "new_clock_ms": ts,
        "skew_s": round(s.skew_ms / 1000),
        "readings": len(s.skew),
    }
    back_ms = s.skew_ms
    retime(s, lambda t: t - back_ms)
    s.ahead_ms = -1
    s.skew, s.skew_ms = (), 0
    alerts.append(make_alert(AlertType.DEVICE_CLOCK_SKEW, s, ctx, ts, now_ms, details=details))
    return True


def retime(s: DeviceState, new_time: Callable[[int], int]) -> None:
    """Map every event time of the device through `new_time` (monotone): onto a new clock.

    A dwell timer keeps its length; no stream's last reading is left after the device's
    last event time. An episode of impossible fixes, judged on the old times, ends.
    """
    s.event_ms = new_time(s.event_ms)
    s.last_ts = (
        min(new_time(s.last_ts[0]), s.event_ms) if s.last_ts[0] >= 0 else -1,
        min(new_time(s.last_ts[1]), s.event_ms) if s.last_ts[1] >= 0 else -1,
        min(new_time(s.last_ts[2]), s.event_ms) if s.last_ts[2] >= 0 else -1,
    )
    if s.fix is not None:
        s.fix = Position(new_time(s.fix.ts_ms), s.fix.lat, s.fix.lon)
    if s.parked is not None:
        s.parked = Position(new_time(s.parked.ts_ms), s.parked.lat, s.parked.lon)
    if s.zone_out_ms is not None:
        s.zone_out_ms = new_time(s.zone_out_ms)
    dwell = []
    for d in s.dwell:
        since_ms = new_time(d.since_ms)
        dwell.append(DwellTimer(d.fence_id, since_ms, d.due_ms + since_ms - d.since_ms, d.alerted))
    s.dwell = tuple(dwell)
    s.spoof = ()
