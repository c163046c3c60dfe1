"""The benchmarks run at tiny sizes, and the correctness checks inside them pass.

No timing is asserted: rates on a shared machine say nothing in a test.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from benchmarks import bench_engine, bench_fences, bench_jt808, bench_lending, bench_replay, soak
from benchmarks.engine_runs import counter_delta, engine_check
from benchmarks.lending_eval import auc
from benchmarks.replay_workload import random_vins
from simulator.harness.prometheus import Metrics


def _load(path: Path) -> dict[str, object]:
    doc = orjson.loads(path.read_bytes())
    assert isinstance(doc, dict)
    return doc


def test_bench_fences_tiny(tmp_path: Path, capsys) -> None:
    status = bench_fences.main(
        [
            "--sizes",
            "200",
            "--points",
            "2000",
            "--repeat",
            "1",
            "--naive-work",
            "100000",
            "--margin-check-points",
            "100",
            "--no-postgis",
            "--out-dir",
            str(tmp_path),
        ]
    )
    doc = _load(tmp_path / "bench_fences.json")
    assert status == 0
    assert doc["checks_passed"] is True
    (size,) = doc["sizes"]
    methods = size["methods"]
    for name in ("naive_loop", "raw_strtree", "fenceindex_lookup", "fenceindex_lookup_margin"):
        assert methods[name]["check"] == "ok", methods[name]
        assert methods[name]["points_per_s"] > 0
    assert methods["raw_strtree"]["pairs"] == methods["fenceindex_lookup"]["pairs"] > 0
    assert size["postgis"]["available"] is False
    assert doc["machine"]["cpu_count"] >= 1
    assert "FenceIndex.lookup" in capsys.readouterr().out


def test_bench_replay_tiny(tmp_path: Path, capsys) -> None:
    status = bench_replay.main(
        [
            "--devices",
            "200",
            "--fences",
            "200",
            "--readings",
            "2000",
            "--out-dir",
            str(tmp_path),
        ]
    )
    doc = _load(tmp_path / "bench_replay.json")
    assert status == 0
    assert doc["checks_passed"] is True
    timings = {t["method"]: t for t in doc["timings"]}
    assert set(timings) == {
        "floor",
        "baseline",
        "replay",
        "replay_feed",
        "replay_fold",
        "cli",
        "cli_fold",
    }
    assert all(t["check"] == "ok" for t in timings.values()), timings
    assert timings["replay"]["readings"] == doc["input"]["lines"] > 2000
    assert sum(doc["alerts_by_type"].values()) == timings["replay"]["alerts"] > 0
    profile = (tmp_path / "replay_profile.txt").read_text()
    assert profile.count("by cumulative") == 2
    assert "Replay in-process" in capsys.readouterr().out


def test_bench_lending_tiny(tmp_path: Path, capsys) -> None:
    # Tiny sizes say nothing of the AUC or the speed budget: those targets are relaxed here,
    # and every correctness check must pass.
    status = bench_lending.main(
        [
            "--loans",
            "30",
            "--days",
            "3",
            "--target-auc",
            "0",
            "--speed-devices",
            "200",
            "--speed-fences",
            "200",
            "--speed-readings",
            "2000",
            "--rounds",
            "2",
            "--target-ratio",
            "100",
            "--site-sizes",
            "2000,4000",
            "--site-lots",
            "5",
            "--out-dir",
            str(tmp_path),
        ]
    )
    doc = _load(tmp_path / "bench_lending.json")
    assert doc["checks_passed"] is True, doc["checks"]
    assert status == 0
    assert set(doc["checks"]) == {
        "eval_auc_final",
        "size_bounded",
        "speed_replay_without",
        "speed_replay_with",
        "speed_core_alerts_identical",
        "speed_ratio_within_budget",
        "sites_planted_lots_found",
    }
    ev = doc["evaluation"]
    assert ev["dataset"]["loans"] == len(ev["loans"]) == 30
    assert ev["ranking"]["risky"] + ev["ranking"]["quiet"] == 30
    assert 0.0 <= ev["ranking"]["auc_final"] <= 1.0
    assert 0.0 <= ev["ranking"]["auc_peak"] <= 1.0
    assert sum(sum(row.values()) for row in ev["confusion_final"].values()) == 30
    assert sum(sum(row.values()) for row in ev["confusion_peak"].values()) == 30
    assert ev["replay"]["readings"] > 0
    assert ev["places"]["commuters"] > 0
    assert "recall" in ev["sites"]
    assert "precision" in ev["sites"]
    speed = doc["speed"]
    assert speed["with"]["alerts"] >= speed["without"]["alerts"] > 0
    assert len(speed["with"]["seconds_by_round"]) == 2
    memory = doc["size"]["memory"]
    assert memory["graph_bytes_per_loan"] > 0
    assert memory["tracemalloc_restore_bytes_per_loan"] > 0
    assert memory["book_json_bytes"]["min"] > 0
    sites = doc["size"]["sites"]["sizes"]
    assert [r["planted_lots_found"] for r in sites] == [5, 5]
    assert "Evaluation" in capsys.readouterr().out


def test_auc_counts_ties_as_half() -> None:
    assert auc([1, 2], [0, 1]) == 3.5 / 4
    assert auc([3, 3], [1, 2]) == 1.0
    assert auc([1], [1]) == 0.5
    assert auc([0], [1, 2]) == 0.0
    assert auc([], [1]) is None


def test_vins_are_valid_and_distinct() -> None:
    import numpy as np

    from lending.model import VIN_RE

    vins = random_vins(np.random.default_rng(1), 500)
    assert len(set(vins)) == 500
    assert all(VIN_RE.fullmatch(v) for v in vins)


def test_bench_engine_counts_batches_over_a_millisecond_apart() -> None:
    before = Metrics.parse(
        'pledgewatch_readings_total{stream="gps"} 10\n'
        "pledgewatch_batch_seconds_count 5\n"
        'pledgewatch_batch_seconds_bucket{le="0.001"} 3\n'
    )
    after = Metrics.parse(
        'pledgewatch_readings_total{stream="gps"} 55\n'
        'pledgewatch_readings_total{stream="vib"} 5\n'
        "pledgewatch_batch_seconds_count 9\n"
        'pledgewatch_batch_seconds_bucket{le="0.001"} 4\n'
        'pledgewatch_batch_seconds_bucket{le="0.005"} 9\n'
    )
    delta = counter_delta(before, after)
    assert (delta["readings"], delta["batches"], delta["batches_over_1ms"]) == (50, 4, 3)
    assert engine_check(delta, 50) == "ok"
    assert engine_check(delta, 51).startswith("WRONG: 50 readings accepted, 51 published")


@pytest.mark.mqtt
@pytest.mark.slow
def test_bench_engine_quick(tmp_path: Path, capsys) -> None:
    status = bench_engine.main(["--quick", "--out-dir", str(tmp_path)])
    doc = _load(tmp_path / "bench_engine.json")
    assert doc["checks_passed"] is True, doc["checks"]
    assert status == 0
    runs = {(r["workload"], r["consumer"]): r for r in doc["runs"]}
    workloads = ("single_live", "single_drain", "arrays_live")
    assert set(runs) == {(w, c) for w in workloads for c in ("bare", "engine")}
    assert all(r["check"] == "ok" for r in runs.values()), runs
    for w in workloads:
        assert runs[(w, "engine")]["readings"] == runs[(w, "bare")]["readings"] > 0
        assert runs[(w, "engine")]["counters"]["readings"] == runs[(w, "engine")]["readings"]
    assert (
        runs[("arrays_live", "engine")]["readings"]
        == 50 * runs[("arrays_live", "engine")]["messages"]
    )
    latency = doc["latency"]
    assert latency["alerts_received"] == latency["alerts_expected"] > 0
    assert latency["latency_ms"]["p99"] is not None
    assert doc["memory"]["engine_b"]["check"] == "ok"
    assert doc["engine_totals"]["telemetry_rows"] == doc["engine_totals"]["readings"]
    assert set(doc["profile"]) == {"single", "single_paced", "arrays"}
    assert "pledgewatch run" in capsys.readouterr().out


@pytest.mark.mqtt
@pytest.mark.slow
def test_bench_jt808_quick(tmp_path: Path, capsys) -> None:
    status = bench_jt808.main(["--quick", "--out-dir", str(tmp_path)])
    doc = _load(tmp_path / "bench_jt808.json")
    assert doc["checks_passed"] is True, doc["checks"]
    assert status == 0
    gateway, floor = doc["results"]["gateway"], doc["results"]["floor"]
    assert gateway["terminals_held"] == floor["terminals_held"] == 40
    counted = gateway["gateway_counted"]
    assert counted["reports_acked"] == counted["gps_published"] == gateway["fleet_acked_total"]
    assert gateway["steps"][0]["acked"] > 0
    assert gateway["unpaced"]["acked"] > 0
    assert floor["unpaced"]["acked"] > 0
    assert gateway["steps"][0]["latency_ms"]["p99"] is not None
    assert gateway["bytes_per_connection"] is not None
    assert "memory per connection" in capsys.readouterr().out


@pytest.mark.mqtt
@pytest.mark.postgres
@pytest.mark.slow
def test_soak_quick(tmp_path: Path, capsys) -> None:
    import psycopg

    status = soak.main(["--quick", "--out-dir", str(tmp_path)])
    doc = _load(tmp_path / "soak.json")
    assert doc["checks_passed"] is True, doc["checks"]
    assert status == 0
    counts = doc["counts"]
    assert counts["telemetry_rows"] == counts["expected_readings"] > 1000
    assert counts["alerts_received"] == counts["alerts_stored"] > 0
    assert counts["dead_deliveries"] == counts["pending_deliveries"] == 0
    exercised = doc["exercised"]
    assert exercised["edits"] > 0
    assert exercised["backends_killed"] > 0
    assert exercised["answered_503"] + exercised["stalled"] > 0
    assert len(doc["samples"]) > 10
    charts = {p.name for p in (tmp_path / "soak").iterdir()}
    assert charts == {"memory.png", "latency.png", "backlog.png", "rate.png"}
    with psycopg.connect(soak.DEFAULT_PG_DSN) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", [doc["database"]["schema"]]
        ).fetchone()
    assert left == (0,)  # the soak's schema is dropped
    assert "NOTHING LOST" in capsys.readouterr().out


@pytest.mark.mqtt
@pytest.mark.slow
def test_bench_distributed_quick(tmp_path: Path, capsys) -> None:
    from benchmarks import bench_distributed

    status = bench_distributed.main(["--quick", "--out-dir", str(tmp_path)])
    doc = _load(tmp_path / "bench_distributed.json")
    assert doc["checks_passed"] is True, doc["checks"]
    assert status == 0
    worker, replay = doc["worker"], doc["replay"]
    readings = doc["parameters"]["readings"]
    assert worker["readings"] == replay["readings"] == readings > 0
    for kind in ("geofence.enter", "geofence.exit"):
        assert worker["alerts_by_type"][kind] == replay["alerts_by_type"][kind] > 0
    assert doc["checks"]["worker_reading_alerts_are_the_replays"] == "ok"
    floor = doc["faust_floor"]
    assert floor["check"] == doc["checks"]["faust_floor"] == "ok"
    assert floor["readings"] == readings
    assert floor["cpu_us_per_record"] > 0
    assert 0 < doc["worker_bound"]["readings_per_s"] < 1e6 / floor["cpu_us_per_record"]
    for side in (
        worker,
        replay,
        floor,
        doc["local_run"],
        doc["bare"],
        doc["bridge"],
        doc["bridge_batched"],
    ):
        assert side["readings_per_s"] > 0, side
        assert side["seconds"] > 0, side
    assert worker["readings_phase_per_s"] >= worker["readings_per_s"]
    assert worker["worker_cpu_us_per_reading"] > 0
    # a checkpoint writes at most partitions x 64 buckets per space, whatever the rate
    bound = worker["checkpoints"] * doc["parameters"]["partitions"] * 64 * len(worker["table_rows"])
    assert 0 < worker["table_writes"] <= bound
    assert worker["loan_events_per_reading"] == 1.0  # every car is on a loan
    # loan events go in one record per loan partition per batch, not one per reading
    assert 0 < worker["loan_event_records"] < worker["loan_events"] / 10
    # the table buckets are stored compressed
    spaces = worker["table_rows"].values()
    assert 0 < sum(s["stored_bytes"] for s in spaces) < sum(s["bytes"] for s in spaces)
    assert worker["topics"]["pledgewatch.readings"]["mean_record_bytes"] > 0
    assert doc["bridge"]["readings"] == doc["bare"]["readings"] > 0
    (latency,) = doc["latency"]
    assert latency["alerts_received"] == latency["alerts_expected"] > 0
    assert latency["latency_ms"]["p99"] > 0
    sizing = doc["sizing"]
    assert [f["cars"] for f in sizing["fleets"]] == [100_000, 1_000_000, 10_000_000]
    for fleet in sizing["fleets"]:
        assert fleet["workers"] > 0
        assert fleet["partitions"] >= fleet["workers"]
        assert fleet["broker_mb_in_per_s"] > 0
        assert set(fleet["topics"]) == {"readings", "loan-events", "alerts", "changelogs"}
    out = capsys.readouterr().out
    assert "DERIVED" in out
    assert "Faust alone" in out
    assert "best a worker could reach here" in out


@pytest.mark.mqtt
@pytest.mark.slow
def test_bench_live_feed_tiny(tmp_path: Path, capsys) -> None:
    from benchmarks import bench_live_feed

    status = bench_live_feed.main(
        [
            *("--cars", "100", "--report-s", "1", "--consoles", "2", "--rounds", "1"),
            # 4 s windows: an event in flight at a window's edge is 5 % of its car updates
            # (the check allows 15 %; 2 s windows failed under a fully loaded machine)
            *("--window-s", "4", "--warm-s", "0.2", "--interval-ms", "200"),
            *("--out-dir", str(tmp_path)),
        ]
    )
    doc = _load(tmp_path / "bench_live_feed.json")
    assert doc["checks_passed"] is True, doc["checks"]
    assert status == 0
    for part in ("engine", "feed"):
        (two,) = doc[part]["summary"]
        assert two["consoles"] == 2
        assert two["per_console"]["cars_per_s"] > 0.8 * two["car_updates_per_s"] > 0
    assert "the feed alone" in capsys.readouterr().out
