"""The lending golden: a seeded ten-day fleet, replayed with the lending consumer, must give
exactly the stored alerts, tiers, reasons, places and candidates (simulator/golden_lending.py;
regenerate on purpose only), and what it gives must agree with the fleet's truth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from geofence.geo import haversine_m
from simulator.golden_lending import GOLDEN_DIR, Outcome, build_input, replay

REGENERATE = "python -m simulator.golden_lending --regenerate (on purpose only)"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("golden-lending")
    build_input(path)
    return path


@pytest.fixture(scope="module")
def outcome(work: Path) -> Outcome:
    return replay(work)


def test_the_input_is_the_one_the_golden_was_made_from(outcome: Outcome) -> None:
    want = (GOLDEN_DIR / "input.sha256").read_text().strip()
    assert outcome.input_sha256 == want, f"the simulator's lives changed: {REGENERATE}"


def test_alerts_loans_and_candidates_are_exactly_the_golden(outcome: Outcome) -> None:
    assert outcome.alerts == (GOLDEN_DIR / "expected_alerts.jsonl").read_bytes()
    assert outcome.loans == (GOLDEN_DIR / "expected_loans.json").read_bytes()
    assert outcome.candidates == (GOLDEN_DIR / "expected_candidates.json").read_bytes()


def test_the_command_prints_the_same_alerts(work: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "replay",
            str(work / "readings.jsonl"),
            "--fences",
            str(work / "fences.geojson"),
            "--loans",
            str(work / "loans.json"),
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert done.stdout == (GOLDEN_DIR / "expected_alerts.jsonl").read_bytes()


def test_the_golden_agrees_with_the_fleets_truth(work: Path) -> None:
    truth = orjson.loads((work / "truth.json").read_bytes())
    loans = {
        b["loan_id"]: b for b in orjson.loads((GOLDEN_DIR / "expected_loans.json").read_bytes())
    }
    behaviour = {t["loan_id"]: t["behaviour"] for t in truth["loans"]}
    assert set(behaviour.values()) >= {
        "commuter",
        "sleeps_away",
        "night_drift",
        "unmarked_lot",
        "pawnshop",
        "leaves_zone",
        "tow",
        "tamper",
        "high_mileage",
    }

    def codes(loan_id: str) -> set[str]:
        return {r["code"] for r in loans[loan_id]["risk"]["reasons"]}

    expected_codes = {
        "sleeps_away": {"home_mismatch"},
        "night_drift": {"night_parking_drift"},
        "unmarked_lot": {"risk_site_candidate"},
        "pawnshop": {"risk_site_dwell"},
        "leaves_zone": {"zone_left"},
        "tow": {"tow"},
        "tamper": {"tamper", "power_cut"},  # the simulator's tamper cars do one or both
        "high_mileage": {"mileage_high"},
    }
    for t in truth["loans"]:
        loan_id, kind = t["loan_id"], t["behaviour"]
        if kind == "commuter":
            assert loans[loan_id]["risk"]["tier"] == "low", loan_id
            home = next(p for p in loans[loan_id]["places"] if p["kind"] == "home")
            true_home = t["true_home"]
            assert haversine_m(home["lat"], home["lon"], true_home["lat"], true_home["lon"]) < 150
        else:
            assert expected_codes[kind] & codes(loan_id), (loan_id, kind, codes(loan_id))
            assert loans[loan_id]["risk"]["score"] > 0
    found = orjson.loads((GOLDEN_DIR / "expected_candidates.json").read_bytes())
    for lot in truth["unmarked_lots"]:
        assert any(haversine_m(c["lat"], c["lon"], lot["lat"], lot["lon"]) < 150 for c in found)
