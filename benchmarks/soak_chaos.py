"""The disturbances of the soak, on a timetable fixed before it starts: fences and loans edited
through the API, the webhook receiver flapping (503s for a while, then stalls past the
sender's timeout), and the engine's PostgreSQL connections killed from outside.

One thread (`Chaos`) plays the timetable; each action is recorded with when it ran and how
it went, and an action that fails is recorded, never fatal. The receiver asks `Flapper`
how to answer each POST; when the chaos stops, it answers 200 again.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from benchmarks.soak_stack import SoakDatabase
from simulator.fleet_plan import FleetPlan

PUT_ATTEMPTS = 5  # an edit the API refuses with 5xx (or no answer) is tried again, 1 s apart
KILL_AIM_S = 5.0  # a kill waits up to this long for the engine to be in a statement
SHRINK = 0.5  # an edited zone shrinks to this share of its size: cars find themselves outside


class Phase(StrEnum):
    """How the webhook receiver answers now."""

    OK = "ok"
    UNAVAILABLE = "503"  # every POST answered 503
    STALL = "stall"  # every POST held past the sender's timeout, then answered 200


@dataclass(frozen=True, slots=True)
class Timing:
    """When the disturbances come, in seconds after publishing started."""

    duration_s: float
    edit_every_s: float
    kill_every_s: float
    flap_every_s: float
    flap_503_s: float  # how long a 503 episode lasts
    flap_stall_s: float  # how long a stall episode lasts
    stall_s: float  # how long the receiver holds each POST in a stall episode
    settle_s: float  # no episode ends later than this before the end of publishing


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the timetable."""

    at_s: float
    kind: str  # edit, kill, flap
    phase: Phase = Phase.OK  # flap: the receiver's phase from now on


def timetable(t: Timing) -> list[Event]:
    """Edits every `edit_every_s` (from then on), kills every `kill_every_s` (from half of it
    on), and one receiver episode every `flap_every_s` (from half of it on), 503 and stall
    in turn, each followed by its return to OK; none past the end, no episode in the
    settling tail."""
    events: list[Event] = []
    at = t.edit_every_s
    while at < t.duration_s:
        events.append(Event(at, "edit"))
        at += t.edit_every_s
    at = t.kill_every_s / 2
    while at < t.duration_s:
        events.append(Event(at, "kill"))
        at += t.kill_every_s
    at, k = t.flap_every_s / 2, 0
    while True:
        phase = Phase.UNAVAILABLE if k % 2 == 0 else Phase.STALL
        length = t.flap_503_s if phase is Phase.UNAVAILABLE else t.flap_stall_s
        if at + length > t.duration_s - t.settle_s:
            break
        events += [Event(at, "flap", phase), Event(at + length, "flap", Phase.OK)]
        at, k = at + t.flap_every_s, k + 1
    return sorted(events, key=lambda e: e.at_s)


class Flapper:
    """The receiver's `respond` rule: 200, 503 or a stall, by the phase the chaos sets."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.phase = Phase.OK
        self.answers: Counter[str] = Counter()  # by phase
        self._lock = threading.Lock()

    def __call__(self, _n: int) -> int | float:
        """The answer to the next POST: a status, or seconds to stall then 200."""
        phase = self.phase
        with self._lock:
            self.answers[phase.value] += 1
        if phase is Phase.UNAVAILABLE:
            return 503
        if phase is Phase.STALL:
            return float(self.stall_s)
        return 200


def _shrunk(feature: dict[str, Any]) -> dict[str, Any]:
    """The zone, `SHRINK` times its size around its centre: a circle's radius, a polygon's
    ring scaled toward the mean of its vertices."""
    out = copy.deepcopy(feature)
    out.pop("id", None)
    props, geometry = out["properties"], out["geometry"]
    props["name"] = f"{props.get('name', '')} (shrunk)"
    if geometry["type"] == "Point":
        props["radius_m"] = round(float(props["radius_m"]) * SHRINK, 1)
        return out
    ring = geometry["coordinates"][0]
    lon0 = sum(p[0] for p in ring[:-1]) / (len(ring) - 1)
    lat0 = sum(p[1] for p in ring[:-1]) / (len(ring) - 1)
    geometry["coordinates"] = [
        [[lon0 + (x - lon0) * SHRINK, lat0 + (y - lat0) * SHRINK] for x, y in ring]
    ]
    return out


class Editor:
    """Edits through the API, in turn: shrink a zone / put it back, move a loan to another
    zone / put it back, close a loan / reopen it. Targets are drawn from the seeded `rng`."""

    KINDS = ("fence", "zones", "status")

    def __init__(self, http: httpx.Client, plan: FleetPlan, rng: random.Random) -> None:
        self.http = http
        self.rng = rng
        features = plan.fences_doc()["features"]
        assert isinstance(features, list)
        self.zones: list[dict[str, Any]] = [
            f for f in features if f["properties"].get("kind") == "zone"
        ]
        self.loans: list[dict[str, Any]] = plan.loans_doc()
        self.turn = 0
        self.undo: dict[str, tuple[str, str, dict[str, Any]]] = {}  # kind -> (path, target, doc)

    def edit(self) -> dict[str, object]:
        """The next edit (or the undo of this kind's last one); what was done and how it went."""
        kind = self.KINDS[self.turn % len(self.KINDS)]
        self.turn += 1
        undo = self.undo.pop(kind, None)
        if undo is not None:
            path, target, doc = undo
            return {"kind": kind, "action": "restore", "target": target, **self._put(path, doc)}
        if kind == "fence":
            zone = self.rng.choice(self.zones)
            fence_id = str(zone["id"])
            path = f"/v1/fences/{fence_id}"
            original = {k: v for k, v in zone.items() if k != "id"}
            self.undo[kind] = (path, fence_id, original)
            return {"kind": kind, "action": "shrink", "target": fence_id} | self._put(
                path, _shrunk(zone)
            )
        busy = {target for _, target, _ in self.undo.values()}  # one edit at a time per loan
        loan = self.rng.choice([ln for ln in self.loans if ln["loan_id"] not in busy])
        loan_id = str(loan["loan_id"])
        path = f"/v1/loans/{loan_id}"
        original = {k: v for k, v in loan.items() if k != "loan_id"}
        self.undo[kind] = (path, loan_id, original)
        changed = dict(original)
        if kind == "zones":
            others = [str(z["id"]) for z in self.zones if z["id"] not in original["zone_ids"]]
            changed["zone_ids"] = [self.rng.choice(others)] if others else []
            action = f"zones {original['zone_ids']} -> {changed['zone_ids']}"
        else:
            changed["status"] = "closed"
            action = "close"
        return {"kind": kind, "action": action, "target": loan_id} | self._put(path, changed)

    def _put(self, path: str, doc: dict[str, Any]) -> dict[str, object]:
        """PUT `doc`, again on 5xx or no answer; then GET it back and compare."""
        started = time.perf_counter()
        status: int | None = None
        errors: list[str] = []
        attempts = 0
        for _ in range(PUT_ATTEMPTS):
            attempts += 1
            try:
                r = self.http.put(path, json=doc)
                status = r.status_code
                if status < 500:
                    break
                errors.append(f"HTTP {status}: {r.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(1.0)
        took_ms = (time.perf_counter() - started) * 1000
        return {
            "status": status,
            "attempts": attempts,
            "errors": errors,
            "ms": round(took_ms, 1),
            "verified": status is not None and status < 300 and self._verify(path, doc),
        }

    def _verify(self, path: str, doc: dict[str, Any]) -> bool:
        """Whether a GET returns what was put (the fields the edits change)."""
        try:
            r = self.http.get(path)
        except httpx.HTTPError:
            return False
        if r.status_code != 200:
            return False
        got = r.json()
        if "geometry" in doc:
            return bool(got.get("properties", {}).get("name") == doc["properties"].get("name"))
        return bool(got.get("status") == doc["status"] and got.get("zone_ids") == doc["zone_ids"])


class Chaos(threading.Thread):
    """Plays the timetable from `t0` (unix seconds); `stop` ends it and calms the receiver."""

    def __init__(
        self,
        events: list[Event],
        flapper: Flapper,
        editor: Editor,
        db: SoakDatabase,
        t0: float,
    ) -> None:
        super().__init__(name="soak-chaos", daemon=True)
        self.events = events
        self.flapper = flapper
        self.editor = editor
        self.db = db
        self.t0 = t0
        self.log: list[dict[str, Any]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        """Each event at its time, until the timetable ends or `stop`."""
        for event in self.events:
            if self._halt.wait(max(0.0, self.t0 + event.at_s - time.time())):
                break
            self._do(event)

    def _do(self, event: Event) -> None:
        actions: dict[str, Callable[[], dict[str, object]]] = {
            "edit": self.editor.edit,
            "kill": self._kill,
            "flap": lambda: self._flap(event.phase),
        }
        at = time.time() - self.t0
        try:
            record = actions[event.kind]()
        except Exception as exc:  # noqa: BLE001  # recorded: the soak goes on
            record = {"error": f"{type(exc).__name__}: {exc}"}
        self.log.append({"t": round(at, 2), "event": event.kind, **record})

    def _kill(self) -> dict[str, object]:
        started = time.perf_counter()
        killed = self.db.kill_engine_connections(KILL_AIM_S)
        return {
            "aimed_ms": round((time.perf_counter() - started) * 1000, 1),
            "killed": len(killed),
            "states": dict(Counter(k.state for k in killed)),
            "queries": sorted({k.query for k in killed if k.state != "idle"})[:5],
        }

    def _flap(self, phase: Phase) -> dict[str, object]:
        self.flapper.phase = phase
        return {"phase": phase.value}

    def stop(self) -> None:
        """Stop playing, wait for the action in hand, answer 200 from now on."""
        self._halt.set()
        self.join(30)
        self.flapper.phase = Phase.OK

    def of(self, event: str) -> list[dict[str, Any]]:
        """The records of one kind of event."""
        return [r for r in self.log if r["event"] == event]
