"""The simulator's only file output: a run's documents in a directory."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson

from simulator.fleet import Run, fences_doc, loans_doc, reading_lines, truth_doc

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
