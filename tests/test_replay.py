"""`pledgewatch replay` end to end: files in, alerts and rejects out, as DESIGN §7 says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.factories import HOME, T0, VIN, offset

PLEDGEWATCH = [sys.executable, "-m", "engine.cli"]
FAR = offset(*HOME, 2000, 0)


def gps(dev: str, t_s: int, at: tuple[float, float], **kw: object) -> dict[str, object]:
    return {"ts": T0 + t_s * 1000, "lat": at[0], "lon": at[1], **kw}


def line(topic: str, payload: object) -> bytes:
    return orjson.dumps({"topic": topic, "payload": payload})


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
        line("telematics/trk-1/gps", gps("trk-1", 4000, FAR)),  # over 5 min past the watermark
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
    assert [a["type"] for a in alerts] == ["geofence.exit", "zone.left", "shock"]
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
    assert first.stdout.count(b"\n") == 3


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
