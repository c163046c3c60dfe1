"""State in buckets: how the workers keep their Faust tables cheap to write; pure.

A Faust table write costs the worker a changelog record (~80-200 µs of CPU:
../shared/MEASUREMENTS.md), so one write per changed device would cost as much as the
reading that changed it. The workers keep each partition's rows (device states; loan folds
and the consumer's rows) in `BUCKETS` buckets: a checkpoint writes each bucket that changed
once, as one table value holding all its rows. Writes per checkpoint are then bounded by
partitions times buckets, whatever the fleet's size and rate; the bytes written are the changed
buckets' rows.

Table keys are `{space}/{partition}/{bucket}`: the partition is in the key, so a worker that
is given a partition finds its rows without hashing anything.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

import orjson

BUCKETS = 64


def bucket_of(row_key: str) -> int:
    """The bucket of a row (a device id, a loan id, a grid cell): stable across processes."""
    return zlib.crc32(row_key.encode()) % BUCKETS


def table_key(space: str, partition: int, bucket: int) -> bytes:
    """The table key of one bucket of one partition."""
    return f"{space}/{partition}/{bucket}".encode()


OFFSET_SPACE = "o"


def offset_key(partition: int) -> bytes:
    """The table key holding the last record offset a partition's checkpoint includes."""
    return table_key(OFFSET_SPACE, partition, 0)


def parse_table_key(key: bytes) -> tuple[str, int, int] | None:
    """(space, partition, bucket) of a table key; None if it is not one of ours."""
    parts = key.decode("utf-8", "replace").split("/")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


class BucketMirror:
    """The rows of one space of one partition, by bucket, with the buckets changed since the
    last `take_dirty`."""

    def __init__(self, space: str, partition: int) -> None:
        self.space = space
        self.partition = partition
        self.buckets: dict[int, dict[str, object]] = {}
        self.dirty: set[int] = set()

    def put(self, row_key: str, doc: object | None) -> None:
        """Set a row (None deletes it)."""
        b = bucket_of(row_key)
        rows = self.buckets.setdefault(b, {})
        if doc is None:
            if rows.pop(row_key, None) is None:
                return
        else:
            rows[row_key] = doc
        self.dirty.add(b)

    def rows(self) -> Iterable[tuple[str, object]]:
        """Every row."""
        for rows in self.buckets.values():
            yield from rows.items()

    def take_dirty(self) -> dict[bytes, bytes]:
        """The changed buckets as table key -> value; an empty bucket's value is `{}`."""
        out = {
            table_key(self.space, self.partition, b): orjson.dumps(self.buckets.get(b, {}))
            for b in sorted(self.dirty)
        }
        self.dirty.clear()
        return out

    def load(self, values: Mapping[bytes, bytes]) -> None:
        """Take the buckets of this space and partition from table values (others ignored)."""
        for key, value in values.items():
            parsed = parse_table_key(key)
            if parsed is None or parsed[:2] != (self.space, self.partition):
                continue
            doc = orjson.loads(value)
            if isinstance(doc, dict):
                self.buckets[parsed[2]] = doc
