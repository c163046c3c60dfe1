"""Risk-site discovery: long stays of several loans' cars at one place, on a grid.

The grid lookup is checked against a brute-force reference that looks at every aggregate.
"""

from __future__ import annotations

import math
import random

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.geo import haversine_m
from lending.params import SitesParams
from lending.sites import DAY_MS, Candidate, Cell, SiteIndex, Visits, candidate_weight
from tests.factories import offset_point as offset
from tests.factories import property_settings

P = SitesParams()
T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
MIN_MS = 60_000
PAWN = (31.2300, 121.4700)

PROPS = property_settings(60)


def never(lat: float, lon: float, radius_m: float) -> bool:
    return False


def stay(
    index: SiteIndex, loan_id: str, at: tuple[float, float], start_ms: int, minutes: float
) -> bool:
    return index.add_stay(loan_id, at[0], at[1], start_ms, start_ms + round(minutes * MIN_MS))


def test_three_loans_parked_long_make_a_candidate() -> None:
    index = SiteIndex(P)
    spots = [offset(PAWN, 0, 0), offset(PAWN, 60, 40), offset(PAWN, -50, 70)]
    for i, (loan_id, at) in enumerate(zip(["L-1", "L-2", "L-3"], spots, strict=True)):
        assert stay(index, loan_id, at, T0 + i * 3_600_000, 30)
    found = index.candidates(never)
    assert len(found) == 1
    c = found[0]
    assert (c.loans, c.visits, c.loan_ids) == (3, 3, ("L-1", "L-2", "L-3"))
    assert (c.first_ms, c.last_ms) == (T0, T0 + 2 * 3_600_000 + 30 * MIN_MS)
    assert haversine_m(c.lat, c.lon, *PAWN) < 60
    assert 25.0 <= c.radius_m <= 2 * P.radius_m
    assert all(haversine_m(c.lat, c.lon, *at) <= c.radius_m + 1e-6 for at in spots)
    doc = c.to_json()
    assert set(doc) == {
        "lat",
        "lon",
        "radius_m",
        "loans",
        "visits",
        "first_seen",
        "last_seen",
        "loan_ids",
        "typical_stay_min",
    }
    assert doc["typical_stay_min"] == 30
    assert doc["first_seen"] == "2026-03-02T00:00:00Z"
    assert doc["last_seen"] == "2026-03-02T02:30:00Z"


def test_two_loans_are_not_enough() -> None:
    index = SiteIndex(P)
    for n in range(5):  # one car many times is still one loan
        stay(index, "L-1", PAWN, T0 + n * DAY_MS, 60)
    stay(index, "L-2", offset(PAWN, 20, 0), T0, 60)
    assert index.candidates(never) == []
    assert SiteIndex(SitesParams(min_loans=2)).candidates(never) == []
    two = SiteIndex(SitesParams(min_loans=2))
    stay(two, "L-1", PAWN, T0, 60)
    stay(two, "L-2", offset(PAWN, 20, 0), T0, 60)
    assert [c.loans for c in two.candidates(never)] == [2]


def test_stays_of_29_minutes_do_not_count() -> None:
    index = SiteIndex(P)
    assert stay(index, "L-1", PAWN, T0, 30)
    assert stay(index, "L-2", PAWN, T0, 45)
    assert not stay(index, "L-3", PAWN, T0, 29)
    assert not stay(index, "L-3", PAWN, T0, 29.99)
    assert index.stays() == 2
    assert index.candidates(never) == []
    assert stay(index, "L-3", PAWN, T0, 30)
    assert [c.loans for c in index.candidates(never)] == [3]


def test_places_300_m_apart_do_not_merge() -> None:
    index = SiteIndex(P)
    other = offset(PAWN, 0, 300)
    for loan_id in ("L-1", "L-2"):
        stay(index, loan_id, PAWN, T0, 60)
    stay(index, "L-3", other, T0, 60)
    assert index.candidates(never) == []
    for loan_id in ("L-4", "L-5"):
        stay(index, loan_id, other, T0, 60)
    stay(index, "L-6", PAWN, T0, 60)
    found = index.candidates(never)
    assert [(c.loans, c.loan_ids) for c in found] in (
        [(3, ("L-1", "L-2", "L-6")), (3, ("L-3", "L-4", "L-5"))],
        [(3, ("L-3", "L-4", "L-5")), (3, ("L-1", "L-2", "L-6"))],
    )


def test_a_marked_place_is_left_out() -> None:
    index = SiteIndex(P)
    other = offset(PAWN, 2000, 0)
    for loan_id in ("L-1", "L-2", "L-3"):
        stay(index, loan_id, PAWN, T0, 60)
        stay(index, loan_id, other, T0 + DAY_MS, 60)
    asked: list[tuple[float, float, float]] = []

    def pawnshop_fence(lat: float, lon: float, radius_m: float) -> bool:
        asked.append((lat, lon, radius_m))
        return haversine_m(lat, lon, *PAWN) <= 150 + radius_m

    found = index.candidates(pawnshop_fence)
    assert len(found) == 1
    assert haversine_m(found[0].lat, found[0].lon, *other) < 1
    assert len(asked) == 2
    assert all(r >= 25.0 for _, _, r in asked)


def test_most_loans_first() -> None:
    index = SiteIndex(P)
    small, big = PAWN, offset(PAWN, 5000, 0)
    for n, loan_id in enumerate(["A", "B", "C"]):
        for k in range(4):  # many visits, fewer loans
            stay(index, loan_id, small, T0 + (n * 4 + k) * DAY_MS, 60)
    for loan_id in ["D", "E", "F", "G"]:
        stay(index, loan_id, big, T0, 60)
    found = index.candidates(never)
    assert [(c.loans, c.visits) for c in found] == [(4, 4), (3, 12)]


def test_old_stays_are_forgotten_after_keep_days() -> None:
    index = SiteIndex(P)
    for loan_id in ("L-1", "L-2", "L-3"):
        stay(index, loan_id, PAWN, T0, 60)
    assert len(index.candidates(never)) == 1
    later = T0 + (P.keep_days + 1) * DAY_MS
    stay(index, "L-9", offset(PAWN, 10_000, 0), later, 60)  # the clock moves on elsewhere
    assert index.candidates(never) == []
    assert index.stays() == 4  # still held: that cell was not touched
    stay(index, "L-4", PAWN, later, 60)  # filing in the cell prunes it
    assert index.stays() == 2
    assert index.candidates(never) == []
    within = SiteIndex(P)
    for n, loan_id in enumerate(("L-1", "L-2", "L-3")):
        stay(within, loan_id, PAWN, T0 + n * (P.keep_days - 1) * DAY_MS // 2, 60)
    assert len(within.candidates(never)) == 1


def _store(
    rows: list[tuple[str, dict[str, object] | None]], into: dict[str, dict[str, object]]
) -> None:
    """Apply `take_dirty` rows as a store would: upsert a doc, delete on None."""
    for key, doc in rows:
        if doc is None:
            into.pop(key, None)
        else:
            into[key] = orjson.loads(orjson.dumps(doc))


def test_restore_from_dirty_rows_gives_the_same_index() -> None:
    index = SiteIndex(P)
    store: dict[str, dict[str, object]] = {}
    for n, loan_id in enumerate(("L-1", "L-2", "L-3", "L-1")):
        stay(index, loan_id, offset(PAWN, 30 * n, -20 * n), T0 + n * 3_600_000, 40)
    rows = index.take_dirty()
    assert rows
    assert all(doc is not None for _, doc in rows)
    assert index.take_dirty() == []
    _store(rows, store)
    stay(index, "L-5", offset(PAWN, 20_000, 0), T0 + (P.keep_days + 1) * DAY_MS, 60)
    stay(index, "L-6", PAWN, T0 + (P.keep_days + 1) * DAY_MS, 60)  # prunes the old ones
    rows = index.take_dirty()
    _store(rows, store)
    restored = SiteIndex(P)
    restored.restore(sorted(store.items()))
    assert restored.cells == index.cells
    assert restored.clock_ms == index.clock_ms
    same(restored.candidates(never), index.candidates(never))
    assert restored.take_dirty() == []


def test_an_emptied_cell_is_a_deleted_row() -> None:
    index = SiteIndex(P)
    stay(index, "L-1", PAWN, T0, 60)
    index.take_dirty()
    index.clock_ms = T0 + (P.keep_days + 2) * DAY_MS  # as if the fleet moved on
    stay(index, "L-2", PAWN, T0, 60)  # filed, then pruned at once with L-1: both too old
    assert index.take_dirty() == [(index.key_of(index.cell_of(*PAWN)), None)]


def test_restore_rejects_a_malformed_cell() -> None:
    with pytest.raises(ValueError, match="'visits' to be a list"):
        SiteIndex(P).restore([("1:2", {"visits": 3})])


def test_the_grid_cells_are_radius_sized() -> None:
    index = SiteIndex(P)
    row, col = index.cell_of(*PAWN)
    north = index.cell_of(*offset(PAWN, P.radius_m, 0))
    east = index.cell_of(*offset(PAWN, 0, P.radius_m))
    assert north[0] - row == 1
    assert east[1] - col == 1
    assert index.cell_of(*offset(PAWN, 2 * P.radius_m, 0))[0] - row == 2


# -- the grid against a brute-force reference


def reference(index: SiteIndex, is_marked: object = never) -> list[Candidate]:
    """The same greedy growth as `SiteIndex.candidates`, looking at every aggregate."""
    p = index.params
    horizon = index.clock_ms - p.keep_days * DAY_MS
    every: list[tuple[tuple[Cell, str], Visits]] = [
        ((cell, loan_id), v) for cell, by in index.cells.items() for loan_id, v in by.items()
    ]
    taken: set[tuple[Cell, str]] = set()
    found: list[Candidate] = []
    for cell in sorted(index.cells, key=lambda c: (-len(index.cells[c]), c)):
        seeds = [
            v
            for loan_id, v in index.cells[cell].items()
            if (cell, loan_id) not in taken and v.last_ms >= horizon
        ]
        if not seeds:
            continue
        c_lat = sum(v.lat for v in seeds) / len(seeds)
        c_lon = sum(v.lon for v in seeds) / len(seeds)
        members = [
            (key, v)
            for key, v in every
            if key not in taken
            and v.last_ms >= horizon
            and haversine_m(c_lat, c_lon, v.lat, v.lon) <= p.radius_m
        ]
        while members:  # the farthest from the centre leaves until all are within reach
            m_lat = sum(v.lat for _, v in members) / len(members)
            m_lon = sum(v.lon for _, v in members) / len(members)
            pairs = [(a, b) for i, (_, a) in enumerate(members) for _, b in members[i + 1 :]]
            if all(haversine_m(a.lat, a.lon, b.lat, b.lon) <= p.radius_m for a, b in pairs):
                break
            members.remove(
                max(members, key=lambda m: (haversine_m(m_lat, m_lon, m[1].lat, m[1].lon), m[0]))
            )
        loans = sorted({loan_id for (_, loan_id), _ in members})
        if len(loans) < p.min_loans:
            continue
        assert not taken & {key for key, _ in members}
        taken.update(key for key, _ in members)
        lat = sum(v.lat for _, v in members) / len(members)
        lon = sum(v.lon for _, v in members) / len(members)
        radius = max(25.0, *(haversine_m(lat, lon, v.lat, v.lon) for _, v in members))
        assert callable(is_marked)
        if is_marked(lat, lon, radius):
            continue
        found.append(
            Candidate(
                lat,
                lon,
                radius,
                len(loans),
                sum(v.visits for _, v in members),
                min(v.first_ms for _, v in members),
                max(v.last_ms for _, v in members),
                tuple(loans),
            )
        )
    found.sort(key=lambda c: (-c.loans, -c.visits, -c.last_ms, c.lat, c.lon))
    return found


Stay = tuple[int, float, float, int, int]  # loan, north_m, east_m, day, minutes


@st.composite
def fleets(draw: st.DrawFn) -> tuple[tuple[float, float], list[Stay]]:
    """A few loans' stays around a few hot spots within a kilometre, somewhere on Earth."""
    base = draw(
        st.sampled_from([PAWN, (0.0001, 10.0), (59.93, 30.31), (-33.87, 151.2), (64.1, -21.9)])
    )
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    spots = [(rnd.uniform(-500, 500), rnd.uniform(-500, 500)) for _ in range(rnd.randint(1, 4))]
    jitter = rnd.choice([50, 150, 250])
    stays: list[Stay] = []
    for _ in range(rnd.choice([0, 3, rnd.randint(5, 60), rnd.randint(20, 60)])):
        north, east = rnd.choice(spots)
        stays.append(
            (
                rnd.randrange(7),
                north + rnd.uniform(-jitter, jitter),
                east + rnd.uniform(-jitter, jitter),
                rnd.choice([0, 1, 2, rnd.randrange(121)]),  # day
                rnd.choice([10, 29, 30, 90, 90]),  # minutes
            )
        )
    return base, stays


def build(base: tuple[float, float], stays: list[Stay], params: SitesParams = P) -> SiteIndex:
    index = SiteIndex(params)
    for loan, north, east, day, minutes in stays:
        at = offset(base, north, east)
        start = T0 + day * DAY_MS
        index.add_stay(f"L-{loan}", at[0], at[1], start, start + minutes * MIN_MS)
    return index


def same(got: list[Candidate], want: list[Candidate]) -> None:
    assert [(c.loans, c.visits, c.first_ms, c.last_ms, c.loan_ids) for c in got] == [
        (c.loans, c.visits, c.first_ms, c.last_ms, c.loan_ids) for c in want
    ]
    for g, w in zip(got, want, strict=True):
        assert g.lat == pytest.approx(w.lat, abs=1e-9)
        assert g.lon == pytest.approx(w.lon, abs=1e-9)
        assert g.radius_m == pytest.approx(w.radius_m, abs=1e-3)


@PROPS
@given(fleets(), st.sampled_from([P, SitesParams(min_loans=2, radius_m=80.0)]))
def test_candidates_equal_the_brute_force_reference(
    fleet: tuple[tuple[float, float], list[Stay]], params: SitesParams
) -> None:
    index = build(*fleet, params)
    found = index.candidates(never)
    same(found, reference(index))
    held = sum(v.visits for by in index.cells.values() for v in by.values())
    assert sum(c.visits for c in found) <= held  # no aggregate counted twice
    for c in found:
        assert c.loans >= params.min_loans
        assert len(c.loan_ids) == c.loans
        assert list(c.loan_ids) == sorted(set(c.loan_ids))
        assert 25.0 <= c.radius_m <= params.radius_m + 1e-6  # members within radius_m of each other
    assert [c.loans for c in found] == sorted((c.loans for c in found), reverse=True)

    def marked(lat: float, lon: float, radius_m: float) -> bool:
        return lat > fleet[0][0]  # the northern half is marked already

    same(index.candidates(marked), reference(index, marked))


@PROPS
@given(fleets())
def test_snapshot_rows_restore_the_same_candidates(
    fleet: tuple[tuple[float, float], list[Stay]],
) -> None:
    base, stays = fleet
    index = SiteIndex(P)
    store: dict[str, dict[str, object]] = {}
    for i, (loan, north, east, day, minutes) in enumerate(stays):
        at = offset(base, north, east)
        start = T0 + day * DAY_MS
        index.add_stay(f"L-{loan}", at[0], at[1], start, start + minutes * MIN_MS)
        if i % 3 == 0:
            _store(index.take_dirty(), store)
    _store(index.take_dirty(), store)
    restored = SiteIndex(P)
    restored.restore(sorted(store.items()))
    assert restored.cells == index.cells
    # the same candidates; a restored cell lists its loans in another order, so the sums
    # behind a centre may differ in the last bit
    same(restored.candidates(never), index.candidates(never))


@PROPS
@given(
    st.lists(
        st.tuples(st.integers(0, 9), st.floats(0, 2 * math.pi), st.floats(0, P.radius_m / 2 - 1)),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from([PAWN, (59.93, 30.31), (-33.87, 151.2)]),
)
def test_loans_all_within_radius_of_one_another_make_one_candidate(
    points: list[tuple[int, float, float]], base: tuple[float, float]
) -> None:
    index = SiteIndex(P)
    for loan, bearing, r in points:
        at = offset(base, r * math.cos(bearing), r * math.sin(bearing))
        index.add_stay(f"L-{loan}", at[0], at[1], T0, T0 + 3_600_000)
    loans = sorted({f"L-{loan}" for loan, _, _ in points})
    found = index.candidates(never)
    if len(loans) < P.min_loans:
        assert found == []
    else:
        assert [(c.loan_ids, c.visits) for c in found] == [(tuple(loans), len(points))]


def test_a_crowded_place_is_gathered_within_half_the_radius_of_its_centre() -> None:
    # more aggregates than are checked pair by pair: those within radius_m / 2 of the
    # centre, so still within radius_m of one another
    index = SiteIndex(P)
    rng = random.Random(3)
    for loan in range(60):
        r, bearing = rng.uniform(0, 40), rng.uniform(0, 2 * math.pi)
        at = offset(PAWN, r * math.cos(bearing), r * math.sin(bearing))
        index.add_stay(f"L-{loan:02d}", at[0], at[1], T0, T0 + 3_600_000)
    far = offset(PAWN, 120, 0)  # within radius_m of the seed, not of the crowd's centre / 2
    index.add_stay("L-far", far[0], far[1], T0, T0 + 3_600_000)
    found = index.candidates(never)
    assert [c.loans for c in found] == [60]
    assert "L-far" not in found[0].loan_ids
    assert found[0].radius_m <= P.radius_m / 2


def test_candidate_points_grow_with_the_longest_stay() -> None:
    assert candidate_weight(30 * MIN_MS, P) == 0.0  # as short as a stay may be to count
    assert candidate_weight(75 * MIN_MS, P) == pytest.approx(0.5)
    assert candidate_weight(120 * MIN_MS, P) == 1.0
    assert candidate_weight(600 * MIN_MS, P) == 1.0
    flat = SitesParams(min_stay_s=1800, full_points_stay_s=1800)
    assert candidate_weight(30 * MIN_MS, flat) == 1.0
    assert candidate_weight(29 * MIN_MS, flat) == 0.0


def test_the_longest_stay_is_kept_and_survives_a_restore() -> None:
    index = SiteIndex(P)
    for minutes in (40, 130, 35):
        stay(index, "L-1", PAWN, T0 + minutes * DAY_MS, minutes)
    assert index.loans_near(*PAWN) == {"L-1": 130 * MIN_MS}
    restored = SiteIndex(P)
    restored.restore([(k, d) for k, d in index.take_dirty() if d is not None])
    assert restored.loans_near(*PAWN) == {"L-1": 130 * MIN_MS}
