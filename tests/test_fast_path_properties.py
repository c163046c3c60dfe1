"""The batch step against the fold: identical alerts, ids, states, timers and counters.

Random streams (hypothesis, seed-driven like tests/test_core_properties.py) of a few cars
that mostly stay put or drift near fence boundaries (hysteresis), with junk: duplicates,
late and out-of-order readings, clocks gone back, impossible jumps, parked cars towed,
shocks, status reports, silences long enough for zone grace, dwell, offline and eviction
timers, loans and fences changed between batches. The same stream goes through a
pipeline folding reading by reading (`fast=False`) and one taking the batch step in random
batch sizes; everything either exposes must be equal. `is_quiet_fix`, the scalar rule the
batch step vectorizes, is checked against `step` on every fix of those streams.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from alerts.model import Alert
from devices.readings import GpsFix, Reading, StatusReport, Vibration
from engine.core.config import Config
from engine.core.device import step
from engine.core.quiet import is_quiet_fix, settle_quiet
from engine.core.state import Position
from engine.runtime.pipeline import Pipeline
from geofence.fence import Fence
from geofence.index import FenceIndex
from lending.model import Loan, LoanStatus
from tests.factories import HOME, OTHER_VIN, T0, VIN, circle, loan, offset, property_settings

PROPS = property_settings(120)
CONFIG = Config(
    zone_grace_s=60,
    offline_s=900,
    evict_after_s=1500,
    max_clock_skew_s=600,
    recent_readings_kept=4,
)
PAWN = offset(*HOME, 1200, 0)
POUND = offset(*HOME, -900, 700)
FENCES = [
    circle("home", HOME, 400),
    circle("work", offset(*HOME, 0, 1500), 300),
    circle("pawn", PAWN, 80, "risk_site", "pawnshop", dwell_s=120),
    circle("pound", POUND, 100, "risk_site", "impound"),
]
# Where the cars are: inside, on boundaries (within the 25 m hysteresis), outside, far.
PLACES = [
    HOME,
    offset(*HOME, 0, 400),  # home's boundary
    offset(*HOME, 0, 1500),
    offset(*HOME, 300, 1500),  # work's boundary
    PAWN,
    offset(*PAWN, 80, 0),  # pawn's boundary
    POUND,
    offset(*HOME, 3000, -2000),
]
DEVICES = ["a", "b", "c", "d", "e"]


def loans(variant: int) -> list[Loan]:
    """Single-tracker, two-tracker, closed and missing loans; `variant` changes them."""
    out = [
        loan("L-1", ["a"], ["home"]),
        loan("L-2", ["b", "c"], ["home", "work"], vin=OTHER_VIN),
    ]
    if variant % 2:
        out.append(loan("L-3", ["d"], ["work", "gone"], vin="LSVAB4182E2000003"))
    else:
        out.append(
            Loan("L-3", "LSVAB4182E2000003", ("d",), ("work",), LoanStatus.CLOSED),
        )
    return out


@dataclass
class Stream:
    """Readings, their runtime clocks, and the batch plan: sizes, and changes between."""

    readings: list[Reading] = field(default_factory=list)
    clocks: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    changes: dict[int, str] = field(default_factory=dict)  # batch number -> what changes


def _reading(
    rnd: random.Random, dev: str, t_ms: int, where: tuple[float, float], rare: float
) -> Reading:
    kind = rnd.random() * rare
    if kind < 0.8:
        return GpsFix(
            dev,
            t_ms,
            where[0],
            where[1],
            speed_kmh=rnd.choice([None, None, 0.0, 4.0, 12.0]),
            ignition=rnd.choice([None, None, None, True, False]) if kind < 0.8 * rare else None,
            seq=rnd.choice([None, t_ms // 1000 % 100_000]),
        )
    if kind < 0.9:
        return Vibration(dev, t_ms, rnd.choice([0.2, 0.9, 3.0]), ignition=rnd.choice([None, False]))
    return StatusReport(
        dev,
        t_ms,
        ext_power=rnd.choice([None, True, False]),
        tamper=rnd.choice([None, None, True]),
        vin=rnd.choice([None, None, VIN, OTHER_VIN]),
    )


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    """A stream of a few cars, mostly quiet, with every kind of junk now and then."""
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(10, 160))
    live = draw(st.booleans())  # arrival clocks of their own, or a replay's watermark
    calm = draw(st.booleans())  # mostly quiet, junk rare
    rare = 0.1 if calm else 1.0
    out = Stream()
    t = {d: T0 + rnd.randrange(0, 60_000) for d in DEVICES}
    place = {d: rnd.randrange(len(PLACES)) for d in DEVICES}
    clock = T0
    for _ in range(n):
        dev = rnd.choice(DEVICES[: rnd.choice([1, 2, 5])])
        if calm and rnd.random() < 0.9:
            step_ms = rnd.choice([1000, 30_000])
        else:
            step_ms = rnd.choice([1, 1000, 5000, 30_000, 90_000, 700_000, 2_000_000])
        t[dev] += step_ms
        if rnd.random() < 0.15 * rare:  # the car goes somewhere else (or jumps far)
            place[dev] = rnd.randrange(len(PLACES))
        lat, lon = PLACES[place[dev]]
        drift = rnd.choice([0.0, 3.0, 20.0, 60.0] if not calm else [0.0, 3.0, 3.0, 20.0])
        where = offset(lat, lon, rnd.uniform(-drift, drift), rnd.uniform(-drift, drift))
        if rnd.random() < 0.02 * rare:
            where = offset(*where, 300_000, 0)  # an impossible jump
        ts = t[dev]
        junk = rnd.random() / rare
        if junk < 0.05 and out.readings:
            out.readings.append(rnd.choice(out.readings))  # a duplicate (or a late copy)
        else:
            if junk < 0.1:
                ts -= rnd.choice([1, 60_000, 1_000_000])  # late, out of order, clock back
            out.readings.append(_reading(rnd, dev, ts, where, rare))
        if live:
            clock += rnd.choice([0, 10, 1000, 30_000, 400_000])
        else:
            clock = max(clock, out.readings[-1].ts_ms)
        out.clocks.append(clock)
    left = n
    while left > 0:
        size = min(left, rnd.choice([1, 3, 8, 20, 64, 200]))
        out.sizes.append(size)
        left -= size
    for b in range(1, len(out.sizes)):
        if rnd.random() < 0.1:
            out.changes[b] = rnd.choice(["fences", "loans", "advance"])
    return out


def _pipeline(fast: bool, defer_loans: bool = False) -> Pipeline:
    p = Pipeline(FenceIndex.build(FENCES), CONFIG, defer_loans=defer_loans, fast=fast)
    p.fast_min = p.fast_any = 1  # every batch takes the batch step
    p.tap = []
    for ln in loans(0):
        p.put_loan(ln, T0, T0)
    return p


def _feed(p: Pipeline, s: Stream) -> tuple[list[Alert], list[Reading]]:
    alerts: list[Alert] = []
    accepted: list[Reading] = []
    start = 0
    for b, size in enumerate(s.sizes):
        change = s.changes.get(b)
        now = s.clocks[start - 1] if start else T0
        if change == "fences":
            fences: Sequence[Fence] = [*FENCES[:2], circle("pawn", PAWN, 95, "risk_site")]
            p.set_fences(FenceIndex.build(fences if b % 2 else FENCES[1:]))
        elif change == "loans":
            for ln in loans(b):
                alerts += p.put_loan(ln, now, now)
        elif change == "advance":
            alerts += p.advance(now + 1_000_000)
        end = start + size
        alerts += p.process(s.readings[start:end], s.clocks[start:end], accepted)
        start = end
    return alerts, accepted


def _same(fold: Pipeline, fast: Pipeline) -> None:
    assert fast.devices == fold.devices
    assert fast.loan_states == fold.loan_states
    assert fast.counters == fold.counters
    assert fast.tap == fold.tap
    assert fast.groups == fold.groups
    assert fast.dirty == fold.dirty
    assert fast.dirty_loans == fold.dirty_loans
    assert fast.evicted == fold.evicted
    assert fast._scheduled == fold._scheduled
    assert sorted(fast._heap) == sorted(fold._heap)


@PROPS
@given(streams())
def test_the_batch_step_equals_the_fold(s: Stream) -> None:
    fold, fast = _pipeline(fast=False), _pipeline(fast=True)
    want = _feed(fold, s)
    got = _feed(fast, s)
    assert got[0] == want[0]  # alerts, ids and order included
    assert got[1] == want[1]  # the accepted readings (telemetry), in order
    _same(fold, fast)
    # and from here on the two go on alike: timers fire the same
    last = s.clocks[-1] + 5_000_000
    assert fast.advance(last) == fold.advance(last)
    _same(fold, fast)


@PROPS
@given(streams())
def test_the_batch_step_equals_the_fold_with_loans_deferred(s: Stream) -> None:
    fold, fast = _pipeline(fast=False, defer_loans=True), _pipeline(fast=True, defer_loans=True)
    assert _feed(fast, s) == _feed(fold, s)
    _same(fold, fast)


@PROPS
@given(streams())
def test_a_quiet_fix_changes_only_what_settle_quiet_changes(s: Stream) -> None:
    p = _pipeline(fast=False)
    index, ctx = p.index, p.ctx
    for reading, now in zip(s.readings, s.clocks, strict=True):
        p.advance(now)
        state = p.devices.get(reading.device_id)
        if state is not None and isinstance(reading, GpsFix):
            hits = index.hits([reading.lat], [reading.lon], CONFIG.hysteresis_m)[0]
            if is_quiet_fix(state, reading, hits, ctx):
                result = step(state, reading, ctx, now, hits)
                last = Position(reading.ts_ms, reading.lat, reading.lon)
                want, missing = settle_quiet(state, [reading.ts_ms], last, [reading.seq], now, ctx)
                assert result.alerts == ()
                assert result.state == want
                assert result.missing == missing
                assert result.moved == last
        p.process([reading], [now])


def test_the_batch_step_takes_quiet_fixes_in_bulk() -> None:
    rnd = random.Random(7)
    readings: list[Reading] = []
    for k in range(200):
        for dev in DEVICES:
            at = offset(*HOME, rnd.uniform(-5, 5), rnd.uniform(-5, 5))
            readings.append(GpsFix(dev, T0 + k * 30_000 + DEVICES.index(dev), *at))
    clocks = [r.ts_ms for r in readings]
    fold, fast = _pipeline(fast=False), _pipeline(fast=True)
    assert fast.process(readings, clocks) == fold.process(readings, clocks)
    _same(fold, fast)
    # all but each car's first fix (and the two-tracker loan's, which `step_loan` takes)
    assert fast.quiet_readings == 3 * 199


def test_the_batch_step_takes_batches_where_it_pays() -> None:
    """Runs of a device's fixes, or a batch large enough to spread the plan's fixed cost:
    one reading from each of a dozen devices (live single messages) is folded."""
    p = Pipeline(FenceIndex.build(FENCES), CONFIG, fast=True)

    def batch(devices: int, each: int) -> list[Reading]:
        return [
            GpsFix(f"trk-{d}", T0 + k * 1000, HOME[0], HOME[1])
            for d in range(devices)
            for k in range(each)
        ]

    assert not p.uses_batch_step(batch(12, 1))  # one reading per device, a small batch
    assert p.uses_batch_step(batch(6, 2))  # runs of two
    assert not p.uses_batch_step(batch(7, 2)[:13])  # 13 readings of 7 devices: under two each
    assert not p.uses_batch_step(batch(1, 7))  # under `fast_min`
    assert p.uses_batch_step(batch(128, 1))  # large enough whatever the runs
    p.fast = False
    assert not p.uses_batch_step(batch(128, 1))
