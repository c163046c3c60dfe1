"""Faust events as a worker's stages take them: a batch split by partition, and each
partition's records sorted by `engine.distributed.offset_order` into those to take and
those whose effect is in (the rest held back for a rewind)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.distributed.offset_order import OffsetOrder, Verdict

Event = Any  # faust.types.EventT: Faust's generics do not help here


def by_partition(events: Sequence[Event]) -> dict[int, list[Event]]:
    """A batch's records by partition, each in the order fetched."""
    out: dict[int, list[Event]] = {}
    for event in events:
        out.setdefault(event.message.partition, []).append(event)
    return out


def sort_events(
    order: OffsetOrder, topic: str, partition: int, batch: Sequence[Event]
) -> tuple[list[Event], list[Event]]:
    """(fresh, kept) of one partition's records: those to take and those whose effect is in.

    A record ahead of the next is never acknowledged (an extra reference): Faust commits the
    first run of acked offsets of a partition with no commit yet even if it starts past the
    first record (and takes a committed 0 for none), so an ack could commit what no stage
    took. It comes again after the rewind and is acked then, by offset."""
    verdicts = order.sort((topic, partition), [e.message.offset for e in batch])
    fresh: list[Event] = []
    kept: list[Event] = []
    for event, verdict in zip(batch, verdicts, strict=True):
        if verdict is Verdict.FRESH:
            fresh.append(event)
        elif verdict is Verdict.KEPT:
            kept.append(event)
        else:
            event.message.incref()
    return fresh, kept
