"""schemathesis against the real API: `/openapi.json` of the app served by uvicorn over TCP.

`schemathesis run` (its CLI, in a child process) calls every operation of the document with
generated requests, valid and invalid (generation mode `all`): the explicit examples, the
coverage phase (boundary and wrong-type values for every keyword), hypothesis fuzzing, and
the stateful phase (the links it infers, e.g. PUT a fence then GET it). Its checks: no
response is a 500 (`not_a_server_error`), and every error response (4xx, 5xx) is an RFC
9457 problem (`problem_json`, in `tests.fuzz.schemathesis_hooks`).

The store is seeded with the example city's fences and loans and some of its readings
first, so lists and gets serialise real rows, not only empty pages. Bounded for CI by
`--max-examples` per operation (100, about 30 s); `PLEDGEWATCH_SCHEMATHESIS_EXAMPLES=1000`
makes a long run.

schemathesis's pytest integration (`schemathesis.pytest.from_fixture`) cannot be used
here: 4.32.5 sets `request.node._nodeid`, which pytest 9 no longer has.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from lending.consumer import LendingConsumer
from tests.test_api import TOKEN, QueueSource, run_live

REPO = Path(__file__).resolve().parent.parent
CITY = REPO / "engine" / "examples" / "city"
MAX_EXAMPLES = int(os.environ.get("PLEDGEWATCH_SCHEMATHESIS_EXAMPLES", "100"))
SEED_READINGS = 200
CI_SEED = 9457
RUN_TIMEOUT_S = 120 + 3 * MAX_EXAMPLES
SUMMARY_RE = re.compile(r"(\d+) generated, \1 passed")


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API over real TCP (with the lending consumer), on a store holding the example city
    and some of its readings."""
    for live in run_live(tmp_path_factory.mktemp("schemathesis"), LendingConsumer()):
        _seed(live.url, live.source)
        yield live.url


def _seed(url: str, source: QueueSource) -> None:
    """The example city's fences and loans through the API, its readings through the engine."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
        fences = http.post("/v1/fences:import", content=(CITY / "fences.geojson").read_bytes())
        assert fences.status_code == 200, fences.text
        loans = http.post("/v1/loans:import", content=(CITY / "loans.json").read_bytes())
        assert loans.status_code == 200, loans.text
    with (CITY / "readings.jsonl").open("rb") as lines:
        for _, line in zip(range(SEED_READINGS), lines, strict=False):
            record = orjson.loads(line)
            payload = record["payload"]
            if isinstance(payload, str):
                payload = payload.encode("utf-8", "surrogateescape")
            source.publish(record["topic"], payload)
    source.publish("telematics/bad id/gps", b"not json")  # a dead letter for /v1/rejects


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_schemathesis_finds_no_500_and_only_problem_errors(api_url: str, tmp_path: Path) -> None:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{api_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--checks",
        "not_a_server_error,problem_json",
        "--mode",
        "all",
        "--exclude-path",
        "/v1/live",  # an endless stream (tests/test_live_feed.py tests it)
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    if os.environ.get("CI"):  # CI replays the same cases (see tests/conftest.py); others explore
        command += ["--seed", str(CI_SEED)]
    # Run from the test's own directory: schemathesis keeps a crash cache in its cwd.
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {
        **os.environ,
        "PYTHONPATH": pythonpath,
        "SCHEMATHESIS_HOOKS": "tests.fuzz.schemathesis_hooks",
    }
    ran = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    output = ran.stdout + ran.stderr
    print(output)  # shown by `pytest -s`, or with the failure
    assert ran.returncode == 0, output
    summary = SUMMARY_RE.search(output)
    assert summary is not None, output
    assert int(summary[1]) > 100, summary[0]  # every operation called, many times
