"""Quiet fixes: the gps readings after which nothing but the car's position and clocks change.

Most fixes change nothing that matters: the car is where it was, in the same fences, under
the speed limit, no timer is due and no loan stage runs. Folding such a fix with `step`
raises no alert and changes only the device's last fix, its stream and event times, its
recent-readings window, its `seq` and its arrival time; `settle_quiet` applies a run of
them in one go. The batch step (`engine.runtime.quiet_plan`) decides which fixes of a batch
are quiet with numpy, by these rules, and hands every other reading to `step`.

This module only ever answers "nothing happens here". What happens otherwise is `step`'s
alone, and the rules it tests are `step`'s own pieces (`inside_after`, `zone_now`,
`next_due`, `implied_kmh`). When in doubt a fix is not quiet. The property tests
(tests/test_fast_path_properties.py) check both ways: a fix `is_quiet_fix` calls quiet
folds to `settle_quiet`'s state with no alert, and a batch step equals the fold.

A fix is quiet for a state with `QuietTerms` q when all of these hold:
- it is stamped after `q.bound_ms` (neither a duplicate nor late, no clock rule applies)
  and before `q.due_ms` (no zone-grace or dwell timer falls due at or before it);
- it reports no ignition, or the one the state has (parking does not start or end);
- it implies at most `max_speed_kmh` from the last fix `q.fix`;
- when the car is parked and no tow was alerted (`q.parked`), it is within
  `tow_distance_m` of the parking spot and reports no speed over `tow_speed_kmh`;
- its fence hits leave `inside` as it is (`inside_after`, with hysteresis).
The terms exist only for a device that has a fix, is online, in no clock-skew or spoofing
episode, on no loan with more than one tracker (the loan stage takes every fix), whose
zone state a fix in the same fences leaves as it is, and that has a parking spot if parked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from devices.readings import GpsFix
from engine.core.context import Context
from engine.core.device import implied_kmh, inside_after, next_due, zone_now
from engine.core.state import DeviceState, Position
from geofence.geo import haversine_m
from geofence.index import FenceHit

NEVER_MS = 2**62
"""A `due_ms` no event time reaches: no timer pending."""


class QuietTerms(NamedTuple):
    """What a device's state asks of a fix for it to be quiet (times in epoch ms).

    A named tuple: the batch step reads its fields once per reading.
    """

    fix: Position  # the last accepted fix: speeds are implied from it
    bound_ms: int  # a quiet fix is stamped after this
    due_ms: int  # and before this: the next timer (`NEVER_MS`: none)
    ignition: bool | None  # it reports this ignition, or none
    parked: Position | None  # parked, tow not alerted: it stays within the tow limits of here


def quiet_terms(s: DeviceState, ctx: Context) -> QuietTerms | None:
    """The terms on which a fix is quiet for this state, or None: no fix can be."""
    fix = s.fix
    if fix is None or s.offline or s.skew or s.spoof:
        return None
    loan = ctx.loan_for(s.device_id)
    if loan is not None and len(loan.device_ids) > 1:
        return None  # `step_loan` takes every accepted fix of a loan with several trackers
    if not _zone_settled(s, ctx):
        return None
    parked = None
    if s.ignition is False:
        if s.parked is None:
            return None  # the next fix becomes the parking spot
        if not s.tow_alerted:
            parked = s.parked
    due = next_due(s, ctx)
    bound = max(s.last_ts[0], s.event_ms, s.ahead_ms, fix.ts_ms)
    return QuietTerms(fix, bound, NEVER_MS if due is None else due, s.ignition, parked)


def _zone_settled(s: DeviceState, ctx: Context) -> bool:
    """Whether a fix that leaves `inside` as it is leaves the zone state as it is too."""
    outside, zone_id = zone_now(s, ctx)
    if outside:
        return s.zone_out_ms is not None  # else grace starts
    if zone_id is not None and (s.zone_alerted or s.last_zone_id != zone_id):
        return False  # zone.returned, or a new zone to remember
    return s.zone_out_ms is None and not s.zone_alerted


def within_tow_limits(parked: Position, fix: GpsFix, ctx: Context) -> bool:
    """Whether a fix of a parked car stays within the tow rule's distance and speed."""
    cfg = ctx.config
    if haversine_m(parked.lat, parked.lon, fix.lat, fix.lon) > cfg.tow_distance_m:
        return False
    return fix.speed_kmh is None or fix.speed_kmh <= cfg.tow_speed_kmh


def is_quiet_fix(s: DeviceState, fix: GpsFix, hits: tuple[FenceHit, ...], ctx: Context) -> bool:
    """The scalar reference of the batch step: whether folding `fix` (with its fence hits)
    into `s` raises nothing and changes only what `settle_quiet` changes."""
    q = quiet_terms(s, ctx)
    if q is None or not q.bound_ms < fix.ts_ms < q.due_ms:
        return False
    if fix.ignition is not None and fix.ignition is not q.ignition:
        return False
    if implied_kmh(q.fix, fix) > ctx.config.max_speed_kmh:
        return False
    if q.parked is not None and not within_tow_limits(q.parked, fix, ctx):
        return False
    if not hits and not s.inside:
        return True
    return inside_after(s.inside, hits, ctx.fences) == s.inside


def settle_quiet(
    s: DeviceState,
    ts_ms: Sequence[int],
    last: Position,
    seqs: Sequence[int | None],
    arrived_ms: int,
    ctx: Context,
) -> tuple[DeviceState, int]:
    """Fold a run of quiet fixes at once: their stamps `ts_ms` (ascending) and `seqs` in
    order, the last one's position `last`, the latest runtime clock among them. Returns
    the new state and how many readings the `seq` gaps skipped."""
    t = s.clone()
    t.fix = last
    t.last_ts = (last.ts_ms, s.last_ts[1], s.last_ts[2])
    t.event_ms = last.ts_ms
    if arrived_ms > s.arrived_ms:
        t.arrived_ms = arrived_ms
    keep = ctx.config.recent_readings_kept
    if len(ts_ms) == 1:  # the common case: one quiet fix of a device in a batch
        recent = (*s.recent, ts_ms[0] * 3)  # key: ts * 3 + the gps stream's index, 0
    else:
        recent = s.recent + tuple([ts * 3 for ts in ts_ms])
    t.recent = recent[-keep:] if keep > 1 else recent[-1:]
    missing = 0
    seq = s.seq
    for new in seqs:
        if new is not None:
            if seq is not None and new > seq + 1:
                missing += new - seq - 1
            seq = new
    t.seq = seq
    return t, missing
