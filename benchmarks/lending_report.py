"""The printed report of `bench_lending`: one block per part, then the checks."""

from __future__ import annotations

from typing import Any

from benchmarks.common import fmt_rate, table
from lending.params import TIERS


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _share(n: int, of: int) -> str:
    return f"{n}/{of} ({n / of:.0%})" if of else "-"


def evaluation_text(ev: dict[str, Any]) -> str:
    """Part 1: the ranking, tiers by behaviour, reasons, noise, risk sites, learned homes."""
    ds, rp, rk = ev["dataset"], ev["replay"], ev["ranking"]
    lines = [
        (
            f"== 1. Evaluation: {ds['loans']} loans x {ds['days']} days (seed {ds['seed']}, noise "
            f"{'on' if ds['noise'] else 'off'}), {ds['lines']:,} lines, {ds['fences']} fences; "
            f"simulated in {ds['generate_s']:.1f} s"
        ),
        (
            f"replay with the consumer: {rp['seconds']:.2f} s, "
            f"{fmt_rate(rp['lines_per_s'])} lines/s ({fmt_rate(rp['readings_per_s'])} "
            f"readings/s), {rp['rejects']} rejects"
        ),
        "",
        (
            f"AUC, risky ({rk['risky']}) against quiet commuters ({rk['quiet']}), "
            f"Mann-Whitney with ties as 1/2: final score {_f(rk['auc_final'])}, "
            f"peak score {_f(rk['auc_peak'])} "
            f"(target: final >= {ev['target_auc']})"
        ),
        "",
    ]
    header = ["behaviour", "loans", *TIERS, "|", *(f"peak {t}" for t in TIERS), "AUC", "AUC peak"]
    rows = []
    for b, final in ev["confusion_final"].items():
        peak = ev["confusion_peak"][b]
        per = rk["by_behaviour"].get(b, {})
        rows.append(
            [
                b,
                str(sum(final.values())),
                *(str(final[t]) for t in TIERS),
                "|",
                *(str(peak[t]) for t in TIERS),
                _f(per.get("auc_final")),
                _f(per.get("auc_peak")),
            ]
        )
    lines += [
        (
            "tiers by behaviour: at the end of the run | the highest reached (peak); AUC of the "
            "behaviour alone against the quiet"
        ),
        table(header, rows),
        "",
        "reason codes at the end of the run (precision: risky loans / loans carrying it):",
        table(
            ["code", "loans", "mean points", "share of points", "risky", "quiet", "precision"],
            [
                [
                    r["code"],
                    str(r["loans"]),
                    f"{r['mean_points']:.1f}",
                    f"{r['share_of_points']:.0%}",
                    str(r["risky"]),
                    str(r["quiet"]),
                    f"{r['precision']:.2f}",
                ]
                for r in ev["reasons"]
            ],
        ),
    ]
    noise = ev["commuters_by_noise"]
    if noise:
        lines += [
            "",
            "quiet commuters by the noise they got (a car may have several):",
            table(
                ["noise", "commuters", "mean score", "above low (end)", "above low (peak)"],
                [
                    [
                        k,
                        str(v["commuters"]),
                        f"{v['mean_score']:.1f}",
                        str(v["above_low_final"]),
                        str(v["above_low_peak"]),
                    ]
                    for k, v in noise.items()
                ],
            ),
        ]
    st, pl = ev["sites"], ev["places"]
    kinds = st["by_kind"]
    err = pl["commuters_home_error_m"]
    lines += [
        "",
        (
            f"risk-site candidates (risk_site fences left out): {st['candidates']} listed: "
            f"{kinds['lot']} at a truth unmarked lot, {kinds['mall']} at a mall, {kinds['other']} "
            f"elsewhere; loans per candidate {st['loans_per_candidate']}"
        ),
        (
            f"  lots found {len(st['lots_found'])}/{st['lots']} (recall {_f(st['recall'], 2)}; "
            f"{st['lots_findable']} findable, 3+ loans staying 30+ min: recall "
            f"{_f(st['recall_findable'], 2)}), precision {_f(st['precision'], 2)}; "
            f"malls {st['malls']} ({st['malls_findable']} findable)"
        ),
        (
            f"learned homes: commuters within 150 m of the true home "
            f"{_share(pl['commuters_home_within_150m'], pl['commuters'])} (no home learned: "
            f"{pl['commuters_without_home']}; error median {_f(err['median'], 0)} m, p95 "
            f"{_f(err['p95'], 0)} m, max {_f(err['max'], 0)} m); sleeps_away more than 2 km from "
            f"the declared home {_share(pl['sleeps_away_home_over_2km'], pl['sleeps_away'])}"
        ),
    ]
    return "\n".join(lines)


def speed_text(sp: dict[str, Any]) -> str:
    """Part 2: both sides, the ratio against the budget."""
    inp = sp["input"]
    rows = []
    for key, name in (("without", "Replay, no consumer"), ("with", "Replay + LendingConsumer")):
        s = sp[key]
        rows.append(
            [
                name,
                f"{s['seconds']:.2f}",
                " ".join(f"{x:.2f}" for x in s["seconds_by_round"]),
                fmt_rate(s["lines_per_s"]),
                str(s["alerts"]),
                str(s["alerts_by_type"].get("risk.tier_changed", 0)),
                s["check"],
            ]
        )
    verdict = "within" if sp["ratio"] <= sp["target_ratio"] else "OVER"
    return "\n".join(
        [
            (
                f"== 2. Speed: bench_replay's fleet, {inp['lines']:,} lines, "
                f"{inp['loans']:,} loans, {inp['fences']:,} fences, in memory; "
                f"min of {sp['rounds']} alternating rounds"
            ),
            table(
                ["side", "seconds", "rounds", "lines/s", "alerts", "tier_changed", "check"], rows
            ),
            (
                f"time with / without: {sp['ratio']:.3f}x (rounds: "
                f"{', '.join(f'{r:.3f}' for r in sp['ratio_by_round'])}), {verdict} the budget of "
                f"{sp['target_ratio']}x; core alerts identical: "
                f"{sp['checks']['speed_core_alerts_identical']}"
            ),
        ]
    )


def size_text(size: dict[str, Any]) -> str:
    """Part 3: memory per loan and the candidate search at scale."""
    lines = ["== 3. Size"]
    mem = size.get("memory")
    if mem is not None:
        b, g = mem["bounds"], mem["graph_bytes"]
        js = mem["book_json_bytes"]
        lines += [
            (
                f"(a) after the evaluation replay ({mem['loans']} loans, {mem['site_aggregates']} "
                f"site aggregates in {mem['site_cells']} cells): {mem['graph_bytes_per_loan']:,} B "
                f"per loan held (object graph: books {g['books']:,} B, sites {g['sites']:,} B); "
                f"{mem['tracemalloc_restore_bytes_per_loan']:,} B per loan by tracemalloc, "
                "restoring its rows"
            ),
            (
                f"    a book as JSON: min {js['min']:,} B, median {js['median']:,.0f} B, max "
                f"{js['max']:,} B; bounded: places <= {b['places_bound']} (max seen "
                f"{b['places_max']}), nights and workdays of the last {b['nights_bound']} days "
                f"(max seen {b['nights_max']}, {b['workdays_max']}), ledger <= "
                f"{b['ledger_bound_per_code']} per code (max seen {b['ledger_max_per_code']}; "
                f"{b['ledger_max']} in all)"
            ),
        ]
    sites = size.get("sites")
    if sites is not None:
        rows = [
            [
                f"{r['stays']:,}",
                f"{r['loans']:,}",
                f"{r['aggregates']:,}",
                f"{r['neighbour_entries']:,}",
                f"{r['add_stay_us_per_stay']:.2f}",
                f"{r['candidates_s']:.3f}",
                f"{r['candidates_us_per_aggregate']:.2f}",
                f"{r['candidates_ns_per_neighbour_entry']:.0f}",
                f"{r['candidates']:,}",
                f"{r['planted_lots_found']}/{r['planted_lots']}",
            ]
            for r in sites["sizes"]
        ]
        lines += [
            (
                f"(b) risk-site search, synthetic stays over a {sites['city_side_km']:.0f} x "
                f"{sites['city_side_km']:.0f} km city (min of {sites['repeat']} candidate "
                "searches):"
            ),
            table(
                [
                    "stays",
                    "loans",
                    "aggregates",
                    "nbr entries",
                    "add us/stay",
                    "candidates s",
                    "us/aggregate",
                    "ns/nbr entry",
                    "found",
                    "lots found",
                ],
                rows,
            ),
        ]
        q = sites["last_ratio"]
        if q:
            lines.append(
                f"{q['sizes'][0]:,} -> {q['sizes'][1]:,} stays: aggregates x{q['aggregates']:.2f}, "
                f"candidate search x{q['candidates_time']:.2f} (all pairs would be "
                f"x{q['square_would_be']:.2f}; the neighbourhoods it reads x"
                f"{q['neighbour_entries']:.2f}), add_stay x{q['add_stay_time']:.2f}"
            )
    return "\n".join(lines)


def checks_text(checks: dict[str, str]) -> str:
    """Every check, `ok` or why not."""
    return "\n".join(["== checks", *(f"{name}: {result}" for name, result in checks.items())])
