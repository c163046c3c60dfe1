"""The fuzz targets in CI (`tests/fuzz`): the corpus replayed, then a short fuzzing run.

First every committed seed (`tests/fuzz/corpus/<target>/`) and every generated hostile seed
(`tests.fuzz.seeds`, the big ones only in memory) goes through its target's contract
check. Then each target is fuzzed for `PLEDGEWATCH_FUZZ_SECONDS` (default 15) by atheris
(libFuzzer, coverage-guided), all three at once, from that corpus; CI uses a fixed seed, so
a red run is reproducible. A long session: `.venv/bin/python -m tests.fuzz --minutes 30`.

The findings that the fuzzers and schemathesis made are pinned below by name.
"""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from geofence.fence import FenceError, parse_feature_collection, parse_fence
from lending.model import LoanError, parse_loan, parse_loans
from tests.fuzz.__main__ import CORPUS, REPO, TARGET_NAMES, worker_command
from tests.fuzz.seeds import nest, seeds_for
from tests.fuzz.targets import TARGETS

FUZZ_SECONDS = float(os.environ.get("PLEDGEWATCH_FUZZ_SECONDS", "15"))
CI_SEED = 9457
SHOWN_LINES = 60


def corpus_inputs(target: str) -> dict[str, bytes]:
    """The committed seeds of a target, and the generated ones (big ones are not files)."""
    inputs = {path.name: path.read_bytes() for path in sorted((CORPUS / target).iterdir())}
    for name, data in seeds_for(target):
        inputs.setdefault(name, data)
    return inputs


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_every_seed_keeps_the_contract(target: str) -> None:
    inputs = corpus_inputs(target)
    assert len(inputs) > 40
    broken = []
    for name, data in inputs.items():
        try:
            TARGETS[target].check(data)
        except Exception as exc:  # noqa: BLE001  # every breach is listed, not only the first
            broken.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
    assert not broken, "\n".join(broken)


def test_the_corpus_holds_real_and_hostile_inputs() -> None:
    names = {target: set(corpus_inputs(target)) for target in TARGET_NAMES}
    assert any(n.startswith("real-city") for n in names["decode"])
    assert any(n.startswith("real-") and "city" not in n for n in names["decode"])  # golden
    assert {"deep-array-1000", "nan-text", "invalid-utf8", "nul-byte-raw"} <= names["decode"]
    assert {"array-10k-ints", "huge-int-ts", "too-large", "mixed-types"} <= names["decode"]
    assert {"real-city-collection", "deep-coordinates", "ring-10k"} <= names["fence"]
    assert {"real-city-loans", "deep-status", "devices-10k"} <= names["loan"]


# -- coverage-guided fuzzing, a short run


@dataclass
class Worker:
    """One target's fuzzing process and where it keeps its findings and output."""

    process: subprocess.Popen[bytes]
    out: Path
    log: Path


@pytest.fixture(scope="module")
def fuzzers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Worker]]:
    """Every target fuzzed at once, each in its own process."""
    seed = CI_SEED if os.environ.get("CI") else None
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    workers: dict[str, Worker] = {}
    for target in TARGET_NAMES:
        out = tmp_path_factory.mktemp(f"fuzz-{target}")
        log = out / "fuzz.log"
        command = worker_command(target, out, FUZZ_SECONDS, seed=seed)
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        workers[target] = Worker(process, out, log)
    try:
        yield workers
    finally:
        for worker in workers.values():
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()


@pytest.mark.slow
@pytest.mark.timeout(FUZZ_SECONDS + 180)
@pytest.mark.parametrize("target", TARGET_NAMES)
def test_fuzzing_finds_no_breach(target: str, fuzzers: dict[str, Worker]) -> None:
    worker = fuzzers[target]
    code = worker.process.wait(timeout=FUZZ_SECONDS + 120)
    if code == 0:
        return
    findings = sorted(p for p in worker.out.iterdir() if p.name.startswith(("crash-", "timeout-")))
    shown = [f"{p}: {p.read_bytes()[:300]!r}" for p in findings]
    tail = worker.log.read_text(errors="replace").splitlines()[-SHOWN_LINES:]
    pytest.fail(
        f"fuzzing {target} exited {code}; findings:\n"
        + "\n".join(shown or ["(none written)"])
        + f"\nreproduce: .venv/bin/python -m tests.fuzz replay --target {target} FILE\n"
        + "\n".join(tail),
        pytrace=False,
    )


# -- findings, pinned


DEEP = orjson.loads(nest("0", 1000))


@pytest.mark.parametrize(
    ("feature", "field"),
    [
        ({"type": DEEP}, None),
        ({"type": "Feature", "id": DEEP, "geometry": None}, "id"),
        (
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": DEEP},
                "properties": {"kind": "zone", "radius_m": 5},
            },
            "geometry",
        ),
        ({"type": "Feature", "geometry": {}, "properties": {"kind": DEEP}}, "properties.kind"),
        (
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [0, 0]},
                "properties": {"kind": "zone", "radius_m": 5, "dwell_s": -(10**5000)},
            },
            "properties.dwell_s",
        ),
    ],
)
def test_a_value_too_deep_or_too_long_to_show_is_a_fence_error(
    feature: object, field: str | None
) -> None:
    """Found by fuzzing: `repr` of a 1000-level array raised RecursionError (and of an
    integer past 4300 digits ValueError) inside the error message: a 500 from the API."""
    with pytest.raises(FenceError) as caught:
        parse_fence("f", feature)
    assert caught.value.field == field
    with pytest.raises(FenceError) as in_collection:
        parse_feature_collection({"type": "FeatureCollection", "features": [{"id": DEEP}]})
    assert in_collection.value.field == "features[0].id"
    with pytest.raises(FenceError) as bad_id:
        parse_fence(10**5000, feature)  # type: ignore[arg-type]  # callers may break the contract
    assert bad_id.value.field == "fence_id"


def test_a_circle_too_small_to_have_an_area_is_refused() -> None:
    """Found by fuzzing: radius_m 5e-324 (> 0) was accepted as a zero-area polygon."""
    circle = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [121.5, 31.2]},
        "properties": {"kind": "zone", "radius_m": 5e-324},
    }
    with pytest.raises(FenceError, match="too small") as caught:
        parse_fence("tiny", circle)
    assert caught.value.field == "properties.radius_m"
    circle["properties"] = {"kind": "zone", "radius_m": 0.01}
    assert parse_fence("cm", circle).geometry.area > 0.0


LOAN = {"vin": "LSVAB4182E2123456", "device_ids": ["trk-1"]}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"status": []}, "status"),  # unhashable: TypeError, a 500 from PUT /v1/loans
        ({"status": {}}, "status"),
        ({"vin": DEEP}, "vin"),
        ({"vehicle": {"year": DEEP}}, "vehicle.year"),
        ({"principal": math.nan}, "principal"),  # NaN passed `value < 0`
        ({"principal": math.inf}, "principal"),
        ({"principal": 10**400}, "principal"),  # float() overflowed
        ({"vehicle": {"value": -math.inf}}, "vehicle.value"),
    ],
)
def test_loan_documents_that_broke_the_parser_are_loan_errors(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(LoanError) as caught:
        parse_loan("L-1", {**LOAN, **changes})
    assert caught.value.field == field
    with pytest.raises(LoanError) as in_array:
        parse_loans([{"loan_id": "L-1", **LOAN, **changes}])
    assert in_array.value.field == f"loans[0].{field}"


def test_a_loan_id_that_is_not_a_string_is_a_loan_error() -> None:
    with pytest.raises(LoanError) as caught:
        parse_loan(DEEP, LOAN)  # type: ignore[arg-type]  # callers may break the contract
    assert caught.value.field == "loan_id"
    with pytest.raises(LoanError, match="loan_id"):
        parse_loans([{"loan_id": DEEP}])
