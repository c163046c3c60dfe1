"""`pledgewatch replay` end to end: files in, alerts and rejects out, as DESIGN §7 says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest

from alerts.model import Alert
from devices.readings import Reject
from engine.core.config import Config
from engine.runtime.replay import Replay, decode_line
from geofence.fence import load_fences
from geofence.index import FenceIndex
from lending.model import parse_loans
from tests.factories import HOME, T0, VIN, offset

PLEDGEWATCH = [sys.executable, "-m", "engine.cli"]
FAR = offset(*HOME, 2000, 0)


def gps(dev: str, t_s: int, at: tuple[float, float], **kw: object) -> dict[str, object]:
    return {"ts": T0 + t_s * 1000, "lat": at[0], "lon": at[1], **kw}


def line(topic: str, payload: object, **extra: object) -> bytes:
    return orjson.dumps({"topic": topic, "payload": payload, **extra})


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    fences = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "home",
                "geometry": {"type": "Point", "coordinates": [HOME[1], HOME[0]]},
                "properties": {"kind": "zone", "radius_m": 1000, "name": "Home"},
            }
        ],
    }
    loans = [{"loan_id": "L-1", "vin": VIN, "device_ids": ["trk-1"], "zone_ids": ["home"]}]
    readings = [
        line("telematics/trk-1/gps", gps("trk-1", 0, HOME, seq=1)),
        line(
            "telematics/trk-1/gps", [gps("trk-1", 60, FAR, seq=2), {"ts": T0, "lat": 95, "lon": 1}]
        ),
        line("telematics/trk-1/gps", gps("trk-1", 60, FAR, seq=2)),  # duplicate
        b'{"topic": "telematics/trk-1/gps", "payload": {"ts": 1, "lat": NaN, "lon": 1}}',
        line("telematics/trk-1/gps", "this is not json"),
        line("telematics/bad id/gps", gps("x", 0, HOME)),
        # over 5 min past the time it was received at (1 min past its predecessor's event time)
        line("telematics/trk-1/gps", gps("trk-1", 4000, FAR), received_at=T0 + 60_000),
        b"not a line of json",
        line(
            "owntracks/alice/phone",
            {"_type": "location", "lat": 31.0, "lon": 121.0, "tst": T0 // 1000 + 90},
        ),
        *(line("telematics/trk-1/gps", gps("trk-1", t, FAR, seq=t)) for t in range(120, 480, 60)),
        line("telematics/trk-1/vib", {"ts": T0 + 500_000, "g": 3.1}),
    ]
    paths = {
        "fences": tmp_path / "fences.geojson",
        "loans": tmp_path / "loans.json",
        "readings": tmp_path / "readings.jsonl",
    }
    paths["fences"].write_bytes(orjson.dumps(fences))
    paths["loans"].write_bytes(orjson.dumps(loans))
    paths["readings"].write_bytes(b"\n".join(readings) + b"\n")
    return paths


def replay(paths: dict[str, Path], *extra: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [*PLEDGEWATCH, "replay", str(paths["readings"]), "--fences", str(paths["fences"])]
    cmd += ["--loans", str(paths["loans"]), *extra]
    return subprocess.run(cmd, capture_output=True, check=False, timeout=60)


def test_replay_writes_alerts_rejects_and_summary(inputs: dict[str, Path], tmp_path: Path) -> None:
    rejects_path = tmp_path / "rejects.jsonl"
    done = replay(inputs, "--rejects", str(rejects_path))
    assert done.returncode == 0, done.stderr.decode()
    alerts = [orjson.loads(x) for x in done.stdout.splitlines()]
    # the lending consumer moves the loan to `high` on the critical zone.left (DESIGN §8),
    # right after the alert that raised it
    types = ["geofence.exit", "zone.left", "risk.tier_changed", "shock"]
    assert [a["type"] for a in alerts] == types
    assert alerts[2]["details"]["from"] == "low"
    assert alerts[2]["details"]["to"] == "high"
    assert alerts[2]["details"]["reasons"][0]["alert_id"] == alerts[1]["id"]
    assert alerts[1]["ts"] == "2026-11-30T00:59:20Z"  # 60 s out + 300 s grace
    assert alerts[1]["loan_id"] == "L-1"
    assert alerts[1]["vin"] == VIN
    rejects = [orjson.loads(x) for x in rejects_path.read_bytes().splitlines()]
    reasons = sorted(r["reason"] for r in rejects)
    assert reasons == sorted(
        ["out_of_range", "out_of_range", "not_json", "bad_topic", "future_timestamp", "not_json"]
    )
    assert all(r["detail"] for r in rejects)
    summary = done.stderr.decode()
    assert "duplicates: gps=1" in summary
    assert "readings:   gps=9, vib=1" in summary  # 2 trk-1 + owntracks + 6 trk-1
    assert "bad_topic=1" in summary


def test_replay_twice_is_identical(inputs: dict[str, Path]) -> None:
    first, second = replay(inputs), replay(inputs)
    assert first.stdout == second.stdout
    assert first.stdout.count(b"\n") == 4


def test_replay_without_lending_raises_no_tier_change(inputs: dict[str, Path]) -> None:
    done = replay(inputs, "--no-lending")
    assert done.returncode == 0, done.stderr.decode()
    types = [orjson.loads(x)["type"] for x in done.stdout.splitlines()]
    assert types == ["geofence.exit", "zone.left", "shock"]


def test_replay_lending_config_is_read_and_checked(inputs: dict[str, Path], tmp_path: Path) -> None:
    # zone_left worth 10 points and no critical floor: the loan stays `low`
    calm = tmp_path / "calm.toml"
    calm.write_text("[risk]\ncritical_floor_days = 0.0\n[risk.points]\nzone_left = 10\n")
    done = replay(inputs, "--lending-config", str(calm))
    assert done.returncode == 0, done.stderr.decode()
    assert b"risk.tier_changed" not in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[risk]\nhalf_life = 3\n")
    refused = replay(inputs, "--lending-config", str(bad))
    assert refused.returncode == 2
    assert b"risk.half_life" in refused.stderr


def test_bad_fences_file_is_reported(inputs: dict[str, Path]) -> None:
    inputs["fences"].write_text('{"type": "FeatureCollection", "features": [{"type": "Feature"}]}')
    done = replay(inputs)
    assert done.returncode == 2
    assert b"pledgewatch:" in done.stderr
    assert b"features[0]" in done.stderr or b"id" in done.stderr


def test_env_variables_supply_flags(inputs: dict[str, Path]) -> None:
    env = {"PLEDGEWATCH_FENCES": str(inputs["fences"]), "PLEDGEWATCH_LOANS": str(inputs["loans"])}
    done = subprocess.run(
        [*PLEDGEWATCH, "replay", str(inputs["readings"])],
        capture_output=True,
        check=False,
        timeout=60,
        env={**env, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.count(b"zone.left") == 1


# -- the clock a reading's "future" is judged by (DESIGN §2, §7): its line's received_at


class Replayed(NamedTuple):
    alerts: list[Alert]
    rejects: list[Reject]
    replay: Replay


def replay_in_process(paths: dict[str, Path], lines: list[bytes]) -> Replayed:
    alerts: list[Alert] = []
    rejects: list[Reject] = []
    index = FenceIndex.build(load_fences(paths["fences"]))
    loans = parse_loans(orjson.loads(paths["loans"].read_bytes()))
    done = Replay(index, loans, Config(), alerts.append, rejects.append)
    done.feed(lines)
    done.finish()
    return Replayed(alerts, rejects, done)


def parked(minutes: int, every_min: int = 15, **extra: object) -> list[bytes]:
    """A car parked at home reporting every `every_min` minutes for `minutes` minutes."""
    return [
        line("telematics/trk-1/gps", gps("trk-1", t * 60, HOME, seq=n + 1), **extra)
        for n, t in enumerate(range(0, minutes + 1, every_min))
    ]


def test_parked_car_reporting_every_15_minutes_is_accepted(inputs: dict[str, Path]) -> None:
    """Without received_at a reading is not judged "in the future": the largest event time
    so far (15 min behind each new reading here) is no clock. Each was refused before."""
    got = replay_in_process(inputs, parked(180))
    assert got.rejects == []
    assert dict(got.replay.pipeline.counters.readings) == {"gps": 13}
    assert got.alerts == []  # 15 min silences: under the 30 min of device.offline
    assert got.replay.watermark == T0 + 180 * 60_000  # still the clock of the timers


def test_received_at_10_minutes_before_ts_is_in_the_future(inputs: dict[str, Path]) -> None:
    lines = [
        line("telematics/trk-1/gps", gps("trk-1", 0, HOME), received_at=T0),
        line("telematics/trk-1/gps", gps("trk-1", 600, HOME), received_at=T0),
        line("telematics/trk-1/vib", {"ts": T0 + 600_000, "g": 3.0}, received_at=T0),
    ]
    got = replay_in_process(inputs, lines)
    assert [(r.reason.value, r.device_id) for r in got.rejects] == [
        ("future_timestamp", "trk-1"),
        ("future_timestamp", "trk-1"),
    ]
    assert "600000 ms ahead" in got.rejects[0].detail
    assert dict(got.replay.pipeline.counters.readings) == {"gps": 1}
    assert got.replay.watermark == T0  # a refused reading does not move the clock


def test_received_at_1_minute_before_ts_is_accepted(inputs: dict[str, Path]) -> None:
    lines = [
        line("telematics/trk-1/gps", gps("trk-1", 60, HOME), received_at=T0),
        line("telematics/trk-1/gps", gps("trk-1", 360, HOME), received_at=T0 + 300_000),
    ]
    got = replay_in_process(inputs, lines)
    assert got.rejects == []
    assert dict(got.replay.pipeline.counters.readings) == {"gps": 2}


@pytest.mark.parametrize(
    "payload",
    [
        gps("trk-1", 600, HOME),  # an object
        [gps("trk-1", 0, HOME), gps("trk-1", 600, HOME)],  # an array: each element judged
        orjson.dumps(gps("trk-1", 600, HOME)).decode(),  # raw bytes, as sent
    ],
    ids=["object", "array", "raw"],
)
def test_received_at_judges_every_payload_form(payload: object) -> None:
    decoded = decode_line(line("telematics/trk-1/gps", payload, received_at=T0), 1)
    assert [r.reason.value for r in decoded.rejects] == ["future_timestamp"]
    assert [r.ts_ms for r in decoded.readings] == ([T0] if isinstance(payload, list) else [])
    unjudged = decode_line(line("telematics/trk-1/gps", payload), 1)
    assert unjudged.rejects == []


@pytest.mark.parametrize(
    ("received_at", "reason"),
    [
        ("2026-11-30T00:53:20Z", "wrong_type"),
        (float(T0), "wrong_type"),
        (True, "wrong_type"),
        (None, "wrong_type"),
        ([T0], "wrong_type"),
        (T0 // 1000, "out_of_range"),  # seconds, not milliseconds
        (-1, "out_of_range"),
    ],
)
def test_malformed_received_at_refuses_the_line(
    inputs: dict[str, Path], received_at: object, reason: str
) -> None:
    lines = [
        line("telematics/trk-1/gps", gps("trk-1", 0, HOME)),
        line("telematics/trk-1/gps", [gps("trk-1", 60, HOME)], received_at=received_at),
    ]
    got = replay_in_process(inputs, lines)
    assert [(r.reason.value, r.device_id, r.topic) for r in got.rejects] == [
        (reason, "trk-1", "telematics/trk-1/gps")
    ]
    assert got.rejects[0].detail.startswith("line 2: received_at ")
    assert b'"received_at"' in got.rejects[0].raw  # the whole line is kept
    assert dict(got.replay.pipeline.counters.readings) == {"gps": 1}
    assert dict(got.replay.pipeline.counters.rejected) == {reason: 1}


def test_replaying_received_at_lines_twice_is_identical(inputs: dict[str, Path]) -> None:
    lines = [
        *parked(90),
        *parked(90, every_min=20, received_at=T0 + 3_600_000),  # the one at 80 min: future
        line("telematics/trk-1/gps", gps("trk-1", 7000, FAR), received_at=T0 + 7_000_000),
        line("telematics/trk-1/gps", gps("trk-1", 7400, FAR), received_at=T0 + 7_400_000),
    ]
    first, second = replay_in_process(inputs, lines), replay_in_process(inputs, lines)
    assert [a.to_json() for a in first.alerts] == [a.to_json() for a in second.alerts]
    assert first.rejects == second.rejects
    assert [r.reason.value for r in first.rejects] == ["future_timestamp"]
    assert [a.type for a in first.alerts] == ["geofence.exit", "zone.left"]
