"""Which records of a partition a worker's stage takes next: each once, in offset order, and
none stepped over.

A stage (the devices' and loans' steps, the outbox, the rejects) knows the last offset whose
effect it holds: the checkpoint's, or the offset the store has. Records up to it are
`KEPT` (their effect is in already: acknowledged, not taken again). The next one is `FRESH`.
A record past the next one is `AHEAD`: the consumer is positioned past records the stage
never had. That happens after a rebalance (Faust seeks to its committed offset, which may
lie past what a stage holds; records fetched before the rebalance are still buffered) and
would happen if Faust ever dropped records in between. An `AHEAD` record is left
unacknowledged (an acknowledgment could let Faust commit past the records in between) and
the partition is rewound to the next record, once per offset: the consumer then delivers
it, and the records after it again. Records fetched before the seek still come first, ahead,
and are left too. Faust may undo a seek (a fetch that returns while its flow is stopped
seeks every partition to its committed offset): a partition that got only records ahead
across `STALLED_CHECKS` `recheck`s in a row (the worker calls it every half second) is
rewound again. After `GIVE_UP_AFTER` such rewinds the records in between are taken to be
gone from the log (retention deleted them while the partition lagged: a rewind below the
log's start lands at its start), and the stage goes on from the record that comes, the gap
counted and named (`take_gaps`) rather than the partition stalled for good. A consumer
that stepped over the last records of a partition shows no record ahead: `recheck` is
given each partition's position (the next offset the consumer fetches), and a partition
whose position stays past the stage's next record while the stage takes nothing is
rewound too, as often as that lasts (a busy stage's buffered records make it a needless
but harmless re-read).

Offsets of `pledgewatch.readings`, `.loan-events`, `.alerts` and `.rejects` are dense:
nothing compacts them and no producer writes transactions, so a gap is never in the log
but where retention made one.
Pure: no I/O, no clock; the worker does the seeks (`take_rewinds`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

Key = tuple[str, int]  # (topic, partition)

GIVE_UP_AFTER = 3
"""Rewinds after stalled rechecks, to one offset, before the records in between are taken
to be gone from the log."""

STALLED_CHECKS = 4
"""`recheck`s in a row that saw records ahead of a partition and none taken before its
rewind is asked again: four half seconds outlast a fetch's wait (Faust's is 1.5 s)."""


class Verdict(Enum):
    """What a stage does with one record."""

    KEPT = "kept"  # its effect is held already: acknowledge it, do not take it again
    FRESH = "fresh"  # the next record: take it
    AHEAD = "ahead"  # past the next record: leave it unacknowledged, it comes again


class Why(Enum):
    """Why a partition is rewound."""

    TAKEN = "taken"  # just given to the stage: from its own last record on (no surprise)
    AHEAD = "ahead"  # `seen` came in place of `to`
    UNDONE = "undone"  # an earlier seek did not take
    BEHIND = "behind"  # the consumer's position, `seen`, lay past `to`, nothing coming


@dataclass(frozen=True, slots=True)
class Rewind:
    """Seek `topic`/`partition` to `to`, and why (`seen`: the offset that showed it)."""

    topic: str
    partition: int
    to: int
    seen: int
    why: Why


class OffsetOrder:
    """The last offset each partition's stage holds, and the rewinds that keep it dense."""

    def __init__(self) -> None:
        self.applied: dict[Key, int] = {}  # the last offset whose effect the stage holds
        self._rewound: dict[Key, int] = {}  # the offset each partition was last rewound to
        self._stuck: dict[Key, int] = {}  # rechecks since a record ahead came, none taken
        self._behind: dict[Key, int] = {}  # rechecks with the consumer past the next record
        self._tries: dict[Key, int] = {}  # rewinds after stalled rechecks, since the last take
        self._give_up: set[Key] = set()  # the next record ahead is taken: the log lacks those
        self._gaps: list[tuple[Key, int, int]] = []  # (key, first, last) taken to be gone
        self.missing = 0  # records taken to be gone from the log
        self._rewinds: list[Rewind] = []
        self.ahead = 0  # records left for after a rewind

    def start_at(self, key: Key, last: int) -> None:
        """The stage holds every record up to `last` (-1: none): it takes `last + 1` next,
        wherever the consumer is positioned, so the partition is rewound there."""
        self.applied[key] = last
        self._rewound[key] = last + 1
        self._rewinds.append(Rewind(key[0], key[1], last + 1, -1, Why.TAKEN))

    def knows(self, key: Key) -> bool:
        """Whether the partition's last offset is known (taken, or seen once)."""
        return key in self.applied

    def sort(self, key: Key, offsets: Sequence[int]) -> list[Verdict]:
        """The verdict on each record, in the order fetched. A partition not known yet
        takes its first record as the next (nothing says otherwise)."""
        last = self.applied.get(key)
        verdicts: list[Verdict] = []
        for offset in offsets:
            if last is not None and offset <= last:
                verdicts.append(Verdict.KEPT)
                continue
            if last is not None and offset != last + 1:
                if key not in self._give_up:
                    verdicts.append(Verdict.AHEAD)
                    self.ahead += 1
                    self._stuck.setdefault(key, 0)
                    if self._rewound.get(key) != last + 1:
                        self._rewound[key] = last + 1
                        self._rewinds.append(Rewind(key[0], key[1], last + 1, offset, Why.AHEAD))
                    continue
                self._gaps.append((key, last + 1, offset - 1))  # the log lacks them
                self.missing += offset - last - 1
            verdicts.append(Verdict.FRESH)
            self._stuck.pop(key, None)
            self._behind.pop(key, None)
            self._tries.pop(key, None)
            self._give_up.discard(key)
            last = offset
        if last is not None:
            self.applied[key] = last
        return verdicts

    def recheck(self, positions: Mapping[Key, int] | None = None) -> None:
        """Rewind again each partition that got a record ahead and has taken none since, for
        `STALLED_CHECKS` calls: its seek did not take. After `GIVE_UP_AFTER` such
        rewinds, once more, and the first record that comes then is taken. And rewind each
        partition whose consumer `positions` lay past its next record for `STALLED_CHECKS`
        calls in a row with nothing taken."""
        for key, position in (positions or {}).items():
            last = self.applied.get(key)
            if last is None or position <= last + 1 or key in self._stuck:
                self._behind.pop(key, None)
                continue
            self._behind[key] = self._behind.get(key, 0) + 1
            if self._behind[key] >= STALLED_CHECKS:
                del self._behind[key]
                self._rewinds.append(Rewind(key[0], key[1], last + 1, position, Why.BEHIND))
        for key in list(self._stuck):
            self._stuck[key] += 1
            if self._stuck[key] < STALLED_CHECKS or key not in self.applied:
                continue
            del self._stuck[key]
            tries = self._tries.get(key, 0)
            if tries >= GIVE_UP_AFTER:  # once more, and whatever comes first is taken
                self._give_up.add(key)
            to = self.applied[key] + 1
            self._rewinds.append(Rewind(key[0], key[1], to, to, Why.UNDONE))
            self._tries[key] = tries + 1

    def forget(self, key: Key) -> None:
        """The partition was taken away: whoever has it next starts from its own record."""
        self.applied.pop(key, None)
        self._rewound.pop(key, None)
        self._stuck.pop(key, None)
        self._behind.pop(key, None)
        self._tries.pop(key, None)
        self._give_up.discard(key)
        self._rewinds = [r for r in self._rewinds if (r.topic, r.partition) != key]

    def take_gaps(self) -> list[tuple[Key, int, int]]:
        """The runs of offsets (key, first, last) taken to be gone since the last call."""
        gaps, self._gaps = self._gaps, []
        return gaps

    def take_rewinds(self) -> list[Rewind]:
        """The seeks to do now, oldest first."""
        rewinds, self._rewinds = self._rewinds, []
        return rewinds
