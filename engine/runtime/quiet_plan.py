"""Which readings of a batch are quiet, decided with numpy (the batch step's plan).

For each device, in arrival order, the plan works out what a fix would do if every earlier
reading of the device in the batch were an accepted fix in order: the speed it implies
from the fix before it, and whether its fence hits change the set of fences the car is
inside of (hysteresis included, by the same rule as `inside_after`). A reading is a
*candidate* when it is a fix, not the device's first, stamped after the fix before it,
under the speed limit and in the same fences. The pipeline then takes a candidate as
quiet only if the device's `QuietTerms` at that point allow it too (stamp window, timer,
ignition, tow limits); every other reading goes to `step`. After a reading went to `step`
the plan checks (`terms_after`) that the device's state is still the one the plan
assumed for its later readings; when it is not, they all go to `step`.

The fence rule, per (device, fence) and fix in order: a hit inside and not near the
boundary puts the car inside; no hit puts it outside; a hit near the boundary keeps what
was before (a device's first fix ever: inside if the hit is inside). A fix changes the
fences when any of them changes that way. Computed on a dense (fence, fix) grid per device
and forward-filled, so a batch with one device over very many fences is planned as all
slow (`MAX_CELLS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from devices.columns import ReadingColumns
from devices.readings import GpsFix, Reading
from engine.core.context import Context
from engine.core.quiet import QuietTerms, quiet_terms, within_tow_limits
from engine.core.state import DeviceState, Position
from geofence.geo import haversine_m_np
from geofence.index import FenceHit, FenceIndex, HitGroups

MAX_CELLS = 4_000_000
"""Above this many (fence, fix) cells a batch is planned as all slow (memory stays bounded)."""

# Numpy's trigonometry may differ from `math`'s in the last bits: a fix this close to a
# limit (relative, and metres absolute) is left to `step`.
_REL = 1e-9
_ABS_M = 1e-6
_IN, _KEEP, _OUT = 2, 1, 0


@dataclass(slots=True, eq=False)
class QuietPlan:
    """The plan of one batch; lists are per reading (index in the batch)."""

    candidate: list[bool]
    point: list[int]  # the reading's fix number in `groups`, -1 if not a fix
    anchor: list[int]  # the device's last fix in the batch at or before it, -1: none
    more: list[bool]  # whether the device has a later reading in the batch
    tow_ok: list[bool]  # within the tow limits of the device's parking spot at batch start
    terms: dict[str, QuietTerms | None]  # per device, as the batch starts
    start_fix: dict[str, Position | None]
    start_parked: dict[str, Position | None]
    groups: HitGroups
    ts_ms: list[int]
    lat: list[float]
    lon: list[float]
    ignition: list[bool | None]
    device_ids: list[str]
    columns: ReadingColumns
    broken: set[str]  # devices whose fences the plan can no longer predict: all to `step`
    # devices whose last reading went to `step`: its index and the fix it took, for
    # `terms_after` when a later candidate of theirs needs their terms
    later: dict[str, tuple[int, Position | None]]

    def hits(self, i: int) -> tuple[FenceHit, ...]:
        """The fence hits of reading `i` (a fix), sorted by fence id; () for other streams."""
        p = self.point[i]
        return self.groups.of(p) if p >= 0 else ()

    def tow_within(self, i: int, q: QuietTerms, readings: Sequence[Reading], ctx: Context) -> bool:
        """Whether fix `i` (of `readings`) stays within the tow limits of `q`'s parking spot."""
        if q.parked is None:
            return True
        if q.parked == self.start_parked.get(self.device_ids[i]):
            return self.tow_ok[i]
        fix = readings[i]
        return isinstance(fix, GpsFix) and within_tow_limits(q.parked, fix, ctx)

    def terms_after(
        self, i: int, state: DeviceState | None, moved: Position | None, ctx: Context
    ) -> QuietTerms | None:
        """The device's terms after reading `i` went to `step`, or None when its state is not
        the one the plan assumed for its later readings (they go to `step` then).

        A fix not taken (late, duplicate, impossible, held back) left the car's fences as
        they were, where the plan assumed the fix: its later readings all go to `step`.
        """
        device_id = self.device_ids[i]
        if device_id in self.broken:
            return None
        if state is None or (self.point[i] >= 0 and moved is None):
            self.broken.add(device_id)
            return None
        q = quiet_terms(state, ctx)
        if q is None:
            return None
        a = self.anchor[i]
        expect = (
            Position(self.ts_ms[a], self.lat[a], self.lon[a])
            if a >= 0
            else self.start_fix.get(state.device_id)
        )
        return q if q.fix == expect else None


class Start(NamedTuple):
    """What the plan takes from a device's state: kept per device between batches (the
    pipeline's `starts`) and used again while the state is the same object."""

    state: DeviceState
    terms: QuietTerms | None
    inside: tuple[int, ...] | None  # positions in the index of its fences; None: one is gone


def inside_positions(state: DeviceState, index: FenceIndex) -> tuple[int, ...] | None:
    """The positions in the index of the fences the car is inside of; None if one is gone."""
    if not state.inside:
        return ()
    positions = index.positions
    inside = tuple(positions.get(f, -1) for f in state.inside)
    return None if -1 in inside else inside


def start_of(state: DeviceState, ctx: Context, index: FenceIndex) -> Start:
    """A device's `Start`."""
    return Start(state, quiet_terms(state, ctx), inside_positions(state, index))


@dataclass(slots=True)
class _Start:
    """What the plan needs of the devices' states as the batch starts, per device code."""

    has_fix: NDArray[np.bool_]
    fix_ts: NDArray[np.int64]
    fix_lat: NDArray[np.float64]
    fix_lon: NDArray[np.float64]
    parked_lat: NDArray[np.float64]
    parked_lon: NDArray[np.float64]
    unknown: NDArray[np.bool_]  # inside a fence the index no longer has
    inside_dev: list[int]
    inside_fence: list[int]


def plan_quiet(
    cols: ReadingColumns,
    devices: Mapping[str, DeviceState],
    ctx: Context,
    index: FenceIndex,
    starts: MutableMapping[str, Start],
) -> QuietPlan:
    """Plan a batch: look its fixes up in the index and find the quiet candidates.

    `starts` holds the devices' `Start`s of earlier batches (for this `ctx` and `index`);
    the plan adds those it computes.
    """
    n = len(cols)
    codes: dict[str, int] = {}
    dev = np.fromiter((codes.setdefault(d, len(codes)) for d in cols.device_ids), np.intp, n)
    names = list(codes)
    terms: dict[str, QuietTerms | None] = {}
    start_fix: dict[str, Position | None] = {}
    start_parked: dict[str, Position | None] = {}
    start = _starts(names, devices, ctx, index, starts, terms, start_fix, start_parked)

    gidx = np.flatnonzero(cols.gps)
    point = np.full(n, -1, dtype=np.intp)
    point[gidx] = np.arange(len(gidx))
    lat, lon, ts = cols.lat, cols.lon, cols.ts_ms
    groups = index.hit_groups(lat[gidx], lon[gidx], ctx.config.hysteresis_m)

    # each fix's previous fix of the same device in the batch (arrival order)
    dg = dev[gidx]
    order = np.argsort(dg, kind="stable")
    same = dg[order[1:]] == dg[order[:-1]]
    prev = np.full(len(gidx), -1, dtype=np.intp)
    prev[order[1:][same]] = order[:-1][same]
    first = prev < 0
    rank = np.empty(len(gidx), dtype=np.intp)
    group_start = np.searchsorted(dg[order], np.arange(len(names)))
    rank[order] = np.arange(len(gidx)) - group_start[dg[order]]
    first_fix = first & ~start.has_fix[dg]

    prev_i = gidx[np.maximum(prev, 0)]
    prev_ts = np.where(first, start.fix_ts[dg], ts[prev_i])
    prev_lat = np.where(first, start.fix_lat[dg], lat[prev_i])
    prev_lon = np.where(first, start.fix_lon[dg], lon[prev_i])
    g_ts, g_lat, g_lon = ts[gidx], lat[gidx], lon[gidx]
    dt_ms = g_ts - prev_ts
    later = ~first_fix & (dt_ms > 0)
    dt_s = np.where(later, dt_ms, 1000) / 1000
    dist_m = haversine_m_np(prev_lat, prev_lon, g_lat, g_lon)
    cfg = ctx.config
    speed_ok = dist_m + _ABS_M <= cfg.max_speed_kmh / 3.6 * dt_s * (1 - _REL)
    changed = _fence_changes(groups, dg, rank, order, group_start, first_fix, start, len(index))
    cand_g = later & speed_ok & ~changed & ~(first & start.unknown[dg])

    parked_d = np.flatnonzero(~np.isnan(start.parked_lat))
    tow_ok = np.zeros(n, dtype=np.bool_)
    if len(parked_d):
        at = np.isin(dg, parked_d)
        pts = gidx[at]
        moved_m = haversine_m_np(
            start.parked_lat[dg[at]], start.parked_lon[dg[at]], lat[pts], lon[pts]
        )
        speed = cols.speed_kmh[pts]
        tow_ok[pts] = (moved_m + _ABS_M <= cfg.tow_distance_m * (1 - _REL)) & ~(
            speed > cfg.tow_speed_kmh
        )

    candidate = np.zeros(n, dtype=np.bool_)
    candidate[gidx] = cand_g
    anchor, more = _anchors(dev, cols.gps)
    return QuietPlan(
        candidate=candidate.tolist(),
        point=point.tolist(),
        anchor=anchor.tolist(),
        more=more.tolist(),
        tow_ok=tow_ok.tolist(),
        terms=terms,
        start_fix=start_fix,
        start_parked=start_parked,
        groups=groups,
        ts_ms=cols.ts_list,
        lat=cols.lat_list,
        lon=cols.lon_list,
        ignition=cols.ignition,
        device_ids=cols.device_ids,
        columns=cols,
        broken=set(),
        later={},
    )


def _starts(
    names: list[str],
    devices: Mapping[str, DeviceState],
    ctx: Context,
    index: FenceIndex,
    starts: MutableMapping[str, Start],
    terms: dict[str, QuietTerms | None],
    start_fix: dict[str, Position | None],
    start_parked: dict[str, Position | None],
) -> _Start:
    """The batch's devices as it starts: their terms, last fix, parking spot and fences."""
    nan = math.nan
    no_fix = Position(-1, nan, nan)
    fixes: list[Position] = []
    has_fix: list[bool] = []
    parks: list[tuple[float, float]] = []
    unknown: list[bool] = []
    inside_dev: list[int] = []
    inside_fence: list[int] = []
    for c, name in enumerate(names):
        s = devices.get(name)
        if s is None:
            terms[name] = start_fix[name] = start_parked[name] = None
            fixes.append(no_fix)
            has_fix.append(False)
            parks.append((nan, nan))
            unknown.append(False)
            continue
        rec = starts.get(name)
        if rec is None or rec.state is not s:
            rec = starts[name] = start_of(s, ctx, index)
        q = terms[name] = rec.terms
        fix = start_fix[name] = s.fix
        fixes.append(no_fix if fix is None else fix)
        has_fix.append(fix is not None)
        parked = start_parked[name] = None if q is None else q.parked
        parks.append((nan, nan) if parked is None else (parked.lat, parked.lon))
        if rec.inside is None:
            unknown.append(True)
        else:
            unknown.append(False)
            if rec.inside:
                inside_dev += [c] * len(rec.inside)
                inside_fence += rec.inside
    fix_ts = np.array([f.ts_ms for f in fixes], dtype=np.int64)
    fix_pos = np.array([(f.lat, f.lon) for f in fixes], dtype=np.float64).reshape(-1, 2)
    park_pos = np.array(parks, dtype=np.float64).reshape(-1, 2)
    return _Start(
        np.array(has_fix, dtype=np.bool_),
        fix_ts,
        fix_pos[:, 0],
        fix_pos[:, 1],
        park_pos[:, 0],
        park_pos[:, 1],
        np.array(unknown, dtype=np.bool_),
        inside_dev,
        inside_fence,
    )


def _fence_changes(
    groups: HitGroups,
    dg: NDArray[np.intp],
    rank: NDArray[np.intp],
    order: NDArray[np.intp],
    group_start: NDArray[np.intp],
    first_fix: NDArray[np.bool_],
    start: _Start,
    n_fences: int,
) -> NDArray[np.bool_]:
    """Per fix, whether it changes the fences its car is inside of (see the module doc).

    Cells are laid out per (device, fence) column: a first cell for the state as the batch
    starts, then one per fix of the device, so a forward fill never crosses columns.
    """
    n_points = len(dg)
    changed = np.zeros(n_points, dtype=np.bool_)
    found = groups.found
    if n_fences == 0:
        return changed
    pair_dev = dg[found.point_idx]
    pair_keys = pair_dev * n_fences + found.fence_idx
    s0_keys = np.asarray(start.inside_dev, dtype=np.intp) * n_fences + np.asarray(
        start.inside_fence, dtype=np.intp
    )
    columns = np.unique(np.concatenate([pair_keys, s0_keys]))
    if not len(columns):
        return changed
    col_dev = columns // n_fences
    fixes_per_dev = np.bincount(dg, minlength=len(group_start))
    length = fixes_per_dev[col_dev] + 1
    total = int(length.sum())
    if total > MAX_CELLS:
        changed[:] = True
        return changed
    col_start = np.zeros(len(columns), dtype=np.intp)
    np.cumsum(length[:-1], out=col_start[1:])
    status = np.zeros(total, dtype=np.int8)  # no hit: outside
    status[col_start] = np.where(np.isin(columns, s0_keys), _IN, _OUT)
    cell = col_start[np.searchsorted(columns, pair_keys)] + rank[found.point_idx] + 1
    on_first = first_fix[found.point_idx]
    firm = found.inside & ~found.near
    status[cell] = np.where(on_first, np.where(found.inside, _IN, _OUT), np.where(firm, _IN, _KEEP))
    valid = status != _KEEP
    cells = np.arange(total, dtype=np.intp)
    member = status[np.maximum.accumulate(np.where(valid, cells, 0))]
    change = valid.copy()
    change[col_start] = False
    change[1:] &= status[1:] != member[:-1]
    where = np.flatnonzero(change)
    if len(where):
        col = np.searchsorted(col_start, where, side="right") - 1
        row = where - col_start[col]
        changed[order[group_start[col_dev[col]] + row - 1]] = True
    return changed


def _anchors(
    dev: NDArray[np.intp], gps: NDArray[np.bool_]
) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """Per reading: its device's last fix at or before it (-1: none in the batch), and
    whether the device has a later reading in the batch."""
    n = len(dev)
    order = np.argsort(dev, kind="stable")
    dev_sorted = dev[order]
    base = dev_sorted.astype(np.int64) * (n + 1)
    own = np.where(gps[order], order, -1) + 1
    last = np.maximum.accumulate(base + own) - base - 1
    anchor = np.empty(n, dtype=np.intp)
    anchor[order] = last
    more_sorted = np.zeros(n, dtype=np.bool_)
    more_sorted[:-1] = dev_sorted[1:] == dev_sorted[:-1]
    more = np.empty(n, dtype=np.bool_)
    more[order] = more_sorted
    return anchor, more
