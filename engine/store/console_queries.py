"""SQL of the console's reads that depends on the request: the alert queue's filters and
orders, and the rows of alerts with their cases. Pure: statements in SQLite's spelling
(`?`), turned into a backend's by `SqlStore._sql`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from alerts.model import SEVERITY, Severity
from engine.store.console_types import AlertCase, CaseNote, CaseState
from engine.store.port import AlertQuery, StoredAlert
from engine.store.rows import check_limit, decode_cursor, encode_cursor

_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
SEVERITY_RANK = (
    "(CASE type "
    + " ".join(f"WHEN '{t.value}' THEN {_RANK[s]}" for t, s in sorted(SEVERITY.items()))
    + " ELSE 0 END)"
)
"""An alert's severity as a number (critical highest), from its type: the severity is a
function of the type (`alerts.model.SEVERITY`), so no column holds it."""

ALERT_SELECT = (
    "SELECT body{text}, acked_ms, ack_note, case_state, assignee, acked_by, resolved_ms, "  # noqa: S608  # constants
    f"resolved_by, ts_ms, id, {SEVERITY_RANK} FROM alerts "
)
SORTS = ("ts", "severity")
_CURSOR_KINDS = {"ts": ("alert", (int, str)), "severity": ("alert-severity", (int, int, str))}


def alert_filter(query: AlertQuery) -> tuple[str, list[object]]:
    """The WHERE and ORDER BY of `list_alerts` with their parameters, the page size plus
    one (to know whether there is a next page) last. `CursorError` for a foreign cursor."""
    conds: list[str] = []
    params: list[object] = []
    for column, value in (
        ("type", query.type),
        ("loan_id", query.loan_id),
        ("device_id", query.device_id),
        ("fence_id", query.fence_id),
        ("case_state", query.state),
        ("assignee", query.assignee),
    ):
        if value is not None:
            conds.append(f"{column} = ?")
            params.append(value)
    if query.severity is not None:
        types = sorted(t.value for t, s in SEVERITY.items() if s.value == query.severity)
        conds.append(f"type IN ({', '.join('?' * len(types))})" if types else "1 = 0")
        params.extend(types)
    if query.since_ms is not None:
        conds.append("ts_ms >= ?")
        params.append(query.since_ms)
    if query.sort not in _CURSOR_KINDS:
        msg = f"sort must be one of {SORTS}, got {query.sort!r}"
        raise ValueError(msg)
    kind, types_ = _CURSOR_KINDS[query.sort]
    key = [SEVERITY_RANK, "ts_ms", "id"] if query.sort == "severity" else ["ts_ms", "id"]
    if query.cursor is not None:
        conds.append(f"({', '.join(key)}) < ({', '.join('?' * len(types_))})")
        params.extend(decode_cursor(kind, query.cursor, types_))
    where = f"WHERE {' AND '.join(conds)} " if conds else ""
    order = ", ".join(f"{column} DESC" for column in key)
    params.append(check_limit(query.limit) + 1)
    return f"{where}ORDER BY {order} LIMIT ?", params


def alert_cursor(query: AlertQuery, row: Sequence[Any]) -> str:
    """The cursor after a row of `ALERT_SELECT`, for the query's sort."""
    if query.sort == "severity":
        return encode_cursor("alert-severity", int(row[10]), int(row[8]), str(row[9]))
    return encode_cursor("alert", int(row[8]), str(row[9]))


def stored_alert(row: Sequence[Any], notes: Sequence[Sequence[Any]] = ()) -> StoredAlert:
    """An alert with its case from a row of `ALERT_SELECT` and its notes' rows
    (by_name, at_ms, text)."""
    body, acked_ms, ack_note, state, assignee, acked_by, resolved_ms, resolved_by = row[:8]
    case = AlertCase(
        state=CaseState(state),
        assignee=assignee,
        acked_ms=acked_ms,
        acked_by=acked_by,
        resolved_ms=resolved_ms,
        resolved_by=resolved_by,
        notes=tuple(CaseNote(by, int(at_ms), text) for by, at_ms, text in notes),
    )
    return StoredAlert(alert=orjson.loads(body), acked_ms=acked_ms, ack_note=ack_note, case=case)
