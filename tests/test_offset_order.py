"""`engine.distributed.offset_order`: whatever order, repeats and skips the consumer delivers
records in, a stage takes each record once, in offset order, and never steps over one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.distributed.offset_order import (
    STALLED_CHECKS,
    OffsetOrder,
    Rewind,
    Verdict,
)
from tests.factories import property_settings

KEY = ("pledgewatch.alerts", 3)


def deliver(order: OffsetOrder, position: int, log_end: int, skips: list[int]) -> list[int]:
    """A consumer at `position` that drops the records named in `skips` (each once) and
    obeys every rewind, with a recheck after each record and while it waits at the log's
    end; the offsets the stage took, in order."""
    taken: list[int] = []
    pending_skips = list(skips)
    for _ in range(10 * (log_end + STALLED_CHECKS + 1)):  # each rewind re-reads the log once
        order.recheck()
        if position >= log_end:
            for rewind in order.take_rewinds():
                position = rewind.to
            continue
        if position in pending_skips:  # the consumer steps over a record
            pending_skips.remove(position)
            position += 1
            continue
        verdicts = order.sort(KEY, [position])
        if verdicts == [Verdict.FRESH]:
            taken.append(position)
        position += 1
        for rewind in order.take_rewinds():
            position = rewind.to
    return taken


@property_settings(300)
@given(
    st.integers(-1, 30),  # the last record the stage holds (-1: none)
    st.integers(0, 60),  # where the consumer is positioned (Faust's committed offset)
    st.integers(0, 60),  # the log's end
    st.lists(st.integers(0, 60), max_size=6),  # records the consumer steps over
)
def test_a_started_stage_takes_every_record_after_its_own_once_in_order(
    last: int, position: int, log_end: int, skips: list[int]
) -> None:
    """From its own last record on, wherever the consumer starts and whatever it steps over,
    as long as a record comes after each one stepped over (a step over the log's last
    record shows only when the next record comes)."""
    skips = [s for s in skips if s < log_end - 1]
    want = list(range(last + 1, log_end))
    order = OffsetOrder()
    order.start_at(KEY, last)
    (first,) = order.take_rewinds()
    assert first == Rewind(KEY[0], KEY[1], last + 1, -1)
    assert deliver(order, first.to, log_end, skips) == want
    # a seek that did not take: the consumer stays where Faust put it, maybe past the stage;
    # a record ahead shows it (none comes when Faust put it at the log's end)
    order = OffsetOrder()
    order.start_at(KEY, last)
    order.take_rewinds()
    assert deliver(order, position, log_end, skips) == ([] if position >= log_end else want)


def test_kept_fresh_and_ahead() -> None:
    order = OffsetOrder()
    order.start_at(KEY, 9)
    order.take_rewinds()
    assert order.sort(KEY, [8, 9, 10, 11, 13, 14]) == [
        Verdict.KEPT,
        Verdict.KEPT,
        Verdict.FRESH,
        Verdict.FRESH,
        Verdict.AHEAD,
        Verdict.AHEAD,
    ]
    assert order.applied[KEY] == 11
    assert order.take_rewinds() == [Rewind(KEY[0], KEY[1], 12, 13)]  # once per offset
    assert order.ahead == 2


def test_an_unknown_partition_takes_its_first_record_as_the_next() -> None:
    order = OffsetOrder()
    assert not order.knows(KEY)
    assert order.sort(KEY, [40, 41, 43]) == [Verdict.FRESH, Verdict.FRESH, Verdict.AHEAD]
    assert order.knows(KEY)
    assert order.take_rewinds() == [Rewind(KEY[0], KEY[1], 42, 43)]


def test_a_seek_that_did_not_take_is_asked_again_after_stalled_rechecks() -> None:
    order = OffsetOrder()
    order.start_at(KEY, 0)
    assert order.take_rewinds() == [Rewind(KEY[0], KEY[1], 1, -1)]
    for n in range(STALLED_CHECKS - 1):  # records fetched before the seek: no new seek yet
        assert order.sort(KEY, [5 + n]) == [Verdict.AHEAD]
        order.recheck()
        assert order.take_rewinds() == []
    order.recheck()  # still nothing taken: the seek did not take
    assert order.take_rewinds() == [Rewind(KEY[0], KEY[1], 1, 1)]
    # a partition that moves is never rewound again
    order.sort(KEY, [9])
    order.sort(KEY, [1, 2])
    for _ in range(2 * STALLED_CHECKS):
        order.recheck()
    assert order.take_rewinds() == []
    assert order.applied[KEY] == 2


def test_a_partition_taken_away_is_forgotten_with_its_rewinds() -> None:
    order = OffsetOrder()
    order.start_at(KEY, 4)
    order.start_at(("pledgewatch.alerts", 0), 2)
    order.forget(KEY)
    assert not order.knows(KEY)
    assert order.take_rewinds() == [Rewind("pledgewatch.alerts", 0, 3, -1)]
