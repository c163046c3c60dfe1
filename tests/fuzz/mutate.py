"""A JSON-aware mutator for the coverage-guided fuzzer, beside libFuzzer's byte mutations.

Byte flips rarely keep a document parseable, so most of them only reach the JSON parser.
Half of the mutations here parse the input (the payload after the topic line, for the
decoder), change one node of the tree and write it back: a hostile scalar (huge numbers,
NaN, Infinity, NUL, a lone surrogate, boundary values), a node copied from elsewhere, a key
renamed to one the parsers know, an element repeated up to 10,000 times, a node nested up
to 1,000 levels deep, a node deleted. The rest are libFuzzer's own mutations, which use
the target's dictionary of tokens (`DICTIONARY`).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable

KEYS = (
    "ts", "lat", "lon", "speed_kmh", "heading_deg", "hdop", "sats", "ignition", "odometer_km",
    "seq", "g", "duration_ms", "ext_power", "battery_v", "tamper", "vin", "_type", "tst",
    "vel", "cog", "acc", "type", "id", "geometry", "coordinates", "properties", "features",
    "name", "kind", "category", "dwell_s", "radius_m", "loan_id", "device_ids", "zone_ids",
    "status", "principal", "vehicle", "year", "mileage_km", "value", "make", "model",
)  # fmt: skip
STRINGS = (
    "", "\x00", "\ud800", "NaN", "Infinity", "1e999", "x" * 1000, "location", "transition",
    "Feature", "FeatureCollection", "Polygon", "MultiPolygon", "Point", "zone", "risk_site",
    "active", "closed", "LSVAB4182E2123456", "2026-11-29T08:15:00Z", "2026-11-29T08:15:00",
    "2026-02-30T24:00:60+14:00", "9999-12-31T23:59:59.999999999-23:59", "trk-001",
)  # fmt: skip
NUMBERS: tuple[object, ...] = (
    0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, 10**400,
    0.1, -0.0, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308, math.nan, math.inf,
    -math.inf, 90, 90.0000001, -90, 180, 180.0000001, -180, 360, 1000, 50_000, 50_000.000001,
    946_684_800_000, 4_102_444_800_000, 1_795_940_100_000, 1_795_940_400_001,
)  # fmt: skip
DICTIONARY: tuple[bytes, ...] = (
    *(f'"{key}"'.encode() for key in KEYS),
    *(json.dumps(s).encode() for s in STRINGS if 0 < len(s) < 40),
    b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0", b"5e-324", b"18446744073709551616",
    b"null", b"true", b"false", b"[", b"]", b"{", b"}", b":", b",", b"\xff", b"\xc0\x80",
    b"\xed\xa0\x80", b"\x00", b"telematics/", b"owntracks/", b"/gps", b"/vib", b"/status",
)  # fmt: skip
"""Tokens for libFuzzer's own mutations (`-dict`)."""
MAX_REPEAT = 10_000
MAX_DEPTH = 1000

Path = list[object]


def json_mutator(
    byte_mutate: Callable[[bytes, int], bytes], *, topic_line: bool
) -> Callable[[bytes, int, int], bytes]:
    """A libFuzzer custom mutator; `byte_mutate` is libFuzzer's own (`atheris.Mutate`)."""

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return byte_mutate(data, max_size)
        head, body = b"", data
        if topic_line:
            topic, _, body = data.partition(b"\n")
            head = _mutate_topic(topic, rng) + b"\n"
        try:
            mutated = mutate_json(body, rng, max_size - len(head))
        except (RecursionError, ValueError, OverflowError):  # too deep or too big to redo
            mutated = None
        if mutated is None or len(head) + len(mutated) > max_size:
            return byte_mutate(data, max_size)
        return head + mutated

    return mutate


def _mutate_topic(topic: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.9:
        return topic
    choices = (
        b"telematics/trk-001/gps",
        b"telematics/trk-001/vib",
        b"telematics/trk-001/status",
        b"owntracks/car03/phone",
        b"telematics/" + b"a" * rng.choice((63, 64, 65)) + b"/gps",
        topic + b"/x",
        topic[: rng.randrange(len(topic) + 1)],
    )
    return rng.choice(choices)


def mutate_json(data: bytes, rng: random.Random, max_size: int) -> bytes | None:
    """One structural change of the JSON document in `data`, or None if it does not parse
    (or the change would make it longer than `max_size` bytes)."""
    try:
        doc = json.loads(data.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError):
        return None
    paths = list(_paths(doc, limit=2000))
    path = rng.choice(paths)
    node = _get(doc, path)
    operation = rng.randrange(8)
    if operation == 0:
        new: object = rng.choice((*NUMBERS, *STRINGS, None, True, False, [], {}))
    elif operation == 1:
        new = _get(doc, rng.choice(paths))
    elif operation == 2:
        new = _tweak_number(node, rng)
    elif operation == 3:
        size = len(json.dumps(node, allow_nan=True)) + 1
        times = min(rng.choice((2, 3, 1000, 1001, MAX_REPEAT)), max(1, max_size // size))
        new = [node] * times
    elif operation == 4:
        new = node
        for _ in range(rng.choice((1, 2, 31, 32, 33, 900, MAX_DEPTH))):
            new = [new] if rng.random() < 0.5 else {rng.choice(KEYS): new}
    elif operation == 5 and isinstance(node, dict) and node:
        key = rng.choice(list(node))
        node[rng.choice(KEYS)] = node.pop(key)
        new = node
    elif operation == 6 and isinstance(node, dict | list) and node:
        if isinstance(node, dict):
            del node[rng.choice(list(node))]
        else:
            del node[rng.randrange(len(node))]
        new = node
    else:
        new = {rng.choice(KEYS): node} if rng.random() < 0.5 else [node, node]
    doc = _set(doc, path, new)
    try:
        text = json.dumps(doc, allow_nan=True, ensure_ascii=rng.random() < 0.5)
    except (ValueError, RecursionError):
        return None
    return text.encode("utf-8", "surrogatepass")


def _tweak_number(node: object, rng: random.Random) -> object:
    if isinstance(node, bool) or not isinstance(node, int | float):
        return rng.choice(NUMBERS)
    if isinstance(node, float) and not math.isfinite(node):
        return rng.choice(NUMBERS)
    tweaks: tuple[Callable[[float], object], ...] = (
        lambda x: x + 1,
        lambda x: x - 1,
        lambda x: -x,
        lambda x: x * 10**10,
        lambda x: x / 3,
        float,
        int,
        str,
    )
    try:
        return rng.choice(tweaks)(node)
    except (OverflowError, ValueError):  # past float range, or too many digits for str
        return rng.choice(NUMBERS)


def _paths(doc: object, limit: int) -> list[Path]:
    """Paths to nodes of `doc`, breadth first, at most `limit` of them."""
    found: list[Path] = [[]]
    queue: list[tuple[object, Path]] = [(doc, [])]
    while queue and len(found) < limit:
        node, path = queue.pop(0)
        children: list[tuple[object, object]]
        if isinstance(node, dict):
            children = list(node.items())
        elif isinstance(node, list):
            children = list(enumerate(node))
        else:
            continue
        for key, child in children[:50]:
            found.append([*path, key])
            queue.append((child, [*path, key]))
    return found


def _get(doc: object, path: Path) -> object:
    for key in path:
        doc = doc[key]  # type: ignore[index]  # the path was read from this document
    return doc


def _set(doc: object, path: Path, value: object) -> object:
    if not path:
        return value
    parent = _get(doc, path[:-1])
    parent[path[-1]] = value  # type: ignore[index]  # likewise
    return doc
