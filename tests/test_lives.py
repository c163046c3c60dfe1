"""The lending fleet's lives (`python -m simulator lives`): labelled multi-day replay datasets.

Small fleets over three days: a dozen loans for determinism (with and without `--no-noise`),
and 32 loans from 2026-03-07 (the US DST change falls on the 8th) so every behaviour and every
noise of the quiet cars plays and a New York borrower has a DST night. What the truth labels
promise is checked on the readings themselves, and the dataset runs through `pledgewatch
replay` with the alerts each risk should raise, and none that the quiet cars' noise must not.
The malls are checked on a planned 200-loan, 14-day fleet, two of its districts lived.
"""

from __future__ import annotations

import itertools
import math
import re
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from alerts.model import Alert, AlertType
from engine.runtime.replay import Replay
from geofence.fence import load_fences
from geofence.index import FenceIndex
from lending.model import VIN_RE, parse_loans
from simulator import __main__ as simulator_cli
from simulator.life_days import live
from simulator.life_plan import Behaviour, LifeSpec, Noise, behaviour_counts, local_ms, nights
from simulator.lives import mall_of, plan_fleet

DST_START = "2026-03-07T00:00:00Z"
TOPIC_RE = re.compile(r"telematics/([A-Za-z0-9_.:-]{1,64})/(gps|status|vib)")
CRITICAL = {
    "zone.left",
    "pledge.risk_site_dwell",
    "pledge.vin_conflict",
    "pledge.tracker_separation",
    "gps.impossible_travel",
    "tow.suspected",
    "power.disconnected",
    "tamper",
}
FILES = ["fences.geojson", "loans.json", "readings.jsonl", "truth.json"]
NOISE_MUST_NOT_RAISE = {
    AlertType.ZONE_LEFT,
    AlertType.TOW_SUSPECTED,
    AlertType.TAMPER,
    AlertType.POWER_DISCONNECTED,
    AlertType.SHOCK,
    AlertType.RISK_SITE_DWELL,
}


def _write(
    out: Path, loans: int, seed: str, start: str | None = None, *, noise: bool = True
) -> Path:
    argv = ["lives", "--loans", str(loans), "--days", "3", "--seed", seed, "--out", str(out)]
    if start is not None:
        argv += ["--start", start]
    if not noise:
        argv.append("--no-noise")
    assert simulator_cli.main(argv) == 0
    return out


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _replay(root: Path) -> dict[str, list[Alert]]:
    """The dataset's alerts (the core's, no lending consumer) by loan, from an in-process replay."""
    index = FenceIndex.build(load_fences(root / "fences.geojson"))
    loans = parse_loans(orjson.loads((root / "loans.json").read_bytes()))
    loan_of = {d: ln.loan_id for ln in loans for d in ln.device_ids}
    alerts: list[Alert] = []
    replay = Replay(index, loans, on_alert=alerts.append)
    with (root / "readings.jsonl").open("rb") as f:
        replay.feed(f)
    replay.finish()
    by_loan: dict[str, list[Alert]] = defaultdict(list)
    for alert in alerts:
        by_loan[str(alert.loan_id or loan_of.get(str(alert.device_id)))].append(alert)
    return by_loan


class Dataset:
    """A written dataset, parsed: loans and truth by loan id, fixes by loan."""

    def __init__(self, root: Path) -> None:
        self.root = root
        raw = (root / "readings.jsonl").read_bytes().splitlines()
        self.lines = [orjson.loads(line) for line in raw]
        self.loans = {ln["loan_id"]: ln for ln in orjson.loads((root / "loans.json").read_bytes())}
        self.truth = orjson.loads((root / "truth.json").read_bytes())
        self.label = {t["loan_id"]: t for t in self.truth["loans"]}
        loan_of = {d: ln["loan_id"] for ln in self.loans.values() for d in ln["device_ids"]}
        self.gps: dict[str, list[dict[str, object]]] = defaultdict(list)  # by device
        self.vib: dict[str, list[dict[str, object]]] = defaultdict(list)  # by device
        self.loan_of = loan_of
        for line in self.lines:
            device, stream = TOPIC_RE.fullmatch(line["topic"]).groups()
            if stream == "gps":
                self.gps[device].append(line["payload"])
            elif stream == "vib":
                self.vib[device].append(line["payload"])

    def of(self, behaviour: Behaviour) -> list[str]:
        return [k for k, t in self.label.items() if t["behaviour"] == behaviour.value]

    def with_noise(self, noise: Noise) -> list[str]:
        return [k for k, t in self.label.items() if noise.value in t["noise"]]

    def events(self, loan_id: str, kind: Noise) -> list[dict[str, object]]:
        return [e for e in self.label[loan_id]["events"] if e["kind"] == kind.value]

    def gaps(self, loan_id: str) -> list[tuple[int, int]]:
        """The spans in which the loan's trackers had no signal (an underground garage)."""
        return [(_ms(e["start"]), _ms(e["end"])) for e in self.events(loan_id, Noise.GARAGE)]

    def primary(self, loan_id: str) -> list[dict[str, object]]:
        return self.gps[self.loans[loan_id]["device_ids"][0]]


def _metres(a: dict[str, object], b: dict[str, object]) -> float:
    lat_a, lon_a, lat_b, lon_b = (float(x) for x in (a["lat"], a["lon"], b["lat"], b["lon"]))
    dy = (lat_b - lat_a) * 111_195.0
    dx = (lon_b - lon_a) * 111_195.0 * math.cos(math.radians(lat_a))
    return math.hypot(dx, dy)


def _local(ts_ms: int, tz: str) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).astimezone(ZoneInfo(tz))


def _is_night(ts_ms: int, tz: str) -> bool:
    hour = _local(ts_ms, tz).hour
    return hour >= 22 or hour < 6


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("small"), 12, "lives-a")


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("quiet"), 12, "lives-a", noise=False)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return Dataset(_write(tmp_path_factory.mktemp("mixed"), 32, "lives-b", DST_START))


@pytest.fixture(scope="module")
def mixed_alerts(mixed: Dataset) -> dict[str, list[Alert]]:
    return _replay(mixed.root)


def test_same_seed_same_bytes(small: Path, tmp_path: Path) -> None:
    again = _write(tmp_path / "again", 12, "lives-a")
    other = _write(tmp_path / "other", 12, "lives-c")
    assert sorted(p.name for p in small.iterdir()) == FILES
    for name in FILES:
        assert (again / name).read_bytes() == (small / name).read_bytes(), name
    assert (other / "readings.jsonl").read_bytes() != (small / "readings.jsonl").read_bytes()
    # the noise is on by default, and part of those bytes
    truth = orjson.loads((small / "truth.json").read_bytes())
    assert truth["noise"] is True
    assert {n for t in truth["loans"] for n in t["noise"]} >= {Noise.GARAGE, Noise.MULTIPATH}


def test_noise_is_planned_from_the_seed_for_the_commuters_only() -> None:
    spec = LifeSpec(40, 7, "noise-a")
    plan = plan_fleet(spec)
    again = plan_fleet(spec)
    assert again.cars == plan.cars
    assert again.malls == plan.malls
    other = plan_fleet(replace(spec, seed="noise-b"))
    assert [c.noise for c in other.cars] != [c.noise for c in plan.cars]
    plain = plan_fleet(replace(spec, noise=False))
    assert plain.malls == ()
    assert all(c.noise is None for c in plain.cars)
    commuters = 0
    for car, before in zip(plan.cars, plain.cars, strict=True):
        if car.behaviour is not Behaviour.COMMUTER:
            assert car == before  # a risky car is planned as it was
            continue
        commuters += 1
        assert car.noise is not None
        assert before.visits == ()
        assert all(v.kind is Noise.MALL and not v.outside for v in car.visits)
        assert replace(car, visits=(), noise=None) == before
    noisy = [c.noise for c in plan.cars if c.noise is not None]
    assert sum(bool(n.garage) for n in noisy) == max(1, round(commuters / 8))
    assert sum(bool(n.glitches) for n in noisy) == max(1, round(commuters / 20))
    assert sum(n.bump_chance > 0 for n in noisy) == max(1, round(commuters / 4))
    assert sum(bool(n.malls) for n in noisy) >= commuters / 2
    for n in noisy:
        assert all(2 * 3_600_000 <= g.length_ms <= 4 * 3_600_000 for g in n.garage)
        assert all(80.0 <= math.hypot(g.du, g.dv) < 180.0 for g in n.glitches)
        assert all(5.0 <= g.hdop <= 10.0 for g in n.glitches)
        assert len(n.glitches) <= 2


def test_no_noise_gives_the_quiet_lives(small: Path, quiet: Path) -> None:
    noisy, plain = Dataset(small), Dataset(quiet)
    for name in ("fences.geojson", "loans.json"):
        assert (quiet / name).read_bytes() == (small / name).read_bytes(), name
    assert plain.truth["noise"] is False
    assert plain.truth["malls"] == []
    assert all(t["noise"] == [] for t in plain.truth["loans"])
    assert noisy.truth["malls"]
    assert any(t["noise"] for t in noisy.truth["loans"])
    assert {k for k, t in noisy.label.items() if t["noise"]} <= set(noisy.of(Behaviour.COMMUTER))

    def lines_of(ds: Dataset, loan_ids: set[str]) -> list[dict[str, object]]:
        return [
            ln
            for ln in ds.lines
            if ds.loan_of[TOPIC_RE.fullmatch(ln["topic"]).group(1)] in loan_ids
        ]

    # the risky cars' readings are the same, line for line; the commuters are quiet again
    risky = {k for k, t in plain.label.items() if t["risky"]}
    assert lines_of(noisy, risky) == lines_of(plain, risky)
    assert not plain.vib
    assert noisy.vib
    assert all(float(f["hdop"]) <= 3.0 for fixes in plain.gps.values() for f in fixes)
    for fixes in plain.gps.values():
        assert all(int(b["ts"]) - int(a["ts"]) <= 920_000 for a, b in itertools.pairwise(fixes))
    commuters = plain.of(Behaviour.COMMUTER)
    alerts = _replay(quiet)
    assert not [a for k in commuters for a in alerts.get(k, [])]  # no alert at all
    noisy_alerts = _replay(small)
    garage = noisy.with_noise(Noise.GARAGE)
    assert garage
    for loan_id in garage:  # while the noisy twin's garage commuter does go offline
        assert AlertType.DEVICE_OFFLINE in {a.type for a in noisy_alerts[loan_id]}


def test_behaviour_counts_give_every_behaviour_once_enough_cars_are_risky() -> None:
    counts = behaviour_counts(200, 0.35)
    assert set(counts) == set(Behaviour) - {Behaviour.COMMUTER}
    assert sum(counts.values()) == 70
    assert counts[Behaviour.UNMARKED_LOT] >= 4
    assert sum(behaviour_counts(12, 0.35).values()) == 4
    assert behaviour_counts(10, 0.0) == {}


def test_every_behaviour_in_a_mix(mixed: Dataset) -> None:
    labels = [t["behaviour"] for t in mixed.truth["loans"]]
    assert set(labels) == {b.value for b in Behaviour}
    risky = sum(t["risky"] for t in mixed.truth["loans"])
    assert 0.3 <= risky / len(labels) <= 0.4
    assert all(t["risky"] == (t["behaviour"] != "commuter") for t in mixed.truth["loans"])
    assert len(mixed.of(Behaviour.UNMARKED_LOT)) >= 4
    assert mixed.truth["start"] == DST_START
    assert mixed.truth["days"] == 3


def test_loans_carry_the_lending_fields(mixed: Dataset) -> None:
    fence_ids = {
        f["id"] for f in orjson.loads((mixed.root / "fences.geojson").read_bytes())["features"]
    }
    vins = [ln["vin"] for ln in mixed.loans.values()]
    assert len(set(vins)) == len(vins)
    assert all(VIN_RE.fullmatch(v) for v in vins)
    devices = [d for ln in mixed.loans.values() for d in ln["device_ids"]]
    assert len(set(devices)) == len(devices)
    assert sum(len(ln["device_ids"]) == 2 for ln in mixed.loans.values()) == 3  # 1 in 10
    for loan in mixed.loans.values():
        assert loan["status"] == "active"
        assert set(loan["zone_ids"]) <= fence_ids
        assert loan["tz"] in {"Asia/Shanghai", "Europe/Berlin", "America/New_York"}
        assert loan["vehicle"]["valued_at"] == "2025-11-01"
        assert set(loan["home"]) == {"lat", "lon"}
        assert loan["principal"] < loan["vehicle"]["value"]
    assert any("work" in ln for ln in mixed.loans.values())
    assert any("work" not in ln for ln in mixed.loans.values())


def test_quiet_commuters_sleep_at_their_declared_home_every_night(mixed: Dataset) -> None:
    start = int(datetime.fromisoformat(DST_START).timestamp() * 1000)
    end = start + 3 * 86_400_000
    new_york = []
    for loan_id in mixed.of(Behaviour.COMMUTER):
        loan = mixed.loans[loan_id]
        tz = ZoneInfo(loan["tz"])
        fixes = mixed.primary(loan_id)
        multipath = {_ms(str(e["at"])) for e in mixed.events(loan_id, Noise.MULTIPATH)}
        its_nights = nights(tz, start, end)
        assert len(its_nights) >= 2
        for night in its_nights:
            lo, hi = local_ms(tz, night, 22.0), local_ms(tz, night + timedelta(days=1), 6.0)
            there = [f for f in fixes if lo <= f["ts"] < hi]
            assert len(there) >= 24, (loan_id, night, len(there))  # 15 min apart, 7-8 h
            for fix in there:
                assert fix["ignition"] is False, (loan_id, fix)
                assert fix["speed_kmh"] == 0.0, (loan_id, fix)
                if fix["ts"] in multipath:  # the noise: 80-170 m off, hdop 5-10
                    assert 5.0 <= fix["hdop"] <= 10.0, (loan_id, fix)
                    assert 40.0 < _metres(fix, loan["home"]) < 250.0, (loan_id, fix)
                    continue
                assert fix["hdop"] <= 3.0, (loan_id, fix)
                assert _metres(fix, loan["home"]) < 100.0, (loan_id, night, fix)
        if loan["tz"] == "America/New_York":
            new_york.append(its_nights)
    # the night of 2026-03-07 is an hour short in New York: clocks go forward at 02:00
    assert any(date(2026, 3, 7) in ns for ns in new_york)
    ny = ZoneInfo("America/New_York")
    dst_night = local_ms(ny, date(2026, 3, 8), 6.0) - local_ms(ny, date(2026, 3, 7), 22.0)
    assert dst_night == 7 * 3_600_000


def test_sleeps_away_cars_park_nightly_far_from_their_declared_home(mixed: Dataset) -> None:
    cars = mixed.of(Behaviour.SLEEPS_AWAY)
    assert cars
    for loan_id in cars:
        loan, label = mixed.loans[loan_id], mixed.label[loan_id]
        nightly = [
            f
            for f in mixed.primary(loan_id)
            if f["ignition"] is False and _is_night(f["ts"], loan["tz"])
        ]
        assert len(nightly) >= 48  # two nights and more
        assert all(_metres(f, loan["home"]) > 3_000.0 for f in nightly)
        assert all(_metres(f, label["true_home"]) < 100.0 for f in nightly)


def _stays_near(
    fixes: list[dict[str, object]], at: dict[str, object], radius_m: float
) -> list[int]:
    """Durations (ms) of parked stays within `radius_m` of `at`, from consecutive fixes."""
    stays, run = [], []
    for fix in [*fixes, None]:
        if fix is not None and fix["ignition"] is False and _metres(fix, at) <= radius_m:
            run.append(int(fix["ts"]))
            continue
        if run:
            stays.append(run[-1] - run[0])
        run = []
    return stays


def test_an_unmarked_lot_gathers_several_loans(mixed: Dataset) -> None:
    lots = mixed.truth["unmarked_lots"]
    assert lots
    index = FenceIndex.build(load_fences(mixed.root / "fences.geojson"))
    for lot in lots:
        assert len(lot["loan_ids"]) >= 4
        loans = {
            loan_id
            for loan_id in lot["loan_ids"]
            if any(d >= 30 * 60_000 for d in _stays_near(mixed.primary(loan_id), lot, 150.0))
        }
        assert len(loans) >= 3, lot
        stalls = lot["visits"]
        assert max(_metres(a, b) for a in stalls for b in stalls) <= 60.0
        for visit in stalls:
            arrive, leave = (datetime.fromisoformat(visit[k]) for k in ("arrive", "leave"))
            assert timedelta(hours=1) <= leave - arrive <= timedelta(hours=3), visit
        hits = index.lookup_margin([lot["lat"]], [lot["lon"]], 150.0)
        assert len(hits) == 1  # its district's permitted area, and no risk site near it
        _, fences = index.lookup([lot["lat"]], [lot["lon"]])
        assert [index.kinds[k] for k in fences] == ["zone"]
        for loan_id in lot["loan_ids"]:
            assert mixed.label[loan_id]["unmarked_lot"] == {"lat": lot["lat"], "lon": lot["lon"]}
    # nobody else parks there for long
    visitors = {ln for lot in lots for ln in lot["loan_ids"]}
    for loan_id in set(mixed.loans) - visitors:
        for lot in lots:
            assert not any(
                d >= 30 * 60_000 for d in _stays_near(mixed.primary(loan_id), lot, 150.0)
            )


def test_parked_fixes_come_every_15_min_and_driving_ones_every_30_s(mixed: Dataset) -> None:
    parked_gaps = driving_gaps = silent = 0
    for device, fixes in mixed.gps.items():
        garage = mixed.gaps(mixed.loan_of[device])
        for a, b in itertools.pairwise(fixes):
            gap = int(b["ts"]) - int(a["ts"])
            if any(a["ts"] < end and b["ts"] >= start for start, end in garage):
                assert a["ignition"] is False, (device, a, b)  # parked in the garage
                assert b["ignition"] is False, (device, a, b)
                assert gap >= 3_600_000, (device, a, b)
                silent += 1
                continue
            assert 5_000 <= gap <= 920_000, (device, a, b)
            if a["ignition"] is False and b["ignition"] is False and b["speed_kmh"] == 0.0:
                if a["speed_kmh"] == 0.0:
                    assert 880_000 <= gap <= 920_000, (device, a, b)
                    parked_gaps += 1
            elif a["ignition"] is True and b["ignition"] is True:
                assert gap <= 31_500, (device, a, b)
                driving_gaps += 1
                assert isinstance(b["speed_kmh"], float)
    assert parked_gaps > 1000
    assert driving_gaps > 1000
    assert silent >= len(mixed.with_noise(Noise.GARAGE)) > 0


def test_files_parse_as_the_replay_format(mixed: Dataset) -> None:
    devices = {d for ln in mixed.loans.values() for d in ln["device_ids"]}
    arrivals = [line["received_at"] for line in mixed.lines]
    assert arrivals == sorted(arrivals)
    for line in mixed.lines:
        assert set(line) == {"topic", "payload", "received_at"}
        match = TOPIC_RE.fullmatch(line["topic"])
        assert match is not None
        assert match.group(1) in devices
        payload = line["payload"]
        assert isinstance(payload["ts"], int)
        assert payload["ts"] <= line["received_at"] <= payload["ts"] + 10_000
    statuses = [ln["payload"] for ln in mixed.lines if ln["topic"].endswith("/status")]
    assert any(s["tamper"] or not s["ext_power"] for s in statuses)


def test_the_replay_raises_what_each_behaviour_should(mixed: Dataset, tmp_path: Path) -> None:
    root = mixed.root
    rejects = tmp_path / "rejects.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "replay",
            str(root / "readings.jsonl"),
            "--fences",
            str(root / "fences.geojson"),
            "--loans",
            str(root / "loans.json"),
            "--rejects",
            str(rejects),
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert rejects.read_bytes() == b""
    alerts = [orjson.loads(line) for line in done.stdout.splitlines()]
    raised: dict[str, set[str]] = defaultdict(set)
    for alert in alerts:
        loan = alert.get("loan_id") or mixed.loan_of.get(alert.get("device_id"))
        raised[str(loan)].add(alert["type"])

    def every(behaviour: Behaviour, types: set[str]) -> None:
        for loan_id in mixed.of(behaviour):
            assert raised[loan_id] & types, (behaviour, loan_id, raised[loan_id])

    every(Behaviour.LEAVES_ZONE, {"zone.left"})
    every(Behaviour.PAWNSHOP, {"pledge.risk_site_dwell"})
    every(Behaviour.TOW, {"tow.suspected"})
    every(Behaviour.TAMPER, {"tamper", "power.disconnected"})
    quiet = {
        b
        for b in Behaviour
        if b not in {Behaviour.LEAVES_ZONE, Behaviour.PAWNSHOP, Behaviour.TOW, Behaviour.TAMPER}
    }
    for behaviour in quiet:
        for loan_id in mixed.of(behaviour):
            assert not raised[loan_id] & CRITICAL, (behaviour, loan_id, raised[loan_id])


def test_an_underground_garage_takes_the_tracker_offline(
    mixed: Dataset, mixed_alerts: dict[str, list[Alert]]
) -> None:
    garage = mixed.with_noise(Noise.GARAGE)
    assert garage
    assert set(garage) <= set(mixed.of(Behaviour.COMMUTER))
    for loan_id in garage:
        loan = mixed.loans[loan_id]
        gaps = mixed.gaps(loan_id)
        assert gaps
        for start, end in gaps:
            assert 3_600_000 <= end - start <= 4 * 3_600_000
        for device in loan["device_ids"]:  # every unit in the car is in the garage
            fixes = mixed.gps[device]
            for start, end in gaps:
                assert not [f for f in fixes if start <= f["ts"] < end]
                before = [f for f in fixes if f["ts"] < start][-1]
                after = next(f for f in fixes if f["ts"] >= end)
                for fix in (before, after):  # parked at work, before and after
                    assert fix["ignition"] is False, (loan_id, fix)
                    assert _metres(fix, loan["work"]) < 100.0, (loan_id, fix)
            assert not [v for v in mixed.vib[device] if any(a <= v["ts"] < b for a, b in gaps)]
        alerts = mixed_alerts[loan_id]
        offline = [a for a in alerts if a.type is AlertType.DEVICE_OFFLINE]
        online = [a for a in alerts if a.type is AlertType.DEVICE_ONLINE]
        assert len(offline) == len(online) == len(gaps) * len(loan["device_ids"]), alerts
        for alert in offline:  # 30 min after the last reading, within the gap
            assert any(start < alert.ts_ms < end for start, end in gaps), alert
        for alert in online:  # at the first reading after it
            assert any(end <= alert.ts_ms <= end + 920_000 for _, end in gaps), alert
    others = set(mixed.loans) - set(garage)
    assert not [
        a for k in others for a in mixed_alerts.get(k, []) if a.type is AlertType.DEVICE_OFFLINE
    ]


def test_commuters_shop_at_the_districts_malls(mixed: Dataset) -> None:
    malls = mixed.truth["malls"]
    zones = {ln["zone_ids"][0] for ln in mixed.loans.values()}
    per_zone = Counter(m["zone_id"] for m in malls)
    assert set(per_zone) == zones
    assert all(3 <= n <= 4 for n in per_zone.values())
    index = FenceIndex.build(load_fences(mixed.root / "fences.geojson"))
    lots = mixed.truth["unmarked_lots"]
    shoppers = set(mixed.with_noise(Noise.MALL))
    assert shoppers
    assert shoppers <= set(mixed.of(Behaviour.COMMUTER))
    for mall in malls:
        _, fences = index.lookup([mall["lat"]], [mall["lon"]])
        assert [index.ids[k] for k in fences] == [mall["zone_id"]]  # no fence: not a risk site
        assert len(index.lookup_margin([mall["lat"]], [mall["lon"]], 300.0)) == 1
        assert all(_metres(mall, lot) >= 600.0 for lot in lots)
        for visit in mall["visits"]:
            loan_id = str(visit["loan_id"])
            assert loan_id in shoppers
            assert mixed.label[loan_id]["zone_id"] == mall["zone_id"]
            assert _metres(visit, mall) <= 51.0
            arrive, leave = _ms(str(visit["arrive"])), _ms(str(visit["leave"]))
            assert 5 * 60_000 <= leave - arrive <= 2 * 3_600_000, visit
            local = _local(arrive, mixed.loans[loan_id]["tz"])
            assert 9 <= local.hour < 21, visit
            parked = [
                f
                for f in mixed.primary(loan_id)
                if arrive <= f["ts"] <= leave and f["ignition"] is False
            ]
            assert parked, visit
            assert all(_metres(f, visit) < 60.0 for f in parked if f["hdop"] <= 3.0), visit
    visits = Counter(str(v["loan_id"]) for m in malls for v in m["visits"])
    assert set(visits) == shoppers
    assert max(visits.values()) <= 2  # once or twice a week: three days, a weekend among them


def test_the_noise_raises_nothing_a_risk_would(
    mixed: Dataset, mixed_alerts: dict[str, list[Alert]]
) -> None:
    commuters = mixed.of(Behaviour.COMMUTER)
    got = {n for k in commuters for n in mixed.label[k]["noise"]}
    assert got == {n.value for n in Noise}  # every noise plays in the mix
    for loan_id in commuters:
        raised = {a.type for a in mixed_alerts.get(loan_id, [])}
        assert not raised & NOISE_MUST_NOT_RAISE, (loan_id, raised)
        assert raised <= {AlertType.DEVICE_OFFLINE, AlertType.DEVICE_ONLINE}, (loan_id, raised)
        fixes = mixed.primary(loan_id)
        for event in mixed.events(loan_id, Noise.MULTIPATH):
            k = next(i for i, f in enumerate(fixes) if f["ts"] == _ms(str(event["at"])))
            fix, parked = fixes[k], fixes[k - 1]
            assert fix["hdop"] == event["hdop"]
            assert 5.0 <= fix["hdop"] <= 10.0
            assert 80 <= int(event["error_m"]) < 180
            assert fix["ignition"] is False
            assert parked["ignition"] is False
            assert 50.0 < _metres(fix, parked) < 200.0, (loan_id, fix, parked)  # no tow
        bumps = mixed.events(loan_id, Noise.BUMPS)
        vib = mixed.vib[mixed.loans[loan_id]["device_ids"][0]]
        assert len(vib) == len(bumps)
        for reading in vib:
            assert 0.3 <= reading["g"] <= 1.5  # below a shock
            assert reading["ignition"] is True
            near = [f for f in fixes if abs(f["ts"] - reading["ts"]) <= 32_000]
            assert near, reading
            assert all(f["ignition"] is True for f in near), (loan_id, reading, near)
    assert not [d for d, v in mixed.vib.items() if v and mixed.loan_of[d] not in commuters]


def test_malls_gather_loans_for_half_an_hour_in_a_two_week_fleet() -> None:
    plan = plan_fleet(LifeSpec(200, 14, "7"))
    spec = plan.spec
    assert 3 * len(plan.city.zones) <= len(plan.malls) <= 4 * len(plan.city.zones)
    long_stays: dict[str, set[str]] = defaultdict(set)
    minutes: list[float] = []
    for zone in (0, 1):  # two of its eight districts, lived
        shoppers = [c for c in plan.cars if c.zone_index == zone and c.noise and c.noise.malls]
        assert len(shoppers) >= 5
        for car in shoppers:
            life = live(car, plan.city, plan.inner[zone], spec.seed, spec.start_ms, spec.end_ms)
            stops = [s for s in life.stops if s.kind == Noise.MALL.value]
            assert 1 <= len(stops) <= 4, car.loan_id  # once or twice a week
            for stop in stops:
                assert mall_of(stop) in car.noise.malls
                minutes.append((stop.leave_ms - stop.arrive_ms) / 60_000)
                if stop.leave_ms - stop.arrive_ms >= 30 * 60_000:
                    long_stays[str(mall_of(stop))].add(car.loan_id)
    assert max(len(loans) for loans in long_stays.values()) >= 3  # a discovery's false positive
    assert sum(15 <= m <= 60 for m in minutes) >= 0.7 * len(minutes)  # most stays
    assert 0.2 <= sum(m >= 30 for m in minutes) / len(minutes) <= 0.7  # some half an hour
