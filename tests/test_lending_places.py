"""Learned places: stays, clusters, nights and workdays in the loan's time zone, across DST.

The fake clock is the fixes' event time: a car reports every 15 minutes, parked (ignition
off) or driving (ignition on), and each test reads what the fold learned.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.geo import EARTH_RADIUS_M, haversine_m
from lending.model import GeoPoint
from lending.params import PlacesParams
from lending.places import FinishedStay, Place, Places, local_day
from tests.factories import property_settings

P = PlacesParams()
STEP_MS = 15 * 60_000
HOME = (31.2300, 121.4700)

PROPS = property_settings(40)

Point = tuple[float, float]
Where = Callable[[datetime], Point | None]
"""Where the car is parked at a local time, or None while it drives."""


def offset(at: Point, north_m: float, east_m: float) -> Point:
    """The point `north_m` north and `east_m` east of `at`."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(at[0]))))
    return at[0] + dlat, at[1] + dlon


WORK = offset(HOME, 4000, 3000)  # 5 km away
FAR = offset(HOME, -5000, 0)  # a friend's place, 5 km away


def local_ms(tz: str, day: date, hour: int, minute: int = 0) -> int:
    """Epoch ms of a local wall-clock time."""
    return int(
        datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp() * 1000
    )


Fix = tuple[int, float, float, bool]


def life(tz: str, start_ms: int, end_ms: int, where: Where) -> Iterator[Fix]:
    """A fix every 15 minutes of event time: parked where `where` says, else driving."""
    zone = ZoneInfo(tz)
    ts = start_ms
    while ts <= end_ms:
        local = datetime.fromtimestamp(ts / 1000, zone)
        at = where(local)
        if at is None:  # on the road, somewhere between home and work
            yield ts, *offset(HOME, 2000, 1500), False
        else:
            yield ts, at[0], at[1], True
        ts += STEP_MS


def commuter(local: datetime) -> Point | None:
    """Home from 18:00 to 08:00 and at weekends; work 08:30-17:30 on weekdays."""
    minutes = local.hour * 60 + local.minute
    if local.weekday() >= 5 or minutes >= 18 * 60 or minutes < 8 * 60:
        return HOME
    if 8 * 60 + 30 <= minutes < 17 * 60 + 30:
        return WORK
    return None


def feed(
    places: Places, fixes: Iterator[Fix] | list[Fix], params: PlacesParams = P
) -> list[tuple[int, FinishedStay | None, bool]]:
    """Observe every fix; returns (ts, finished stay, day closed) per fix."""
    out = []
    for ts, lat, lon, parked in fixes:
        finished, closed = places.observe(ts, lat, lon, parked, params)
        out.append((ts, finished, closed))
    return out


def near(place: Place | dict[str, object] | None, at: Point, within_m: float = 30.0) -> bool:
    """Whether a place (or a listed place) lies within `within_m` of `at`."""
    if place is None:
        return False
    if isinstance(place, dict):
        lat, lon = place["lat"], place["lon"]
        assert isinstance(lat, float)
        assert isinstance(lon, float)
        return haversine_m(lat, lon, *at) <= within_m
    return haversine_m(place.lat, place.lon, *at) <= within_m


SH = "Asia/Shanghai"
MON = date(2026, 3, 2)


def week_in_shanghai(where: Where = commuter, nights: int = 6) -> Places:
    """From Monday 18:00 to the morning after `nights` nights (07:00), in Shanghai."""
    places = Places(SH)
    end = local_ms(SH, MON + timedelta(days=nights), 7)
    feed(places, life(SH, local_ms(SH, MON, 18), end, where))
    return places


# -- home and work


def test_six_nights_at_home_make_the_home() -> None:
    places = week_in_shanghai()
    home = places.home()
    assert home is not None
    assert near(home, HOME)
    assert len(places.nights) == 6
    assert {cid for _, cid, _ in places.nights} == {home.cid}
    assert [day for day, _, _ in places.nights] == [
        (MON + timedelta(days=i)).toordinal() for i in range(6)
    ]
    assert all(ms == 8 * 3_600_000 for _, _, ms in places.nights)  # 22:00-06:00
    listing = places.listing(P)
    assert listing[0]["kind"] == "home"
    assert listing[0]["nights"] == 6
    assert set(listing[0]) == {"kind", "lat", "lon", "radius_m", "nights", "dwell_h", "last_seen"}
    assert near(listing[0], HOME)


def test_weekday_parking_makes_the_work_place() -> None:
    places = week_in_shanghai()
    work = places.work()
    assert work is not None
    assert near(work, WORK)
    # Tuesday to Friday (Monday began at 18:00; Saturday is a weekend)
    assert [day for day, _, _ in places.workdays] == [
        (MON + timedelta(days=i)).toordinal() for i in range(1, 5)
    ]
    kinds = [p["kind"] for p in places.listing(P)]
    assert kinds[:2] == ["home", "work"]
    assert places.listing(P)[1]["visits"] == 4


def test_weekend_parking_makes_no_work_place() -> None:
    def weekender(local: datetime) -> Point | None:
        if local.weekday() >= 5 and 9 <= local.hour < 17:
            return WORK
        if local.weekday() >= 5 and local.hour in (8, 17):
            return None
        return HOME

    places = week_in_shanghai(weekender, nights=7)  # through Sunday
    assert places.home() is not None
    assert near(places.home(), HOME)
    assert places.work() is None  # weekday hours were all spent at home
    assert all(cid == places.home().cid for _, cid, _ in places.workdays)  # type: ignore[union-attr]
    assert [p["kind"] for p in places.listing(P)] == ["home"]


def test_a_night_counts_for_the_place_parked_longest() -> None:
    """Home until 01:00, then at FAR for the rest of the night: FAR gets the night."""

    def night_out(local: datetime) -> Point | None:
        if local.date() == MON + timedelta(days=3) and local.hour >= 20:
            return FAR
        if local.date() == MON + timedelta(days=4) and local.hour < 8:
            return FAR
        return HOME

    places = week_in_shanghai(night_out)
    by_day = {day: cid for day, cid, _ in places.nights}
    far = [p for p in places.places if near(p, FAR)]
    assert len(far) == 1
    assert by_day[(MON + timedelta(days=3)).toordinal()] == far[0].cid
    assert places.home() is not None
    assert near(places.home(), HOME)


def test_short_stops_make_no_place() -> None:
    places = Places(SH)
    t = local_ms(SH, MON, 12)
    fixes: list[Fix] = [(t, *HOME, True), (t + 240_000, *HOME, True), (t + 270_000, *WORK, False)]
    results = feed(places, fixes)
    assert [f for _, f, _ in results] == [None, None, None]
    assert places.places == []
    fixes = [(t + 300_000, *HOME, True), (t + 600_000, *HOME, True), (t + 660_000, *WORK, False)]
    finished = [f for _, f, _ in feed(places, fixes) if f is not None]
    assert len(finished) == 1
    assert (finished[0].start_ms, finished[0].end_ms) == (t + 300_000, t + 660_000)
    assert len(places.places) == 1
    assert places.places[0].visits == 1


def test_a_long_silence_ends_the_stay_at_its_last_fix() -> None:
    places = Places(SH)
    t = local_ms(SH, MON, 12)
    feed(places, [(t, *HOME, True), (t + 600_000, *HOME, True)])
    later = t + 600_000 + P.max_gap_s * 1000 + 1
    finished, _ = places.observe(later, *HOME, parked=True, params=P)
    assert finished is not None
    assert (finished.start_ms, finished.end_ms) == (t, t + 600_000)
    assert places.stay is not None
    assert places.stay.start_ms == later  # a new stay begins


def test_moving_away_while_parked_ends_the_stay() -> None:
    places = Places(SH)
    t = local_ms(SH, MON, 12)
    feed(places, [(t, *HOME, True), (t + 600_000, *HOME, True)])
    finished, _ = places.observe(
        t + 900_000, *offset(HOME, 200, 0), parked=True, params=P
    )  # towed?
    assert finished is not None
    assert finished.end_ms == t + 900_000


def test_nearby_stays_join_one_place() -> None:
    places = Places(SH)
    t = local_ms(SH, MON, 12)
    for i, north in enumerate([0, 60, -80, 120]):
        at = offset(HOME, north, 0)
        base = t + i * 4 * 3_600_000
        feed(
            places,
            [(base, *at, True), (base + 3_600_000, *at, True), (base + 3_660_000, *WORK, False)],
        )
    assert len(places.places) == 1
    place = places.places[0]
    assert place.visits == 4
    assert place.dwell_ms == 4 * 3_660_000
    assert 0 < place.radius_m <= P.cluster_radius_m
    feed(
        places,
        [
            (t + 20 * 3_600_000, *WORK, True),
            (t + 21 * 3_600_000, *WORK, True),
            (t + 22 * 3_600_000, *HOME, False),
        ],
    )
    assert len(places.places) == 2


def test_frequent_places_are_listed_by_dwell() -> None:
    """Evening stops (outside night and work hours) at two spots, three times each."""
    places = Places(SH)
    for i in range(3):
        evening = local_ms(SH, MON + timedelta(days=i), 18)
        for at, start_h, hours in ((WORK, 0, 1), (FAR, 1, 2)):  # FAR stays twice as long
            begin = evening + start_h * 3_600_000 + 300_000
            stop = begin + hours * 3_600_000 - 600_000
            feed(places, [(begin, *at, True), (stop, *at, True), (stop + 60_000, *HOME, False)])
    assert places.home() is None
    listing = places.listing(P)
    assert [p["kind"] for p in listing] == ["frequent", "frequent"]
    assert [p["visits"] for p in listing] == [3, 3]
    assert near(listing[0], FAR)
    assert listing[0]["dwell_h"] > listing[1]["dwell_h"]  # type: ignore[operator]
    fewer = PlacesParams(frequent_min_visits=4)
    assert places.listing(fewer) == []


# -- conditions: home_mismatch, night_parking_drift


def test_home_mismatch_after_five_nights_and_not_before() -> None:
    declared_far = GeoPoint(*offset(HOME, 0, 5000))
    declared_near = GeoPoint(*offset(HOME, 0, 1000))
    four = week_in_shanghai(nights=4)
    assert len(four.nights) == 4
    assert four.conditions(declared_far, P) == []
    five = week_in_shanghai(nights=5)
    codes = dict(five.conditions(declared_far, P))
    assert set(codes) == {"home_mismatch"}
    evidence = codes["home_mismatch"]
    assert evidence["nights"] == 5
    assert abs(evidence["distance_m"] - 5000) < 50  # type: ignore[operator]
    assert five.conditions(declared_near, P) == []
    assert five.conditions(None, P) == []


def test_night_parking_drift_three_of_the_last_seven_nights() -> None:
    away_from = 10  # nights 0..9 at home, then away

    def drifter(away_nights: int) -> Where:
        first = MON + timedelta(days=away_from)

        def where(local: datetime) -> Point | None:
            night_of = (local - timedelta(hours=12)).date()  # 12:00 to 12:00
            if first <= night_of < first + timedelta(days=away_nights):
                return FAR
            return HOME

        return where

    two = week_in_shanghai(drifter(2), nights=away_from + 2)
    assert two.conditions(None, P) == []
    three = week_in_shanghai(drifter(3), nights=away_from + 3)
    assert near(three.home(), HOME)
    found = dict(three.conditions(None, P))
    assert set(found) == {"night_parking_drift"}
    assert found["night_parking_drift"]["nights"] == 3
    assert found["night_parking_drift"]["of"] == 7
    assert abs(found["night_parking_drift"]["max_distance_m"] - 5000) < 50  # type: ignore[operator]
    # back home: seven nights later the drift is gone
    back = week_in_shanghai(drifter(3), nights=away_from + 3 + 7)
    assert back.conditions(None, P) == []


def test_no_conditions_without_a_learned_home() -> None:
    places = Places(SH)
    assert places.home() is None
    assert places.conditions(GeoPoint(0.0, 0.0), P) == []
    assert places.listing(P) == []


# -- days in the loan's time zone, across DST


def test_local_day_is_the_local_date() -> None:
    t = int(datetime(2026, 3, 2, 17, 0, tzinfo=UTC).timestamp() * 1000)  # 01:00 in Shanghai
    assert local_day(SH, t) == date(2026, 3, 3).toordinal()
    assert local_day("America/New_York", t) == date(2026, 3, 2).toordinal()


def _sleeps_at_home(local: datetime) -> Point | None:
    return HOME if local.hour >= 18 or local.hour < 8 else (None if local.hour in (8, 17) else WORK)


@pytest.mark.parametrize(
    ("tz", "short_or_long", "hours"),
    [
        ("America/New_York", date(2026, 3, 7), 7),  # DST starts on the 8th at 02:00
        ("Europe/Berlin", date(2026, 3, 28), 7),  # DST starts on the 29th at 02:00
        ("America/New_York", date(2026, 10, 31), 9),  # DST ends on 1 November
        ("Europe/Berlin", date(2026, 10, 24), 9),  # DST ends on the 25th
        ("Asia/Shanghai", date(2026, 3, 7), 8),  # no DST
    ],
)
def test_nights_across_dst_are_counted_on_both_sides(
    tz: str, short_or_long: date, hours: int
) -> None:
    first = short_or_long - timedelta(days=3)
    places = Places(tz)
    start, end = local_ms(tz, first, 18), local_ms(tz, first + timedelta(days=7), 7)
    results = feed(places, life(tz, start, end, _sleeps_at_home))
    # seven nights, each at home, each closed at 06:00 local the next morning
    assert [day for day, _, _ in places.nights] == [
        (first + timedelta(days=i)).toordinal() for i in range(7)
    ]
    home = places.home()
    assert home is not None
    assert near(home, HOME)
    assert {cid for _, cid, _ in places.nights} == {home.cid}
    credit = {date.fromordinal(day): ms for day, _, ms in places.nights}
    assert credit[short_or_long] == hours * 3_600_000  # the night really is that long
    assert all(ms == 8 * 3_600_000 for day, ms in credit.items() if day != short_or_long)
    zone = ZoneInfo(tz)
    # the first fix closes the day before it, which saw nothing; then one close a morning
    assert results[0][2]
    closes = [datetime.fromtimestamp(ts / 1000, zone) for ts, _, closed in results[1:] if closed]
    assert [(c.hour, c.minute) for c in closes] == [(6, 0)] * 7
    assert [c.date() for c in closes] == [first + timedelta(days=i + 1) for i in range(7)]


def test_the_first_fix_after_six_local_closes_the_night_not_before() -> None:
    tz = "America/New_York"
    places = Places(tz)
    feed(
        places,
        life(
            tz,
            local_ms(tz, date(2026, 3, 7), 18),
            local_ms(tz, date(2026, 3, 8), 5, 45),
            _sleeps_at_home,
        ),
    )
    assert places.nights == []
    _, closed = places.observe(local_ms(tz, date(2026, 3, 8), 5, 59), *HOME, parked=True, params=P)
    assert not closed
    _, closed = places.observe(local_ms(tz, date(2026, 3, 8), 6, 0), *HOME, parked=True, params=P)
    assert closed
    assert places.nights[0][2] == 7 * 3_600_000


def test_a_long_silence_skips_the_days_it_did_not_see() -> None:
    places = week_in_shanghai()
    assert len(places.nights) == 6
    later = local_ms(SH, MON + timedelta(days=60), 12)
    feed(places, life(SH, later, later + 3 * 86_400_000, lambda _: HOME))
    # the old nights left the 30-day window; only the nights since came in
    assert [day for day, _, _ in places.nights] == [
        (MON + timedelta(days=60 + i)).toordinal() for i in range(3)
    ]
    assert len(places.night_credit) <= 2


# -- bounds, order, snapshots


def test_a_car_at_200_places_keeps_at_most_max_clusters_and_its_home() -> None:
    places = Places(SH)
    t = local_ms(SH, MON, 0)
    fixes: list[Fix] = []
    for i in range(200):
        day_start = t + i * 86_400_000 // 2  # two stays a day
        spot = offset(HOME, 3000 + 1000 * (i // 20), 1000 * (i % 20))
        fixes += [
            (day_start + k * STEP_MS, *HOME, True) for k in range(30)
        ]  # 00:00-07:15 or 12:00-19:15
        fixes.append((day_start + 30 * STEP_MS, *HOME, False))
        fixes += [(day_start + (31 + k) * STEP_MS, *spot, True) for k in range(4)]
        fixes.append((day_start + 35 * STEP_MS, *spot, False))
    feed(places, fixes)
    assert len(places.places) <= P.max_clusters
    assert places.next_cid >= 200
    home = places.home()
    assert home is not None
    assert near(home, HOME)
    assert home in places.places
    small = PlacesParams(max_clusters=3)
    few = Places(SH)
    feed(few, fixes, small)
    assert len(few.places) <= 3


def test_fixes_older_than_the_last_are_ignored() -> None:
    places = week_in_shanghai()
    before = places.to_json()
    last = places.last_fix_ms
    for ts in (last, last - 1, last - 5 * 86_400_000):
        assert places.observe(ts, *FAR, parked=True, params=P) == (None, False)
    assert places.to_json() == before


def test_places_snapshot_round_trip() -> None:
    places = week_in_shanghai()
    doc = orjson.loads(orjson.dumps(places.to_json()))
    restored = Places.from_json(doc)
    assert restored.to_json() == places.to_json()
    assert restored.listing(P) == places.listing(P)


@st.composite
def lives(draw: st.DrawFn) -> tuple[str, list[Fix]]:
    """A random fortnight: a few spots, random stays and drives, irregular reporting."""
    seed = draw(st.integers(0, 2**32 - 1))
    tz = draw(st.sampled_from([SH, "America/New_York", "Europe/Berlin"]))
    rnd = random.Random(seed)
    spots = [offset(HOME, rnd.uniform(-6000, 6000), rnd.uniform(-6000, 6000)) for _ in range(4)]
    spots[0] = HOME
    ts = local_ms(tz, date(2026, 3, 3), rnd.randrange(24))
    end = ts + 14 * 86_400_000
    fixes: list[Fix] = []
    while ts < end:
        spot = rnd.choice(spots) if rnd.random() < 0.5 else spots[0]
        for _ in range(rnd.randrange(1, 60)):  # a stay of up to 15 hours
            jitter = offset(spot, rnd.uniform(-30, 30), rnd.uniform(-30, 30))
            fixes.append((ts, *jitter, True))
            ts += rnd.choice([STEP_MS, STEP_MS, 60_000, 4 * 3_600_000])
        for _ in range(rnd.randrange(1, 4)):
            fixes.append((ts, *offset(spot, 3000, 0), False))
            ts += STEP_MS
        if rnd.random() < 0.05:
            fixes.append((ts - 10 * STEP_MS, *spots[1], True))  # a late fix
    return tz, fixes


def _outcome(results: list[tuple[int, FinishedStay | None, bool]]) -> list[object]:
    return [(ts, f, closed) for ts, f, closed in results]


@PROPS
@given(lives(), st.sampled_from([P, PlacesParams(max_clusters=2)]), st.data())
def test_snapshot_mid_stream_gives_the_same_places_as_one_run(
    life_: tuple[str, list[Fix]], params: PlacesParams, data: st.DataObject
) -> None:
    tz, fixes = life_
    whole = Places(tz)
    expected = feed(whole, fixes, params)
    cut = data.draw(st.integers(0, len(fixes)))
    first = Places(tz)
    got = feed(first, fixes[:cut], params)
    resumed = Places.from_json(orjson.loads(orjson.dumps(first.to_json())))
    got += feed(resumed, fixes[cut:], params)
    assert _outcome(got) == _outcome(expected)
    assert resumed.to_json() == whole.to_json()
    assert resumed.listing(params) == whole.listing(params)
    assert len(whole.places) <= params.max_clusters
    if whole.home() is not None:
        assert whole.listing(params)[0]["kind"] == "home"
