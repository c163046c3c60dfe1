"""The engine benchmark's report: the targets, the throughput, latency, memory and profile
tables, and one verdict per target."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from benchmarks.common import fmt_rate, fmt_ratio, rate, table
from benchmarks.engine_runs import ThroughputRun, rounded
from benchmarks.engine_workload import Sizes
from benchmarks.replay_report import PROFILE_TOP, top_cumulative

TARGET_RATIO = 0.5
"""Single-reading messages: the engine must take at least this share of the bare rate."""
TARGET_ARRAY_RPS = 200_000.0
TARGET_P99_MS = 100.0

MiB = 1024 * 1024

MEM_HEADER = [
    "state",
    "devices",
    "readings/device",
    "RSS MiB",
    "vs loaded MiB",
    "bytes/device",
    "vs previous MiB",
    "marginal bytes/device",
]


def per_device(rows: Sequence[dict[str, Any]], base: int) -> list[list[str]]:
    """Table rows: RSS; growth over row `base` (loaded) and bytes per device; growth over
    the previous row and, where devices were added, bytes per added device."""
    out = []
    loaded = int(rows[base]["rss_bytes"])
    prev: dict[str, Any] | None = None
    for r in rows:
        devices = int(r["devices"])
        rss = int(r["rss_bytes"])
        grown = rss - loaded
        step = rss - int(prev["rss_bytes"]) if prev is not None else None
        added = devices - int(prev["devices"]) if prev is not None else 0
        out.append(
            [
                str(r["state"]),
                f"{devices:,}",
                str(r.get("readings_per_device", "-")),
                f"{rss / MiB:,.1f}",
                f"{grown / MiB:+,.1f}" if devices else "-",
                f"{grown / devices:,.0f}" if devices else "-",
                f"{step / MiB:+,.1f}" if step is not None else "-",
                f"{step / added:,.0f}" if step is not None and added > 0 else "-",
            ]
        )
        prev = r
    return out


def report(doc: dict[str, Any], runs: Sequence[ThroughputRun], args: argparse.Namespace) -> str:
    """The tables, the ratios and the verdicts against the targets."""
    sz: Sizes = doc["sizes"]
    info = doc["machine"]
    db = "SQLite" if args.db == "sqlite" else "PostgreSQL"
    title = (
        f"pledgewatch run vs a bare paho-mqtt subscriber, the same publishers, one run: "
        f"{sz.devices:,} devices ({sz.devices:,} loans), {sz.fences:,} fences, {db}"
    )
    setting = (
        f"{args.publishers} publisher processes (paho, QoS 1, MQTT v5); private "
        f"{doc['mosquitto'] or 'mosquitto'}; {info['cpu_count']} CPUs, load average at start "
        f"{info['load_average_at_start']}"
    )
    lines = [title, setting, ""]
    rows = []
    by_key = {(r.workload, r.consumer): r for r in runs}
    labels = {"single_live": "live, 1 reading/msg", "single_drain": "drain, 1 reading/msg"}
    labels["arrays_live"] = f"live, {sz.array_size} readings/msg"
    for r in runs:
        bare = by_key.get((r.workload, "bare"))
        ratio = "-"
        if r.consumer == "engine" and bare is not None:
            b, e = bare.msgs_per_s, r.msgs_per_s
            ratio = fmt_ratio(e / b) if b and e else "-"
        cpu = r.extra.get("cpu", {})
        others = cpu.get("others_cpu_s") if isinstance(cpu, dict) else None
        rows.append(
            [
                labels.get(r.workload, r.workload),
                "pledgewatch run" if r.consumer == "engine" else "bare paho",
                f"{r.messages:,}",
                f"{r.readings:,}",
                f"{r.seconds:.2f}",
                fmt_rate(r.msgs_per_s) if r.ok else "WRONG",
                fmt_rate(r.readings_per_s) if r.ok else "WRONG",
                fmt_rate(rate(r.messages, r.publish_s)),
                f"{r.cpu_us_per_reading:.1f}",
                f"{others:.1f}" if others is not None else "-",
                _alerts_per_reading(r),
                ratio,
            ]
        )
    header = [
        "workload",
        "consumer",
        "messages",
        "readings",
        "seconds",
        "msgs/s",
        "readings/s",
        "published/s",
        "cpu µs/reading",
        "others' cpu s",
        "alerts/reading",
        "engine/bare",
    ]
    lines += [table(header, rows), ""]
    lines += verdicts(doc, runs, sz)
    lat = doc["latency"]
    lines += [
        "",
        (
            f"latency, publish -> signed webhook received: {lat['readings_paced']:,} "
            f"single-reading messages paced at {fmt_rate(lat['paced_rate_per_s'])}/s for "
            f"{lat['paced_seconds']} s, {lat['devices']:,} devices (no loans); webhooks for "
            "geofence.enter/exit"
        ),
    ]
    lrows = []
    for key, label in (
        ("latency_ms", "publish -> webhook"),
        ("publish_to_engine_ms", "publish -> engine (detected_at)"),
        ("engine_to_webhook_ms", "engine (detected_at) -> webhook"),
    ):
        s = lat[key]
        lrows.append([label, *(_ms(s[q]) for q in ("p50", "p95", "p99", "max"))])
    lines += [table(["ms", "p50", "p95", "p99", "max"], lrows)]
    lines.append(
        f"alerts expected (in-process replay) {lat['alerts_expected']:,}, webhooks received "
        f"{lat['alerts_received']:,}, from {lat['readings_raising_alerts']:,} of "
        f"{lat['readings_paced']:,} readings; engine CPU {lat['engine_cpu_us_per_reading']} "
        f"µs/reading; check: {lat['check']}"
    )
    lines += [
        "",
        (
            "memory: the engine's RSS (VmRSS); per device against the loaded row, and per added "
            "device against the previous row"
        ),
        f"engine A: {sz.fences:,} fences, {sz.devices:,} loans (the runs above)",
        table(MEM_HEADER, per_device(doc["memory_a"], 1)),
    ]
    mb = doc["memory_b"]
    lines += [
        (
            f"engine B: {mb['fences']:,} fences, no loans, {mb['devices']:,} devices, one array "
            f"message per device and round; peak RSS {mb['peak_rss_bytes'] / MiB:,.1f} MiB; "
            f"check: {mb['check']}"
        ),
        table(MEM_HEADER, per_device(mb["rows"], 0)),
    ]
    prof = doc.get("profile")
    if prof:
        latency_cpu = doc["latency"].get("engine_cpu_us_per_reading")
        lines += ["", *profile_report(prof, by_key, latency_cpu)]
    failed = {k: v for k, v in doc["checks"].items() if v != "ok"}
    lines += ["", "checks: " + ("all passed" if doc["checks_passed"] else f"FAILED {failed}")]
    return "\n".join(lines)


def profile_report(
    prof: dict[str, Any], by_key: dict[tuple[str, str], ThroughputRun], latency_cpu: float | None
) -> list[str]:
    """The in-process timing of `Engine.process` next to the live engine's CPU, and the
    top of each profile."""
    rows = []
    notes = []
    for key, workload, label in (
        ("single", "single_live", "1 reading/msg"),
        ("single_paced", "latency", "1 reading/msg, paced batches"),
        ("arrays", "arrays_live", "arrays"),
    ):
        p = prof.get(key)
        if not p:
            continue
        live = by_key.get((workload, "engine"))
        live_cpu = f"{live.cpu_us_per_reading:.1f}" if live is not None else "-"
        if workload == "latency":
            live_cpu = f"{latency_cpu:.1f}" if latency_cpu is not None else "-"
        rows.append(
            [
                label,
                f"{p['batch_messages']:,}",
                f"{p['readings']:,}",
                fmt_rate(p["readings_per_s"]),
                f"{p['cpu_us_per_reading']:.1f}",
                live_cpu,
                f"{p['alerts_per_reading']:.2f}",
                fmt_rate(p["profiled_readings_per_s"]),
            ]
        )
        notes.append((label, p["profile"]))
    header = [
        "Engine.process",
        "batch msgs",
        "readings",
        "readings/s",
        "cpu µs/reading",
        "live process µs/reading",
        "alerts/reading",
        "under cProfile",
    ]
    lines = [
        (
            "where the engine's time goes: Engine.process in this process (no MQTT, API or "
            "dispatcher), the live runs' messages in batches of the size the live engine took; "
            "the live process's CPU per reading adds MQTT, acks, API and dispatcher"
        ),
        table(header, rows),
    ]
    for label, text in notes:
        lines += ["", f"profile of Engine.process, {label}, top {PROFILE_TOP} by cumulative time:"]
        lines.append(top_cumulative(text).strip("\n"))
    return lines


def _alerts_per_reading(run: ThroughputRun) -> str:
    counters = run.extra.get("counters")
    if not isinstance(counters, dict) or not run.readings:
        return "-"
    return f"{counters['alerts'] / run.readings:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def verdicts(doc: dict[str, Any], runs: Sequence[ThroughputRun], sz: Sizes) -> list[str]:
    """One line per target: the measured value, the target, meets or MISSES."""
    by_key = {(r.workload, r.consumer): r for r in runs}
    out = []
    for workload, label in (("single_live", "live"), ("single_drain", "drain")):
        bare, eng = by_key.get((workload, "bare")), by_key.get((workload, "engine"))
        if bare is None or eng is None:
            continue
        b, e = bare.msgs_per_s, eng.msgs_per_s
        ratio = e / b if b and e else None
        verdict = "-" if ratio is None else ("meets" if ratio >= TARGET_RATIO else "MISSES")
        out.append(
            f"1 reading/msg, {label}: engine/bare {fmt_ratio(ratio)} "
            f"(target >= {TARGET_RATIO:.2f}x) -> {verdict}"
        )
    arrays = by_key.get(("arrays_live", "engine"))
    if arrays is not None:
        rps = arrays.readings_per_s
        verdict = "-" if rps is None else ("meets" if rps > TARGET_ARRAY_RPS else "MISSES")
        out.append(
            f"{sz.array_size} readings/msg: engine {fmt_rate(rps)} readings/s "
            f"(target > {fmt_rate(TARGET_ARRAY_RPS)}) -> {verdict}"
        )
    p99 = doc["latency"]["latency_ms"]["p99"]
    verdict = "-" if p99 is None else ("meets" if p99 < TARGET_P99_MS else "MISSES")
    out.append(
        f"latency p99 {_ms(p99)} ms at {fmt_rate(doc['latency']['paced_rate_per_s'])} "
        f"readings/s (target < {TARGET_P99_MS:.0f} ms) -> {verdict}"
    )
    return out


def ratios(runs: Sequence[ThroughputRun]) -> dict[str, float | None]:
    """Engine over bare message rates, per workload, for the JSON."""
    by_key = {(r.workload, r.consumer): r for r in runs}
    out: dict[str, float | None] = {}
    for workload in ("single_live", "single_drain", "arrays_live"):
        bare, eng = by_key.get((workload, "bare")), by_key.get((workload, "engine"))
        b = bare.msgs_per_s if bare else None
        e = eng.msgs_per_s if eng else None
        out[f"{workload}_engine_over_bare"] = rounded(e / b, 3) if b and e else None
    return out
