"""`pledgewatch demo` as a newcomer runs it: a private broker, the example city, alerts printed."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
