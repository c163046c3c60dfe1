"""State in buckets: how the workers keep their Faust tables cheap to write; pure.

A Faust table write costs the worker a changelog record (~80-200 µs of CPU:
../shared/MEASUREMENTS.md), so one write per changed device would cost as much as the
reading that changed it. The workers keep each partition's rows (device states; loan folds
and the consumer's rows) in `BUCKETS` buckets: a checkpoint writes each bucket that changed
once, as one table value holding all its rows. Writes per checkpoint are then bounded by
partitions times buckets, whatever the fleet's size and rate; the bytes written are the changed
buckets' rows. A bucket's value is its rows' JSON, zlib-compressed (level 1: ~100 µs for a
bucket of 10 kB, a fifth to a tenth of the bytes: the rows repeat their field names).

A checkpoint is atomic per partition. Its records reach the brokers one by one, and a worker
killed among them must leave the last whole checkpoint readable: each bucket has two slots,
a checkpoint writes a changed bucket into the slot not holding its current value, and the
partition's checkpoint record, written last, names the offset stepped and the slot of every
bucket (`checkpoint_value`). A restore reads the slots that record names; the writes of a
checkpoint whose record never landed are in slots nothing names.

Table keys are `{space}/{partition}/{index}`, index = bucket + slot x BUCKETS; the checkpoint
record is `o/{partition}/0`. The partition is in the key, so a worker that is given a
partition finds its rows without hashing anything.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

import orjson

BUCKETS = 64
OFFSET_SPACE = "o"
_ZLIB = 0x78  # the first byte of a zlib stream; JSON starts otherwise


def bucket_of(row_key: str) -> int:
    """The bucket of a row (a device id, a loan id, a grid cell): stable across processes."""
    return zlib.crc32(row_key.encode()) % BUCKETS


def table_key(space: str, partition: int, index: int) -> bytes:
    """The table key of one bucket slot (`index` = bucket + slot x BUCKETS) of a partition."""
    return f"{space}/{partition}/{index}".encode()


def offset_key(partition: int) -> bytes:
    """The table key of a partition's checkpoint record (`checkpoint_value`)."""
    return table_key(OFFSET_SPACE, partition, 0)


def parse_table_key(key: bytes) -> tuple[str, int, int] | None:
    """(space, partition, index) of a table key; None if it is not one of ours."""
    parts = key.decode("utf-8", "replace").split("/")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


def checkpoint_value(offset: int, slots: Mapping[str, int]) -> bytes:
    """A checkpoint record: the last offset stepped, and per space the bucket slots (bit b:
    the slot of bucket b)."""
    return orjson.dumps({"offset": offset, "slots": dict(slots)})


def read_checkpoint(value: bytes | None) -> tuple[int, dict[str, int]]:
    """(offset, slots) of a checkpoint record; (-1, {}) for none."""
    if value is None:
        return -1, {}
    doc = orjson.loads(value)
    if isinstance(doc, int):  # the offset alone, as written before slots
        return doc, {}
    slots = doc.get("slots") or {}
    return int(doc["offset"]), {str(k): int(v) for k, v in slots.items()}


def bucket_value(rows: Mapping[str, object]) -> bytes:
    """A bucket's table value: its rows' JSON, compressed."""
    return zlib.compress(orjson.dumps(rows), 1)


def read_bucket(value: bytes) -> object:
    """A bucket's rows back from its table value (compressed or plain JSON)."""
    return orjson.loads(zlib.decompress(value) if value[:1] == bytes([_ZLIB]) else value)


def current_buckets(values: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """The bucket values the checkpoint records among `values` name (a table's contents):
    what a restore reads, without the other slots."""
    slots = {
        parsed[1]: read_checkpoint(value)[1]
        for key, value in values.items()
        if (parsed := parse_table_key(key)) is not None and parsed[0] == OFFSET_SPACE
    }
    out: dict[bytes, bytes] = {}
    for key, value in values.items():
        parsed = parse_table_key(key)
        if parsed is None or parsed[0] == OFFSET_SPACE:
            continue
        space, partition, index = parsed
        bucket, slot = index % BUCKETS, index // BUCKETS
        if (slots.get(partition, {}).get(space, 0) >> bucket) & 1 == slot:
            out[key] = value
    return out


class BucketMirror:
    """The rows of one space of one partition, by bucket, with the buckets changed since the
    last `take_dirty` and the slot each bucket's current value is in."""

    def __init__(self, space: str, partition: int) -> None:
        self.space = space
        self.partition = partition
        self.buckets: dict[int, dict[str, object]] = {}
        self.dirty: set[int] = set()
        self.slots = 0  # bit b: the slot of bucket b

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
        """The changed buckets as table key -> value, each in its other slot (an empty
        bucket's value is `{}`); `slots` names them from now on."""
        out: dict[bytes, bytes] = {}
        for b in sorted(self.dirty):
            self.slots ^= 1 << b
            index = b + ((self.slots >> b) & 1) * BUCKETS
            out[table_key(self.space, self.partition, index)] = bucket_value(
                self.buckets.get(b, {})
            )
        self.dirty.clear()
        return out

    def load(self, values: Mapping[bytes, bytes], slots: int = 0) -> None:
        """Take this space's buckets of this partition from table values, from the slots
        `slots` names (other keys are ignored)."""
        self.slots = slots
        for b in range(BUCKETS):
            index = b + ((slots >> b) & 1) * BUCKETS
            value = values.get(table_key(self.space, self.partition, index))
            if value is None:
                continue
            doc = read_bucket(value)
            if isinstance(doc, dict):
                self.buckets[b] = doc
