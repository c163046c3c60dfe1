"""How a worker takes `pledgewatch.changes` (engine.distributed.fleet, records.read_changes):
each record as `read_change` reads it alone, errors in place, in order, and a run of fence
changes rebuilds the fence index once, however many fences it holds (an import of
thousands arrives as as many records)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.config import Config
from engine.distributed.fleet import Fleet
from engine.distributed.partitions import Partitions
from engine.distributed.records import (
    RecordError,
    fence_change,
    loan_change,
    read_change,
    read_changes,
    reading_record,
)
from engine.distributed.settings import KafkaSettings
from geofence.fence import Fence
from geofence.index import FenceIndex
from lending.model import LoanStatus
from tests.factories import circle, fix, loan, property_settings

CENTRE = (31.2, 121.4)


def fence(k: int, radius_m: float = 300.0) -> Fence:
    return circle(f"f-{k}", (CENTRE[0] + k * 0.01, CENTRE[1]), radius_m)


def square(k: int) -> tuple[bytes, bytes]:
    """A polygon fence's change record (the batch builds polygons and circles apart)."""
    lat, lon = CENTRE[0] - k * 0.01, CENTRE[1]
    ring = [[lon, lat], [lon + 0.01, lat], [lon + 0.01, lat + 0.01], [lon, lat + 0.01]]
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
        "properties": {"name": f"sq-{k}", "kind": "zone"},
    }
    return f"fence:sq-{k}".encode(), orjson.dumps(feature)


BAD: list[tuple[bytes, bytes | None]] = [
    (b"fence:bad", b"{not json"),
    (b"fence:f-0", fence_change("f-0", fence(0))[1].replace(b'"radius_m":300.0', b'"radius_m":-1')),  # type: ignore[union-attr]
    (b"fence:", fence_change("x", fence(1))[1]),
    (b"loan:L-9", None),
    (b"other:thing", b"{}"),
]


def _same(a: object, b: object) -> bool:
    if isinstance(a, RecordError) and isinstance(b, RecordError):
        return str(a) == str(b)
    if isinstance(a, Fence) and isinstance(b, Fence):
        return (a.fence_id, a.kind, a.geometry.wkb, a.name) == (
            b.fence_id,
            b.kind,
            b.geometry.wkb,
            b.name,
        )
    return a == b


def _alone(key: bytes, value: bytes | None) -> object:
    try:
        return read_change(key, value)
    except RecordError as exc:
        return exc


@property_settings(40)
@given(
    st.lists(
        st.one_of(
            st.integers(0, 30).map(lambda k: fence_change(f"f-{k}", fence(k))),
            st.integers(0, 30).map(square),
            st.integers(0, 30).map(lambda k: fence_change(f"f-{k}", None)),
            st.integers(0, 30).map(lambda k: loan_change(loan(f"L-{k}"))),
            st.sampled_from(BAD),
        ),
        max_size=25,
    )
)
def test_read_changes_reads_each_record_as_read_change_does(
    records: list[tuple[bytes, bytes | None]],
) -> None:
    batch = read_changes(records)
    assert len(batch) == len(records)
    for (key, value), got in zip(records, batch, strict=True):
        want = _alone(key, value)
        assert _same(got, want), (key, got, want)


def test_a_bad_fence_among_good_ones_is_an_error_in_its_place_only() -> None:
    good = [fence_change(f"f-{k}", fence(k)) for k in range(5)]
    records = [*good[:2], BAD[1], *good[2:]]
    batch = read_changes(records)
    assert [type(c).__name__ for c in batch] == ["Fence"] * 2 + ["RecordError"] + ["Fence"] * 3
    assert "radius_m" in str(batch[2])


@pytest.fixture
def counted_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many fences each FenceIndex.build got."""
    built: list[int] = []
    original = FenceIndex.build.__func__  # type: ignore[attr-defined]

    def build(cls: Any, fences: Any) -> FenceIndex:
        index: FenceIndex = original(cls, fences)
        built.append(len(index))
        return index

    monkeypatch.setattr(FenceIndex, "build", classmethod(build))
    return built


def test_an_import_of_many_fences_rebuilds_the_index_once(counted_builds: list[int]) -> None:
    parts = Partitions(Config())
    parts.assign_devices(0, {})  # a stage to share the index with
    parts.assign_loans(0, {})
    fleet = Fleet(KafkaSettings(), parts)
    counted_builds.clear()
    records = [fence_change(f"f-{k}", fence(k)) for k in range(300)]
    fleet.apply([*records, (b"fence:f-7", None)])
    assert counted_builds == [299]
    assert (fleet.applied, fleet.bad) == (301, 0)
    for stage in (parts.devices[0], parts.loan_stages[0]):
        assert len(stage.pipeline.index) == 299
        assert "f-7" not in stage.pipeline.index.positions


def test_a_loan_between_fences_sees_the_fences_before_it(counted_builds: list[int]) -> None:
    parts = Partitions(Config())
    parts.assign_devices(0, {})
    fleet = Fleet(KafkaSettings(), parts)
    counted_builds.clear()
    fleet.apply(
        [
            fence_change("home", circle("home", CENTRE, 300.0)),
            loan_change(loan("L-1", zones=("home",))),
            fence_change("f-2", fence(2)),
            BAD[0],
        ]
    )
    assert counted_builds == [1, 2]  # the run before the loan, then the rest
    assert (fleet.applied, fleet.bad) == (3, 1)
    assert "L-1" in parts.loans
    assert len(parts.devices[0].pipeline.index) == 2


def test_a_workers_stages_share_one_book_of_loans() -> None:
    parts = Partitions(Config())
    for k in range(300):
        parts.put_loan(loan(f"L-{k}", devices=(f"trk-{k}",)))
    for p in range(4):
        parts.assign_devices(p, {})
        parts.assign_loans(p, {})
    parts.put_loan(loan("L-300", devices=("trk-300",)))
    stages = [*parts.devices.values(), *parts.loan_stages.values()]
    assert len(stages) == 8
    for stage in stages:  # one copy per worker, not per partition
        assert stage.pipeline.loans is parts.loans
        assert stage.pipeline.ctx.loan_for("trk-300") == parts.loans["L-300"]
    assert len(parts.loans) == 301


@pytest.mark.parametrize("closed", [True, False])
def test_a_loan_closed_after_its_car_reported_lets_the_car_be_forgotten_on_time(
    closed: bool,
) -> None:
    """A car on an active loan is kept; once its loan is closed it is forgotten after
    `evict_after_s`, here shorter than `offline_s`: the stage holding the car must move its
    timer forward when the shared book changes (a put it missed would keep the car until
    its offline timer)."""
    config = Config(offline_s=1800, evict_after_s=600)
    parts = Partitions(config)
    parts.assign_devices(0, {})
    parts.put_loan(loan("L-9", devices=("trk-9",), zones=()))
    first = fix(0, CENTRE, device="trk-9")
    parts.step_readings(0, [(reading_record(first, first.ts_ms), 0)], None)
    if closed:
        parts.put_loan(loan("L-9", devices=("trk-9",), zones=(), status=LoanStatus.CLOSED))
    parts.tick(first.ts_ms + 601_000)
    held = parts.devices[0].pipeline.devices
    assert ("trk-9" in held) is not closed
