"""`engine.distributed.offset_order`: whatever order, repeats and skips the consumer delivers
records in, a stage takes each record once, in offset order, and never steps over one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.distributed.offset_order import (
    GIVE_UP_AFTER,
    STALLED_CHECKS,
    OffsetOrder,
    Rewind,
    Verdict,
    Why,
)
from tests.factories import property_settings

KEY = ("pledgewatch.alerts", 3)
RECHECK_EVERY = 100  # records delivered per half second: a consumer is fast beside the timer


def deliver(
    order: OffsetOrder, position: int, log_end: int, skips: list[int], log_start: int = 0
) -> list[int]:
    """A consumer at `position` that drops the records named in `skips` (each once) and
    obeys every rewind (one below `log_start` lands there, as Kafka's reset to the earliest
    record does); the worker's half-second recheck, given the consumer's position, comes
    every `RECHECK_EVERY` records and while the consumer waits at the log's end. The offsets
    the stage took, in order."""
    taken: list[int] = []
    pending_skips = list(skips)
    position = max(position, log_start)
    since_recheck = 0
    for _ in range((GIVE_UP_AFTER + 2) * (log_end + STALLED_CHECKS + RECHECK_EVERY)):
        since_recheck += 1
        if position >= log_end or since_recheck >= RECHECK_EVERY:
            order.recheck({KEY: position})
            since_recheck = 0
        if position >= log_end:
            for rewind in order.take_rewinds():
                position = max(rewind.to, log_start)
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
            position = max(rewind.to, log_start)
    return taken


@property_settings(300)
@given(
    st.integers(-1, 30),  # the last record the stage holds (-1: none)
    st.integers(0, 60),  # where the consumer is positioned (Faust's committed offset)
    st.integers(0, 60),  # the log's end
    st.lists(st.integers(0, 60), max_size=12),  # records the consumer steps over, each time
)
def test_a_started_stage_takes_every_record_after_its_own_once_in_order(
    last: int, position: int, log_end: int, skips: list[int]
) -> None:
    """From its own last record on, wherever the consumer starts and whatever it steps over
    (the log's last records too): each record is taken once, in order, or named as missing,
    never lost unsaid; missing only when the consumer stepped over it more than
    `GIVE_UP_AFTER` times (as it would over a record gone from the log)."""
    want = list(range(last + 1, log_end))
    for start in (None, position):  # the seek of `start_at` taken, or undone by Faust
        order = OffsetOrder()
        order.start_at(KEY, last)
        (first,) = order.take_rewinds()
        assert first == Rewind(KEY[0], KEY[1], last + 1, -1, Why.TAKEN)
        at = first.to if start is None else start
        taken = deliver(order, at, log_end, skips)
        gone = [n for _, a, b in order.take_gaps() for n in range(a, b + 1)]
        assert sorted(taken + gone) == want
        assert taken == sorted(taken)
        assert order.missing == len(gone)
        if all(skips.count(n) <= GIVE_UP_AFTER for n in skips):
            assert gone == []


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
    assert order.take_rewinds() == [Rewind(KEY[0], KEY[1], 12, 13, Why.AHEAD)]  # once per offset
    assert order.ahead == 2


def test_an_unknown_partition_takes_its_first_record_as_the_next() -> None:
    order = OffsetOrder()
    assert not order.knows(KEY)
    assert order.sort(KEY, [40, 41, 43]) == [Verdict.FRESH, Verdict.FRESH, Verdict.AHEAD]
    assert order.knows(KEY)
    assert order.take_rewinds() == [Rewind(KEY[0], KEY[1], 42, 43, Why.AHEAD)]


def test_a_seek_that_did_not_take_is_asked_again_after_stalled_rechecks() -> None:
    order = OffsetOrder()
    order.start_at(KEY, 0)
    assert order.take_rewinds() == [Rewind(KEY[0], KEY[1], 1, -1, Why.TAKEN)]
    for n in range(STALLED_CHECKS - 1):  # records fetched before the seek: no new seek yet
        assert order.sort(KEY, [5 + n]) == [Verdict.AHEAD]
        order.recheck()
        assert order.take_rewinds() == []
    order.recheck()  # still nothing taken: the seek did not take
    assert order.take_rewinds() == [Rewind(KEY[0], KEY[1], 1, 1, Why.UNDONE)]
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
    assert order.take_rewinds() == [Rewind("pledgewatch.alerts", 0, 3, -1, Why.TAKEN)]


@property_settings(200)
@given(st.integers(-1, 20), st.integers(1, 20), st.integers(1, 20))
def test_records_gone_from_the_log_are_counted_and_the_stage_goes_on(
    last: int, gone: int, after: int
) -> None:
    """Retention deleted records the stage never took: each rewind lands at the log's
    start; after `GIVE_UP_AFTER` stalled rewinds the stage takes what is there, and says
    which records it never had."""
    log_start = last + 1 + gone
    log_end = log_start + after
    order = OffsetOrder()
    order.start_at(KEY, last)
    order.take_rewinds()
    taken = deliver(order, last + 1, log_end, [], log_start=log_start)
    assert taken == list(range(log_start, log_end))
    assert order.missing == gone
    assert order.take_gaps() == [(KEY, last + 1, log_start - 1)]


def test_a_stalled_partition_is_rewound_give_up_after_times_before_going_on() -> None:
    order = OffsetOrder()
    order.start_at(KEY, 9)
    order.take_rewinds()
    seeks = 0
    for _ in range(GIVE_UP_AFTER + 1):
        assert order.sort(KEY, [20]) == [Verdict.AHEAD]
        for _ in range(STALLED_CHECKS):
            order.recheck()
        seeks += len(order.take_rewinds())
    assert seeks == GIVE_UP_AFTER + 1  # the last one before going on
    assert order.missing == 0
    assert order.sort(KEY, [20, 21]) == [Verdict.FRESH, Verdict.FRESH]
    assert order.missing == 10
    assert order.take_gaps() == [(KEY, 10, 19)]
    # from there on, the partition is held to its order again
    assert order.sort(KEY, [23]) == [Verdict.AHEAD]


def test_a_consumer_past_the_next_record_with_nothing_coming_is_rewound() -> None:
    """The last records stepped over: no record ahead ever shows it, the position does."""
    order = OffsetOrder()
    order.start_at(KEY, 9)
    order.take_rewinds()
    assert order.sort(KEY, [10, 11]) == [Verdict.FRESH, Verdict.FRESH]
    for _ in range(STALLED_CHECKS - 1):
        order.recheck({KEY: 15})  # 12, 13 and 14 were fetched and never came
        assert order.take_rewinds() == []
    order.recheck({KEY: 15})
    assert order.take_rewinds() == [Rewind(KEY[0], KEY[1], 12, 15, Why.BEHIND)]
    # at the next record, or with records coming, nothing to do
    for _ in range(2 * STALLED_CHECKS):
        order.recheck({KEY: 12})
    assert order.take_rewinds() == []
    for n in range(12, 12 + 2 * STALLED_CHECKS):
        order.recheck({KEY: n + 5})  # a busy stage: its buffered records keep coming
        assert order.sort(KEY, [n]) == [Verdict.FRESH]
    assert order.take_rewinds() == []
    # it never gives up: a consumer that keeps stepping over the tail is rewound each time
    for _ in range(3 * STALLED_CHECKS * GIVE_UP_AFTER):
        order.recheck({KEY: 40})
    assert len(order.take_rewinds()) == 3 * GIVE_UP_AFTER
    assert order.missing == 0
