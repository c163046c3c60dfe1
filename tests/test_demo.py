"""`pledgewatch demo` as a newcomer runs it: a private broker, the example city, alerts printed."""

from __future__ import annotations

import multiprocessing
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from engine.cli.demo import EXAMPLE, DemoError, run_demo
from engine.cli.http_address import HttpAddress
from simulator.harness.broker import answers
from tests.brokers import REPO, free_port

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def test_demo_starts_its_own_broker_and_prints_alerts() -> None:
    nobody = f"mqtt://127.0.0.1:{free_port()}"  # nothing answers there: a private broker
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "demo",
            "--mqtt-url",
            nobody,
            "--http",
            f"127.0.0.1:{free_port()}",
            "--play-s",
            "8",
            "--duration",
            "20",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "started a private Mosquitto" in out
    rows = [line for line in out.splitlines() if line[:4].isdigit() and "T" in line[:12]]
    types = {row.split()[2] for row in rows}
    for expected in ["zone.left", "pledge.risk_site_dwell", "tow.suspected", "tamper"]:
        assert expected in types, (expected, out[-3000:])
    assert f"{len(rows)} alerts." in out


def test_demo_offline_replays_the_example_city() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--offline"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pledge.tracker_separation" in done.stdout
    assert "replay:" in done.stderr


def test_a_failed_setup_stops_everything_the_demo_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A real failure half-way through the setup: the engine refuses a fence of the example
    # (a polygon ring of two points), after the broker, the service and the receiver started.
    example = tmp_path / "city"
    shutil.copytree(EXAMPLE, example)
    doc = orjson.loads((example / "fences.geojson").read_bytes())
    doc["features"].append(
        {
            "type": "Feature",
            "id": "broken",
            "geometry": {"type": "Polygon", "coordinates": [[[121.4, 31.2], [121.5, 31.3]]]},
            "properties": {"name": "Broken", "kind": "zone"},
        }
    )
    (example / "fences.geojson").write_bytes(orjson.dumps(doc))
    http_port = free_port()
    nobody = f"mqtt://127.0.0.1:{free_port()}"  # the demo starts a private broker
    before = set(threading.enumerate())

    with pytest.raises(DemoError, match="refused the example's fences"):
        run_demo(nobody, HttpAddress("127.0.0.1", http_port), 1.0, 1.0, example=example)

    out = capsys.readouterr().out
    found = re.search(r"private Mosquitto on 127\.0\.0\.1:(\d+)", out)
    assert found, out
    assert not answers("127.0.0.1", http_port), "the API still listens"
    assert not answers("127.0.0.1", int(found[1])), "the private broker still runs"
    assert multiprocessing.active_children() == []  # the engine's MQTT child is gone

    def leaked() -> list[str]:
        return sorted(t.name for t in set(threading.enumerate()) - before if t.is_alive())

    deadline = time.monotonic() + 5
    while leaked() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leaked() == []  # engine, dispatcher, HTTP server, webhook receiver
