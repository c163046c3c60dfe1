"""The lending consumer end to end over lists of readings and alerts (no engine, no store).

The fake clock is the event time of what it is fed; `now_ms` (detection time) only stamps
`detected_at`. A dict stands in for the store of the consumer's rows.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.model import Alert, AlertType, alert_id
from devices.readings import GpsFix, Reading, Vibration
from geofence.geo import haversine_m
from lending.consumer import BOOK_VERSION, LOANS, SITES, LendingConsumer, LoanBook, Row
from lending.model import Loan, Vehicle, parse_loan
from lending.params import LendingParams
from lending.places import Places
from tests.factories import offset_point as offset
from tests.factories import property_settings

SH = ZoneInfo("Asia/Shanghai")
MON = date(2026, 3, 2)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
STEP_MS = 15 * 60_000
HOME = (31.2300, 121.4700)

PROPS = property_settings(40)


def at_local(day: date, hour: int, minute: int = 0) -> int:
    """Epoch ms of a Shanghai wall-clock time."""
    return int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=SH).timestamp() * 1000)


T0 = at_local(MON, 18)
WORK = offset(HOME, 4000, 3000)
PAWN = offset(HOME, -3000, 2000)


def make_loan(
    loan_id: str = "L-1",
    devices: tuple[str, ...] = ("trk-1", "trk-2"),
    home: tuple[float, float] | None = HOME,
) -> Loan:
    doc: dict[str, object] = {
        "vin": "LSVAB4182E2123456",
        "device_ids": list(devices),
        "zone_ids": ["home"],
        "principal": 60_000,
        "vehicle": {
            "make": "VW",
            "model": "Lavida",
            "year": 2019,
            "mileage_km": 50_000,
            "value": 100_000,
            "valued_at": "2026-03-02T18:00:00+08:00",
        },
        "tz": "Asia/Shanghai",
    }
    if home is not None:
        doc["home"] = {"lat": home[0], "lon": home[1]}
    return parse_loan(loan_id, doc)


LOAN = make_loan()


def gps(
    ts_ms: int, at: tuple[float, float], device: str = "trk-1", *, parked: bool = True, **kw: object
) -> GpsFix:
    return GpsFix(device, ts_ms, at[0], at[1], ignition=not parked, **kw)  # type: ignore[arg-type]  # test kwargs


def risk_alert(
    type_: AlertType, ts_ms: int, loan: Loan = LOAN, device: str = "trk-1", n: int = 0
) -> Alert:
    fence = "home" if type_ is AlertType.ZONE_LEFT else None
    return Alert(
        id=alert_id(device, type_, fence, ts_ms, str(n)),
        type=type_,
        ts_ms=ts_ms,
        detected_ms=ts_ms + 500,
        device_id=device,
        loan_id=loan.loan_id,
        vin=loan.vin,
        fence_id=fence,
        lat=HOME[0],
        lon=HOME[1],
        details={},
    )


def commuter(ts_ms: int) -> tuple[tuple[float, float], bool]:
    """Where a commuting car is at an instant, and whether it is parked."""
    local = datetime.fromtimestamp(ts_ms / 1000, SH)
    minutes = local.hour * 60 + local.minute
    if local.weekday() >= 5 or minutes >= 18 * 60 or minutes < 8 * 60:
        return HOME, True
    if 8 * 60 + 30 <= minutes < 17 * 60 + 30:
        return WORK, True
    return offset(HOME, 2000, 1500), False


def week(
    start_ms: int, end_ms: int, device: str = "trk-1", where: object = commuter
) -> list[GpsFix]:
    out = []
    for ts in range(start_ms, end_ms + 1, STEP_MS):
        at, parked = where(ts)  # type: ignore[operator]
        out.append(gps(ts, at, device, parked=parked))
    return out


def run(consumer: LendingConsumer, events: list[tuple[Loan, Reading | Alert]]) -> list[Alert]:
    """Feed events in order, detected a second after their event time."""
    raised: list[Alert] = []
    for loan, event in events:
        if isinstance(event, Alert):
            raised += consumer.on_alert(loan, event, event.ts_ms + 1000)
        else:
            raised += consumer.on_reading(loan, event, event.ts_ms + 1000)
    return raised


# -- risk


def test_a_new_loan_is_low_with_no_alert() -> None:
    consumer = LendingConsumer()
    assert consumer.tier("L-1") == "low"
    assert run(consumer, [(LOAN, f) for f in week(T0, T0 + DAY_MS)]) == []
    assert consumer.tier("L-1") == "low"
    view = consumer.loan_view(LOAN)
    assert view["risk"] == {
        "score": 0,
        "tier": "low",
        "as_of": None,  # a clean loan has had nothing to judge
        "reasons": [],
    }


def test_zone_left_raises_one_tier_change_low_to_high() -> None:
    consumer = LendingConsumer()
    run(consumer, [(LOAN, gps(T0, HOME))])
    left = risk_alert(AlertType.ZONE_LEFT, T0 + 60_000)
    raised = consumer.on_alert(LOAN, left, T0 + 65_000)
    assert len(raised) == 1
    changed = raised[0]
    assert changed.type is AlertType.RISK_TIER_CHANGED
    assert changed.id == alert_id("L-1", AlertType.RISK_TIER_CHANGED, None, T0 + 60_000, "low>high")
    assert (changed.ts_ms, changed.detected_ms) == (T0 + 60_000, T0 + 65_000)
    assert (changed.loan_id, changed.vin, changed.device_id) == ("L-1", LOAN.vin, "trk-1")
    assert (changed.lat, changed.lon) == HOME  # where the car was last seen
    assert changed.details["from"] == "low"
    assert changed.details["to"] == "high"
    assert changed.details["score"] == 35
    reasons = changed.details["reasons"]
    assert isinstance(reasons, list)
    assert [(r["code"], r["alert_id"]) for r in reasons] == [("zone_left", left.id)]  # type: ignore[index]
    assert consumer.tier("L-1") == "high"
    # the same alert again raises nothing and changes nothing
    before = consumer.books["L-1"].to_json()
    assert consumer.on_alert(LOAN, left, T0 + 70_000) == []
    assert consumer.books["L-1"].to_json() == before


def test_a_forgotten_alert_redelivered_changes_nothing() -> None:
    """An alert the ledger let go (nine of one code keep eight) comes again mid-decay: the
    tier changes when and as it would have without it."""

    def run_with(again: bool) -> list[Alert]:
        consumer = LendingConsumer()
        burst = [risk_alert(AlertType.TAMPER, T0 + n * 1000, n=n) for n in range(9)]
        raised = run(consumer, [(LOAN, a) for a in burst])
        for ts in range(T0 + 30 * DAY_MS, T0 + 37 * DAY_MS, 10 * 60_000):
            raised += consumer.on_reading(LOAN, Vibration("trk-2", ts, 0.1), ts)
            if again:
                raised += consumer.on_alert(LOAN, burst[0], ts + 10)
        return raised

    expected = run_with(again=False)
    assert [(a.details["from"], a.details["to"]) for a in expected] == [
        ("low", "high"),
        ("high", "medium"),
    ]
    assert as_json(run_with(again=True)) == as_json(expected)


def test_an_alert_without_risk_is_ignored() -> None:
    consumer = LendingConsumer()
    entered = risk_alert(AlertType.GEOFENCE_ENTER, T0)
    assert consumer.on_alert(LOAN, entered, T0) == []
    assert consumer.books == {}
    assert consumer.take_rows() == []


def test_the_floor_lifts_after_seven_days_of_event_time() -> None:
    consumer = LendingConsumer()
    left = risk_alert(AlertType.ZONE_LEFT, T0)
    assert len(consumer.on_alert(LOAN, left, T0)) == 1
    raised = run(consumer, [(LOAN, f) for f in week(T0, T0 + 8 * DAY_MS)])
    assert [(a.details["from"], a.details["to"]) for a in raised] == [("high", "medium")]
    assert raised[0].ts_ms >= T0 + 7 * DAY_MS
    assert raised[0].ts_ms < T0 + 7 * DAY_MS + HOUR_MS + STEP_MS  # at the next hourly look


def test_readings_of_another_tracker_do_not_teach_places() -> None:
    consumer = LendingConsumer()
    run(consumer, [(LOAN, gps(T0, HOME, "trk-1"))])
    run(consumer, [(LOAN, f) for f in week(T0 + 1000, T0 + 7 * DAY_MS, "trk-2")])
    assert consumer.books["L-1"].primary == "trk-1"
    assert consumer.places("L-1") == []
    assert consumer.books["L-1"].clock_ms >= T0 + 7 * DAY_MS - STEP_MS  # but time moves on


def test_non_gps_readings_move_the_clock_only() -> None:
    consumer = LendingConsumer()
    assert consumer.on_reading(LOAN, Vibration("trk-1", T0, 0.3), T0) == []
    assert consumer.books["L-1"].clock_ms == T0
    assert consumer.books["L-1"].primary is None


# -- learned places and their conditions


def test_places_list_the_home_after_a_week_of_nights() -> None:
    consumer = LendingConsumer()
    run(consumer, [(LOAN, f) for f in week(T0, at_local(MON + timedelta(days=7), 7))])
    listing = consumer.places("L-1")
    assert [p["kind"] for p in listing[:2]] == ["home", "work"]
    assert listing[0]["nights"] == 7
    assert haversine_m(listing[0]["lat"], listing[0]["lon"], *HOME) < 30  # type: ignore[arg-type]
    assert haversine_m(listing[1]["lat"], listing[1]["lon"], *WORK) < 30  # type: ignore[arg-type]
    assert consumer.places("nobody") == []
    assert consumer.tier("L-1") == "low"  # it sleeps where it said it would


def test_a_home_far_from_the_declared_one_raises_home_mismatch() -> None:
    declared = offset(HOME, 0, 5000)
    loan = make_loan(home=declared)
    consumer = LendingConsumer()
    raised = run(consumer, [(loan, f) for f in week(T0, at_local(MON + timedelta(days=7), 7))])
    assert len(raised) == 1
    changed = raised[0]
    assert (changed.details["from"], changed.details["to"], changed.details["score"]) == (
        "low",
        "medium",
        25,
    )
    local = datetime.fromtimestamp(changed.ts_ms / 1000, SH)
    assert (local.date(), local.hour) == (MON + timedelta(days=5), 6)  # after the fifth night
    reasons = changed.details["reasons"]
    assert isinstance(reasons, list)
    reason = reasons[0]
    assert reason["code"] == "home_mismatch"
    assert reason["alert_id"] is None
    assert reason["evidence"]["nights"] == 5  # type: ignore[index]


def test_high_mileage_is_a_reason_after_three_days() -> None:
    consumer = LendingConsumer()
    fixes = [
        gps(ts, HOME, odometer_km=61_000 + 400 * (ts - T0) / DAY_MS)
        for ts in range(T0, T0 + 5 * DAY_MS, HOUR_MS)
    ]
    run(consumer, [(LOAN, f) for f in fixes])
    risk = consumer.loan_view(LOAN)["risk"]
    assert isinstance(risk, dict)
    codes = {r["code"]: r for r in risk["reasons"]}
    assert set(codes) == {"mileage_high"}
    assert codes["mileage_high"]["points"] == round(LendingParams().risk.points["mileage_high"])
    assert codes["mileage_high"]["evidence"]["km_per_day"] == pytest.approx(400, abs=1)


# -- collateral, price, quotes


def test_loan_view_has_risk_collateral_and_price() -> None:
    consumer = LendingConsumer()
    fresh = consumer.loan_view(LOAN)
    assert set(fresh) == {"risk", "collateral", "price"}
    assert fresh["collateral"] == {
        "value": 100_000,
        "currency": "CNY",
        "mileage_km": 50_000,
        "ltv": 0.6,
    }
    assert fresh["price"] == {"apr": 0.12, "max_principal": 80_000}
    run(consumer, [(LOAN, gps(T0, HOME, odometer_km=50_000.0))])
    run(consumer, [(LOAN, gps(T0 + 365 * DAY_MS, HOME, odometer_km=70_000.0))])
    consumer.on_alert(LOAN, risk_alert(AlertType.TOW_SUSPECTED, T0 + 365 * DAY_MS), T0)
    view = consumer.loan_view(LOAN)
    value = 100_000 * 0.88 ** (365 / 365.25) * 0.97
    assert view["collateral"] == {
        "value": round(value),
        "currency": "CNY",
        "mileage_km": 70_000,
        "ltv": round(60_000 / value, 3),
    }
    risk = view["risk"]
    assert isinstance(risk, dict)
    assert risk["tier"] == "high"
    assert view["price"] == {
        "apr": round(0.22 + 0.15 * (round(60_000 / value, 3) - 0.6), 4),
        "max_principal": round(value * 0.55),
    }


def test_quote_prices_a_prospective_loan() -> None:
    consumer = LendingConsumer()
    car = Vehicle(mileage_km=30_000, value=80_000, valued_at_ms=T0)
    quote = consumer.quote(car, 40_000, None, T0 + 365 * DAY_MS)
    value = 80_000 * 0.88 ** (365 / 365.25)
    assert quote["collateral"] == {
        "value": round(value),
        "currency": "CNY",
        "mileage_km": 30_000,
        "ltv": round(40_000 / value, 3),
    }
    assert quote["price"] == {"apr": 0.12, "max_principal": round(value * 0.8)}
    assert quote["risk"] == {"score": 0, "tier": "low", "as_of": None, "reasons": []}
    # with a known loan's history: its tier and its mileage
    # (the tracker's odometer counts from its installation: 15,000 km driven since the first)
    consumer.on_reading(LOAN, gps(T0 - 3_600_000, HOME, odometer_km=1_000.0), T0)
    consumer.on_reading(LOAN, gps(T0, HOME, odometer_km=16_000.0), T0)
    consumer.on_alert(LOAN, risk_alert(AlertType.ZONE_LEFT, T0), T0)
    known = consumer.quote(car, 40_000, "L-1", T0)
    assert known["risk"]["tier"] == "high"  # type: ignore[index]
    assert known["collateral"]["mileage_km"] == 45_000  # type: ignore[index]
    # 15,000 km past the assessment: 2.25 % off, then high's 55 %
    assert known["price"]["max_principal"] == round(80_000 * 0.9775 * 0.55)  # type: ignore[index]
    assert consumer.quote(car, 40_000, "unknown", T0)["risk"]["tier"] == "low"  # type: ignore[index]


# -- risk sites across the fleet


def test_three_loans_at_one_place_make_a_candidate_and_homes_do_not() -> None:
    consumer = LendingConsumer()
    loans = [make_loan(f"L-{i}", (f"trk-{i}",)) for i in range(3)]
    for i, loan in enumerate(loans):
        home = offset(HOME, 0, 100 * i)  # three neighbours, all asleep near HOME

        def where(
            ts: int, home: tuple[float, float] = home, i: int = i
        ) -> tuple[tuple[float, float], bool]:
            local = datetime.fromtimestamp(ts / 1000, SH)
            if local.date() == MON + timedelta(days=8 + i) and 10 <= local.hour < 12:
                return offset(PAWN, 20 * i, 0), True  # two hours at the pawnshop
            if local.hour in (9, 12):
                return offset(HOME, 1000, 0), False
            return home, True

        run(consumer, [(loan, f) for f in week(T0, T0 + 12 * DAY_MS, f"trk-{i}", where)])
    found = consumer.candidates(lambda lat, lon, r: False)
    assert len(found) == 1
    assert found[0].loan_ids == ("L-0", "L-1", "L-2")
    assert haversine_m(found[0].lat, found[0].lon, *PAWN) < 50
    assert consumer.candidates(lambda lat, lon, r: haversine_m(lat, lon, *PAWN) < 100) == []


def pawned_fleet(consumer: LendingConsumer, hours: tuple[int, int] = (10, 12)) -> list[Alert]:
    """Three neighbours' cars, each at one unmarked lot on its own day from `hours[0]` to
    `hours[1]` o'clock, fed as one stream in event-time order; the alerts raised."""
    loans = [make_loan(f"L-{i}", (f"trk-{i}",)) for i in range(3)]
    events: list[tuple[Loan, Reading | Alert]] = []
    for i, loan in enumerate(loans):
        home = offset(HOME, 0, 100 * i)

        def where(
            ts: int, home: tuple[float, float] = home, i: int = i
        ) -> tuple[tuple[float, float], bool]:
            local = datetime.fromtimestamp(ts / 1000, SH)
            day = local.date() == MON + timedelta(days=8 + i)
            if day and hours[0] <= local.hour + local.minute / 60 < hours[1]:
                return offset(PAWN, 20 * i, 0), True
            if local.hour in (9, 12) or (day and local.hour == 11):
                return offset(HOME, 1000, 0), False
            return home, True

        events += [(loan, f) for f in week(T0, T0 + 12 * DAY_MS, f"trk-{i}", where)]
    events.sort(key=lambda e: (e[1].ts_ms, e[0].loan_id))
    return run(consumer, events)


def test_parking_at_a_discovered_site_gives_every_loan_there_its_points() -> None:
    consumer = LendingConsumer()
    raised = pawned_fleet(consumer)
    for i in range(3):
        reasons = {r.code: r for r in consumer.books[f"L-{i}"].risk.reasons}
        assert "risk_site_candidate" in reasons, (i, reasons)
        assert reasons["risk_site_candidate"].evidence["loans"] == 3
    # stamped with the stay that made the lot a candidate: the third car's, on day 10
    changes = [a for a in raised if a.details.get("to") == "medium"]
    assert sorted(a.loan_id for a in changes) == ["L-0", "L-1", "L-2"]
    third_day = at_local(MON + timedelta(days=10), 12)
    assert all(a.ts_ms >= third_day for a in changes)
    # the same stream again: the same alerts, ids included
    assert [a.id for a in pawned_fleet(LendingConsumer())] == [a.id for a in raised]


def test_a_short_visit_to_a_discovered_site_earns_few_points() -> None:
    consumer = LendingConsumer()
    raised = pawned_fleet(consumer, hours=(10, 10.75))  # 45 minutes: a mall, not a pledge
    assert len(consumer.candidates(lambda *_: False)) == 1  # listed for the operator
    for i in range(3):
        reasons = {r.code: r for r in consumer.books[f"L-{i}"].risk.reasons}
        assert 0 < reasons["risk_site_candidate"].points <= 25 * (15 + 15) / 90
    assert not [a for a in raised if a.type is AlertType.RISK_TIER_CHANGED]


def test_a_marked_site_gives_no_candidate_points() -> None:
    consumer = LendingConsumer()
    consumer.is_marked = lambda lat, lon, _r: haversine_m(lat, lon, *PAWN) < 200
    pawned_fleet(consumer)
    for i in range(3):
        codes = {r.code for r in consumer.books[f"L-{i}"].risk.reasons}
        assert "risk_site_candidate" not in codes


# -- durable state


def test_take_rows_then_restore_gives_the_same_books() -> None:
    consumer = LendingConsumer()
    run(consumer, [(LOAN, f) for f in week(T0, T0 + 3 * DAY_MS)])
    consumer.on_alert(LOAN, risk_alert(AlertType.TAMPER, T0 + 3 * DAY_MS), T0)
    rows = consumer.take_rows()
    assert [(name, key) for name, key, _ in rows if name == LOANS] == [(LOANS, "L-1")]
    assert consumer.take_rows() == []
    store: dict[tuple[str, str], dict[str, object]] = {}
    apply(rows, store)
    fresh = restored(store)
    assert fresh.books["L-1"].to_json() == consumer.books["L-1"].to_json()
    assert fresh.loan_view(LOAN) == consumer.loan_view(LOAN)
    assert fresh.places("L-1") == consumer.places("L-1")


def test_a_book_of_another_version_is_refused() -> None:
    consumer = LendingConsumer()
    consumer.on_reading(LOAN, gps(T0, HOME), T0)
    doc = consumer.books["L-1"].to_json()
    with pytest.raises(ValueError, match=f"this build reads {BOOK_VERSION}"):
        LoanBook.from_json("L-1", {**doc, "v": BOOK_VERSION + 1})


def apply(rows: list[Row], store: dict[tuple[str, str], dict[str, object]]) -> None:
    """Commit rows to a dict the way a store does, through JSON."""
    for name, key, doc in rows:
        if doc is None:
            store.pop((name, key), None)
        else:
            store[name, key] = orjson.loads(orjson.dumps(doc))


def restored(
    store: dict[tuple[str, str], dict[str, object]], params: LendingParams | None = None
) -> LendingConsumer:
    """A fresh consumer loaded from the store, as at a restart."""
    consumer = LendingConsumer(params or LendingParams())
    consumer.restore(
        [(key, doc) for (name, key), doc in sorted(store.items()) if name == LOANS],
        [(key, doc) for (name, key), doc in sorted(store.items()) if name == SITES],
    )
    return consumer


RISKY = [
    AlertType.ZONE_LEFT,
    AlertType.TAMPER,
    AlertType.SHOCK,
    AlertType.DEVICE_OFFLINE,
    AlertType.POWER_DISCONNECTED,
    AlertType.IMPOSSIBLE_TRAVEL,
    AlertType.GEOFENCE_EXIT,
]
LOANS_UNDER_TEST = [
    make_loan("L-1", ("trk-1", "trk-2")),
    make_loan("L-2", ("trk-3",), offset(HOME, 0, 5000)),
]


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[Loan, Reading | Alert]]:
    """Ten days of two loans' fixes and now and then a risky alert, interleaved in time."""
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    days = rnd.choice([1, 4, 9, 12])
    events: list[tuple[int, int, Loan, Reading | Alert]] = []
    for k, loan in enumerate(LOANS_UNDER_TEST):
        spots = [HOME, WORK, PAWN, offset(HOME, rnd.uniform(-9000, 9000), rnd.uniform(-9000, 9000))]
        ts = T0 + rnd.randrange(HOUR_MS)
        while ts < T0 + days * DAY_MS:
            if rnd.random() < 0.8:
                at, parked = commuter(ts)
            else:
                at, parked = rnd.choice(spots), rnd.random() < 0.7
            device = loan.device_ids[0] if rnd.random() < 0.9 else loan.device_ids[-1]
            if rnd.random() < 0.2:  # a tracker without an ignition line: speed tells
                speed = rnd.choice([None, 0.0, 2.5, 3.0, 3.5, 40.0])
                fix = GpsFix(device, ts, at[0], at[1], speed_kmh=speed, odometer_km=None)
            else:
                fix = gps(ts, at, device, parked=parked)
            events.append((ts, k, loan, fix))
            if rnd.random() < 0.01:
                type_ = rnd.choice(RISKY)
                a = risk_alert(
                    type_, ts - rnd.choice([0, 0, HOUR_MS]), loan, device, rnd.randrange(3)
                )
                events.append((ts, k, loan, a))
            ts += rnd.choice([STEP_MS] * 12 + [4 * STEP_MS, 5 * HOUR_MS])
    events.sort(key=lambda e: (e[0], e[1]))
    return [(loan, event) for _, _, loan, event in events]


def as_json(alerts: list[Alert]) -> list[dict[str, object]]:
    return [a.to_json() for a in alerts]


@PROPS
@given(streams(), st.data())
def test_restore_mid_stream_raises_what_one_run_raises(
    events: list[tuple[Loan, Reading | Alert]], data: st.DataObject
) -> None:
    whole = LendingConsumer()
    expected = run(whole, events)
    cut = data.draw(st.integers(0, len(events)))
    first = LendingConsumer()
    store: dict[tuple[str, str], dict[str, object]] = {}
    got: list[Alert] = []
    for start in range(0, cut, 7):  # batches of seven, each committed with its rows
        got += run(first, events[start : min(start + 7, cut)])
        apply(first.take_rows(), store)
    second = restored(store)
    got += run(second, events[cut:])
    assert as_json(got) == as_json(expected)
    for loan in LOANS_UNDER_TEST:
        assert second.loan_view(loan) == whole.loan_view(loan)
        assert second.places(loan.loan_id) == whole.places(loan.loan_id)
    assert {k: b.to_json() for k, b in second.books.items()} == {
        k: b.to_json() for k, b in whole.books.items()
    }


@PROPS
@given(streams())
def test_tier_changes_are_deterministic_and_well_formed(
    events: list[tuple[Loan, Reading | Alert]],
) -> None:
    raised = run(LendingConsumer(), events)
    assert as_json(run(LendingConsumer(), events)) == as_json(raised)
    ids = [a.id for a in raised]
    assert len(set(ids)) == len(ids)
    last: dict[str | None, object] = {}
    for a in raised:
        assert a.type is AlertType.RISK_TIER_CHANGED
        assert a.details["from"] != a.details["to"]
        assert last.get(a.loan_id, "low") == a.details["from"]  # tiers chain per loan
        last[a.loan_id] = a.details["to"]


@PROPS
@given(streams(), st.data())
def test_a_redelivered_alert_adds_nothing(
    events: list[tuple[Loan, Reading | Alert]], data: st.DataObject
) -> None:
    alerts = [i for i, (_, e) in enumerate(events) if isinstance(e, Alert)]
    again = data.draw(st.lists(st.sampled_from(alerts), max_size=5)) if alerts else []
    with_dups: list[tuple[Loan, Reading | Alert]] = []
    for i, event in enumerate(events):
        with_dups.append(event)
        with_dups.extend(events[j] for j in again if j == i)  # redelivered right after
    assert as_json(run(LendingConsumer(), with_dups)) == as_json(run(LendingConsumer(), events))


@PROPS
@given(streams())
def test_the_books_places_are_the_places_of_the_primary_trackers_fixes(
    events: list[tuple[Loan, Reading | Alert]],
) -> None:
    """Whatever shortcuts the consumer takes, its places are a plain fold of the fixes of the
    loan's first tracker (parked: ignition off, or no ignition line and at most 3 km/h)."""
    consumer = LendingConsumer()
    run(consumer, events)
    params = LendingParams().places
    for loan in LOANS_UNDER_TEST:
        fixes = [e for lo, e in events if lo is loan and isinstance(e, GpsFix)]
        if not fixes:
            continue
        reference = Places("Asia/Shanghai")
        for f in fixes:
            if f.device_id != fixes[0].device_id:
                continue
            parked = f.ignition is False or (
                f.ignition is None and (f.speed_kmh is None or f.speed_kmh <= 3.0)
            )
            reference.observe(f.ts_ms, f.lat, f.lon, parked, params)
        assert consumer.books[loan.loan_id].primary == fixes[0].device_id
        assert consumer.books[loan.loan_id].places.to_json() == reference.to_json()
