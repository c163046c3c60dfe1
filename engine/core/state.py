"""Per-device and per-loan state of the detection core, and its versioned snapshots.

All times are epoch milliseconds. `event_ms` is the device's own event time; `arrived_ms`
is the runtime clock (wall clock live, the largest event time seen in a replay).

Snapshots are versioned; fields added later are optional in a snapshot (an older one
restores with their defaults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

SNAPSHOT_VERSION = 1


class SnapshotError(ValueError):
    """A snapshot that this version cannot restore."""


class Position(NamedTuple):
    """A point in time and space: the last fix, a parking spot, a spoofed jump.

    A named tuple rather than a dataclass: one is built per accepted fix.
    """

    ts_ms: int
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class DwellTimer:
    """A risk-site visit: inside since `since_ms`, due at `due_ms`, alerted once."""

    fence_id: str
    since_ms: int
    due_ms: int
    alerted: bool = False


@dataclass(slots=True)
class DeviceState:
    """Everything the core remembers about one tracker. Invariant: `inside` holds fence ids.

    Not frozen, for speed: the core never changes a state it was given. `step` and `tick`
    `clone()` it once and edit the copy, which they return.
    """

    device_id: str
    event_ms: int = -1
    arrived_ms: int = -1
    offline: bool = False
    last_ts: tuple[int, int, int] = (-1, -1, -1)  # per stream: gps, vib, status
    recent: tuple[int, ...] = ()  # ts_ms * 3 + stream index of recent readings, newest last
    fix: Position | None = None  # last accepted fix
    inside: frozenset[str] = frozenset()
    last_zone_id: str | None = None
    zone_out_ms: int | None = None  # event time the car was first seen outside all its zones
    zone_alerted: bool = False
    dwell: tuple[DwellTimer, ...] = ()
    ignition: bool | None = None
    parked: Position | None = None  # where and when ignition went off
    tow_alerted: bool = False
    ext_power: bool | None = None
    tamper: bool | None = None
    bad_vin: str | None = None  # the mismatching VIN last alerted
    seq: int | None = None
    spoof: tuple[Position, ...] = ()  # impossible fixes of the current episode
    ahead_ms: int = -1  # the latest stamp found to have run ahead of the clock (and capped)
    skew: tuple[int, ...] = ()  # ts of the readings of a clock-skew episode, oldest first
    skew_ms: int = 0  # how far back the clock went, estimated at the episode's first reading

    def clone(self) -> DeviceState:
        """A shallow copy (every field is immutable, so this is a full copy)."""
        return DeviceState(
            self.device_id,
            self.event_ms,
            self.arrived_ms,
            self.offline,
            self.last_ts,
            self.recent,
            self.fix,
            self.inside,
            self.last_zone_id,
            self.zone_out_ms,
            self.zone_alerted,
            self.dwell,
            self.ignition,
            self.parked,
            self.tow_alerted,
            self.ext_power,
            self.tamper,
            self.bad_vin,
            self.seq,
            self.spoof,
            self.ahead_ms,
            self.skew,
            self.skew_ms,
        )


@dataclass(frozen=True, slots=True)
class PairState:
    """Separation tracking of two trackers of one loan (`a` < `b`)."""

    a: str
    b: str
    streak: int = 0
    alerted: bool = False


@dataclass(frozen=True, slots=True)
class LoanState:
    """Per-loan state: the latest accepted fix of each tracker and the pairs' separation."""

    loan_id: str
    fixes: tuple[tuple[str, Position], ...] = ()
    pairs: tuple[PairState, ...] = ()


def _pos(p: Position | None) -> list[float] | None:
    return None if p is None else [p.ts_ms, p.lat, p.lon]


def _unpos(v: object) -> Position | None:
    if v is None:
        return None
    ts, lat, lon = _list(v)
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        raise SnapshotError(f"bad position {v!r}")
    return Position(_int(ts), float(lat), float(lon))


def device_to_json(s: DeviceState) -> dict[str, object]:
    """A JSON-able, versioned snapshot of a device's state."""
    return {
        "v": SNAPSHOT_VERSION,
        "device_id": s.device_id,
        "event_ms": s.event_ms,
        "arrived_ms": s.arrived_ms,
        "offline": s.offline,
        "last_ts": list(s.last_ts),
        "recent": list(s.recent),
        "fix": _pos(s.fix),
        "inside": sorted(s.inside),
        "last_zone_id": s.last_zone_id,
        "zone_out_ms": s.zone_out_ms,
        "zone_alerted": s.zone_alerted,
        "dwell": [[d.fence_id, d.since_ms, d.due_ms, d.alerted] for d in s.dwell],
        "ignition": s.ignition,
        "parked": _pos(s.parked),
        "tow_alerted": s.tow_alerted,
        "ext_power": s.ext_power,
        "tamper": s.tamper,
        "bad_vin": s.bad_vin,
        "seq": s.seq,
        "spoof": [_pos(p) for p in s.spoof],
        "ahead_ms": s.ahead_ms,
        "skew": list(s.skew),
        "skew_ms": s.skew_ms,
    }


def _check_version(doc: object) -> dict[str, object]:
    if not isinstance(doc, dict):
        raise SnapshotError("a snapshot must be a JSON object")
    if doc.get("v") != SNAPSHOT_VERSION:
        msg = f"snapshot version {doc.get('v')!r}, this build reads {SNAPSHOT_VERSION}"
        raise SnapshotError(msg)
    return doc


def _int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SnapshotError(f"expected an integer, got {v!r}")
    return v


def _opt_int(v: object) -> int | None:
    return None if v is None else _int(v)


def _opt_str(v: object) -> str | None:
    if v is not None and not isinstance(v, str):
        raise SnapshotError(f"expected a string, got {v!r}")
    return v


def _opt_bool(v: object) -> bool | None:
    if v is not None and not isinstance(v, bool):
        raise SnapshotError(f"expected a boolean, got {v!r}")
    return v


def _list(v: object) -> list[object]:
    if not isinstance(v, list):
        raise SnapshotError(f"expected a list, got {v!r}")
    return v


def _str(v: object) -> str:
    s = _opt_str(v)
    if s is None:
        raise SnapshotError("expected a string, got null")
    return s


def _bool(v: object) -> bool:
    return _opt_bool(v) is True


def _dwell(v: object) -> DwellTimer:
    f, since, due, alerted = _list(v)
    return DwellTimer(_str(f), _int(since), _int(due), _bool(alerted))


def _pair(v: object) -> PairState:
    a, b, streak, alerted = _list(v)
    return PairState(_str(a), _str(b), _int(streak), _bool(alerted))


def _position(v: object) -> Position:
    p = _unpos(v)
    if p is None:
        raise SnapshotError("expected a position, got null")
    return p


def device_from_json(doc: object) -> DeviceState:
    """Restore a device's state from `device_to_json` output."""
    d = _check_version(doc)
    try:
        gps_ts, vib_ts, status_ts = (_int(x) for x in _list(d["last_ts"]))
        return DeviceState(
            device_id=_str(d["device_id"]),
            event_ms=_int(d["event_ms"]),
            arrived_ms=_int(d["arrived_ms"]),
            offline=_bool(d["offline"]),
            last_ts=(gps_ts, vib_ts, status_ts),
            recent=tuple(_int(x) for x in _list(d["recent"])),
            fix=_unpos(d["fix"]),
            inside=frozenset(_str(x) for x in _list(d["inside"])),
            last_zone_id=_opt_str(d["last_zone_id"]),
            zone_out_ms=_opt_int(d["zone_out_ms"]),
            zone_alerted=_bool(d["zone_alerted"]),
            dwell=tuple(_dwell(x) for x in _list(d["dwell"])),
            ignition=_opt_bool(d["ignition"]),
            parked=_unpos(d["parked"]),
            tow_alerted=_bool(d["tow_alerted"]),
            ext_power=_opt_bool(d["ext_power"]),
            tamper=_opt_bool(d["tamper"]),
            bad_vin=_opt_str(d["bad_vin"]),
            seq=_opt_int(d["seq"]),
            spoof=tuple(_position(x) for x in _list(d["spoof"])),
            ahead_ms=_int(d.get("ahead_ms", -1)),
            skew=tuple(_int(x) for x in _list(d.get("skew", []))),
            skew_ms=_int(d.get("skew_ms", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"device snapshot is malformed: {exc}"
        raise SnapshotError(msg) from exc


def loan_to_json(s: LoanState) -> dict[str, object]:
    """A JSON-able, versioned snapshot of a loan's state."""
    return {
        "v": SNAPSHOT_VERSION,
        "loan_id": s.loan_id,
        "fixes": [[dev, _pos(p)] for dev, p in s.fixes],
        "pairs": [[p.a, p.b, p.streak, p.alerted] for p in s.pairs],
    }


def loan_from_json(doc: object) -> LoanState:
    """Restore a loan's state from `loan_to_json` output."""
    d = _check_version(doc)
    try:
        fixes = []
        for item in _list(d["fixes"]):
            dev, pos = _list(item)
            fixes.append((_str(dev), _position(pos)))
        return LoanState(
            loan_id=_str(d["loan_id"]),
            fixes=tuple(fixes),
            pairs=tuple(_pair(x) for x in _list(d["pairs"])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"loan snapshot is malformed: {exc}"
        raise SnapshotError(msg) from exc
