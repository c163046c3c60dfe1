"""Golden scenarios: recorded simulator runs replayed through the engine (STYLE "Golden scenarios").

Each `tests/golden/<name>/` holds a seeded simulator run (`input.jsonl`, `fences.geojson`,
`loans.json`), its `ground_truth.json` and the replay's `expected_alerts.jsonl`. For each:
the replay equals the recorded alerts exactly (ids included); the ground truth holds (every
required alert, with its count and event-time window; nothing outside required + allowed;
nothing at all from background cars); the input counters match what was injected; and a
second replay is identical. Regenerate on purpose only: `python -m simulator.golden --regenerate`.
"""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path

import orjson
import pytest

import engine.runtime.replay
from simulator.car import ScenarioKind
from simulator.golden import ALL_SCENARIOS, Replayed, replay_files
from simulator.truth import GroundTruth, Role, check

GOLDEN = Path(__file__).resolve().parent / "golden"
NAMES = sorted(p.name for p in GOLDEN.iterdir() if (p / "input.jsonl").is_file())
REGENERATE = "python -m simulator.golden --regenerate"


def _replay(name: str) -> Replayed:
    d = GOLDEN / name
    return replay_files(d / "input.jsonl", d / "fences.geojson", d / "loans.json")


@cache
def _replayed(name: str) -> Replayed:
    return _replay(name)


@cache
def _truth(name: str) -> GroundTruth:
    return GroundTruth.from_json(orjson.loads((GOLDEN / name / "ground_truth.json").read_bytes()))


def _expected_lines(name: str) -> list[bytes]:
    return (GOLDEN / name / "expected_alerts.jsonl").read_bytes().splitlines(keepends=True)


def _summary(lines: list[bytes]) -> list[str]:
    out = []
    for line in lines:
        a = orjson.loads(line)
        out.append(f"{a['ts']} {a['type']} {a['device_id'] or a['loan_id']} {a['fence_id']}")
    return out


def test_every_scenario_has_a_golden() -> None:
    assert set(NAMES) == {k.value for k in ScenarioKind} | {ALL_SCENARIOS}


@pytest.mark.parametrize("name", NAMES)
def test_replay_equals_expected_alerts(name: str) -> None:
    got = _replayed(name).lines
    expected = _expected_lines(name)
    assert _summary(got) == _summary(expected), f"alerts changed; if on purpose: {REGENERATE}"
    assert got == expected, f"alert contents changed; if on purpose: {REGENERATE}"


@pytest.mark.parametrize("name", NAMES)
def test_ground_truth_is_met(name: str) -> None:
    problems = check(_truth(name), _replayed(name).alerts)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_input_counters_match_what_was_injected(name: str) -> None:
    counters = _replayed(name).replay.pipeline.counters
    want = _truth(name).counts
    assert dict(counters.readings) == want.readings
    assert sum(counters.duplicates.values()) == want.duplicates
    assert sum(counters.late.values()) == want.late
    assert counters.missing == want.missing
    assert dict(counters.rejected) == want.rejects


@pytest.mark.parametrize("name", NAMES)
def test_replaying_twice_gives_identical_output(name: str) -> None:
    assert _replay(name).lines == _replayed(name).lines


def test_background_cars_raise_nothing_in_the_combined_city() -> None:
    truth = _truth(ALL_SCENARIOS)
    quiet = truth.quiet_device_ids | truth.quiet_loan_ids
    assert quiet
    alerts = _replayed(ALL_SCENARIOS).alerts
    assert not [a for a in alerts if a["device_id"] in quiet or a["loan_id"] in quiet]


def test_combined_city_requires_the_union_of_the_scenarios() -> None:
    """Every scenario car of the combined city requires what its own golden requires."""
    combined = _truth(ALL_SCENARIOS)
    devices = {d: c.scenario for c in combined.cars for d in c.device_ids}
    loans = {ln: c.scenario for c in combined.cars for ln in c.loan_ids}
    vins = {c.vin: c.scenario for c in combined.cars}

    def scenario_of(e_device: str | None, e_loan: str | None, e_vin: str | None) -> str | None:
        if e_device is not None:
            return devices[e_device]
        if e_loan is not None:
            return loans[e_loan]
        return vins[e_vin] if e_vin is not None else None

    union = sorted(
        (scenario_of(e.device_id, e.loan_id, e.vin) or "", e.type) for e in combined.required
    )
    alone = sorted(
        (kind.value, e.type) for kind in ScenarioKind for e in _truth(kind.value).required
    )
    assert union == alone
    scenario_cars = [c for c in combined.cars if c.role is Role.SCENARIO]
    assert sorted(c.scenario or "" for c in scenario_cars) == sorted(k.value for k in ScenarioKind)


@pytest.mark.parametrize(
    ("name", "absent"),
    [
        (ScenarioKind.BRIEF_VISIT.value, "pledge.risk_site_dwell"),
        (ScenarioKind.QUICK_EXIT.value, "zone.left"),
        (ScenarioKind.FLATBED_TOW.value, "shock"),
        (ScenarioKind.STAYS_HOME.value, "geofence.exit"),
    ],
)
def test_near_misses_stay_silent(name: str, absent: str) -> None:
    """A visit shorter than the dwell, a step out shorter than the grace: no alert for them."""
    assert not [a for a in _replayed(name).alerts if a["type"] == absent]


def test_clock_in_the_future_is_refused_by_its_received_at() -> None:
    """A replay judges "in the future" by a line's `received_at` only (DESIGN §7): the junk
    reading 8 h ahead carries it, and is refused as it would be live."""
    lines = (GOLDEN / ALL_SCENARIOS / "input.jsonl").read_bytes().splitlines()
    stamped = [orjson.loads(x) for x in lines if b'"received_at"' in x]
    assert len(stamped) == 1
    assert stamped[0]["payload"]["ts"] - stamped[0]["received_at"] == 8 * 3_600_000
    assert _truth(ALL_SCENARIOS).counts.rejects["future_timestamp"] == 1
    assert _replayed(ALL_SCENARIOS).replay.pipeline.counters.rejected["future_timestamp"] == 1


def test_batch_size_does_not_change_the_alerts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.runtime.replay, "BATCH_LINES", 7)
    assert _replay(ALL_SCENARIOS).lines == _expected_lines(ALL_SCENARIOS)


def test_cli_replay_prints_the_expected_alerts(tmp_path: Path) -> None:
    d = GOLDEN / ALL_SCENARIOS
    rejects = tmp_path / "rejects.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "replay",
            str(d / "input.jsonl"),
            "--fences",
            str(d / "fences.geojson"),
            "--loans",
            str(d / "loans.json"),
            "--rejects",
            str(rejects),
            "--no-lending",  # the detection goldens; the lending goldens have their own
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert result.stdout.splitlines(keepends=True) == _expected_lines(ALL_SCENARIOS)
    reasons: dict[str, int] = {}
    for line in rejects.read_bytes().splitlines():
        reason = orjson.loads(line)["reason"]
        reasons[reason] = reasons.get(reason, 0) + 1
    assert reasons == _truth(ALL_SCENARIOS).counts.rejects


@pytest.mark.parametrize("name", NAMES)
def test_golden_input_stays_small(name: str) -> None:
    limit = 600_000 if name == ALL_SCENARIOS else 300_000
    assert (GOLDEN / name / "input.jsonl").stat().st_size < limit
