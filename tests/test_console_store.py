"""The operator console's store (schema version 6, `engine.store.console_sql`) on SQLite,
PostgreSQL and TimescaleDB: operators and sessions, machine tokens, alert cases and their
notes, the audit log in the transaction of each change, tracks, KPI aggregates, and the
migration of a version 5 store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from alerts.model import AlertType
from alerts.outbox import Webhook
from devices.readings import Reject, RejectReason
from engine.store.console_types import (
    Actor,
    ActorKind,
    AuditEntry,
    AuditQuery,
    CaseAction,
    CaseChange,
    CaseNote,
    CaseResult,
    CaseState,
    PutOperator,
)
from engine.store.port import AlertQuery, Batch, Store
from engine.store.postgres_store import PostgresStore
from engine.store.rows import CursorError
from engine.store.sqlite_store import SqliteStore
from tests.conftest import PG_DSN
from tests.factories import HOME, T0, alert, fix
from tests.test_store import failed
from tests.test_store_consumers import versions

ALICE = Actor("alice", ActorKind.OPERATOR)
HASH = "scrypt$16384$8$1$c2FsdA==$a2V5"  # the store keeps what it is given
ACK_V5 = "UPDATE alerts SET acked_ms = %d, ack_note = %s WHERE id = '%s'"


def entry(action: str, target: str, at_ms: int = T0, who: Actor = ALICE, **detail: object):
    return AuditEntry(at_ms, who, action, target, detail)


def raw(store: Store, sql: str) -> None:
    """Run one statement outside the store's API (to break or inspect the schema)."""
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute(sql)
        return
    assert isinstance(store, PostgresStore)
    with psycopg.connect(store._dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{store.schema}"')
        conn.execute(sql)


# -- operators and sessions


def test_operators_and_their_sessions(store: Store) -> None:
    assert store.put_operator("alice", "admin", None, entry("x", "operator:alice")) is (
        PutOperator.NEEDS_PASSWORD
    )
    assert store.get_operator("alice") is None
    assert store.put_operator("alice", "admin", HASH, entry("operator.create", "operator:alice"))
    assert store.put_operator("bob", "viewer", HASH, entry("operator.create", "operator:bob")) is (
        PutOperator.CREATED
    )
    assert [o.name for o in store.list_operators()] == ["alice", "bob"]
    assert store.operator_login("alice") == ("admin", HASH)
    assert store.operator_login("nobody") is None

    assert store.create_session("s1", "alice", T0 + 1000, entry("session.start", "operator:alice"))
    assert store.create_session("s2", "bob", T0 + 1000, entry("session.start", "operator:bob"))
    assert not store.create_session("s3", "nobody", T0 + 1000, entry("x", "operator:nobody"))
    assert store.session_operator("s1", T0) == ("alice", "admin")
    assert store.session_operator("s1", T0 + 1000) is None  # expired
    assert store.session_operator("nope", T0) is None

    # A role change takes effect in the session at once; the password stays.
    update = entry("operator.update", "operator:bob")
    assert store.put_operator("bob", "operator", None, update) is PutOperator.UPDATED
    assert store.session_operator("s2", T0) == ("bob", "operator")
    assert store.operator_login("bob") == ("operator", HASH)
    # A new password ends the operator's sessions.
    store.put_operator("bob", "operator", "scrypt$new", update)
    assert store.session_operator("s2", T0) is None
    assert store.operator_login("bob") == ("operator", "scrypt$new")

    assert store.delete_session("s1", entry("session.end", "operator:alice"))
    assert not store.delete_session("s1", entry("session.end", "operator:alice"))
    store.create_session("s4", "alice", T0 + 1000, entry("session.start", "operator:alice"))
    assert store.delete_operator("alice", entry("operator.delete", "operator:alice"))
    assert not store.delete_operator("alice", entry("operator.delete", "operator:alice"))
    assert store.session_operator("s4", T0) is None
    assert store.get_operator("alice") is None
    actions = [e.action for e in reversed(store.list_audit(AuditQuery()).items)]
    assert actions == [
        "operator.create",
        "operator.create",
        "session.start",
        "session.start",
        "operator.update",
        "operator.update",
        "session.end",
        "session.start",
        "operator.delete",
    ]  # nothing for what did not happen


def test_expired_sessions_are_deleted_when_one_starts(store: Store) -> None:
    store.put_operator("alice", "admin", HASH, entry("operator.create", "operator:alice"))
    store.create_session("old", "alice", T0 + 10, entry("session.start", "operator:alice"))
    store.create_session("new", "alice", T0 + 99_000, entry("s", "o", at_ms=T0 + 20))
    assert not store.delete_session("old", entry("session.end", "operator:alice"))  # gone
    assert store.session_operator("new", T0 + 20) == ("alice", "admin")


def test_machine_tokens(store: Store) -> None:
    assert store.create_api_token("ci", "viewer", "sha-1", entry("token.create", "token:ci"))
    assert not store.create_api_token("ci", "admin", "sha-2", entry("token.create", "token:ci"))
    assert store.create_api_token("bridge", "operator", "sha-3", entry("t", "token:bridge"))
    assert store.api_token_role("sha-1") == ("ci", "viewer")
    assert store.api_token_role("sha-2") is None
    tokens = store.list_api_tokens()
    assert [(t.name, t.role, t.created_by) for t in tokens] == [
        ("bridge", "operator", "alice"),
        ("ci", "viewer", "alice"),
    ]
    assert store.delete_api_token("ci", entry("token.delete", "token:ci"))
    assert not store.delete_api_token("ci", entry("token.delete", "token:ci"))
    assert store.api_token_role("sha-1") is None


# -- alert cases


def test_case_workflow(store: Store) -> None:
    store.commit_batch(Batch(now_ms=T0, alerts=[alert(1), alert(2)]))
    case = store.get_alert("alert-0001").case  # type: ignore[union-attr]
    assert case is not None
    assert (case.state, case.assignee, case.notes) == (CaseState.OPEN, None, ())

    def act(change: CaseChange, at: int, who: Actor = ALICE) -> CaseResult:
        return store.change_case(
            "alert-0001", change, entry(f"alert.{change.action}", "alert:alert-0001", T0 + at, who)
        )

    bob = Actor("bob", ActorKind.OPERATOR)
    assert act(CaseChange(CaseAction.ACK, note="on it"), 10) is CaseResult.DONE
    assert act(CaseChange(CaseAction.ACK), 20, bob) is CaseResult.DONE  # the first one's kept
    assert act(CaseChange(CaseAction.ASSIGN, assignee="bob"), 30) is CaseResult.DONE
    assert act(CaseChange(CaseAction.NOTE, note="called the borrower"), 40, bob) is (
        CaseResult.DONE
    )
    stored = store.get_alert("alert-0001")
    assert stored is not None
    assert (stored.acked_ms, stored.ack_note) == (T0 + 10, "on it")
    case = stored.case
    assert case is not None
    assert (case.state, case.assignee, case.acked_ms, case.acked_by) == (
        CaseState.ACKNOWLEDGED,
        "bob",
        T0 + 10,
        "alice",
    )
    assert case.notes == (
        CaseNote("alice", T0 + 10, "on it"),
        CaseNote("bob", T0 + 40, "called the borrower"),
    )
    assert act(CaseChange(CaseAction.RESOLVE, note="car is home"), 50, bob) is CaseResult.DONE
    assert act(CaseChange(CaseAction.RESOLVE), 60) is CaseResult.CONFLICT
    case = store.get_alert("alert-0001").case  # type: ignore[union-attr]
    assert case is not None
    assert (case.state, case.resolved_ms, case.resolved_by) == (
        CaseState.RESOLVED,
        T0 + 50,
        "bob",
    )
    assert act(CaseChange(CaseAction.ACK, note="late"), 65) is CaseResult.DONE  # stays resolved
    assert store.get_alert("alert-0001").case.state is CaseState.RESOLVED  # type: ignore[union-attr]
    assert act(CaseChange(CaseAction.REOPEN), 70) is CaseResult.DONE
    assert act(CaseChange(CaseAction.REOPEN), 80) is CaseResult.CONFLICT
    case = store.get_alert("alert-0001").case  # type: ignore[union-attr]
    assert case is not None
    assert (case.state, case.acked_ms, case.resolved_ms, case.assignee) == (
        CaseState.OPEN,
        None,
        None,
        "bob",
    )
    # resolving an open case acknowledges it too: time to acknowledge is then known
    assert act(CaseChange(CaseAction.RESOLVE), 90) is CaseResult.DONE
    case = store.get_alert("alert-0001").case  # type: ignore[union-attr]
    assert case is not None
    assert (case.acked_ms, case.acked_by) == (T0 + 90, "alice")

    for action in CaseAction:
        missing = store.change_case(
            "alert-9999", CaseChange(action, note="x"), entry("a", "alert:alert-9999")
        )
        assert missing is CaseResult.MISSING
    audit = store.list_audit(AuditQuery(target="alert:alert-0001"))
    assert len(audit.items) == 8  # the two conflicts wrote nothing
    assert store.list_audit(AuditQuery(target="alert:alert-9999")).items == []
    untouched = store.get_alert("alert-0002")
    assert untouched is not None
    assert untouched.case is not None
    assert untouched.case.state is CaseState.OPEN


def test_alert_queue_filters_and_severity_order(store: Store) -> None:
    alerts = [
        alert(1, type_=AlertType.GEOFENCE_ENTER),  # info
        alert(2, type_=AlertType.SHOCK),  # warning
        alert(3, type_=AlertType.ZONE_LEFT),  # critical
        alert(4, type_=AlertType.GEOFENCE_EXIT),  # info
        alert(5, type_=AlertType.TAMPER),  # critical
        alert(6, type_=AlertType.DEVICE_OFFLINE, ts_ms=T0 + 5000),  # warning, tie on ts
    ]
    store.commit_batch(Batch(now_ms=T0, alerts=alerts))
    store.change_case("alert-0003", CaseChange(CaseAction.ACK), entry("alert.ack", "a"))
    store.change_case(
        "alert-0005", CaseChange(CaseAction.ASSIGN, assignee="bob"), entry("alert.assign", "a")
    )
    store.change_case("alert-0002", CaseChange(CaseAction.RESOLVE), entry("alert.resolve", "a"))

    def ids(query: AlertQuery) -> list[str]:
        out: list[str] = []
        cursor = None
        while True:
            page = store.list_alerts(AlertQuery(**{**_fields(query), "cursor": cursor, "limit": 2}))
            out += [str(a.alert["id"])[-1] for a in page.items]
            if page.next is None:
                return out
            cursor = page.next

    assert ids(AlertQuery()) == list("654321")
    assert ids(AlertQuery(sort="severity")) == list("536241")
    assert ids(AlertQuery(state="open")) == list("6541")
    assert ids(AlertQuery(state="acknowledged")) == ["3"]
    assert ids(AlertQuery(state="resolved")) == ["2"]
    assert ids(AlertQuery(assignee="bob")) == ["5"]
    assert ids(AlertQuery(severity="warning", sort="severity")) == list("62")
    assert ids(AlertQuery(severity="critical", state="open")) == ["5"]
    assert ids(AlertQuery(fence_id="home", since_ms=T0 + 4000)) == list("654")
    assert ids(AlertQuery(fence_id="elsewhere")) == []
    listed = store.list_alerts(AlertQuery(assignee="bob")).items[0]
    assert listed.case is not None
    assert listed.case.notes == ()  # lists leave the notes out
    page = store.list_alerts(AlertQuery(limit=2))
    with pytest.raises(CursorError):  # a cursor of one order is refused by the other
        store.list_alerts(AlertQuery(limit=2, sort="severity", cursor=page.next))
    with pytest.raises(ValueError, match="sort"):
        store.list_alerts(AlertQuery(sort="loudest"))


def _fields(query: AlertQuery) -> dict[str, object]:
    return {name: getattr(query, name) for name in AlertQuery.__dataclass_fields__}


# -- the audit log


def test_audit_log_filters_and_pages(store: Store) -> None:
    bot = Actor("ci", ActorKind.TOKEN)
    store.put_fences([], entry("fence.import", "fences", T0, count=0))
    for i in range(5):
        store.put_webhook(
            Webhook(f"h{i}", "http://127.0.0.1:9/x", "k"),
            entry("webhook.put", f"webhook:h{i}", T0 + i * 1000, bot if i % 2 else ALICE, n=i),
        )
    store.delete_webhook("h0", entry("webhook.delete", "webhook:h0", T0 + 9000))
    assert not store.delete_webhook("h0", entry("webhook.delete", "webhook:h0", T0 + 9999))

    def all_of(query: AuditQuery) -> list[AuditEntry]:
        out: list[AuditEntry] = []
        page = store.list_audit(query)
        out += page.items
        while page.next is not None:
            page = store.list_audit(AuditQuery(**{**vars_of(query), "cursor": page.next}))
            out += page.items
        return out

    everything = all_of(AuditQuery(limit=2))
    assert [e.action for e in everything] == [
        "webhook.delete",
        *["webhook.put"] * 5,
        "fence.import",
    ]
    assert everything[1].detail == {"n": 4}
    assert everything[1].actor == ALICE
    assert everything[2].actor == bot
    assert [e.id for e in everything] == sorted((e.id for e in everything), reverse=True)
    assert [e.target for e in all_of(AuditQuery(actor="ci", limit=1))] == [
        "webhook:h3",
        "webhook:h1",
    ]
    assert [e.at_ms for e in all_of(AuditQuery(since_ms=T0 + 1000, until_ms=T0 + 3000))] == [
        T0 + 2000,
        T0 + 1000,
    ]
    assert [e.action for e in all_of(AuditQuery(target="webhook:h0"))] == [
        "webhook.delete",
        "webhook.put",
    ]
    with pytest.raises(CursorError):
        store.list_audit(AuditQuery(cursor="nope"))


def vars_of(query: AuditQuery) -> dict[str, object]:
    return {name: getattr(query, name) for name in AuditQuery.__dataclass_fields__}


def test_a_change_and_its_audit_entry_commit_together(store: Store) -> None:
    store.put_fences([], None)
    store.commit_batch(Batch(now_ms=T0, alerts=[alert(1)]))
    raw(store, "DROP TABLE audit_log")
    with pytest.raises(Exception, match="audit_log"):
        store.put_webhook(Webhook("h", "http://127.0.0.1:9/x", "k"), entry("webhook.put", "w"))
    assert store.get_webhook("h") is None
    with pytest.raises(Exception, match="audit_log"):
        store.change_case("alert-0001", CaseChange(CaseAction.RESOLVE), entry("a", "alert:1"))
    case = store.get_alert("alert-0001").case  # type: ignore[union-attr]
    assert case is not None
    assert case.state is CaseState.OPEN
    store.put_webhook(Webhook("h", "http://127.0.0.1:9/x", "k"))  # no entry: no audit table needed


# -- tracks and KPIs


def test_track_reads_a_devices_gps_fixes_in_a_period(store: Store) -> None:
    readings = [fix(i, (HOME[0] + i * 1e-4, HOME[1]), speed_kmh=float(i)) for i in range(100)]
    readings += [fix(i + 0.5, HOME, device="other") for i in range(100)]
    store.commit_batch(Batch(now_ms=T0, readings=readings))
    track = store.track("trk-1", T0 + 10_000, T0 + 20_000, 1000)
    assert track.fixes == 10
    assert not track.thinned
    assert [p.ts_ms for p in track.points] == [T0 + i * 1000 for i in range(10, 20)]
    assert track.points[0].speed_kmh == 10.0
    assert track.points[0].lat == pytest.approx(HOME[0] + 10e-4)
    assert store.track("trk-1", T0 + 500_000, T0 + 600_000, 10).points == []
    thinned = store.track("trk-1", T0, T0 + 100_000, 10)
    assert thinned.fixes == 100
    assert thinned.thinned
    assert len(thinned.points) <= 10
    assert thinned.points[0].ts_ms == T0
    assert thinned.points[-1].ts_ms == T0 + 99_000
    stamps = [p.ts_ms for p in thinned.points]
    assert stamps == sorted(set(stamps))


def test_kpis_aggregate_a_period(store: Store) -> None:
    store.put_webhook(Webhook("h", "http://127.0.0.1:9/x", "k"))
    hour = 3_600_000
    base = T0 - T0 % hour
    alerts = [
        alert(1, ts_ms=base + 10),
        alert(2, ts_ms=base + 20, type_=AlertType.SHOCK),
        alert(3, ts_ms=base + hour + 5),
        alert(4, ts_ms=base + 5 * hour),  # outside the period
    ]
    store.commit_batch(
        Batch(
            now_ms=base,
            alerts=alerts,
            rejects=[Reject("t/x/gps", RejectReason.NOT_JSON, "x", b"x", "x")] * 2,
        )
    )
    for n, ack_s in ((1, 60), (2, 120), (3, 600)):
        at = alerts[n - 1].detected_ms + ack_s * 1000
        store.change_case(f"alert-{n:04d}", CaseChange(CaseAction.ACK), entry("a", "b", at))
    resolved_at = alerts[0].detected_ms + 3_600_000
    store.change_case("alert-0001", CaseChange(CaseAction.RESOLVE), entry("r", "b", resolved_at))
    head = store.due_deliveries("h", base + 10 * hour, 10)[0]
    failed(store, head.delivery_id, base + 1, "HTTP 410", 410, None)

    kpis = store.kpis(base, base + 2 * hour)
    assert kpis.alerts_per_hour == [
        (base, "shock", 1),
        (base, "zone.left", 1),
        (base + hour, "zone.left", 1),
    ]
    assert kpis.cases == {"acknowledged": 2, "resolved": 1}
    assert (kpis.to_ack.count, kpis.to_ack.p50_ms, kpis.to_ack.p90_ms) == (3, 120_000, 600_000)
    assert (kpis.to_resolve.count, kpis.to_resolve.p50_ms) == (1, 3_600_000)
    assert kpis.deliveries == {"dead": 1, "pending": 3}
    assert kpis.rejected == {"not_json": 2}
    empty = store.kpis(base - 10 * hour, base - 9 * hour)
    assert empty.alerts_per_hour == []
    assert (empty.to_ack.count, empty.to_ack.p50_ms) == (0, None)


# -- the migration from version 5


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_schema_version_6_gives_stored_alerts_their_cases(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store: SqliteStore | PostgresStore
    if backend == "sqlite":
        store = SqliteStore(tmp_path / "v5.db")
    else:
        store = PostgresStore(PG_DSN, schema=request.getfixturevalue("pg_schema"), max_size=2)
    try:
        store.migrate(target=5)
        store.put_device_token("trk-1", "sha", T0)
        store.commit_batch(Batch(now_ms=T0, alerts=[alert(1), alert(2), alert(3)]))
        # acknowledged the version 5 way: a time and a note, nobody named
        raw(store, ACK_V5 % (T0 + 5, "'seen'", "alert-0001"))
        raw(store, ACK_V5 % (T0 + 6, "NULL", "alert-0002"))
        with pytest.raises((sqlite3.OperationalError, psycopg.errors.UndefinedTable)):
            store.operator_login("alice")  # no table before version 6

        store.migrate()
        assert versions(store) == [1, 2, 3, 4, 5, 6, 7]
        first = store.get_alert("alert-0001")
        assert first is not None
        assert first.case is not None
        assert (first.case.state, first.acked_ms, first.case.acked_by) == (
            CaseState.ACKNOWLEDGED,
            T0 + 5,
            None,
        )
        assert first.case.notes == (CaseNote(None, T0 + 5, "seen"),)
        second = store.get_alert("alert-0002").case  # type: ignore[union-attr]
        assert second is not None
        assert (second.state, second.notes) == (CaseState.ACKNOWLEDGED, ())
        third = store.get_alert("alert-0003").case  # type: ignore[union-attr]
        assert third is not None
        assert third.state is CaseState.OPEN
        assert store.device_for_token("sha") == "trk-1"
        store.put_operator("alice", "admin", HASH, entry("operator.create", "operator:alice"))
        store.migrate()  # idempotent
        assert versions(store) == [1, 2, 3, 4, 5, 6, 7]
        assert store.operator_login("alice") == ("admin", HASH)
        assert len(store.list_alerts(AlertQuery(state="acknowledged")).items) == 2
    finally:
        store.close()
