"""The simulator's only file output: a run's four documents in a directory."""

from __future__ import annotations

from pathlib import Path

import orjson

from simulator.fleet import Run, fences_doc, loans_doc, reading_lines, truth_doc

PRETTY = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


def write_run(
    run: Run,
    out_dir: Path,
    readings_name: str = "readings.jsonl",
    *,
    with_truth: bool = True,
) -> list[Path]:
    """Write `fences.geojson`, `loans.json`, the readings and `ground_truth.json`; the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        out_dir / "fences.geojson",
        out_dir / "loans.json",
        out_dir / readings_name,
    ]
    written[0].write_bytes(orjson.dumps(fences_doc(run), option=PRETTY))
    written[1].write_bytes(orjson.dumps(loans_doc(run), option=PRETTY))
    written[2].write_bytes(b"".join(reading_lines(run)))
    if with_truth:
        written.append(out_dir / "ground_truth.json")
        written[3].write_bytes(orjson.dumps(truth_doc(run), option=PRETTY))
    return written
