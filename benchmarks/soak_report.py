"""The soak's verdicts and pictures: the nothing-lost checks (each "ok" or "WRONG: why"), the
summary of the sampled series, the printed report, and the four charts (memory, latency,
backlog, rate over time, with the disturbances marked)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import fmt_value as _fmt
from benchmarks.common import table
from benchmarks.soak_sampling import Sample

MIB = 2**20


def equal(what: str, got: object, want: object) -> str:
    """ "ok" when `got == want`, else why not."""
    return "ok" if got == want else f"WRONG: {what} {got}, expected {want}"


def missing_check(what: str, missing: set[str], shown: int = 5) -> str:
    """ "ok" when nothing is missing, else how many and the first few."""
    if not missing:
        return "ok"
    first = ", ".join(sorted(missing)[:shown])
    return f"WRONG: {len(missing)} {what} (first: {first})"


def _values(samples: Sequence[Sample], field: str) -> list[tuple[float, float]]:
    out = []
    for s in samples:
        v = getattr(s, field)
        if v is not None:
            out.append((s.t, float(v)))
    return out


def series_summary(
    samples: Sequence[Sample], latencies_ms: Sequence[float], publish_s: float
) -> dict[str, Any]:
    """Memory at the start and end of publishing and its trend over the second half, CPU,
    latency percentiles over the whole run, the largest backlogs and batch times."""
    during = [s for s in samples if s.t <= publish_s + 1e-6]
    rss = _values(during, "rss_bytes")
    second_half = [(t, v) for t, v in rss if t >= publish_s / 2]
    slope = None
    if len(second_half) >= 3 and second_half[-1][0] > second_half[0][0]:
        ts, vs = zip(*second_half, strict=True)
        slope = float(np.polyfit(ts, vs, 1)[0]) * 3600 / MIB
    cpu = [v for _, v in _values(during, "cpu_share")]
    lat = np.asarray(latencies_ms, dtype=np.float64)

    def top(field: str) -> float | None:
        values = [v for _, v in _values(samples, field)]
        return max(values) if values else None

    return {
        "rss_start_mib": round(rss[0][1] / MIB, 1) if rss else None,
        "rss_end_mib": round(rss[-1][1] / MIB, 1) if rss else None,
        "rss_max_mib": round(max(v for _, v in rss) / MIB, 1) if rss else None,
        "rss_trend_mib_per_h": None if slope is None else round(slope, 1),
        "cpu_mean_cores": round(float(np.mean(cpu)), 3) if cpu else None,
        "latency_alerts": len(lat),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "latency_max_ms": round(float(lat.max()), 1) if len(lat) else None,
        "backlog_max_readings": top("backlog"),
        "outbox_max": top("outbox"),
        "batch_p99_max_ms": top("batch_p99_ms"),
        "batch_max_ms": top("batch_max_ms"),
        "samples": len(samples),
    }


def episodes(
    events: Sequence[Mapping[str, Any]], samples: Sequence[Sample]
) -> list[dict[str, Any]]:
    """Each receiver episode: its phase, start and end, the outbox's peak from its start until
    it was empty again, and how long after the episode's end that was (None: never)."""
    out: list[dict[str, Any]] = []
    start: Mapping[str, Any] | None = None
    for e in (e for e in events if e["event"] == "flap"):
        if e["phase"] != "ok":
            start = e
            continue
        if start is None:
            continue
        t0, t1 = float(start["t"]), float(e["t"])
        empty = next((x.t for x in samples if x.t > t1 and x.outbox == 0), None)
        until = empty if empty is not None else math.inf
        peak = [x.outbox for x in samples if t0 <= x.t <= until and x.outbox is not None]
        out.append(
            {
                "phase": start["phase"],
                "start_s": t0,
                "end_s": t1,
                "outbox_peak": max(peak, default=None),
                "outbox_empty_after_s": None if empty is None else round(empty - t1, 1),
            }
        )
        start = None
    return out


def summary_text(doc: Mapping[str, Any]) -> str:
    """The printed report: what ran, the numbers, the checks with PASS/FAIL."""
    p, s, c, x = doc["parameters"], doc["summary"], doc["counts"], doc["exercised"]
    head = (
        f"pledgewatch soak: {p['devices']:,} trackers, {doc['fleet']['messages']:,} messages "
        f"({doc['fleet']['readings']:,} readings) over {p['duration_s']:,.0f} s "
        f"at {doc['fleet']['rate_msgs_per_s']:,.1f} msg/s (speed {doc['fleet']['speed']:.2f}x), "
        f"PostgreSQL schema {doc['database']['schema']}"
    )
    rows = [
        [
            "engine RSS start / end / max",
            f"{_fmt(s['rss_start_mib'])} / {_fmt(s['rss_end_mib'])} / {_fmt(s['rss_max_mib'])} MiB",
        ],
        ["RSS trend, second half", _fmt(s["rss_trend_mib_per_h"], " MiB/h")],
        ["engine CPU, mean", _fmt(s["cpu_mean_cores"], " cores")],
        [
            "publish -> webhook p50 / p99 / max",
            (
                f"{_fmt(s['latency_p50_ms'])} / {_fmt(s['latency_p99_ms'])} / "
                f"{_fmt(s['latency_max_ms'])} ms ({s['latency_alerts']:,} alerts)"
            ),
        ],
        [
            "batch p99 / longest, worst interval",
            f"{_fmt(s['batch_p99_max_ms'])} / {_fmt(s['batch_max_ms'])} ms",
        ],
        ["ingest backlog, max", _fmt(s["backlog_max_readings"], " readings")],
        ["outbox pending, max", _fmt(s["outbox_max"])],
        ["telemetry rows / expected", f"{c['telemetry_rows']:,} / {c['expected_readings']:,}"],
        [
            "alerts stored / delivered",
            (
                f"{c['alerts_stored']:,} / {c['alerts_received']:,}"
                f" (+{c['redeliveries']:,} redeliveries)"
            ),
        ],
        ["dead deliveries", _fmt(c["dead_deliveries"])],
        [
            "edits / kills (backends) / 503s / stalls",
            (
                f"{x['edits']} / {x['kills']} ({x['backends_killed']}) / "
                f"{x['answered_503']} / {x['stalled']}"
            ),
        ],
        ["drain after publishing", _fmt(doc["drain"]["seconds"], " s")],
    ]
    for phase in ("503", "stall"):
        after = [e["outbox_empty_after_s"] for e in doc["episodes"] if e["phase"] == phase]
        if after:
            worst = None if None in after else max(after)
            rows.append(
                [
                    f"outbox empty after a {phase} episode",
                    f"{_fmt(worst)} s at most ({len(after)})",
                ]
            )
    checks = [[name, "PASS" if v == "ok" else f"FAIL  {v}"] for name, v in doc["checks"].items()]
    verdict = "NOTHING LOST" if doc["checks_passed"] else "CHECKS FAILED"
    return "\n\n".join(
        [head, table(["measure", "value"], rows), table(["check", "result"], checks), verdict]
    )


def _plt() -> Any:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_PHASE_COLORS = {"503": "#d62728", "stall": "#ff7f0e"}


def _mark(ax: Any, doc: Mapping[str, Any]) -> None:
    """Shade the receiver's episodes, mark kills and edits and the end of publishing."""
    events = doc["events"]
    start: tuple[float, str] | None = None
    for e in (e for e in events if e["event"] == "flap"):
        if e["phase"] != "ok":
            start = (float(e["t"]), str(e["phase"]))
        elif start is not None:
            ax.axvspan(start[0], float(e["t"]), color=_PHASE_COLORS[start[1]], alpha=0.12, lw=0)
            start = None
    for e in events:
        if e["event"] == "kill":
            ax.axvline(float(e["t"]), color="#444444", ls="--", lw=0.6)
        elif e["event"] == "edit":
            ax.axvline(float(e["t"]), color="#2ca02c", ls=":", lw=0.6)
    ax.axvline(doc["publish"]["seconds"], color="#1f1f1f", lw=0.9)
    ax.grid(alpha=0.3)
    ax.set_xlabel(
        "seconds since publishing started (red: 503s, orange: stalls, dashed: connections "
        "killed, dotted: edits, solid: publishing ended)",
        fontsize=7,
    )


def _line(ax: Any, samples: Sequence[Sample], field: str, label: str, scale: float = 1.0) -> None:
    pts = _values(samples, field)
    if pts:
        ax.plot([t for t, _ in pts], [v * scale for _, v in pts], label=label, lw=1.2)


def charts(doc: Mapping[str, Any], samples: Sequence[Sample], out: Path) -> list[Path]:
    """memory.png, latency.png, backlog.png and rate.png in `out`; their paths."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig: Any, ax: Any, name: str, title: str) -> None:
        _mark(ax, doc)
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        path = out / name
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(9, 4), dpi=90)
    _line(ax, samples, "rss_bytes", "RSS, engine + MQTT child (MiB)", 1 / MIB)
    ax.set_ylim(bottom=0)
    cpu = ax.twinx()
    pts = _values(samples, "cpu_share")
    cpu.plot([t for t, _ in pts], [v for _, v in pts], color="#9467bd", lw=0.7, alpha=0.6)
    cpu.set_ylabel("CPU (cores, purple)", fontsize=8)
    cpu.set_ylim(bottom=0)
    save(fig, ax, "memory.png", "Engine memory (and CPU) over the soak")

    fig, ax = plt.subplots(figsize=(9, 4), dpi=90)
    _line(ax, samples, "latency_p50_ms", "publish -> webhook p50 (ms)")
    _line(ax, samples, "latency_p99_ms", "publish -> webhook p99 (ms)")
    _line(ax, samples, "batch_p99_ms", "engine batch p99 (ms)")
    _line(ax, samples, "batch_p50_ms", "engine batch p50 (ms)")
    _line(ax, samples, "batch_max_ms", "engine batch, longest (bucket bound, ms)")
    ax.set_yscale("log")
    save(fig, ax, "latency.png", "Latency per sampling interval")

    fig, ax = plt.subplots(figsize=(9, 4), dpi=90)
    _line(ax, samples, "backlog", "ingest backlog (readings published, not yet taken)")
    _line(ax, samples, "outbox", "outbox (deliveries pending)")
    ax.set_ylim(bottom=0)
    save(fig, ax, "backlog.png", "Backlogs")

    fig, ax = plt.subplots(figsize=(9, 4), dpi=90)
    for field, label in (
        ("published", "readings published/s"),
        ("processed", "readings taken/s"),
        ("alerts", "alerts raised/s"),
        ("webhooks", "alerts received/s"),
        ("posts", "webhook POSTs/s"),
    ):
        pts = _values(samples, field)
        if len(pts) > 1:
            ts = [t for t, _ in pts]
            vs = np.diff([v for _, v in pts]) / np.maximum(np.diff(ts), 1e-9)
            ax.plot(ts[1:], vs, label=label, lw=1.0)
    ax.set_yscale("symlog", linthresh=1.0)
    save(fig, ax, "rate.png", "Rates per sampling interval")
    return paths
