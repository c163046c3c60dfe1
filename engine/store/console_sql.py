"""The `Store` methods of the operator console (DESIGN §9), shared by both backends:
alert queries with their cases, case actions, operators, sessions, machine tokens, the
audit log, device tracks and KPI aggregates.

Every change writes its audit entry in its own transaction. Case actions are conditional
UPDATEs (`WHERE case_state ...`): the row's lock (PostgreSQL) or the single writer
(SQLite) orders two operators acting on one case, and the loser sees a conflict rather
than overwriting. Schema version 6 (`sqlite_store.py`, `postgres_schema.py`) holds the
tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from engine.store.audit_sql import AUDIT_COLUMNS, audit_from_row
from engine.store.console_queries import ALERT_SELECT, alert_cursor, alert_filter, stored_alert
from engine.store.console_types import (
    ApiToken,
    AuditEntry,
    AuditQuery,
    CaseAction,
    CaseChange,
    CaseResult,
    Operator,
    Percentiles,
    PutOperator,
    StoreKpis,
    Track,
    TrackPoint,
)
from engine.store.port import AlertQuery, Page, StoredAlert
from engine.store.rows import check_limit, decode_cursor, encode_cursor, make_page
from engine.store.sql_base import MAX_ID, SqlStore, Tx

HOUR_MS = 3_600_000
_INSERT_NOTE = "INSERT INTO alert_notes (alert_id, at_ms, by_name, text) VALUES (?, ?, ?, ?)"
# A later acknowledgement keeps the first one's time and author: time-to-acknowledge is
# the first one's. Every right-hand side reads the row as it was before the UPDATE.
_ACK = (
    "UPDATE alerts SET "
    "case_state = CASE WHEN case_state = 'resolved' THEN 'resolved' ELSE 'acknowledged' END, "
    "acked_by = CASE WHEN acked_ms IS NULL THEN ? ELSE acked_by END, "
    "acked_ms = COALESCE(acked_ms, ?), ack_note = COALESCE(?, ack_note) WHERE id = ?"
)
_RESOLVE = (
    "UPDATE alerts SET case_state = 'resolved', resolved_ms = ?, resolved_by = ?, "
    "acked_by = CASE WHEN acked_ms IS NULL THEN ? ELSE acked_by END, "
    "acked_ms = COALESCE(acked_ms, ?) WHERE id = ? AND case_state <> 'resolved'"
)
_REOPEN = (
    "UPDATE alerts SET case_state = 'open', resolved_ms = NULL, resolved_by = NULL, "
    "acked_ms = NULL, acked_by = NULL WHERE id = ? AND case_state <> 'open'"
)
_GPS = "FROM telemetry WHERE device_id = ? AND stream = 'gps' AND ts_ms >= ? AND ts_ms < ? "
_SESSION_OPERATOR = (
    "SELECT s.name, o.role FROM operator_sessions s JOIN operators o ON o.name = s.name "
    "WHERE s.session_sha256 = ? AND s.expires_ms > ?"
)


class ConsoleSql(SqlStore[Tx]):
    """The console's part of `Store`; a backend derives from this rather than `SqlStore`."""

    # alerts and their cases

    def list_alerts(self, query: AlertQuery) -> Page[StoredAlert]:
        """Alerts with their cases (notes left out), newest first or most severe first."""
        tail, params = alert_filter(query)
        rows = self._query(self._sql(ALERT_SELECT + tail), params)
        return make_page(rows, query.limit, stored_alert, lambda r: alert_cursor(query, r))

    def get_alert(self, alert_id: str) -> StoredAlert | None:
        """One alert with its case and notes, or None."""
        rows = self._query(self._sql(ALERT_SELECT + "WHERE id = ?"), (alert_id,))
        if not rows:
            return None
        notes = self._query(
            self._sql(
                "SELECT by_name, at_ms, text FROM alert_notes WHERE alert_id = ? ORDER BY id"
            ),
            (alert_id,),
        )
        return stored_alert(rows[0], notes)

    def ack_alert(
        self, alert_id: str, note: str | None, now_ms: int, audit: AuditEntry | None = None
    ) -> bool:
        """Record an acknowledgement (by the audit entry's actor, if any); False if there is
        no such alert. A resolved case stays resolved; its note is still kept."""
        by = None if audit is None else audit.actor.name
        with self._transaction() as tx:
            if tx.execute(self._sql(_ACK), (by, now_ms, note, alert_id)).rowcount == 0:
                return False
            if note is not None:
                tx.execute(self._sql(_INSERT_NOTE), (alert_id, now_ms, by, note))
            self._audit(tx, audit)
        return True

    def change_case(self, alert_id: str, change: CaseChange, audit: AuditEntry) -> CaseResult:
        """Apply a case action by `audit.actor` at `audit.at_ms`, with its audit entry."""
        if change.action is CaseAction.ACK:
            done = self.ack_alert(alert_id, change.note, audit.at_ms, audit)
            return CaseResult.DONE if done else CaseResult.MISSING
        at_ms, by = audit.at_ms, audit.actor.name
        params: tuple[object, ...]
        with self._transaction() as tx:
            if change.action is CaseAction.ASSIGN:
                sql, params = (
                    "UPDATE alerts SET assignee = ? WHERE id = ?",
                    (change.assignee, alert_id),
                )
            elif change.action is CaseAction.RESOLVE:
                sql, params = _RESOLVE, (at_ms, by, by, at_ms, alert_id)
            elif change.action is CaseAction.REOPEN:
                sql, params = _REOPEN, (alert_id,)
            else:
                sql, params = "SELECT 1 FROM alerts WHERE id = ?", (alert_id,)
            result = tx.execute(self._sql(sql), params)
            changed = (
                result.rowcount if change.action is not CaseAction.NOTE else len(result.fetchall())
            )
            if changed == 0:
                found = tx.execute(self._sql("SELECT 1 FROM alerts WHERE id = ?"), (alert_id,))
                return CaseResult.CONFLICT if found.fetchall() else CaseResult.MISSING
            if change.note is not None:
                tx.execute(self._sql(_INSERT_NOTE), (alert_id, at_ms, by, change.note))
            self._audit(tx, audit)
        return CaseResult.DONE

    # operators and their sessions

    def put_operator(
        self, name: str, role: str, password_hash: str | None, audit: AuditEntry
    ) -> PutOperator:
        """Create an operator or change its role, and its password when given (which ends
        its sessions); a new one needs a password."""
        now_ms = audit.at_ms
        with self._transaction() as tx:
            found = tx.execute(self._sql("SELECT 1 FROM operators WHERE name = ?"), (name,))
            if not found.fetchall():
                if password_hash is None:
                    return PutOperator.NEEDS_PASSWORD
                tx.execute(
                    self._sql(
                        "INSERT INTO operators (name, role, password, created_ms, updated_ms) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                        "role = excluded.role, password = excluded.password, "
                        "updated_ms = excluded.updated_ms"
                    ),
                    (name, role, password_hash, now_ms, now_ms),
                )
                self._audit(tx, audit)
                return PutOperator.CREATED
            tx.execute(
                self._sql(
                    "UPDATE operators SET role = ?, password = COALESCE(?, password), "
                    "updated_ms = ? WHERE name = ?"
                ),
                (role, password_hash, now_ms, name),
            )
            if password_hash is not None:
                tx.execute(self._sql("DELETE FROM operator_sessions WHERE name = ?"), (name,))
            self._audit(tx, audit)
        return PutOperator.UPDATED

    def get_operator(self, name: str) -> Operator | None:
        """One operator, or None."""
        rows = self._query(
            self._sql("SELECT name, role, created_ms, updated_ms FROM operators WHERE name = ?"),
            (name,),
        )
        return Operator(*rows[0]) if rows else None

    def list_operators(self) -> list[Operator]:
        """Every operator, by name."""
        rows = self._query("SELECT name, role, created_ms, updated_ms FROM operators ORDER BY name")
        return [Operator(*row) for row in rows]

    def delete_operator(self, name: str, audit: AuditEntry) -> bool:
        """Delete an operator and its sessions; False if there was none."""
        with self._transaction() as tx:
            tx.execute(self._sql("DELETE FROM operator_sessions WHERE name = ?"), (name,))
            if tx.execute(self._sql("DELETE FROM operators WHERE name = ?"), (name,)).rowcount:
                self._audit(tx, audit)
                return True
        return False

    def operator_login(self, name: str) -> tuple[str, str] | None:
        """(role, password hash) of an operator, or None."""
        rows = self._query(
            self._sql("SELECT role, password FROM operators WHERE name = ?"), (name,)
        )
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def create_session(
        self, session_sha256: str, name: str, expires_ms: int, audit: AuditEntry
    ) -> bool:
        """Store a new session of an operator; False if the operator no longer exists.
        Expired sessions (of anyone) are deleted on the way."""
        with self._transaction() as tx:
            tx.execute(
                self._sql("DELETE FROM operator_sessions WHERE expires_ms <= ?"), (audit.at_ms,)
            )
            made = tx.execute(
                self._sql(
                    "INSERT INTO operator_sessions (session_sha256, name, created_ms, expires_ms) "
                    "SELECT ?, name, ?, ? FROM operators WHERE name = ?"
                ),
                (session_sha256, audit.at_ms, expires_ms, name),
            ).rowcount
            if made:
                self._audit(tx, audit)
        return made > 0

    def session_operator(self, session_sha256: str, now_ms: int) -> tuple[str, str] | None:
        """(name, role) of the operator of an unexpired session, or None."""
        rows = self._query(self._sql(_SESSION_OPERATOR), (session_sha256, now_ms))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def delete_session(self, session_sha256: str, audit: AuditEntry) -> bool:
        """End a session; False if there was none."""
        sql = "DELETE FROM operator_sessions WHERE session_sha256 = ?"
        return self._execute(sql, (session_sha256,), audit) > 0

    # machine tokens

    def create_api_token(self, name: str, role: str, token_sha256: str, audit: AuditEntry) -> bool:
        """Store a new machine token (its SHA-256); False if the name is taken."""
        sql = (
            "INSERT INTO api_tokens (name, role, token_sha256, created_ms, created_by) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING"
        )
        params = (name, role, token_sha256, audit.at_ms, audit.actor.name)
        return self._execute(sql, params, audit) > 0

    def list_api_tokens(self) -> list[ApiToken]:
        """Every machine token, by name (never the token)."""
        rows = self._query(
            "SELECT name, role, created_ms, created_by FROM api_tokens ORDER BY name"
        )
        return [ApiToken(*row) for row in rows]

    def delete_api_token(self, name: str, audit: AuditEntry) -> bool:
        """Revoke a machine token; False if there was none."""
        return self._execute("DELETE FROM api_tokens WHERE name = ?", (name,), audit) > 0

    def api_token_role(self, token_sha256: str) -> tuple[str, str] | None:
        """(name, role) of the machine token with this SHA-256: one lookup in its unique
        index (as `device_for_token`)."""
        rows = self._query(
            self._sql("SELECT name, role FROM api_tokens WHERE token_sha256 = ?"), (token_sha256,)
        )
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    # the audit log

    def list_audit(self, query: AuditQuery) -> Page[AuditEntry]:
        """Audit entries, newest first (by id)."""
        before = MAX_ID if query.cursor is None else decode_cursor("audit", query.cursor, (int,))[0]
        conds, params = ["id < ?"], [before]
        for cond, value in (
            ("at_ms >= ?", query.since_ms),
            ("at_ms < ?", query.until_ms),
            ("actor = ?", query.actor),
            ("target = ?", query.target),
        ):
            if value is not None:
                conds.append(cond)
                params.append(value)
        params.append(check_limit(query.limit) + 1)
        rows = self._query(
            self._sql(
                f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(conds)} "  # noqa: S608  # constants
                "ORDER BY id DESC LIMIT ?"
            ),
            params,
        )
        return make_page(rows, query.limit, audit_from_row, lambda r: encode_cursor("audit", r[0]))

    # tracks and KPIs

    def track(self, device_id: str, since_ms: int, until_ms: int, max_fixes: int) -> Track:
        """A device's stored gps fixes in `[since_ms, until_ms)`, oldest first. Over
        `max_fixes` of them: the first of each of `max_fixes` equal time buckets, and the
        last fix of the period."""
        period = (device_id, since_ms, until_ms)
        fixes = int(self._query(self._sql("SELECT count(*) " + _GPS), period)[0][0])
        columns = "SELECT ts_ms, lat, lon, speed_kmh "
        if fixes <= max_fixes:
            rows = self._query(self._sql(columns + _GPS + "ORDER BY ts_ms"), period)
            return Track(fixes, _points(rows))
        bucket_ms = max(1, math.ceil((until_ms - since_ms) / max(1, max_fixes - 1)))
        rows = self._query(
            self._sql(
                columns + "FROM (SELECT ts_ms, lat, lon, speed_kmh, row_number() OVER ("
                "PARTITION BY (ts_ms - CAST(? AS bigint)) / CAST(? AS bigint) ORDER BY ts_ms"
                ") AS rn " + _GPS + ") AS fixes WHERE rn = 1 ORDER BY ts_ms"
            ),
            (since_ms, bucket_ms, *period),
        )
        last = self._query(self._sql(columns + _GPS + "ORDER BY ts_ms DESC LIMIT 1"), period)
        if last and (not rows or rows[-1][0] != last[0][0]):
            rows.append(last[0])
        return Track(fixes, _points(rows), thinned=True)

    def kpis(self, since_ms: int, until_ms: int) -> StoreKpis:
        """The console's KPIs over `[since_ms, until_ms)`: alerts by event time, deliveries
        by creation, rejects by arrival; each an aggregate on an index of its time."""
        period = (since_ms, until_ms)
        in_period = "FROM alerts WHERE ts_ms >= ? AND ts_ms < ? "
        per_hour = self._query(
            self._sql(
                f"SELECT ts_ms / {HOUR_MS}, type, count(*) "  # constants
                + in_period
                + "GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            period,
        )
        cases = self._query(
            self._sql("SELECT case_state, count(*) " + in_period + "GROUP BY case_state"), period
        )
        deliveries = self._query(
            self._sql(
                "SELECT state, count(*) FROM deliveries "
                "WHERE created_ms >= ? AND created_ms < ? GROUP BY state"
            ),
            period,
        )
        rejected = self._query(
            self._sql(
                "SELECT reason, count(*) FROM dead_letters "
                "WHERE received_ms >= ? AND received_ms < ? GROUP BY reason"
            ),
            period,
        )
        return StoreKpis(
            alerts_per_hour=[(int(h) * HOUR_MS, str(t), int(n)) for h, t, n in per_hour],
            to_ack=self._percentiles("acked_ms", period),
            to_resolve=self._percentiles("resolved_ms", period),
            deliveries={str(state): int(n) for state, n in deliveries},
            rejected={str(reason): int(n) for reason, n in rejected},
            cases={str(state): int(n) for state, n in cases},
        )

    def _percentiles(self, column: str, period: tuple[int, int]) -> Percentiles:
        """Nearest-rank p50 and p90 of `column - detected_ms` over alerts of the period
        that have `column`: a count, then one sorted read per rank (no percentile
        function in SQLite)."""
        where = f"FROM alerts WHERE ts_ms >= ? AND ts_ms < ? AND {column} IS NOT NULL "
        count = int(self._query(self._sql("SELECT count(*) " + where), period)[0][0])
        if count == 0:
            return Percentiles(0, None, None)
        ranked = self._sql(
            f"SELECT {column} - detected_ms " + where + "ORDER BY 1 LIMIT 1 OFFSET ?"  # constants
        )
        p50, p90 = (
            int(self._query(ranked, (*period, math.ceil(p * count) - 1))[0][0]) for p in (0.5, 0.9)
        )
        return Percentiles(count, p50, p90)


def _points(rows: Sequence[Sequence[Any]]) -> list[TrackPoint]:
    return [
        TrackPoint(int(ts), float(lat), float(lon), None if speed is None else float(speed))
        for ts, lat, lon, speed in rows
    ]
