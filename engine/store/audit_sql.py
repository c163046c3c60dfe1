"""The audit log's row codec and insert, shared by every store method that writes an entry
in the transaction of its change (`sql_base.py`, `console_sql.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from engine.store.console_types import Actor, ActorKind, AuditEntry
from engine.store.rows import clean_text

MAX_DETAIL_BYTES = 4096  # a detail is small; a larger one is cut, saying so

INSERT_AUDIT = (
    "INSERT INTO audit_log (at_ms, actor, actor_kind, action, target, detail) "
    "VALUES (?, ?, ?, ?, ?, ?{json})"
)
AUDIT_COLUMNS = "id, at_ms, actor, actor_kind, action, target, detail{text}"


def audit_row(entry: AuditEntry) -> tuple[object, ...]:
    """The row of `INSERT_AUDIT`: the detail as JSON text, at most `MAX_DETAIL_BYTES`."""
    detail = orjson.dumps(dict(entry.detail), default=str)
    if len(detail) > MAX_DETAIL_BYTES:
        detail = orjson.dumps(
            {"truncated": detail[: MAX_DETAIL_BYTES // 2].decode(errors="ignore")}
        )
    return (
        entry.at_ms,
        clean_text(entry.actor.name),
        entry.actor.kind.value,
        entry.action,
        clean_text(entry.target),
        clean_text(detail.decode()),
    )


def audit_from_row(row: Sequence[Any]) -> AuditEntry:
    """An entry from a row of `AUDIT_COLUMNS`."""
    entry_id, at_ms, actor, kind, action, target, detail = row
    return AuditEntry(
        at_ms=int(at_ms),
        actor=Actor(actor, ActorKind(kind)),
        action=action,
        target=target,
        detail=orjson.loads(detail),
        id=int(entry_id),
    )
