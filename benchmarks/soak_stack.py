"""What the soak runs against: a throwaway PostgreSQL schema (its counts, and the engine's
connections killed from outside), `pledgewatch run` on it through the harness's launcher (its
log read back), the fleet's stream counted beforehand, its fences, loans and our webhook put
in through the API, and the wait for the engine and its outbox to drain."""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from benchmarks.common import REPO
from benchmarks.replay_methods import pledgewatch_command
from simulator.fleet import InputCounter
from simulator.fleet_plan import FleetPlan
from simulator.harness.api_client import import_items
from simulator.harness.engine_process import EngineProcess
from simulator.harness.prometheus import OUTBOX
from simulator.loadtest.sampling import Collector
from simulator.truth import InputCounts

TOKEN = "soak-token"  # noqa: S105  # a throwaway token for a private engine on loopback
HOOK_ID = "soak"
CONNECT_TIMEOUT_S = 5


_KILL = (
    "SELECT pid, coalesce(state, ''), left(coalesce(query, ''), 80), pg_terminate_backend(pid) "
    "FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()"
)
_WHEN_BUSY = (
    " AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
    "AND state <> 'idle' AND pid <> pg_backend_pid())"
)


@dataclass(frozen=True, slots=True)
class Killed:
    """One engine connection terminated from outside: its backend pid and what it was doing."""

    pid: int
    state: str  # pg_stat_activity.state: idle, active, idle in transaction, ...
    query: str  # the start of its last statement


class SoakDatabase:
    """A fresh schema in `dsn` for one engine, which connects with `application_name` = `app`
    (so its connections can be told from ours and killed); `drop` removes everything."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        tag = uuid.uuid4().hex[:10]
        self.schema = f"pw_soak_{tag}"
        self.app = f"pledgewatch-soak-{tag}"

    @property
    def url(self) -> str:
        """The engine's `--db-url`: the schema as its search_path, our application name."""
        sep = "&" if "?" in self.dsn else "?"
        return (
            f"{self.dsn}{sep}options=-csearch_path%3D{self.schema}"
            f"&application_name={quote(self.app)}"
        )

    def _connect(self) -> psycopg.Connection[TupleRow]:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

    def create(self) -> None:
        """Create the schema (the engine's migration fills it)."""
        with self._connect() as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))

    def drop(self) -> None:
        """Drop the schema and everything in it."""
        with self._connect() as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )

    def kill_engine_connections(self, aim_s: float = 0.0) -> list[Killed]:
        """`pg_terminate_backend` every connection of the engine; the ones it terminated.

        With `aim_s`, wait up to that long for a moment when one of them is busy (in a
        statement or a transaction), polling every few milliseconds, so that the kill
        lands in the middle of work rather than on idle connections only."""
        deadline = time.monotonic() + aim_s
        with self._connect() as conn:
            while True:
                busy_only = time.monotonic() < deadline
                rows = conn.execute(
                    _KILL + (_WHEN_BUSY if busy_only else ""),
                    [self.app, self.app] if busy_only else [self.app],
                ).fetchall()
                if rows or not busy_only:
                    break
                time.sleep(0.005)
        return [Killed(int(p), str(s), str(q)) for p, s, q, done in rows if done]

    def engine_connections(self) -> int:
        """How many connections the engine holds now."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [self.app]
            ).fetchone()
        return int(row[0]) if row else 0

    def _rows(self, query: str, params: Sequence[object] = ()) -> list[TupleRow]:
        with self._connect() as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            return conn.execute(query, params).fetchall()

    def telemetry(self) -> dict[str, int]:
        """Telemetry rows by stream, and `rows` / `distinct` (device, stream, ts) overall."""
        by_stream = {
            str(stream): int(n)
            for stream, n in self._rows(
                "SELECT stream, count(*) FROM telemetry GROUP BY stream ORDER BY stream"
            )
        }
        ((rows, distinct),) = self._rows(
            "SELECT count(*), count(DISTINCT (device_id, stream, ts_ms)) FROM telemetry"
        )
        return {**by_stream, "rows": int(rows), "distinct": int(distinct)}

    def alert_ids(self) -> set[str]:
        """The id of every stored alert."""
        return {str(i) for (i,) in self._rows("SELECT id FROM alerts")}

    def alerts_detected(self) -> dict[str, int]:
        """Every stored alert's id and when it was detected (epoch ms)."""
        return {str(i): int(ms) for i, ms in self._rows("SELECT id, detected_ms FROM alerts")}

    def alerts_by_type(self) -> dict[str, int]:
        """Stored alerts by type."""
        rows = self._rows("SELECT type, count(*) FROM alerts GROUP BY type ORDER BY type")
        return {str(t): int(n) for t, n in rows}

    def deliveries(self) -> dict[str, int]:
        """Outbox deliveries by state (pending, delivered, dead), and attempts in all."""
        rows = self._rows("SELECT state, count(*), sum(attempts) FROM deliveries GROUP BY state")
        out = {str(s): int(n) for s, n, _ in rows}
        out["attempts"] = sum(int(a or 0) for _, _, a in rows)
        return out

    def dead(self, limit: int = 20) -> list[dict[str, object]]:
        """The first dead deliveries: alert, attempts, age at death, last error."""
        rows = self._rows(
            "SELECT alert_id, attempts, next_at_ms - created_ms, last_status, last_error "
            "FROM deliveries WHERE state = 'dead' ORDER BY id LIMIT %s",
            [limit],
        )
        keys = ("alert_id", "attempts", "age_ms", "last_status", "last_error")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def dead_letters(self) -> dict[str, int]:
        """Rejected inputs kept by the engine, by reason."""
        rows = self._rows("SELECT reason, count(*) FROM dead_letters GROUP BY reason")
        return {str(r): int(n) for r, n in rows}


def engine_process(
    mqtt_url: str, db: SoakDatabase, work: Path, config: dict[str, object], args: Sequence[str]
) -> EngineProcess:
    """`pledgewatch run` (the installed script) on `db` with the plan's rules, not started."""
    config_path = work / "engine-config.json"
    config_path.write_bytes(orjson.dumps(config))
    return EngineProcess(
        mqtt_url,
        db.url,
        token=TOKEN,
        log_path=work / "engine.log",
        client_id=db.app,
        config=config_path,
        args=args,
        cwd=REPO,
        command=pledgewatch_command(),
    )


def load_plan(http: httpx.Client, plan: FleetPlan) -> dict[str, int]:
    """The plan's fences and loans through `POST /v1/{fences,loans}:import`."""
    features = plan.fences_doc()["features"]
    assert isinstance(features, list)
    import_items(http, "fences", features)
    loans = plan.loans_doc()
    import_items(http, "loans", loans)
    return {"fences": len(features), "loans": len(loans)}


def register_webhook(http: httpx.Client, url: str, secret: str) -> None:
    """Our receiver, for every alert type."""
    r = http.put(f"/v1/webhooks/{HOOK_ID}", json={"url": url, "secret": secret})
    if r.status_code not in {200, 201}:
        msg = f"the engine refused the webhook: {r.status_code} {r.text[:300]}"
        raise RuntimeError(msg)


def planned_input(plan: FleetPlan) -> tuple[InputCounts, int, int]:
    """What the stream holds, generated once before the run (the publisher generates it
    again, the same, seeded): the counts the engine must reach, messages, valid readings."""
    counter = InputCounter()
    messages = readings = 0
    for out in plan.generated():
        counter.add(out)
        messages += 1
        readings += len(out.readings)
    return counter.counts(), messages, readings


def log_findings(path: Path) -> dict[str, Any]:
    """Warnings, errors and tracebacks in the engine's log, grouped by message shape."""
    text = path.read_text(errors="replace") if path.exists() else ""
    shapes: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    for line in text.splitlines():
        m = re.match(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) (\S+): (.*)$", line)
        if m:
            levels[m.group(1)] += 1
            shape = re.sub(r"0x[0-9a-f]+|\d+(\.\d+)?", "N", m.group(3))[:160]
            shapes[f"{m.group(1)} {m.group(2)}: {shape}"] += 1
    return {
        "levels": dict(levels),
        "tracebacks": text.count("Traceback"),
        "messages": [{"count": n, "message": s} for s, n in shapes.most_common(15)],
    }


def wait_drained(
    engine: EngineProcess,
    http: httpx.Client,
    db: SoakDatabase,
    collector: Collector,
    target: float,
    timeout_s: float,
) -> dict[str, Any]:
    """Until the engine has handled `target` inputs and committed them, then until the outbox
    is empty and every stored alert was received; how long each took, and why it gave up."""
    started = time.time()
    out: dict[str, Any] = {"note": None}
    try:
        engine.wait_handled(target, http, timeout_s=timeout_s, stall_s=min(120.0, timeout_s))
    except (RuntimeError, httpx.HTTPError) as exc:
        out["note"] = f"the engine did not handle everything: {exc}"
    out["handled_s"] = round(time.time() - started, 2)
    deadline = started + timeout_s
    while True:
        checked_at = time.time()
        pending = None
        with suppress(httpx.HTTPError, ValueError):
            pending = engine.metrics(http).total(OUTBOX)
        collector.take()
        if pending == 0 and db.alert_ids() <= set(collector.alerts):
            out["drained_at"] = checked_at
            break
        if time.time() > deadline or not engine.running():
            out["drained_at"] = None
            out["note"] = (out["note"] or "") + f" the outbox did not drain in {timeout_s:g} s"
            break
        time.sleep(1.0)
    out["seconds"] = round(time.time() - started, 2)
    return out
