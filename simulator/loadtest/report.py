"""The load test's report: `report.json`, a Markdown summary and PNG charts.

Charts are drawn with matplotlib's Agg backend (no display needed): throughput over time
(published vs processed readings/s, backlog), reading-to-webhook latency over time, and a
map of a few scenario cars: the fences around them, their tracks and their alerts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from geofence.fence import Fence, FenceError, FenceKind, parse_fence
from simulator.loadtest.jt808 import markdown as jt808_md
from simulator.truth import parse_iso_ms

CATEGORY_COLORS = {
    "pawnshop": "#d62728",
    "lender": "#9467bd",
    "used_car_market": "#ff7f0e",
    "auction": "#8c564b",
    "impound": "#1f1f1f",
    "border": "#e377c2",
}
OTHER_SITE_COLOR = "#7f7f7f"
ZONE_COLOR = "#2ca02c"
MAP_PANELS = 6
MAP_MARGIN_DEG = 0.004  # ~400 m around a car's track
FAR_KM = 30.0  # fixes further from the track's median are left off the map (and counted)


@dataclass(slots=True)
class CarTrack:
    """A scenario car drawn on the map: its fixes per tracker and the alerts it raised."""

    car_id: str
    scenario: str
    zone_ids: tuple[str, ...]
    fixes: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)  # ts, lat, lon
    alerts: list[dict[str, Any]] = field(default_factory=list)


def write_json(path: Path, doc: Mapping[str, object]) -> None:
    """Write `doc` as indented JSON."""
    path.write_bytes(
        orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
    )


def _plt() -> Any:
    import matplotlib as mpl  # noqa: PLC0415  # heavy; only the report needs it

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def chart_throughput(
    series: Mapping[str, Sequence[float]], steps: Sequence[Mapping[str, Any]], path: Path
) -> None:
    """Published vs processed readings/s over time, with the backlog on a second axis."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
    t = series["t"]
    ax.plot(t, series["published_rps"], label="published readings/s", color="#1f77b4", lw=1.4)
    ax.plot(t, series["processed_rps"], label="processed readings/s", color="#ff7f0e", lw=1.4)
    ax.set_xlabel("seconds since publishing started")
    ax.set_ylabel("readings per second")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    back = ax.twinx()
    back.fill_between(t, series["backlog"], color="#7f7f7f", alpha=0.18, lw=0)
    back.set_ylabel("backlog (published, not yet processed)", color="#555555")
    back.set_ylim(bottom=0, top=max(1.0, max(series["backlog"], default=1.0)) * 1.1)
    publish_end = series.get("publish_end_t")
    if publish_end:
        ax.axvline(publish_end[0], color="#555555", ls="--", lw=0.8)
        ax.text(publish_end[0], ax.get_ylim()[1] * 0.97, " drain", va="top", fontsize=8)
    for step in steps:
        ax.axvline(step["start_t"], color="#bbbbbb", lw=0.6)
        label = f" {step['target_rate']:,.0f}/s"
        ax.text(step["start_t"], ax.get_ylim()[1] * 0.9, label, fontsize=7, color="#555555")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Throughput: readings published vs processed by the engine")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def chart_latency(
    windows: Sequence[Mapping[str, float | None]],
    points: Sequence[tuple[float, float]],
    path: Path,
) -> None:
    """Reading-to-webhook latency over time: every alert as a dot, p50/p95/p99 per window."""
    plt = _plt()
    from matplotlib.ticker import ScalarFormatter  # noqa: PLC0415  # with pyplot

    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
    if points:
        ax.scatter(
            [p[0] for p in points],
            [max(p[1], 0.1) for p in points],
            s=3,
            alpha=0.25,
            color="#7f7f7f",
            label="one alert",
            lw=0,
        )
    t = [w["t"] for w in windows]
    for key, color in (("p50", "#2ca02c"), ("p95", "#ff7f0e"), ("p99", "#d62728")):
        ax.plot(t, [w[key] for w in windows], label=key, color=color, lw=1.5, marker=".")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("seconds since publishing started (webhook arrival)")
    ax.set_ylabel("publish → webhook, ms")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Latency of alerts raised by a reading (publish to signed webhook)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fences(doc: Mapping[str, object]) -> list[Fence]:
    features = doc.get("features")
    out: list[Fence] = []
    for feature in features if isinstance(features, list) else []:
        if isinstance(feature, dict):
            try:
                out.append(parse_fence(str(feature.get("id")), feature))
            except FenceError:
                continue  # the engine would have refused it too; nothing to draw
    return out


def _rings(fence: Fence) -> list[list[tuple[float, float]]]:
    geom = fence.geometry
    polygons = list(getattr(geom, "geoms", [geom]))
    return [list(p.exterior.coords) for p in polygons]


def chart_map(fences_doc: Mapping[str, object], cars: Sequence[CarTrack], path: Path) -> None:
    """A panel per scenario car: the fences near it (zones, risk sites by category), its
    trackers' tracks and where its alerts were raised."""
    plt = _plt()
    from matplotlib.patches import Patch, Polygon  # noqa: PLC0415  # with pyplot

    fences = _fences(fences_doc)
    shown = [c for c in cars if any(c.fixes.values())][:MAP_PANELS]
    cols = min(3, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.2 * rows), dpi=100, squeeze=False)
    markers = "o^sDvP*Xh<>"
    types = sorted({str(a.get("type")) for c in shown for a in c.alerts})
    marker_of = {t: markers[i % len(markers)] for i, t in enumerate(types)}
    for ax, car in zip(axes.flat, shown, strict=False):
        near, far = _near_and_far([f for fixes in car.fixes.values() for f in fixes])
        box = (
            min(f[2] for f in near) - MAP_MARGIN_DEG,
            min(f[1] for f in near) - MAP_MARGIN_DEG,
            max(f[2] for f in near) + MAP_MARGIN_DEG,
            max(f[1] for f in near) + MAP_MARGIN_DEG,
        )
        for fence in fences:
            x0, y0, x1, y1 = fence.geometry.bounds
            if x1 < box[0] or x0 > box[2] or y1 < box[1] or y0 > box[3]:
                continue
            if fence.kind is FenceKind.ZONE:
                own = fence.fence_id in car.zone_ids
                style = {"fc": ZONE_COLOR, "alpha": 0.22 if own else 0.07, "ec": ZONE_COLOR}
            else:
                color = CATEGORY_COLORS.get(fence.category or "", OTHER_SITE_COLOR)
                style = {"fc": color, "alpha": 0.45, "ec": color, "zorder": 3}
            for ring in _rings(fence):
                ax.add_patch(Polygon(ring, closed=True, lw=1.2, **style))
        for i, (device, fixes) in enumerate(sorted(car.fixes.items())):
            ordered = sorted(fixes)
            ax.plot(
                [f[2] for f in ordered],
                [f[1] for f in ordered],
                lw=1.0,
                color=("#1f77b4", "#17becf", "#bcbd22")[i % 3],
                label=device,
                alpha=0.9,
            )
        for alert in car.alerts:
            where = _alert_position(alert, near)
            if where is None:
                continue
            type_ = str(alert.get("type"))
            ax.scatter(
                [where[1]],
                [where[0]],
                marker=marker_of[type_],
                s=45,
                color="#d62728",
                ec="white",
                lw=0.7,
                zorder=5,
                alpha=0.85,
                label=type_,
            )
        mid_lat = (box[1] + box[3]) / 2
        ax.set_xlim(box[0], box[2])
        ax.set_ylim(box[1], box[3])
        ax.set_aspect(1 / math.cos(math.radians(mid_lat)))
        title = f"{car.car_id}: {car.scenario}"
        if far:
            km = max(_km(f, near[0]) for f in far)
            what = "a fix" if len(far) == 1 else f"{len(far)} fixes"
            title += f"\n({what} up to {km:,.0f} km away: off the map)"
        ax.set_title(title, fontsize=9)
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(labelsize=6)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=6, loc="best")
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    legend = [Patch(fc=ZONE_COLOR, alpha=0.3, label="zone (the car's own: darker)")] + [
        Patch(fc=c, alpha=0.5, label=k.replace("_", " ")) for k, c in CATEGORY_COLORS.items()
    ]
    fig.legend(handles=legend, loc="lower center", ncol=7, fontsize=7, frameon=False)
    fig.suptitle("Scenario cars: fences near them, their tracks (lon/lat) and alerts", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path)
    plt.close(fig)


def _km(a: tuple[int, float, float], b: tuple[int, float, float]) -> float:
    dlat = math.radians(a[1] - b[1])
    dlon = math.radians(a[2] - b[2]) * math.cos(math.radians(b[1]))
    return 6371.0 * math.hypot(dlat, dlon)


def _near_and_far(
    fixes: list[tuple[int, float, float]],
) -> tuple[list[tuple[int, float, float]], list[tuple[int, float, float]]]:
    """The fixes within `FAR_KM` of the track's median point, and the rest (a spoofed fix
    hundreds of km away would shrink the track to a dot)."""
    lats = sorted(f[1] for f in fixes)
    lons = sorted(f[2] for f in fixes)
    mid = (0, lats[len(lats) // 2], lons[len(lons) // 2])
    near = [f for f in fixes if _km(f, mid) <= FAR_KM]
    return near or fixes, [f for f in fixes if _km(f, mid) > FAR_KM]


def _alert_position(
    alert: Mapping[str, Any], near: list[tuple[int, float, float]]
) -> tuple[float, float] | None:
    """Where the alert says it was if that is on the map, else the car's last fix on the map
    at or before the alert's time (a spoofed fix is marked where the car really was)."""
    lat, lon = alert.get("lat"), alert.get("lon")
    on_map = (
        isinstance(lat, float | int)
        and isinstance(lon, float | int)
        and bool(near)
        and _km((0, float(lat), float(lon)), near[0]) <= 2 * FAR_KM
    )
    if on_map:
        return float(lat), float(lon)  # type: ignore[arg-type]  # checked numbers above
    ts_text = alert.get("ts")
    if not near or not isinstance(ts_text, str):
        return None
    ts = parse_iso_ms(ts_text)
    last = max([f for f in near if f[0] <= ts] or near)
    return last[1], last[2]


def _fmt(value: object, unit: str = "", digits: int = 0) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:,.{digits}f}{unit}"
    return "-" if value is None else f"{value}{unit}"


def _pct(value: object) -> str:
    return f"{value * 100:.1f} %" if isinstance(value, float | int) else "-"


def _mib(value: object) -> str:
    return f"{value / 2**20:,.0f} MiB" if isinstance(value, int | float) else "-"


def markdown(doc: Mapping[str, Any]) -> str:
    """A readable summary of `report.json`: how fast, how late, how accurate."""
    sections = [
        _head(doc),
        _summary_md(doc),
        _ramp_md(doc["ramp"]) if doc.get("ramp") else _fast_md(doc),
        _late_md(doc),
        _quality_md(doc.get("quality")),
        jt808_md(doc["jt808"]) if doc.get("jt808") else [],
        _resources_md(doc["resources"]),
        _setup_md(doc),
    ]
    if doc["plan"].get("skipped"):
        skipped = doc["plan"]["skipped"]
        sections.append(["## Scenarios not played", "", *(f"- {x}" for x in skipped), ""])
    if doc.get("charts", {}).get("map"):
        sections.append(["## Scenario cars", "", "![map](map.png)", ""])
    if doc.get("notes"):
        sections.append(["## Notes", "", *(f"- {n}" for n in doc["notes"]), ""])
    return "\n".join(line for section in sections for line in section)


def _head(doc: Mapping[str, Any]) -> list[str]:
    spec, plan, tp = doc["spec"], doc["plan"], doc["throughput"]
    engine, machine = doc["engine"], doc["machine"]
    what = (
        f"ramp, {spec['devices']:,} trackers per step"
        if doc.get("ramp")
        else f"{spec['devices']:,} trackers, {spec['duration_s']:g} s"
    )
    lines = [
        f"# pledgewatch load test: {what}",
        "",
        f"Status: **{doc['status']}**. Started {doc['started_at']}: `{doc['command']}`.",
        "",
        (
            f"Engine: {engine['mode']} ({engine['store']} store). Machine: {machine['cores']} "
            f"cores, Python {machine['python']}, load average {machine['load_average_start']} "
            "at the start. The machine may be shared with other work: read the numbers as "
            "orders of magnitude, and compare runs made side by side."
        ),
        "",
    ]
    if not doc.get("ramp"):
        lines += [
            (
                f"Plan: speed {_fmt(plan['speed'], 'x', 1)} (event seconds per wall second), "
                f"{plan['cars']:,} cars ({plan['scenario_cars']:,} playing scenarios), "
                f"{tp['published_readings']:,} readings in {tp['published_messages']:,} "
                "messages."
            ),
            "",
        ]
    return lines


BURST_S = 5.0  # caught up this soon after the last publish: it only queued bursts


def kept_up(throughput: Mapping[str, Any]) -> bool:
    """Whether the backlog stayed within a second of input (plus one batch) all along."""
    rate = throughput.get("published_rps_mean") or 0.0
    return bool(throughput.get("backlog_max", 0) <= rate + 1000)


def _summary_md(doc: Mapping[str, Any]) -> list[str]:
    tp, res, quality = doc["throughput"], doc["resources"], doc.get("quality")
    reading = doc["latency"]["by_kind"]["reading"]["total_ms"]
    lines = ["## Summary", ""]
    ramp = doc.get("ramp")
    if ramp:
        lines.append(
            f"- **How fast**: the engine sustained {_fmt(ramp.get('sustained_readings_per_s'))} "
            f"readings/s with p99 under {ramp['max_p99_ms']:g} ms."
        )
    else:
        caught = tp.get("caught_up_s")
        if kept_up(tp):
            verdict = "and kept up (its backlog never exceeded a second of input)"
        elif isinstance(caught, float | int) and caught <= BURST_S:
            rate = tp["published_rps_mean"] or 1.0
            verdict = (
                f"and kept pace on average, but bursts queued up to {_fmt(tp['backlog_max'])} "
                f"readings ({tp['backlog_max'] / rate:,.1f} s of input)"
            )
        else:
            rate = tp["published_rps_mean"] or 1.0
            verdict = (
                f"and fell behind: its backlog reached {_fmt(tp['backlog_max'])} readings "
                f"({tp['backlog_max'] / rate:,.1f} s of input); it caught up "
                f"{_fmt(tp['caught_up_s'], ' s', 1)} after the last publish"
            )
        lines.append(
            f"- **How fast**: {_fmt(tp['published_rps_mean'])} readings/s published for "
            f"{_fmt(tp['publish_s'], ' s', 0)}; the engine processed "
            f"{_fmt(tp['processed_rps_mean'])} readings/s meanwhile {verdict}."
        )
    lines.append(
        f"- **How late**: an alert raised by a reading reached the webhook p50 "
        f"{_fmt(reading['p50'])} ms, p99 {_fmt(reading['p99'])} ms, max {_fmt(reading['max'])} "
        f"ms after the reading was published ({reading['count']:,} alerts)."
    )
    if quality:
        lines.append(
            f"- **How accurate**: recall {_pct(quality['recall'])}, precision "
            f"{_pct(quality['precision'])}, {_fmt(quality['false_per_1000_car_hours'], '', 2)} "
            f"false alerts per 1,000 car-hours ({quality['required']:,} required alerts, "
            f"{quality['cars']:,} cars)."
        )
    if res.get("engine_cpu_cores_mean") is not None:
        lines.append(
            f"- **At what cost**: the engine used {_fmt(res['engine_cpu_cores_mean'], '', 2)} "
            f"cores on average and at most {_mib(res.get('engine_rss_peak'))} of memory."
        )
    cores = doc["machine"].get("cores") or 0
    busy = res.get("machine_busy_cores_mean")
    if isinstance(busy, float | int) and cores:
        full = " (fully busy: the engine competed for CPU)" if busy >= 0.9 * cores else ""
        lines.append(
            f"- **The machine**: {busy:.2f} of {cores} cores busy during the run{full}; the "
            f"load test itself used {_fmt(res.get('loadtest_cpu_cores_mean'), '', 2)}."
        )
    lines.append("")
    return lines


def _fast_md(doc: Mapping[str, Any]) -> list[str]:
    tp, pub = doc["throughput"], doc["publish"]
    return [
        "## How fast",
        "",
        "| readings/s | |",
        "|---|---|",
        f"| published, mean over the publish phase | {_fmt(tp['published_rps_mean'])} |",
        f"| processed, mean over the publish phase | {_fmt(tp['processed_rps_mean'])} |",
        f"| processed, best second | {_fmt(tp['processed_rps_peak'])} |",
        "",
        (
            f"Processed {tp['processed_readings']:,} of {tp['published_readings']:,} published "
            f"readings; the largest backlog was {_fmt(tp['backlog_max'])} readings; the engine "
            f"caught up {_fmt(tp['caught_up_s'], ' s', 1)} after the last publish. The "
            f"publisher ran up to {_fmt(pub.get('max_lag_s'), ' s', 1)} behind its schedule."
        ),
        "",
        "![throughput](throughput.png)",
        "",
    ]


KIND_NAMES = {
    "reading": "a reading (the headline)",
    "timer": "a zone-grace or dwell timer",
    "offline": "device.offline (wall clock)",
    "online": "device.online",
}


def _late_md(doc: Mapping[str, Any]) -> list[str]:
    lat = doc["latency"]
    lines = [
        "## How late",
        "",
        (
            "Publish to signed webhook, milliseconds (how each alert's due time is found: "
            "README, section Load test)."
        ),
        "",
        "| alerts raised by | count | p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for kind, name in KIND_NAMES.items():
        t = lat["by_kind"][kind]["total_ms"]
        lines.append(
            f"| {name} | {t['count']:,} | {_fmt(t['p50'])} | {_fmt(t['p95'])} | "
            f"{_fmt(t['p99'])} | {_fmt(t['max'])} |"
        )
    reading = lat["by_kind"]["reading"]
    detect, hook = reading["to_detect_ms"], reading["to_webhook_ms"]
    lines += [
        "",
        (
            f"Split of the reading latency: publish to the engine's `detected_at` p50 "
            f"{_fmt(detect['p50'])} ms, p99 {_fmt(detect['p99'])} ms; `detected_at` to the "
            f"webhook p50 {_fmt(hook['p50'])} ms, p99 {_fmt(hook['p99'])} ms. Not timed: "
            f"{lat['not_timed']} alerts (raised by an API call, or matching no publish)."
        ),
        "",
        "![latency](latency.png)",
        "",
    ]
    return lines


def _quality_md(quality: Mapping[str, Any] | None) -> list[str]:
    if not quality:
        return ["## How accurate", "", "Not judged in ramp mode.", ""]
    lines = [
        "## How accurate",
        "",
        (
            f"Recall {_pct(quality['recall'])} ({quality['met']:,} of {quality['required']:,} "
            f"required alerts), precision {_pct(quality['precision'])}, "
            f"{quality['false_alerts']:,} false alerts = "
            f"{_fmt(quality['false_per_1000_car_hours'], '', 2)} per 1,000 car-hours "
            f"({quality['car_hours']:,.1f} car-hours of event time)."
        ),
        "",
        "| type | required | met | recall | alerts | false | precision | not judged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {type_} | {t['required']} | {t['met']} | {_pct(t['recall'])} | {t['alerts']} | "
        f"{t['false']} | {_pct(t['precision'])} | {t['not_judged']} |"
        for type_, t in quality["by_type"].items()
    ]
    lines.append("")
    for title, key in (
        ("Missed", "misses"),
        ("False alerts (the first 20)", "false_examples"),
        ("Expectations not judged", "expectations_not_judged"),
    ):
        items = quality.get(key) or []
        if items:
            lines += [f"{title}:", "", *(f"- {x}" for x in items[:20])]
            if len(items) > 20:
                lines.append(f"- and {len(items) - 20} more (report.json)")
            lines.append("")
    return lines


def _resources_md(res: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Resources",
        "",
        "| | |",
        "|---|---|",
        f"| engine CPU, mean over the publish phase | {_fmt(res.get('engine_cpu_cores_mean'), ' cores', 2)} |",  # noqa: E501
        f"| engine CPU, busiest second | {_fmt(res.get('engine_cpu_cores_peak'), ' cores', 2)} |",
        (
            f"| engine RSS at the start / peak / end | {_mib(res.get('engine_rss_start'))} / "
            f"{_mib(res.get('engine_rss_peak'))} / {_mib(res.get('engine_rss_end'))} |"
        ),
        f"| the load test itself (publisher, receiver), CPU | {_fmt(res.get('loadtest_cpu_cores_mean'), ' cores', 2)} |",  # noqa: E501
        f"| the whole machine, busy | {_fmt(res.get('machine_busy_cores_mean'), ' cores', 2)} |",
        "",
    ]
    if res.get("engine_not_measured"):
        lines += [f"Engine CPU and memory not measured: {res['engine_not_measured']}.", ""]
    return lines


def _setup_md(doc: Mapping[str, Any]) -> list[str]:
    setup = doc["setup"]
    parts = [
        f"planning {_fmt(setup.get('plan_s'), ' s', 1)}",
        f"engine start {_fmt(setup.get('engine_start_s'), ' s', 1)}",
        f"{setup.get('fences', 0):,} fences in {_fmt(setup.get('fences_s'), ' s', 1)}",
    ]
    if "gateway_start_s" in setup:
        parts.append(f"JT/T 808 gateway start {_fmt(setup['gateway_start_s'], ' s', 1)}")
    if "loans" in setup:
        parts.append(f"{setup['loans']:,} loans in {_fmt(setup.get('loans_s'), ' s', 1)}")
    if "truth_s" in setup:
        parts.append(f"ground truth {_fmt(setup.get('truth_s'), ' s', 1)}")
    parts.append(f"generating the messages {_fmt(setup.get('generate_s'), ' s', 1)}")
    return [
        "## Setup",
        "",
        f"Setup took {_fmt(setup.get('total_s'), ' s', 1)}: {'; '.join(parts)}.",
        "",
    ]


def _ramp_md(ramp: Mapping[str, Any]) -> list[str]:
    lines = [
        "## How fast: the ramp",
        "",
        (
            f"Highest sustained rate: **{_fmt(ramp.get('sustained_readings_per_s'))} "
            f"readings/s** ({_fmt(ramp.get('sustained_msgs_per_s'))} messages/s): the engine "
            f"kept up and the p99 latency stayed under {ramp['max_p99_ms']:g} ms. Steps of "
            f"{ramp['step_s']:g} s, each x{ramp['factor']:g} the last; stopped: "
            f"{ramp.get('stopped_because')}."
        ),
        "",
        "| step | speed | target msg/s | published msg/s | readings/s | processed/s | alerts timed | p99 ms | verdict |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s['step']} | {_fmt(s['speed'], 'x', 1)} | {_fmt(s['target_rate'])} | "
        f"{_fmt(s['published_msgs_per_s'])} | {_fmt(s['published_rps'])} | "
        f"{_fmt(s['processed_rps'])} | {s['alerts_timed']} | {_fmt(s['p99_ms'])} | "
        f"{s['verdict']} |"
        for s in ramp["steps"]
    ]
    lines += ["", "![throughput](throughput.png)", ""]
    return lines
