"""The simulator's only file output: a run's, or a fleet plan's, documents in a directory."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

import orjson

from simulator.fleet import InputCounter, Run, fences_doc, loans_doc, reading_lines, truth_doc
from simulator.fleet_plan import FleetPlan
from simulator.fleet_spec import FleetError

PRETTY = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


def write_json(path: Path, doc: object) -> Path:
    """Write `doc` as indented JSON; the path."""
    path.write_bytes(orjson.dumps(doc, option=PRETTY))
    return path


def write_documents(
    out_dir: Path,
    fences: dict[str, object],
    loans: list[dict[str, object]],
    lines: Iterable[bytes],
    readings_name: str = "readings.jsonl",
) -> list[Path]:
    """Write `fences.geojson`, `loans.json` and the readings lines (streamed); the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        write_json(out_dir / "fences.geojson", fences),
        write_json(out_dir / "loans.json", loans),
        out_dir / readings_name,
    ]
    with written[2].open("wb") as f:
        f.writelines(lines)
    return written


def write_run(
    run: Run,
    out_dir: Path,
    readings_name: str = "readings.jsonl",
    *,
    with_truth: bool = True,
) -> list[Path]:
    """Write `fences.geojson`, `loans.json`, the readings and `ground_truth.json`; the paths."""
    written = write_documents(
        out_dir, fences_doc(run), loans_doc(run), reading_lines(run), readings_name
    )
    if with_truth:
        written.append(write_json(out_dir / "ground_truth.json", truth_doc(run)))
    return written


def reading_line(topic: str, body: bytes, received_at: int) -> bytes:
    """A replay input line (DESIGN §7) of an MQTT JSON payload received at `received_at`
    (epoch ms), as `orjson` would write it."""
    return (
        b'{"topic":'
        + orjson.dumps(topic)
        + b',"payload":'
        + body
        + b',"received_at":'
        + str(received_at).encode()
        + b"}\n"
    )


def write_jsonl(plan: FleetPlan, directory: Path, limit: int | None = None) -> list[Path]:
    """Write the stream as replay input (`readings.jsonl`, in publish order, each line with
    its arrival time as `received_at`, the clock its "future" is judged by) plus
    `fences.geojson`, `loans.json` and `ground_truth.json` (replay semantics, with the
    input counts); the paths. A plan with JT/T 808 trackers has no replay input."""
    if plan.terminals:
        msg = "JT/T 808 trackers talk TCP to a gateway: their stream cannot be replay input"
        raise FleetError(msg)
    counter = InputCounter()

    def lines() -> Iterable[bytes]:
        stream = plan.generated()
        for out in stream if limit is None else itertools.islice(stream, limit):
            counter.add(out)
            yield reading_line(out.topic, out.body, out.ts_ms)

    written = write_documents(directory, plan.fences_doc(), plan.loans_doc(), lines())
    truth = plan.replay_truth(counter.counts())
    written.append(write_json(directory / "ground_truth.json", truth.to_json()))
    return written
