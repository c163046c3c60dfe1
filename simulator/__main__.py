"""`python -m simulator OUT_DIR`: simulate a run and write its files (DESIGN §7 replay input).

Writes `fences.geojson`, `loans.json`, `readings.jsonl` and `ground_truth.json`; replay with
`pledgewatch replay OUT_DIR/readings.jsonl --fences OUT_DIR/fences.geojson --loans ...`.

`python -m simulator lives --loans N --days D --seed S --out DIR` writes a lending fleet's
multi-day lives instead, with truth labels (`simulator.lives`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from simulator import lives
from simulator.car import ScenarioKind
from simulator.fleet import RunSpec, build_run
from simulator.junk import ALL_JUNK
from simulator.writer import write_run


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m simulator` (and of `python -m simulator lives ...`)."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["lives"]:
        return lives.main(args_in[1:])
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("out", type=Path, help="directory to write the run into")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[k.value for k in ScenarioKind],
        help="a scenario car to include (repeatable; default: every scenario once)",
    )
    parser.add_argument("--quiet", type=int, default=2, help="background cars (default 2)")
    parser.add_argument(
        "--owntracks", type=int, default=1, help="background cars that are OwnTracks phones"
    )
    parser.add_argument("--minutes", type=int, default=120, help="event time to cover")
    parser.add_argument("--seed", default="1", help="any string; same seed, same files")
    parser.add_argument("--junk", action="store_true", help="inject malformed input too")
    args = parser.parse_args(args_in)
    kinds = tuple(ScenarioKind(k) for k in args.scenario) if args.scenario else tuple(ScenarioKind)
    if args.junk and args.quiet - args.owntracks < 1:
        parser.error("--junk needs a background car with a wired tracker (--quiet > --owntracks)")
    spec = RunSpec(
        name=args.out.name,
        seed=args.seed,
        scenarios=kinds,
        quiet=args.quiet,
        owntracks=min(args.owntracks, args.quiet),
        duration_s=args.minutes * 60,
        junk=ALL_JUNK if args.junk else (),
    )
    run = build_run(spec)
    for path in write_run(run, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
