"""`pledgewatch loadtest --jt808-share`: half the fleet's trackers speak JT/T 808 over TCP to a
gateway the load test starts (publishing into the private Mosquitto the engine reads); the
engine must see their readings under `jt808-…` ids, the gateway must count what they did,
and the judging must find every expected alert as it does over MQTT."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.brokers import REPO
from tests.test_loadtest import KINDS, MIX, _env

# With this seed half the trackers put every scenario kind with an alert on JT/T 808 but
# vin_swap (its VIN only MQTT carries): the stories of the alarm bits (shock, tamper,
# power) and of fixes alone (zones, dwell, jump, separation) all go through the gateway.
SEED = "19"
OVER_JT808 = {
    "shock",
    "tow.suspected",
    "tamper",
    "power.disconnected",
    "gps.impossible_travel",
    "pledge.risk_site_dwell",
    "pledge.tracker_separation",
    "zone.left",
}

pytestmark = [pytest.mark.slow, pytest.mark.mqtt]


def _loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "loadtest", *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_half_the_trackers_over_jt808_are_judged_like_the_rest(tmp_path: Path) -> None:
    out, db = tmp_path / "report", tmp_path / "engine.db"
    done = _loadtest(
        *("--devices", "40", "--speed", "180", "--duration", "20", "--drain-s", "20"),
        *("--mix", MIX, "--seed", SEED, "--jt808-share", "0.5"),
        *("--report", str(out), "--db-url", f"sqlite:///{db}"),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "connecting 20 JT/T 808 terminals to the gateway" in done.stderr
    doc = orjson.loads((out / "report.json").read_bytes())
    assert doc["status"] == "complete"
    assert doc["spec"]["jt808_share"] == 0.5
    quality = doc["quality"]
    assert quality["recall"] == 1.0, quality["misses"]
    assert quality["false_alerts"] == 0, quality["false_examples"]
    tp = doc["throughput"]
    assert tp["processed_readings"] == tp["published_readings"]
    assert doc["latency"]["not_timed"] == 0
    assert doc["latency"]["by_kind"]["reading"]["total_ms"]["count"] >= len(OVER_JT808)

    jt = doc["jt808"]
    assert jt["trackers"] == 20  # half of 40
    stories = set(jt["trackers_by_story"]) - {"quiet"}
    assert stories == set(KINDS) - {"vin_swap"}, jt["trackers_by_story"]
    assert 0 < jt["readings"] < tp["published_readings"]
    terminals, gateway = jt["terminals"], jt["gateway"]
    assert terminals["ready"] == gateway["registrations"] == gateway["authentications"] == 20
    assert terminals["acked"] == terminals["reports_sent"] == gateway["reports_acked"] > 0
    assert terminals["refused"] == terminals["lost"] == terminals["unanswered_at_end"] == 0
    assert terminals["ack_ms"]["p99"] is not None
    assert gateway["rejected"] == {}
    assert sum(gateway["readings_published"].values()) == jt["readings"]
    assert set(gateway["readings_published"]) == {"gps", "status", "vib"}
    frames = gateway["frames"]
    assert frames["0x0100"] == frames["0x0102"] == 20
    assert frames["0x0200"] + frames["0x0704"] == gateway["reports_acked"]
    assert frames["0x0002"] > 0  # status heartbeats of unchanged state
    summary = (out / "report.md").read_text()
    assert "## JT/T 808 trackers" in summary
    assert "20 registrations, 20 authentications" in summary
    assert (out / "gateway.log").exists()

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        streams = dict(
            conn.execute(
                "SELECT stream, count(*) FROM telemetry WHERE device_id LIKE 'jt808-%' "
                "GROUP BY stream"
            ).fetchall()
        )
        devices = conn.execute(
            "SELECT count(DISTINCT device_id) FROM telemetry WHERE device_id LIKE 'jt808-%'"
        ).fetchone()[0]
        alerts = {
            row[0] for row in conn.execute("SELECT type FROM alerts WHERE device_id LIKE 'jt808-%'")
        }
    assert devices == 20
    assert set(streams) == {"gps", "status", "vib"}
    # the engine kept one row per (device, stream, ts): every reading, less resent ones
    assert sum(streams.values()) <= jt["readings"] <= sum(streams.values()) + 10
    assert alerts >= OVER_JT808, OVER_JT808 - alerts


def test_a_share_outside_0_to_1_is_a_usage_error(tmp_path: Path) -> None:
    done = _loadtest("--jt808-share", "1.5", "--report", str(tmp_path / "r"))
    assert done.returncode == 2, done.stderr
    assert "--jt808-share must be from 0 to 1" in done.stderr
