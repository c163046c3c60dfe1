"""Part 1 of `bench_lending`: does the lending consumer's risk score tell risky cars from quiet
commuters, on a simulated fleet's lives with their truth labels?

`make_lives` plans and lives a seeded fleet in memory (what `python -m simulator lives`
writes, not written); `replay_lives` replays it through `Replay(..., consumer=...)`, as
`pledgewatch replay` does, collecting the alerts; `evaluate` compares what the consumer
learned with the truth: the ranking of its scores (AUC), the tiers by behaviour, the reason
codes, the risk-site candidates and the learned homes.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from alerts.model import Alert, AlertType
from benchmarks.common import log, rate
from engine.core.config import Config
from engine.runtime.replay import Replay
from geofence.fence import Fence, FenceKind, parse_fence
from geofence.geo import haversine_m
from geofence.index import FenceIndex
from lending.consumer import LendingConsumer
from lending.model import Loan, parse_loans
from lending.params import TIERS
from simulator.life_plan import LifeSpec, fences_doc, loan_doc
from simulator.lives import live_fleet, plan_fleet, reading_lines, truth_doc
from simulator.truth import parse_iso_ms

TARGET_AUC = 0.95
"""The issue's target: AUC of the final score, risky cars against quiet ones, at least this."""
MATCH_M = 150.0
"""A candidate (or a learned home) within this of a truth place is that place."""
AWAY_M = 2000.0
"""`sleeps_away`: a learned home this far from the declared one is what `home_mismatch` sees."""
TIER_CHANGED = AlertType.RISK_TIER_CHANGED.value


@dataclass(slots=True)
class Lives:
    """A simulated fleet's lives, in memory: replay lines, fences, loans and the truth."""

    spec: LifeSpec
    lines: list[bytes]
    fences: list[Fence]
    loans: list[Loan]
    truth: dict[str, Any]  # truth.json, as `simulator.lives.truth_doc` builds it
    generate_s: float


def make_lives(loans: int, days: int, seed: int, noise: bool = True) -> Lives:
    """Plan and live a seeded fleet, as `python -m simulator lives` would write it."""
    started = time.perf_counter()
    spec = LifeSpec(loans, days, str(seed), noise=noise)
    log(f"simulating {loans} loans x {days} days (seed {seed}, noise {noise})")
    plan = plan_fleet(spec)
    cars = live_fleet(plan)
    lines = list(reading_lines(cars))
    features: list[dict[str, Any]] = fences_doc(plan)["features"]  # type: ignore[assignment]  # a list of features
    fences = [parse_fence(str(f["id"]), f) for f in features]
    parsed = parse_loans([loan_doc(plan, c) for c in plan.cars])
    seconds = time.perf_counter() - started
    log(f"  {len(lines):,} lines, {len(fences)} fences, {len(parsed)} loans in {seconds:.1f} s")
    return Lives(spec, lines, fences, parsed, truth_doc(plan, cars), seconds)


@dataclass(slots=True)
class LivesRun:
    """The replay of a `Lives` with the consumer: what it raised and how fast."""

    index: FenceIndex
    consumer: LendingConsumer
    replay: Replay
    alerts: list[Alert]
    rejects: int
    seconds: float

    @property
    def readings(self) -> int:
        """Readings the core accepted."""
        return sum(self.replay.pipeline.counters.readings.values())


def replay_lives(lives: Lives) -> LivesRun:
    """Replay the lines in-process with a fresh lending consumer (engine defaults); timed."""
    index = FenceIndex.build(lives.fences)
    consumer = LendingConsumer()
    alerts: list[Alert] = []
    rejects: list[object] = []
    replay = Replay(index, lives.loans, Config(), alerts.append, rejects.append, consumer)
    started = time.perf_counter()
    replay.feed(lives.lines)
    replay.finish()
    seconds = time.perf_counter() - started
    return LivesRun(index, consumer, replay, alerts, len(rejects), seconds)


def marked_by(index: FenceIndex) -> Callable[[float, float, float], bool]:
    """`is_marked` as the API builds it: inside or within reach of a `risk_site` fence."""
    fences = index.by_id

    def is_marked(lat: float, lon: float, radius_m: float) -> bool:
        hits = index.hits([lat], [lon], radius_m)[0]
        return any(fences[h.fence_id].kind is FenceKind.RISK_SITE for h in hits)

    return is_marked


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties counting 1/2 (Mann-Whitney U / n1 n0),
    computed exactly from mid-ranks; None without both classes."""
    if not positives or not negatives:
        return None
    values = sorted([(v, 1) for v in positives] + [(v, 0) for v in negatives])
    rank_sum = 0.0
    i = 0
    while i < len(values):
        j = i
        while j < len(values) and values[j][0] == values[i][0]:
            j += 1
        rank_sum += (i + 1 + j) / 2 * sum(pos for _, pos in values[i:j])  # mid-rank of a tie
        i = j
    n1, n0 = len(positives), len(negatives)
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, slots=True)
class LoanResult:
    """One loan: its truth label and what the consumer made of it."""

    loan_id: str
    behaviour: str
    risky: bool
    noise: tuple[str, ...]
    score: int  # at the end of the run
    tier: str
    peak_score: int  # the highest of the end and every risk.tier_changed's score
    peak_tier: str
    tier_changes: int
    reasons: tuple[tuple[str, int], ...]  # (code, points) at the end


def loan_results(lives: Lives, run: LivesRun) -> list[LoanResult]:
    """Per loan, in the truth's order."""
    peak_score: dict[str, int] = defaultdict(int)
    peak_tier: dict[str, int] = defaultdict(int)
    changes: Counter[str] = Counter()
    for a in run.alerts:
        if a.type.value != TIER_CHANGED or a.loan_id is None:
            continue
        score, to = a.details.get("score"), a.details.get("to")
        if isinstance(score, int):
            peak_score[a.loan_id] = max(peak_score[a.loan_id], score)
        if isinstance(to, str) and to in TIERS:
            peak_tier[a.loan_id] = max(peak_tier[a.loan_id], TIERS.index(to))
        changes[a.loan_id] += 1
    out = []
    for label in lives.truth["loans"]:
        loan_id = str(label["loan_id"])
        book = run.consumer.books.get(loan_id)
        score = 0 if book is None else book.risk.score
        tier = 0 if book is None else book.risk.tier
        reasons = () if book is None else tuple((r.code, r.points) for r in book.risk.reasons)
        out.append(
            LoanResult(
                loan_id,
                str(label["behaviour"]),
                bool(label["risky"]),
                tuple(label.get("noise") or ()),
                score,
                TIERS[tier],
                max(score, peak_score[loan_id]),
                TIERS[max(tier, peak_tier[loan_id])],
                changes[loan_id],
                reasons,
            )
        )
    return out


def ranking(results: list[LoanResult]) -> dict[str, Any]:
    """AUC of the final and of the peak score, the risky against the quiet: all risky cars,
    and each risky behaviour alone."""
    quiet = [r for r in results if not r.risky]

    def aucs(group: list[LoanResult]) -> dict[str, Any]:
        return {
            "loans": len(group),
            "auc_final": _r(auc([r.score for r in group], [r.score for r in quiet])),
            "auc_peak": _r(auc([r.peak_score for r in group], [r.peak_score for r in quiet])),
        }

    risky = [r for r in results if r.risky]
    behaviours = sorted({r.behaviour for r in risky})
    return {
        "risky": len(risky),
        "quiet": len(quiet),
        **{k: v for k, v in aucs(risky).items() if k != "loans"},
        "by_behaviour": {b: aucs([r for r in risky if r.behaviour == b]) for b in behaviours},
    }


def confusion(results: list[LoanResult], peak: bool) -> dict[str, dict[str, int]]:
    """Rows: behaviour (commuter first); columns: the tier at the end (or the peak tier)."""
    names = sorted({r.behaviour for r in results}, key=lambda b: (b != "commuter", b))
    out: dict[str, dict[str, int]] = {}
    for b in names:
        counts = Counter(r.peak_tier if peak else r.tier for r in results if r.behaviour == b)
        out[b] = {t: counts[t] for t in TIERS}
    return out


def reason_table(results: list[LoanResult]) -> list[dict[str, Any]]:
    """Per reason code at the end: loans carrying it, mean points, its share of all points,
    risky and quiet loans among them (precision = risky / carrying); most points first."""
    carried: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    for r in results:
        for code, points in r.reasons:
            carried[code].append((points, r.risky))
    total = sum(p for items in carried.values() for p, _ in items) or 1
    out: list[dict[str, Any]] = []
    for code, items in carried.items():
        risky = sum(1 for _, is_risky in items if is_risky)
        points = sum(p for p, _ in items)
        out.append(
            {
                "code": code,
                "loans": len(items),
                "mean_points": round(points / len(items), 1),
                "share_of_points": round(points / total, 3),
                "risky": risky,
                "quiet": len(items) - risky,
                "precision": round(risky / len(items), 3),
            }
        )
    out.sort(key=lambda d: (-d["share_of_points"], d["code"]))
    return out


def _nearest(lat: float, lon: float, places: list[dict[str, Any]], key: str) -> str | None:
    """The id (`key`) of the nearest truth place within `MATCH_M` of a point, or None."""
    best: tuple[float, str] | None = None
    for p in places:
        d = haversine_m(lat, lon, float(p["lat"]), float(p["lon"]))
        if d <= MATCH_M and (best is None or d < best[0]):
            best = (d, str(p[key]))
    return None if best is None else best[1]


def _long_stayers(place: dict[str, Any], min_stay_s: int) -> set[str]:
    """The loans whose truth visits to a place include one of `min_stay_s` or more."""
    return {
        str(v["loan_id"])
        for v in place["visits"]
        if parse_iso_ms(v["leave"]) - parse_iso_ms(v["arrive"]) >= min_stay_s * 1000
    }


def site_discovery(lives: Lives, run: LivesRun) -> dict[str, Any]:
    """The candidates (near risk-site fences left out, as the API does) matched to the truth's
    unmarked lots, else to its malls (shared parking that is no risk), else `other`."""
    params = run.consumer.params.sites
    found = run.consumer.candidates(marked_by(run.index))
    lots: list[dict[str, Any]] = list(lives.truth.get("unmarked_lots") or [])
    malls: list[dict[str, Any]] = list(lives.truth.get("malls") or [])
    truth_loans = {str(p["lot_id"]): set(p["loan_ids"]) for p in lots}
    truth_loans |= {str(p["mall_id"]): set(p["loan_ids"]) for p in malls}
    listed = []
    kinds: Counter[str] = Counter()
    lots_found: set[str] = set()
    for c in found:
        place = _nearest(c.lat, c.lon, lots, "lot_id")
        kind = "lot"
        if place is None:
            place = _nearest(c.lat, c.lon, malls, "mall_id")
            kind = "other" if place is None else "mall"
        else:
            lots_found.add(place)
        kinds[kind] += 1
        listed.append(
            {
                "lat": round(c.lat, 6),
                "lon": round(c.lon, 6),
                "radius_m": round(c.radius_m, 1),
                "loans": c.loans,
                "visits": c.visits,
                "kind": kind,
                "place": place,
                "loans_of_the_place": len(set(c.loan_ids) & truth_loans.get(place or "", set())),
            }
        )
    findable = {
        str(p["lot_id"])
        for p in lots
        if len(_long_stayers(p, params.min_stay_s)) >= params.min_loans
    }
    return {
        "candidates": len(found),
        "by_kind": {k: kinds[k] for k in ("lot", "mall", "other")},
        "lots": len(lots),
        "lots_findable": len(findable),
        "lots_found": sorted(lots_found),
        "recall": _r(len(lots_found) / len(lots)) if lots else None,
        "recall_findable": _r(len(lots_found & findable) / len(findable)) if findable else None,
        "precision": _r(kinds["lot"] / len(found)) if found else None,
        "loans_per_candidate": [c.loans for c in found],
        "malls": len(malls),
        "malls_findable": sum(
            1 for p in malls if len(_long_stayers(p, params.min_stay_s)) >= params.min_loans
        ),
        "listed": listed,
    }


def learned_home(consumer: LendingConsumer, loan_id: str) -> tuple[float, float] | None:
    """The learned home of `GET /v1/loans/{id}/places` (kind `home`), or None."""
    for place in consumer.places(loan_id):
        lat, lon = place["lat"], place["lon"]
        if place["kind"] == "home" and isinstance(lat, float) and isinstance(lon, float):
            return lat, lon
    return None


def learned_homes(lives: Lives, run: LivesRun) -> dict[str, Any]:
    """Commuters: learned home within `MATCH_M` of the true one; `sleeps_away`: learned home
    more than `AWAY_M` from the declared one."""
    declared = {ln.loan_id: ln.home for ln in lives.loans}
    errors_m: list[float] = []
    commuters = no_home = sleeps_away = away_found = 0
    for label in lives.truth["loans"]:
        loan_id = str(label["loan_id"])
        where = learned_home(run.consumer, loan_id)
        if label["behaviour"] == "commuter":
            commuters += 1
            if where is None:
                no_home += 1
            else:
                true = label["true_home"]
                errors_m.append(haversine_m(*where, float(true["lat"]), float(true["lon"])))
        elif label["behaviour"] == "sleeps_away":
            sleeps_away += 1
            point = declared.get(loan_id)
            if where is not None and point is not None:
                away_found += haversine_m(*where, point.lat, point.lon) > AWAY_M
    within = sum(1 for d in errors_m if d <= MATCH_M)
    ordered = sorted(errors_m)
    return {
        "commuters": commuters,
        "commuters_home_within_150m": within,
        "commuters_home_share": _r(within / commuters) if commuters else None,
        "commuters_without_home": no_home,
        "commuters_home_error_m": {
            "median": round(statistics.median(ordered), 1) if ordered else None,
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 1) if ordered else None,
            "max": round(ordered[-1], 1) if ordered else None,
        },
        "sleeps_away": sleeps_away,
        "sleeps_away_home_over_2km": away_found,
        "sleeps_away_share": _r(away_found / sleeps_away) if sleeps_away else None,
    }


def quiet_by_noise(results: list[LoanResult]) -> dict[str, dict[str, Any]]:
    """Commuters by the noise they got (`none`: a perfectly quiet car): how many, their mean
    final score, how many ended (or peaked) above `low`."""
    quiet = [r for r in results if not r.risky]
    out: dict[str, dict[str, Any]] = {}
    for kind in [*sorted({k for r in quiet for k in r.noise}), "none"]:
        these = [r for r in quiet if (kind in r.noise if kind != "none" else not r.noise)]
        if these:
            out[kind] = {
                "commuters": len(these),
                "mean_score": round(statistics.fmean(r.score for r in these), 1),
                "above_low_final": sum(1 for r in these if r.tier != "low"),
                "above_low_peak": sum(1 for r in these if r.peak_tier != "low"),
            }
    return out


def evaluate(lives: Lives, run: LivesRun) -> dict[str, Any]:
    """Everything part 1 reports, as a JSON object."""
    results = loan_results(lives, run)
    lines = len(lives.lines)
    return {
        "dataset": {
            "loans": lives.spec.loans,
            "days": lives.spec.days,
            "seed": lives.spec.seed,
            "noise": lives.spec.noise,
            "lines": lines,
            "fences": len(lives.fences),
            "behaviours": dict(sorted(Counter(r.behaviour for r in results).items())),
            "generate_s": round(lives.generate_s, 2),
        },
        "replay": {
            "seconds": round(run.seconds, 3),
            "lines_per_s": round(rate(lines, run.seconds), 1),
            "readings": run.readings,
            "readings_per_s": round(rate(run.readings, run.seconds), 1),
            "rejects": run.rejects,
            "alerts_by_type": dict(sorted(Counter(a.type.value for a in run.alerts).items())),
        },
        "ranking": ranking(results),
        "target_auc": TARGET_AUC,
        "confusion_final": confusion(results, peak=False),
        "confusion_peak": confusion(results, peak=True),
        "reasons": reason_table(results),
        "sites": site_discovery(lives, run),
        "places": learned_homes(lives, run),
        "commuters_by_noise": quiet_by_noise(results),
        "loans": [asdict(r) for r in results],
    }
