"""The lending golden: a seeded multi-day fleet and what the lending consumer makes of it.

    python -m simulator.golden_lending --regenerate   # tests/golden_lending/lives/

The input (20 loans, 10 days, every behaviour, quiet cars' noise) is not stored: it is
rebuilt from its seed (about a second) and its SHA-256 is. So a change of the simulator
shows as "the input changed", apart from a change of the engine or the consumer, which
shows as different expected output. The expected output is the replay's alerts (every one,
`risk.tier_changed` included, in raised order), each loan's `risk`, `collateral`, `price`
and learned places at the end, and the risk-site candidates. Regenerate on purpose only.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from engine.core.config import Config
from engine.runtime.replay import Replay
from geofence.fence import load_fences
from geofence.index import FenceIndex
from lending.consumer import LendingConsumer
from lending.model import parse_loans
from simulator.life_plan import LifeSpec
from simulator.lives import live_fleet, plan_fleet, write_lives

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / "tests" / "golden_lending" / "lives"
SPEC = LifeSpec(loans=20, days=10, seed="pledgewatch-lending-golden-1", risky_share=0.6)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the replay with the lending consumer made of the input."""

    input_sha256: str
    alerts: bytes  # JSON lines
    loans: bytes  # JSON: per loan, risk, collateral, price and places
    candidates: bytes  # JSON: the risk-site candidates


def build_input(out_dir: Path) -> list[Path]:
    """Write the golden's input files (readings, fences, loans, truth) into `out_dir`."""
    plan = plan_fleet(SPEC)
    return write_lives(plan, live_fleet(plan), out_dir)


def replay(work: Path) -> Outcome:
    """Replay the input in `work` with the lending consumer; what it made of it."""
    readings = work / "readings.jsonl"
    loans = parse_loans(orjson.loads((work / "loans.json").read_bytes()))
    consumer = LendingConsumer()
    lines: list[bytes] = []
    run = Replay(
        FenceIndex.build(load_fences(work / "fences.geojson")),
        loans,
        Config(),
        on_alert=lambda a: lines.append(orjson.dumps(a.to_json()) + b"\n"),
        consumer=consumer,
    )
    data = readings.read_bytes()
    run.feed(data.splitlines(keepends=True))
    run.finish()
    books = [
        {
            "loan_id": loan.loan_id,
            **consumer.loan_view(loan),
            "places": consumer.places(loan.loan_id),
        }
        for loan in loans
    ]
    found = [c.to_json() for c in consumer.candidates(consumer.is_marked)]
    pretty = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    return Outcome(
        hashlib.sha256(data).hexdigest(),
        b"".join(lines),
        orjson.dumps(books, option=pretty) + b"\n",
        orjson.dumps(found, option=pretty) + b"\n",
    )


def write_expected(outcome: Outcome, golden: Path = GOLDEN_DIR) -> None:
    """Write what a test compares with."""
    golden.mkdir(parents=True, exist_ok=True)
    (golden / "input.sha256").write_text(outcome.input_sha256 + "\n")
    (golden / "expected_alerts.jsonl").write_bytes(outcome.alerts)
    (golden / "expected_loans.json").write_bytes(outcome.loans)
    (golden / "expected_candidates.json").write_bytes(outcome.candidates)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m simulator.golden_lending --regenerate`."""
    parser = argparse.ArgumentParser(prog="python -m simulator.golden_lending")
    parser.add_argument("--regenerate", action="store_true", help="rewrite the expected files")
    parser.add_argument("--input-dir", type=Path, help="also keep the input files here")
    args = parser.parse_args(argv)
    if not args.regenerate:
        parser.error("pass --regenerate to rewrite tests/golden_lending/ (on purpose only)")
    import tempfile  # noqa: PLC0415  # only the command needs it

    with tempfile.TemporaryDirectory(prefix="pledgewatch-golden-lending-") as tmp:
        work = args.input_dir or Path(tmp)
        build_input(work)
        outcome = replay(work)
    write_expected(outcome)
    n = outcome.alerts.count(b"\n")
    print(f"wrote {GOLDEN_DIR}: {n} alerts, input sha256 {outcome.input_sha256}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
