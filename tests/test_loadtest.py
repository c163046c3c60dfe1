"""`pledgewatch loadtest` end to end: it starts a private Mosquitto and `pledgewatch run`,
publishes a small fleet with scenario cars, receives the signed webhooks, and reports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from engine.core.config import Config
from simulator.loadtest.command import LoadtestUsageError, read_rules
from tests.brokers import REPO

# Every kind of the default mix that plays in 20 s of wall time (goes_silent needs a minute:
# its 30 min silence must last the 30 s offline floor of wall time).
KINDS = (
    "stays_home",
    "leaves_zone",
    "towed",
    "pawnshop_dwell",
    "tracker_removed",
    "vin_swap",
    "spoofed_jump",
    "power_cut",
)
MIX = ",".join(f"{k}=2.5" for k in KINDS)  # one car each among 40
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = [pytest.mark.slow, pytest.mark.mqtt]


def _command(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "engine.cli",
        "loadtest",
        "--devices",
        "40",
        "--speed",
        "180",
        "--mix",
        MIX,
        "--report",
        str(out),
        *extra,
    ]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}


def test_short_loadtest_finds_every_scenario_alert_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = subprocess.run(
        _command(out, "--duration", "20", "--drain-s", "20"),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "setup took" in done.stderr
    assert "processed" in done.stderr  # the live progress line
    doc = orjson.loads((out / "report.json").read_bytes())
    assert doc["status"] == "complete"
    assert doc["engine"]["mode"] == "started"
    assert doc["engine"]["exit_status"] == 0
    assert set(doc["plan"]["scenarios"]) == set(KINDS), doc["plan"]["skipped"]

    quality = doc["quality"]
    assert quality["required"] >= 2 * len(KINDS)
    assert quality["recall"] == 1.0, quality["misses"]
    assert quality["false_alerts"] == 0, quality["false_examples"]
    assert quality["false_per_1000_car_hours"] == 0.0
    assert quality["car_hours"] > 0

    tp = doc["throughput"]
    assert tp["published_readings"] > 300
    assert tp["processed_readings"] == tp["published_readings"]
    assert tp["published_rps_mean"] > 0

    reading = doc["latency"]["by_kind"]["reading"]["total_ms"]
    assert reading["count"] >= len(KINDS)
    assert 0 < reading["p50"] <= reading["p95"] <= reading["p99"] <= reading["max"] < 30_000
    assert doc["latency"]["not_timed"] == 0
    assert doc["latency"]["windows"]

    alerts = doc["alerts"]
    assert alerts["receiver"]["refused"] == 0
    assert alerts["received_unique"] == sum(alerts["raised_by_engine"].values())
    assert alerts["received_unique"] >= quality["required"]

    res = doc["resources"]
    assert res["engine_cpu_cores_mean"] > 0
    assert 10 * 2**20 < res["engine_rss_peak"] < 2**31
    assert len(doc["series"]["t"]) >= 15  # sampled once a second
    assert doc["setup"]["loans"] == doc["plan"]["cars"]  # one loan per car in this mix

    assert set(doc["charts"]) == {"throughput", "latency", "map"}
    for name in doc["charts"].values():
        png = (out / name).read_bytes()
        assert png.startswith(PNG)
        assert len(png) > 10_000
    summary = (out / "report.md").read_text()
    assert "Recall 100.0 %" in summary
    assert "![map](map.png)" in summary


def test_ctrl_c_stops_the_run_and_writes_a_partial_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    with subprocess.Popen(
        _command(out, "--duration", "60"), cwd=REPO, env=_env(), stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stderr is not None
            seen = ""
            deadline = time.monotonic() + 120
            while "publish " not in seen and time.monotonic() < deadline:
                seen += proc.stderr.readline()  # until the live line shows publishing
            time.sleep(3)
            proc.send_signal(signal.SIGINT)
            rest = proc.stderr.read()
            code = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 130, rest[-3000:]
    assert "partial report" in rest
    doc = orjson.loads((out / "report.json").read_bytes())
    assert doc["status"] == "interrupted while publishing"
    assert doc["publish"]["stopped"] is True
    assert doc["throughput"]["published_readings"] > 0
    assert doc["engine"]["exit_status"] == 0  # stopped by the load test, cleanly
    assert doc["quality"]["horizon_ms"] < doc["plan"]["event_end"]
    assert (out / "throughput.png").exists()


def test_ramp_steps_the_rate_up_and_reports_the_highest_sustained(tmp_path: Path) -> None:
    out = tmp_path / "ramp"
    command = [
        sys.executable,
        "-m",
        "engine.cli",
        "loadtest",
        "--devices",
        "60",
        "--ramp",
        "--ramp-step-s",
        "5",
        "--ramp-max-steps",
        "2",
        "--max-p99-ms",
        "60000",
        "--report",
        str(out),
    ]
    done = subprocess.run(
        command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    ramp = orjson.loads((out / "report.json").read_bytes())["ramp"]
    steps = ramp["steps"]
    assert [s["step"] for s in steps] == [1, 2]
    assert all(s["verdict"] == "sustained" for s in steps), steps
    assert ramp["stopped_because"] == "reached --ramp-max-steps 2"
    # Each step asks for 1.5x what the last one published; the publisher gets close.
    assert steps[1]["published_msgs_per_s"] > steps[0]["published_msgs_per_s"]
    assert ramp["sustained_msgs_per_s"] == steps[1]["published_msgs_per_s"]
    assert (out / "throughput.png").read_bytes().startswith(PNG)


def test_a_bad_rules_file_is_a_usage_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_bytes(orjson.dumps({"zone_grace_s": 60, "shock_gs": 3.0}))
    base = [sys.executable, "-m", "engine.cli", "loadtest", "--report", str(tmp_path / "r")]
    for extra, says in [
        (["--config", str(rules)], "use them with --api"),
        (["--api", "http://127.0.0.1:9", "--config", str(rules)], "unknown rule settings"),
        (["--api", "http://127.0.0.1:9", "--config", str(tmp_path / "none")], "cannot read"),
    ]:
        done = subprocess.run(
            [*base, *extra], cwd=REPO, env=_env(), capture_output=True, text=True, check=False
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("pledgewatch: "), done.stderr
        assert says in done.stderr, done.stderr
    rules.write_bytes(orjson.dumps({"zone_grace_s": "60"}))
    with pytest.raises(LoadtestUsageError, match="'zone_grace_s': expected a whole number"):
        read_rules(str(rules))
    rules.write_bytes(orjson.dumps({"zone_grace_s": 60, "shock_g": 3, "dwell_by_category_s": {}}))
    assert read_rules(str(rules)) == Config(zone_grace_s=60, shock_g=3.0, dwell_by_category_s={})
