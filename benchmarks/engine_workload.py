"""The engine benchmark's workloads: its sizes, the seeded fleet, and the MQTT messages made
from it (single readings, arrays, paced), split over the publisher processes."""

from __future__ import annotations

import argparse
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.replay_workload import Inputs, generate


@dataclass(frozen=True, slots=True)
class Msg:
    """One MQTT message to publish: its topic, payload, device, and its first reading's ts.

    The payload is kept as `str`: each `bytes` from `orjson.dumps` holds about 4 KiB of
    memory while it lives (orjson 3.13 here), a `str` copy only its length."""

    topic: str
    payload: str
    device: str
    ts_ms: int
    readings: int = 1


@dataclass(slots=True)
class Workload:
    """Messages published in one phase."""

    name: str
    label: str
    messages: list[Msg]

    @property
    def readings(self) -> int:
        """Readings in all the messages."""
        return sum(m.readings for m in self.messages)

    @property
    def per_message(self) -> float:
        """Mean readings per message."""
        return self.readings / len(self.messages) if self.messages else 0.0


@dataclass(slots=True)
class Sizes:
    """What one run measures."""

    devices: int
    fences: int
    messages: int
    array_size: int
    arrays_per_device: int
    latency_rate: int
    latency_s: int
    latency_interval_s: int
    mem_devices: int
    mem_fences: int
    mem_fixes: int
    mem_more_fixes: int


def sizes(args: argparse.Namespace) -> Sizes:
    """The sizes from the options (`--quick` changes the defaults, not explicit values)."""
    quick = args.quick

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    return Sizes(
        devices=pick(args.devices, 10_000, 500),
        fences=pick(args.fences, 10_000, 500),
        messages=pick(args.messages, 200_000, 5_000),
        array_size=args.array_size,
        arrays_per_device=pick(args.arrays_per_device, 2, 2),
        latency_rate=pick(args.latency_rate, 2000, 200),
        latency_s=pick(args.latency_s, 30, 5),
        latency_interval_s=5,
        mem_devices=pick(args.mem_devices, 50_000, 1000),
        mem_fences=pick(args.mem_fences, 1000, 200),
        mem_fixes=pick(args.mem_fixes, 35, 35),
        mem_more_fixes=pick(args.mem_more_fixes, 10, 10),
    )


def make_fleet(
    work: Path,
    seed: int,
    devices: int,
    fences: int,
    fixes_per_device: int,
    interval_s: int,
    coverage: float,
    *,
    extras: bool,
) -> Inputs:
    """The replay benchmark's seeded fleet (`benchmarks.replay_workload.generate`) written
    into `work`."""
    work.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(
        seed=seed,
        devices=devices,
        fences=fences,
        readings=devices * fixes_per_device,
        interval_s=interval_s,
        coverage=coverage,
        standing=0.2,  # bench_replay's default
        vib_share=0.005 if extras else 0.0,
        status_share=0.002 if extras else 0.0,
    )
    return generate(ns, work)


def read_messages(path: Path, shift_ms: int, rename: tuple[str, str] | None = None) -> list[Msg]:
    """The readings JSONL as one message per line, event times shifted by `shift_ms` (the
    generator's clock is fixed; the decoder refuses readings from the future) and device
    names optionally renamed (`("trk-", "lat-")`)."""
    out: list[Msg] = []
    with path.open("rb") as f:
        for line in f:
            doc = orjson.loads(line)
            topic: str = doc["topic"]
            if rename is not None:
                topic = topic.replace(rename[0], rename[1], 1)
            payload: dict[str, Any] = doc["payload"]
            ts = int(payload["ts"]) + shift_ms
            payload["ts"] = ts
            out.append(Msg(topic, orjson.dumps(payload).decode(), topic.split("/")[1], ts))
    return out


def shifted(messages: Sequence[Msg], delta_ms: int) -> list[Msg]:
    """Single-reading messages with their event times moved by `delta_ms`."""
    out = []
    for m in messages:
        payload = orjson.loads(m.payload)
        payload["ts"] = m.ts_ms + delta_ms
        out.append(Msg(m.topic, orjson.dumps(payload).decode(), m.device, m.ts_ms + delta_ms))
    return out


def as_arrays(messages: Sequence[Msg], size: int) -> list[Msg]:
    """Full arrays of `size` consecutive gps readings per device (remainders and other
    streams are dropped), ordered so that each device's arrays stay in time order."""
    by_topic: dict[str, list[Msg]] = {}
    for m in messages:
        if m.topic.endswith("/gps"):
            by_topic.setdefault(m.topic, []).append(m)
    rounds: list[list[Msg]] = []
    for topic, ms in by_topic.items():
        for i, start in enumerate(range(0, len(ms) - size + 1, size)):
            chunk = ms[start : start + size]
            if len(rounds) <= i:
                rounds.append([])
            payload = "[" + ",".join(m.payload for m in chunk) + "]"
            rounds[i].append(Msg(topic, payload, chunk[0].device, chunk[0].ts_ms, size))
    return [m for r in rounds for m in r]


def split_by_device_count(messages: Sequence[Msg], counts: Sequence[int]) -> list[list[Msg]]:
    """Split a time-ordered stream into consecutive parts by each device's reading number:
    the first `counts[0]` readings of every device go to part 0, the next to part 1, ..."""
    bounds = [sum(counts[: i + 1]) for i in range(len(counts))]
    seen: Counter[str] = Counter()
    parts: list[list[Msg]] = [[] for _ in counts]
    for m in messages:
        if not m.topic.endswith("/gps"):
            continue
        k = seen[m.device]
        seen[m.device] += 1
        for i, bound in enumerate(bounds):
            if k < bound:
                parts[i].append(m)
                break
    return parts


def publisher_files(
    messages: Sequence[Msg],
    publishers: int,
    work: Path,
    name: str,
    prefix: str = "",
    due_s: Sequence[float] | None = None,
) -> list[Path]:
    """The messages split by device over `publishers` files (a device's messages keep
    their order: one publisher sends them all)."""
    parts: list[list[int]] = [[] for _ in range(publishers)]
    for i, m in enumerate(messages):
        parts[zlib.crc32(m.device.encode()) % publishers].append(i)
    paths = []
    for k, idx in enumerate(parts):
        doc: dict[str, object] = {
            "topics": [prefix + messages[i].topic for i in idx],
            "payloads": [messages[i].payload for i in idx],
        }
        if due_s is not None:
            doc["due_s"] = [due_s[i] for i in idx]
        path = work / f"pub-{name}-{k}.json"
        path.write_bytes(orjson.dumps(doc))
        paths.append(path)
    return paths
