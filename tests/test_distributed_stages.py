"""The pipeline cut in two (engine.distributed.stages), with every hand-over through the
topics' record codec (engine.distributed.records), gives exactly the alerts of
`pledgewatch replay`: on every golden scenario, on the lending golden with the consumer,
and when both stages restart from a checkpoint and are fed again from an earlier offset
(what a `kill -9` of a worker does)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.model import Alert
from devices.readings import GpsFix, Reading, StatusReport, Vibration
from engine.core.config import Config
from engine.core.state import device_from_json, device_to_json
from engine.distributed.buckets import (
    BUCKETS,
    BucketMirror,
    bucket_of,
    checkpoint_value,
    current_buckets,
    offset_key,
    parse_table_key,
    read_bucket,
    read_checkpoint,
)
from engine.distributed.records import (
    LoanEvent,
    alert_record,
    loan_event_records,
    read_alert,
    read_loan_events,
    read_reading,
    reading_record,
)
from engine.distributed.stages import DeviceStage, LoanStage
from engine.runtime.replay import BATCH_LINES, Replay, decode_line
from geofence.fence import Fence, load_fences
from geofence.index import FenceIndex
from lending.consumer import LendingConsumer
from lending.model import Loan, parse_loans
from simulator.golden_lending import build_input
from tests.factories import property_settings

GOLDEN = Path(__file__).resolve().parent / "golden"
NAMES = sorted(p.name for p in GOLDEN.iterdir() if (p / "input.jsonl").is_file())


@dataclass
class Line:
    """One decoded reading of the input as the bridge produces it: record and offset."""

    value: bytes
    offset: int


@dataclass
class TwoStage:
    """A device stage and a per-loan stage joined by records, as bridge + worker run them;
    the clock is the replay's (the largest event time seen)."""

    fences: Sequence[Fence]
    loans: Sequence[Loan]
    lending: bool
    devices: DeviceStage = field(init=False)
    stage: LoanStage = field(init=False)
    out: list[Alert] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.devices = DeviceStage(Config())
        consumer = LendingConsumer() if self.lending else None
        self.stage = LoanStage(Config(), consumer)
        for part in (self.devices, self.stage):
            part.put_fences(self.fences)

    def put_loans(self, ts_ms: int) -> None:
        """Loans as the replay takes them: at the first reading, VINs judged in file order
        (the API's job live); the conflicts reach the consumer as stored alerts."""
        conflicts: list[Alert] = []
        for loan in self.loans:
            conflicts += self.devices.pipeline.put_loan(loan, ts_ms, ts_ms)
            self.stage.put_loan(loan, ts_ms)
        self.devices.pipeline.tap = []  # stored by the API, not routed
        self.emit(conflicts)
        self.emit(self.stage.feed([], ts_ms, conflicts))

    def run(self, lines: Sequence[Line], watermark: int | None) -> int | None:
        """Step lines (reading records) in batches; returns the watermark."""
        for start in range(0, len(lines), BATCH_LINES):
            readings: list[Reading] = []
            clocks: list[int] = []
            sources: list[tuple[int, int]] = []
            for line in lines[start : start + BATCH_LINES]:
                reading, at = read_reading(line.value)
                readings.append(reading)
                clocks.append(at)
                sources.append((0, line.offset))
            if not readings:
                continue
            watermark = clocks[-1]
            routed = self.devices.step(readings, clocks, sources, None)
            self.emit(routed.alerts)
            events = [e for v in loan_event_records(routed.events) for e in read_loan_events(v)]
            self.emit(self.stage.feed(events, watermark))
        return watermark

    def emit(self, alerts: Sequence[Alert]) -> None:
        self.out += [read_alert(alert_record(a)) for a in alerts]


def produced(input_path: Path) -> list[Line]:
    """The input as reading records (what the bridge produces), clock = the watermark."""
    lines: list[Line] = []
    watermark: int | None = None
    for n, raw in enumerate(input_path.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        for reading in decode_line(raw, n).readings:
            watermark = reading.ts_ms if watermark is None else max(watermark, reading.ts_ms)
            lines.append(Line(reading_record(reading, watermark), len(lines)))
    return lines


def replayed(input_path: Path, fences: Sequence[Fence], loans: Sequence[Loan], lending: bool):
    out: list[Alert] = []
    consumer = LendingConsumer() if lending else None
    replay = Replay(FenceIndex.build(fences), loans, Config(), out.append, consumer=consumer)
    replay.feed(input_path.read_bytes().splitlines(keepends=True))
    replay.finish()
    return out


def by_key(alerts: Sequence[Alert]) -> dict[str, list[dict[str, object]]]:
    """Alerts per record key (loan, else tracker), in order, as their JSON."""
    out: dict[str, list[dict[str, object]]] = {}
    for a in alerts:
        doc = a.to_json()
        doc.pop("detected_at")  # the runtime's clock, not part of the id
        out.setdefault(a.loan_id or a.device_id or a.id, []).append(doc)
    return out


def two_stage(lines: Sequence[Line], fences: Sequence[Fence], loans: Sequence[Loan], lending: bool):
    run = TwoStage(fences, loans, lending)
    if lines:
        run.put_loans(read_reading(lines[0].value)[0].ts_ms)
    run.run(lines, None)
    return run.out


def golden(name: str) -> tuple[Path, list[Fence], list[Loan]]:
    d = GOLDEN / name
    loans = parse_loans(orjson.loads((d / "loans.json").read_bytes()))
    return d / "input.jsonl", load_fences(d / "fences.geojson"), loans


@pytest.mark.parametrize("name", NAMES)
def test_every_golden_scenario_gives_the_replays_alerts_in_order_per_loan(name: str) -> None:
    path, fences, loans = golden(name)
    want = replayed(path, fences, loans, lending=False)
    got = two_stage(produced(path), fences, loans, lending=False)
    assert bool(want) == (name != "stays_home")  # the quiet one raises none
    assert by_key(got) == by_key(want)
    assert sorted(a.id for a in got) == sorted(a.id for a in want)


@pytest.fixture(scope="module")
def lives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lives")
    build_input(path)
    return path


def test_the_lending_golden_gives_the_replays_alerts_with_the_consumer(lives: Path) -> None:
    fences = load_fences(lives / "fences.geojson")
    loans = parse_loans(orjson.loads((lives / "loans.json").read_bytes()))
    want = replayed(lives / "readings.jsonl", fences, loans, lending=True)
    got = two_stage(produced(lives / "readings.jsonl"), fences, loans, lending=True)
    assert any(a.type == "risk.tier_changed" for a in want)
    assert by_key(got) == by_key(want)


def restart(
    run: TwoStage,
    device_docs: dict[str, object],
    loan_docs: dict[str, object],
    rows: list[tuple[str, str, dict[str, object]]],
) -> TwoStage:
    """A new pair of stages from what the old pair checkpointed (as JSON, as the tables
    hold it)."""
    fresh = TwoStage(run.fences, run.loans, run.stage.consumers is not None)
    for loan in run.loans:
        fresh.devices.put_loan(loan, 0)
        fresh.stage.put_loan(loan, 0)
    fresh.devices.restore(
        device_from_json(orjson.loads(orjson.dumps(d))) for d in device_docs.values()
    )
    books = [(key, doc) for name, key, doc in rows if name == "loans"]
    cells = [(key, doc) for name, key, doc in rows if name == "sites"]
    fresh.stage.restore(orjson.loads(orjson.dumps(loan_docs)), books, cells)
    return fresh


@cache
def everything() -> tuple[Path, list[Fence], list[Loan], list[Line], list[Alert]]:
    """The `all_scenarios` golden, its records and the replay's alerts with the consumer."""
    path, fences, loans = golden("all_scenarios")
    return path, fences, loans, produced(path), replayed(path, fences, loans, lending=True)


@property_settings(12)
@given(data=st.data())
def test_a_restart_from_a_checkpoint_fed_again_from_earlier_loses_and_adds_nothing(
    data: st.DataObject,
) -> None:
    """Stages checkpoint after a random record, crash after a later one, restart from the
    checkpoint and are fed again from a random earlier offset (a commit older than the
    checkpoint): the alerts, once deduplicated by id, are the replay's, per loan in order."""
    _, fences, loans, lines, want = everything()
    checkpoint = data.draw(st.integers(1, len(lines) - 1), label="checkpoint after")
    crash = data.draw(st.integers(checkpoint, len(lines)), label="crash after")
    again = data.draw(st.integers(0, checkpoint), label="fed again from")
    run = TwoStage(fences, loans, lending=True)
    run.put_loans(read_reading(lines[0].value)[0].ts_ms)
    run.run(lines[:checkpoint], None)
    devices, _ = run.devices.take_dirty()
    device_docs = {s.device_id: device_to_json(s) for s in devices}
    loan_docs, rows = run.stage.take_dirty()
    run.run(lines[checkpoint:crash], None)  # raised and produced, never checkpointed
    fresh = restart(
        run,
        device_docs,
        loan_docs,
        [(r.consumer, r.key, dict(r.doc)) for r in rows if r.doc is not None],
    )
    fresh.run(lines[again:], None)
    seen: set[str] = set()
    got = []
    for a in run.out + fresh.out:
        if a.id not in seen:  # the outbox keeps one row per alert id
            seen.add(a.id)
            got.append(a)
    assert by_key(got) == by_key(want)


@property_settings(200)
@given(
    reading=st.one_of(
        st.builds(
            GpsFix,
            st.text("abc-_.:", min_size=1, max_size=8),
            st.integers(0, 2**53),
            st.floats(-90, 90),
            st.floats(-180, 180),
            st.none() | st.floats(0, 400),
            st.none() | st.floats(0, 360),
            st.none() | st.floats(0, 50),
            st.none() | st.integers(0, 40),
            st.none() | st.booleans(),
            st.none() | st.floats(0, 1e7),
            st.none() | st.integers(0, 2**31),
            st.none() | st.floats(0, 1e4),
        ),
        st.builds(Vibration, st.text("ab", min_size=1), st.integers(0, 2**53), st.floats(0, 50)),
        st.builds(
            StatusReport,
            st.text("ab", min_size=1),
            st.integers(0, 2**53),
            st.none() | st.booleans(),
            st.none() | st.floats(0, 60),
            st.none() | st.booleans(),
            st.none() | st.text("ABC123", min_size=17, max_size=17),
        ),
    ),
    at=st.integers(0, 2**53),
)
def test_reading_records_read_back_exactly(reading: Reading, at: int) -> None:
    assert read_reading(reading_record(reading, at)) == (reading, at)
    event = LoanEvent("L-1", at, reading, (), None, (3, at))
    assert [read_loan_events(v) for v in loan_event_records([event])] == [[event]]


def test_bucket_mirrors_write_changed_buckets_and_read_them_back() -> None:
    mirror = BucketMirror("d", 3)
    for n in range(200):
        mirror.put(f"trk-{n}", {"n": n})
    first = mirror.take_dirty()
    assert 1 < len(first) <= BUCKETS  # 200 rows in at most 64 writes
    assert all(parse_table_key(k) is not None and parse_table_key(k)[:2] == ("d", 3) for k in first)
    assert mirror.take_dirty() == {}  # nothing changed since
    mirror.put("trk-7", None)
    mirror.put("trk-7", None)  # deleting what is gone changes nothing more
    (key, value), *rest = mirror.take_dirty().items()
    assert not rest
    b = bucket_of("trk-7")
    assert parse_table_key(key) == ("d", 3, b)  # the other slot: the first went to b + 64
    assert b"d/3/%d" % (b + BUCKETS) in first
    assert "trk-7" not in read_bucket(value)  # type: ignore[operator]  # a dict
    assert len(value) < len(orjson.dumps(read_bucket(value)))  # compressed
    back = BucketMirror("d", 3)
    junk = {b"d/4/0": b"{}", b"junk": b"x"}  # other partitions and keys are ignored
    back.load({**first, key: value, **junk}, mirror.slots)
    assert dict(back.rows()) == {f"trk-{n}": {"n": n} for n in range(200) if n != 7}
    plain = BucketMirror("d", 3)  # a value written before buckets were compressed
    plain.load({b"d/3/5": b'{"trk-x": {"n": 1}}'})
    assert dict(plain.rows()) == {"trk-x": {"n": 1}}


def test_a_checkpoint_cut_short_restores_the_one_before_it() -> None:
    """A worker killed while a checkpoint's records go out leaves some of its buckets
    written and not its checkpoint record: a restore reads the previous checkpoint whole."""
    mirror = BucketMirror("d", 0)
    table: dict[bytes, bytes] = {}
    for n in range(100):
        mirror.put(f"trk-{n}", {"v": 1})
    table |= mirror.take_dirty()
    table[offset_key(0)] = checkpoint_value(41, {"d": mirror.slots})
    for n in range(100):
        mirror.put(f"trk-{n}", {"v": 2})
    second = list(mirror.take_dirty().items())
    assert len(second) > 2
    table |= dict(second[: len(second) // 2])  # half of it landed, and not its record
    offset, slots = read_checkpoint(table[offset_key(0)])
    back = BucketMirror("d", 0)
    back.load(table, slots["d"])
    assert offset == 41
    assert dict(back.rows()) == {f"trk-{n}": {"v": 1} for n in range(100)}
    assert len(current_buckets(table)) == len(second)  # one slot per bucket: the first's
    table[offset_key(0)] = checkpoint_value(97, {"d": mirror.slots})
    table |= dict(second)  # the whole of it, record last
    offset, slots = read_checkpoint(table[offset_key(0)])
    back = BucketMirror("d", 0)
    back.load(table, slots["d"])
    assert (offset, dict(back.rows())) == (97, {f"trk-{n}": {"v": 2} for n in range(100)})
    assert read_checkpoint(b"12") == (12, {})  # a record of the offset alone


def test_as_current_names_the_event_faust_writes_tables_for() -> None:
    """Checkpoints lean on Faust's private current-event variable: this fails if it moves."""
    import faust.streams

    from engine.distributed.worker import as_current

    event = Line(b"", 0)  # any object: Faust keeps a weak reference
    assert faust.streams.current_event() is None
    with as_current(event):
        assert faust.streams.current_event() is event
    assert faust.streams.current_event() is None
