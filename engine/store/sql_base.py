"""The part of `Store` that the SQLite and PostgreSQL backends share: SQL and paging.

Each shared statement is written once, in SQLite's spelling (`?` placeholders), with two
marks where PostgreSQL spells it differently: `{text}` after a JSON column read as text
(`::text` there: psycopg would parse a `json` value) and `{json}` after a parameter written
to a JSON column (`::json` there). A backend names its spelling in class attributes and
keeps what is its own: connections, transactions, error mapping, bulk writes (executemany
or binary COPY), the schema and its migrations, telemetry retention.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from functools import cache
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import orjson

from alerts.model import Alert
from alerts.outbox import Attempt, Delivery, Webhook
from engine.core.state import DeviceState, device_from_json
from engine.store.audit_sql import INSERT_AUDIT, audit_row
from engine.store.console_types import AuditEntry
from engine.store.port import IssuedToken, Page, StoredReject
from engine.store.rows import (
    DELIVERY_COLUMNS,
    DELIVERY_INSERT_COLUMNS,
    check_limit,
    consumer_doc_from_row,
    decode_cursor,
    delivery_from_row,
    delivery_rows,
    encode_alerts,
    encode_cursor,
    fence_from_row,
    fence_row,
    fences_from_rows,
    loan_from_row,
    loan_row,
    make_page,
    reject_from_row,
    webhook_from_row,
    webhook_row,
)
from engine.store.secret_box import SecretBox, is_sealed
from geofence.fence import Fence
from lending.model import Loan

MAX_ID = 2**63 - 1  # above every id: where a newest-first list by id starts


def clock_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def insert_sql(table: str, columns: Sequence[str]) -> str:
    """`INSERT INTO table (columns) VALUES (?, ...)`: one row, in the order of `columns`."""
    names = ", ".join(columns)
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table} ({names}) VALUES ({marks})"  # noqa: S608  # constant names


DELIVERY_SELECT = "SELECT " + ", ".join(DELIVERY_COLUMNS) + " FROM deliveries "  # noqa: S608  # constants
INSERT_DELIVERY = insert_sql("deliveries", DELIVERY_INSERT_COLUMNS)
INSERT_MIGRATION = "INSERT INTO schema_migrations (version, applied_ms) VALUES (?, ?)"
UPSERT_LOAN = (
    "INSERT INTO loans (id, vin, status, doc, updated_ms) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET vin = excluded.vin, status = excluded.status, "
    "doc = excluded.doc, updated_ms = excluded.updated_ms"
)
SELECT_WEBHOOKS = "SELECT id, url, secret, types{text} FROM webhooks"
DELETE_DEVICE_STATE = "DELETE FROM device_state WHERE id = ?"
UPSERT_DEVICE_HASH = (
    "INSERT INTO device_tokens (device_id, token_sha256, created_ms) VALUES (?, ?, ?) "
    "ON CONFLICT (device_id) DO UPDATE SET token_sha256 = excluded.token_sha256, "
    "created_ms = excluded.created_ms"
)
DELETE_CONSUMER_STATE = "DELETE FROM consumer_state WHERE consumer = ? AND key = ?"
# The due heads of one webhook's queues (one per order_key: its oldest pending delivery),
# unless another dispatcher's claim on them still runs.
DUE_DELIVERIES = (
    DELIVERY_SELECT + "WHERE id IN ("  # noqa: S608  # constants
    "  SELECT min(id) FROM deliveries WHERE hook_id = ? AND state = 'pending'"
    "  GROUP BY order_key"
    ") AND state = 'pending' AND next_at_ms <= ? AND claimed_until_ms <= ? ORDER BY id LIMIT ?"
)


@cache
def dialect_sql(template: str, param: str, json_text: str, json_param: str) -> str:
    """`template` (SQLite's spelling, with `{text}` and `{json}` marks) in one dialect."""
    return template.format(text=json_text, json=json_param).replace("?", param)


class Result(Protocol):
    """What a statement leaves behind: a `sqlite3.Cursor` or a psycopg cursor."""

    @property
    def rowcount(self) -> int:
        """Rows changed by the statement."""
        ...

    def fetchall(self) -> list[Any]:
        """The rows it returned."""
        ...


class Executor(Protocol):
    """What a backend's transaction hands out: a `sqlite3.Connection` or a psycopg cursor."""

    def execute(self, query: str, params: Sequence[Any], /) -> Result:
        """Run one statement."""
        ...

    def executemany(self, query: str, rows: Sequence[Sequence[Any]], /) -> object:
        """Run one statement once per row, in order."""
        ...


Tx = TypeVar("Tx", bound=Executor)


class SqlStore(ABC, Generic[Tx]):
    """The `Store` methods whose logic and SQL are the same on both backends.

    A backend sets `PARAM` (its placeholder), `JSON_TEXT` and `JSON_PARAM` (what `{text}` and
    `{json}` become), `LOCK_HOOKS` (after the read of webhooks in a batch) and `LOCK_CLAIMS`
    (after the read of the deliveries a dispatcher claims), sets `_box` (None: the default
    key, from `_default_secrets` on first use), and provides `_query`, `_transaction` and
    `_insert_alerts`.
    """

    PARAM: ClassVar[str]
    JSON_TEXT: ClassVar[str]
    JSON_PARAM: ClassVar[str]
    LOCK_HOOKS: ClassVar[str]
    LOCK_CLAIMS: ClassVar[str]
    _box: SecretBox | None

    @abstractmethod
    def _default_secrets(self) -> SecretBox:
        """The box of the default key rule (secret_box.py), when none was given."""

    @property
    def secrets(self) -> SecretBox:
        """The box webhook secrets are sealed with; the default key is loaded on first use."""
        if self._box is None:
            self._box = self._default_secrets()
        return self._box

    @abstractmethod
    def _query(self, query: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of one read, outside any write transaction."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Tx]:
        """One write transaction: committed at the end, rolled back on any error."""

    @abstractmethod
    def _insert_alerts(
        self, tx: Tx, alerts: Sequence[tuple[Alert, bytes]]
    ) -> list[tuple[Alert, bytes]]:
        """Insert alerts whose id is not stored yet; those inserted, in the given order."""

    def _sql(self, template: str) -> str:
        return dialect_sql(template, self.PARAM, self.JSON_TEXT, self.JSON_PARAM)

    def _execute(
        self, template: str, params: Sequence[object], audit: AuditEntry | None = None
    ) -> int:
        """One statement in its own write transaction, with `audit` if it changed a row;
        the rows it changed."""
        with self._transaction() as tx:
            changed = tx.execute(self._sql(template), params).rowcount
            if changed > 0:
                self._audit(tx, audit)
            return changed

    def _audit(self, tx: Tx, audit: AuditEntry | None) -> None:
        """Write an audit entry in the transaction of its change."""
        if audit is not None:
            tx.execute(self._sql(INSERT_AUDIT), audit_row(audit))

    def _write_alerts(self, tx: Tx, alerts: Sequence[tuple[Alert, bytes]], now_ms: int) -> None:
        """Insert new alerts and, for those only, one delivery per webhook that wants them."""
        new = self._insert_alerts(tx, alerts)
        if not new:
            return
        # Read inside the write transaction: the hooks registered when this batch commits.
        hooks = tx.execute(self._sql(SELECT_WEBHOOKS + " ORDER BY id" + self.LOCK_HOOKS), ())
        stored = [webhook_from_row(r, self.secrets) for r in hooks.fetchall()]
        deliveries = delivery_rows(new, stored, now_ms)
        if deliveries:
            # executemany keeps the row order, so ids follow the order alerts were raised.
            tx.executemany(self._sql(INSERT_DELIVERY), deliveries)

    def _seal_plaintext_secrets(self, tx: Tx) -> int:
        """Schema version 3: seal every webhook secret stored in plaintext; how many."""
        rows = tx.execute("SELECT id, secret FROM webhooks", ()).fetchall()
        legacy = [(hook_id, secret) for hook_id, secret in rows if not is_sealed(secret)]
        if legacy:
            box = self.secrets
            tx.executemany(
                self._sql("UPDATE webhooks SET secret = ? WHERE id = ?"),
                [(box.seal(secret, hook_id), hook_id) for hook_id, secret in legacy],
            )
        return len(legacy)

    def _forget_devices(self, tx: Tx, evicted: Sequence[tuple[str]]) -> None:
        """Delete the checkpoint rows of forgotten devices (before the batch's upserts)."""
        if evicted:
            tx.executemany(self._sql(DELETE_DEVICE_STATE), evicted)

    def _forget_consumer_rows(self, tx: Tx, deletes: Sequence[tuple[str, str]]) -> None:
        """Delete the consumer state rows of a batch's `ConsumerRow`s whose doc is None."""
        if deletes:
            tx.executemany(self._sql(DELETE_CONSUMER_STATE), deletes)

    def load_consumer_rows(self, consumer: str) -> list[tuple[str, dict[str, object]]]:
        """The last committed state of one consumer: (key, doc) by key."""
        rows = self._query(
            self._sql("SELECT key, doc{text} FROM consumer_state WHERE consumer = ? ORDER BY key"),
            (consumer,),
        )
        return [(key, consumer_doc_from_row(doc)) for key, doc in rows]

    # fences, loans and webhooks

    def put_fences(self, fences: Sequence[Fence], audit: AuditEntry | None = None) -> None:
        """Insert or replace fences, all in one transaction."""
        now_ms = clock_ms()
        rows = [fence_row(f, now_ms) for f in fences]
        with self._transaction() as tx:
            self._audit(tx, audit)
            tx.executemany(
                self._sql(
                    "INSERT INTO fences (id, kind, feature, updated_ms) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, "
                    "feature = excluded.feature, updated_ms = excluded.updated_ms"
                ),
                rows,
            )

    def delete_fence(self, fence_id: str, audit: AuditEntry | None = None) -> bool:
        """Delete a fence; False if there was none."""
        return self._execute("DELETE FROM fences WHERE id = ?", (fence_id,), audit) > 0

    def get_fence(self, fence_id: str) -> Fence | None:
        """One fence, or None."""
        rows = self._query(self._sql("SELECT feature{text} FROM fences WHERE id = ?"), (fence_id,))
        return fence_from_row(fence_id, rows[0][0]) if rows else None

    def list_fences(self, cursor: str | None, limit: int) -> Page[Fence]:
        """Fences by id."""
        after = "" if cursor is None else decode_cursor("fence", cursor, (str,))[0]
        rows = self._query(
            self._sql("SELECT id, feature{text} FROM fences WHERE id > ? ORDER BY id LIMIT ?"),
            (after, check_limit(limit) + 1),
        )
        return make_page(
            rows,
            limit,
            lambda r: fence_from_row(r[0], r[1]),
            lambda r: encode_cursor("fence", r[0]),
        )

    def all_fences(self) -> list[Fence]:
        """Every fence (the engine builds its index from these)."""
        rows = self._query(self._sql("SELECT id, feature{text} FROM fences ORDER BY id"))
        return fences_from_rows(rows)

    def put_loan(
        self, loan: Loan, alerts: Sequence[Alert], now_ms: int, audit: AuditEntry | None = None
    ) -> None:
        """Insert or replace a loan, with the alerts that change raised, in one transaction."""
        self.put_loans([loan], alerts, now_ms, audit)

    def put_loans(
        self,
        loans: Sequence[Loan],
        alerts: Sequence[Alert],
        now_ms: int,
        audit: AuditEntry | None = None,
    ) -> None:
        """Insert or replace loans, with the alerts they raised, in one transaction."""
        rows = [loan_row(loan, now_ms) for loan in loans]
        encoded = encode_alerts(alerts)
        with self._transaction() as tx:
            tx.executemany(self._sql(UPSERT_LOAN), rows)
            self._audit(tx, audit)
            self._write_alerts(tx, encoded, now_ms)

    def get_loan(self, loan_id: str) -> Loan | None:
        """One loan, or None."""
        rows = self._query(self._sql("SELECT doc{text} FROM loans WHERE id = ?"), (loan_id,))
        return loan_from_row(loan_id, rows[0][0]) if rows else None

    def list_loans(self, cursor: str | None, limit: int) -> Page[Loan]:
        """Loans by id."""
        after = "" if cursor is None else decode_cursor("loan", cursor, (str,))[0]
        rows = self._query(
            self._sql("SELECT id, doc{text} FROM loans WHERE id > ? ORDER BY id LIMIT ?"),
            (after, check_limit(limit) + 1),
        )
        return make_page(
            rows, limit, lambda r: loan_from_row(r[0], r[1]), lambda r: encode_cursor("loan", r[0])
        )

    def all_loans(self) -> list[Loan]:
        """Every loan."""
        rows = self._query(self._sql("SELECT id, doc{text} FROM loans ORDER BY id"))
        return [loan_from_row(loan_id, doc) for loan_id, doc in rows]

    def loans_with_vin(self, vin: str) -> list[Loan]:
        """Loans whose car has this VIN (any status)."""
        rows = self._query(
            self._sql("SELECT id, doc{text} FROM loans WHERE vin = ? ORDER BY id"), (vin,)
        )
        return [loan_from_row(loan_id, doc) for loan_id, doc in rows]

    def put_webhook(self, hook: Webhook, audit: AuditEntry | None = None) -> None:
        """Insert or replace a webhook."""
        # An upsert, never INSERT OR REPLACE: replacing deletes the row, and the cascade
        # would take the hook's pending deliveries with it.
        self._execute(
            "INSERT INTO webhooks (id, url, secret, types) VALUES (?, ?, ?, ?{json}) "
            "ON CONFLICT (id) DO UPDATE SET url = excluded.url, secret = excluded.secret, "
            "types = excluded.types",
            webhook_row(hook, self.secrets),
            audit,
        )

    def get_webhook(self, hook_id: str) -> Webhook | None:
        """One webhook, or None."""
        rows = self._query(self._sql(SELECT_WEBHOOKS + " WHERE id = ?"), (hook_id,))
        return webhook_from_row(rows[0], self.secrets) if rows else None

    def list_webhooks(self) -> list[Webhook]:
        """Every webhook."""
        rows = self._query(self._sql(SELECT_WEBHOOKS + " ORDER BY id"))
        return [webhook_from_row(r, self.secrets) for r in rows]

    def delete_webhook(self, hook_id: str, audit: AuditEntry | None = None) -> bool:
        """Delete a webhook and its deliveries (pending ones included); False if none."""
        return self._execute("DELETE FROM webhooks WHERE id = ?", (hook_id,), audit) > 0

    # the outbox

    def due_deliveries(
        self, hook_id: str, now_ms: int, limit: int, claim_ms: int = 0
    ) -> list[Delivery]:
        """Due heads of this webhook's queues (one per order_key), oldest first, unclaimed;
        claimed until `now_ms + claim_ms` when `claim_ms` is given."""
        params = (hook_id, now_ms, now_ms, check_limit(limit))
        rows = self._query(self._sql(DUE_DELIVERIES), params)
        if not rows or claim_ms <= 0:
            return [delivery_from_row(r) for r in rows]
        # Claim in one write transaction: the read again, its rows locked (PostgreSQL skips
        # those another dispatcher is claiming right now; SQLite has one writer anyway),
        # then marked. A head that another dispatcher holds keeps its whole queue waiting,
        # so no two deliveries of one loan are ever in flight at once.
        with self._transaction() as tx:
            rows = tx.execute(self._sql(DUE_DELIVERIES + self.LOCK_CLAIMS), params).fetchall()
            if rows:
                tx.executemany(
                    self._sql("UPDATE deliveries SET claimed_until_ms = ? WHERE id = ?"),
                    [(now_ms + claim_ms, r[0]) for r in rows],
                )
        return [delivery_from_row(r) for r in rows]

    def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Record the results of delivery attempts, in one transaction; their claims end."""
        if not attempts:
            return
        rows = [(a.state.value, a.status, a.error, a.next_at_ms, a.delivery_id) for a in attempts]
        with self._transaction() as tx:
            tx.executemany(
                self._sql(
                    "UPDATE deliveries SET state = ?, attempts = attempts + 1, last_status = ?, "
                    "last_error = ?, next_at_ms = ?, claimed_until_ms = 0 "
                    "WHERE id = ? AND state = 'pending'"
                ),
                rows,
            )

    def outbox_pending(self) -> int:
        """How many deliveries are pending (`pledgewatch_outbox_pending`)."""
        count: int = self._query("SELECT count(*) FROM deliveries WHERE state = 'pending'")[0][0]
        return count

    def list_dead(self, cursor: str | None, limit: int) -> Page[Delivery]:
        """Deliveries that gave up, newest first."""
        before = MAX_ID if cursor is None else decode_cursor("dead", cursor, (int,))[0]
        rows = self._query(
            self._sql(DELIVERY_SELECT + "WHERE state = 'dead' AND id < ? ORDER BY id DESC LIMIT ?"),
            (before, check_limit(limit) + 1),
        )
        return make_page(rows, limit, delivery_from_row, lambda r: encode_cursor("dead", r[0]))

    def redeliver(self, delivery_id: int, now_ms: int, audit: AuditEntry | None = None) -> bool:
        """Move a DEAD delivery back to PENDING, due now, with a fresh retry window
        (attempts and age start again); False if it is not dead."""
        changed = self._execute(
            "UPDATE deliveries SET state = 'pending', next_at_ms = ?, "
            "created_ms = ?, attempts = 0, claimed_until_ms = 0 "
            "WHERE id = ? AND state = 'dead'",
            (now_ms, now_ms, delivery_id),
            audit,
        )
        return changed > 0

    # queries of the API

    def list_rejects(self, cursor: str | None, limit: int) -> Page[StoredReject]:
        """Dead letters (rejected input), newest first."""
        before = MAX_ID if cursor is None else decode_cursor("reject", cursor, (int,))[0]
        rows = self._query(
            self._sql(
                "SELECT topic, reason, detail, device_id, array_index, raw, received_ms, id "
                "FROM dead_letters WHERE id < ? ORDER BY id DESC LIMIT ?"
            ),
            (before, check_limit(limit) + 1),
        )
        return make_page(rows, limit, reject_from_row, lambda r: encode_cursor("reject", r[-1]))

    def count_telemetry(self, device_id: str | None = None) -> int:
        """Stored readings (all, or of one device)."""
        if device_id is None:
            rows = self._query("SELECT count(*) FROM telemetry")
        else:
            rows = self._query(
                self._sql("SELECT count(*) FROM telemetry WHERE device_id = ?"), (device_id,)
            )
        count: int = rows[0][0]
        return count

    # device tokens of the HTTP inputs: only their SHA-256 is stored

    def put_device_token(
        self,
        device_id: str,
        token_sha256: str,
        created_ms: int,
        audit: AuditEntry | None = None,
    ) -> bool:
        """Store the SHA-256 (hex) of a device's new token, replacing its earlier one; True
        if one was replaced."""
        with self._transaction() as tx:
            found = tx.execute(
                self._sql("SELECT 1 FROM device_tokens WHERE device_id = ?"), (device_id,)
            ).fetchall()
            tx.execute(self._sql(UPSERT_DEVICE_HASH), (device_id, token_sha256, created_ms))
            self._audit(tx, audit)
        return bool(found)

    def get_device_token(self, device_id: str) -> IssuedToken | None:
        """Whether a device has a token and since when; None if it has none."""
        rows = self._query(
            self._sql("SELECT created_ms FROM device_tokens WHERE device_id = ?"), (device_id,)
        )
        return IssuedToken(device_id, int(rows[0][0])) if rows else None

    def delete_device_token(self, device_id: str, audit: AuditEntry | None = None) -> bool:
        """Revoke a device's token; False if it had none."""
        sql = "DELETE FROM device_tokens WHERE device_id = ?"
        return self._execute(sql, (device_id,), audit) > 0

    def device_for_token(self, token_sha256: str) -> str | None:
        """The device whose token has this SHA-256 (hex), or None: one lookup in the unique
        index on the hash."""
        rows = self._query(
            self._sql("SELECT device_id FROM device_tokens WHERE token_sha256 = ?"),
            (token_sha256,),
        )
        return str(rows[0][0]) if rows else None

    def get_device_state(self, device_id: str) -> DeviceState | None:
        """One device's last committed state."""
        rows = self._query(self._sql("SELECT doc FROM device_state WHERE id = ?"), (device_id,))
        if not rows:
            return None
        doc = rows[0][0]
        return device_from_json(doc if isinstance(doc, dict) else orjson.loads(doc))

    def device_positions(self) -> list[tuple[str, float, float]]:
        """(device_id, lat, lon) of every device's last committed fix, by id: only the
        `fix` of each stored state is read (`[ts_ms, lat, lon]`, `device_to_json`)."""
        rows = self._query(self._sql("SELECT id, doc{text} FROM device_state ORDER BY id"), ())
        out: list[tuple[str, float, float]] = []
        for device_id, doc in rows:
            fix = orjson.loads(doc).get("fix")
            if isinstance(fix, list) and len(fix) == 3:
                out.append((device_id, float(fix[1]), float(fix[2])))
        return out
