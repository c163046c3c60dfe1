"""A lending fleet's trackers: a car's true track as its units report it, as replay lines.

A unit reports `gps` every 30 s while the engine runs or the car moves (`ignition`, `speed_kmh`,
heading, odometer) and every 15 min while parked (ignition off, speed 0); a change of phase
(engine on, off, moving) gets a fix within seconds. Each fix carries an independent GPS error
of 3.5 m times its `hdop` per axis (hdop 0.7-3: a few metres, now and then ten). The car's
wired unit also sends a `status` heartbeat every 4 h (`ext_power`, `battery_v`, `tamper`,
the VIN it reads) and one at once on a scripted change (a tamper, a power cut); a second
unit in the car, where there is one, reports gps on its own clock.

A quiet car's noise (`simulator.life_noise`) is the unit's too: no reading at all in its
`silent` spans (an underground garage: nothing buffered, the seq numbers run on), a fix off by
a multipath `Glitch` (hdop 5-10, 4 satellites) and, with `bump_chance` per drive, a `vib`
reading of 0.3-1.5 g while driving at speed. Its draws come from their own seeded streams, so a
unit without noise reports exactly what it did before.

Every reading is a replay line (DESIGN §7) with its `received_at`: 0.3-8 s after `ts`, in
measuring order per device. Pure: the same track, unit and seed give the same lines.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import orjson

from simulator.frame import LocalFrame
from simulator.life_plan import Glitch, Noise
from simulator.motion import Move, Stay, Track
from simulator.trackers import StatusChange

DRIVING_MS = 30_000
PARKED_MS = 900_000
STATUS_MS = 4 * 3_600_000
MIN_GAP_MS = 5_000
SIGMA_PER_HDOP_M = 3.5
BUMP_MIN_KMH = 15.0
Line = tuple[int, bytes]
"""A replay line and its arrival time (epoch ms)."""
NoiseEvent = tuple[int, Noise, dict[str, object]]
"""A noisy reading a unit sent: its `ts`, what noise, and the numbers (for the truth)."""


@dataclass(frozen=True, slots=True)
class Unit:
    """A tracker in a car: its id, the VIN it reads (a wired unit, which sends status) and
    its scripted status changes."""

    device_id: str
    vin: str | None = None
    changes: tuple[StatusChange, ...] = ()
    silent: tuple[tuple[int, int], ...] = ()  # no signal from..until (epoch ms, end excluded)
    glitches: tuple[Glitch, ...] = ()
    bump_chance: float = 0.0


def fix_times(track: Track, rng: random.Random) -> list[int]:
    """When a unit takes its fixes: 15 min apart while parked, 30 s otherwise."""
    out: list[int] = []
    last = track.t0_ms - MIN_GAP_MS
    due = track.t0_ms + rng.randrange(60_000)
    for phase in track.phases:
        parked = isinstance(phase, Stay) and phase.ignition is False
        step, wobble = (PARKED_MS, 20_000) if parked else (DRIVING_MS, 1_500)
        # a change of phase gets a fix within seconds, or sooner if one is due anyway
        t = max(min(due, phase.t0_ms + rng.randrange(1_000, 4_000)), last + MIN_GAP_MS)
        while t < phase.t1_ms:
            out.append(t)
            last = t
            t += step + rng.randrange(-wobble, wobble)
        due = t
    return out


def _gps(
    track: Track,
    frame: LocalFrame,
    rng: random.Random,
    times: list[int],
    glitches: tuple[Glitch, ...] = (),
    events: list[NoiseEvent] | None = None,
) -> list[tuple[int, dict[str, object]]]:
    out: list[tuple[int, dict[str, object]]] = []
    seq = rng.randrange(1_000, 60_000)
    pending = sorted(glitches, key=lambda g: g.at_ms)
    for t in times:
        state = track.state_at(t)
        hdop = min(3.0, 0.7 + rng.expovariate(2.5))
        sigma = SIGMA_PER_HDOP_M * hdop
        u, v = state.point
        lat, lon = frame.to_latlon(u + rng.gauss(0.0, sigma), v + rng.gauss(0.0, sigma))
        moving = state.speed_kmh > 1.0
        speed = max(0.0, state.speed_kmh + rng.gauss(0.0, 0.8)) if moving else 0.0
        payload: dict[str, object] = {
            "ts": t,
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed_kmh": round(speed, 1),
            "heading_deg": round(frame.compass_deg(state.angle_deg), 1) % 360.0,
            "hdop": round(hdop, 1),
            "sats": max(4, min(20, round(13 - 2.5 * hdop + rng.gauss(0.0, 1.2)))),
            "ignition": bool(state.ignition),
            "odometer_km": round(state.odo_m / 1000.0, 1),
            "seq": seq,
        }
        seq += 1
        glitch = None
        while pending and pending[0].at_ms <= t:  # the first fix at or after it, if parked
            glitch = pending.pop(0)
        if glitch is not None and not state.moving and state.ignition is False:
            lat, lon = frame.to_latlon(u + glitch.du, v + glitch.dv)
            payload.update(lat=round(lat, 6), lon=round(lon, 6), hdop=glitch.hdop, sats=4)
            if events is not None:
                error_m = round(math.hypot(glitch.du, glitch.dv))
                events.append((t, Noise.MULTIPATH, {"error_m": error_m, "hdop": glitch.hdop}))
        out.append((t, payload))
    return out


def _bumps(unit: Unit, track: Track, seed: str) -> list[tuple[int, dict[str, object]]]:
    """Vibration readings from road bumps: on a drive with `bump_chance`, once, at speed."""
    if unit.bump_chance <= 0.0:
        return []
    rng = random.Random(f"{seed}:bumps:{unit.device_id}")
    out: list[tuple[int, dict[str, object]]] = []
    for phase in track.phases:
        if not isinstance(phase, Move) or phase.ignition is not True:
            continue
        if rng.random() >= unit.bump_chance:
            continue
        fast = [k for k, s in enumerate(phase.samples) if s.speed_mps * 3.6 >= BUMP_MIN_KMH]
        if not fast:
            continue
        t = phase.t0_ms + 1000 * rng.choice(fast) + rng.randrange(1000)
        g = round(rng.uniform(0.3, 1.5), 2)
        out.append((t, {"ts": t, "g": g, "duration_ms": rng.randrange(40, 300), "ignition": True}))
    return out


def _status(unit: Unit, track: Track, rng: random.Random) -> list[tuple[int, dict[str, object]]]:
    times = list(range(track.t0_ms + rng.randrange(5_000, 60_000), track.t1_ms, STATUS_MS))
    times = [t + rng.randrange(-120_000, 120_000) for t in times]
    changes = sorted(unit.changes, key=lambda c: c.at_ms)
    for change in changes:
        times = [t for t in times if abs(t - change.at_ms) >= 2_000]
        times.append(change.at_ms)
    ext_power, tamper = True, False
    cut_ms: int | None = None
    internal_v = rng.uniform(4.05, 4.15)
    out: list[tuple[int, dict[str, object]]] = []
    for t in sorted(times):
        for change in changes:
            if change.at_ms == t:
                ext_power = ext_power if change.ext_power is None else change.ext_power
                tamper = tamper if change.tamper is None else change.tamper
                if not ext_power and cut_ms is None:
                    cut_ms = t
        if not track.t0_ms <= t < track.t1_ms:
            continue
        if ext_power:
            running = bool(track.state_at(t).ignition)
            volts = rng.uniform(13.8, 14.2) if running else rng.uniform(12.3, 12.7)
        else:
            hours = (t - (cut_ms or t)) / 3_600_000
            volts = max(3.5, internal_v - 0.004 * hours + rng.uniform(-0.01, 0.01))
        payload: dict[str, object] = {
            "ts": t,
            "ext_power": ext_power,
            "battery_v": round(volts, 2),
            "tamper": tamper,
        }
        if unit.vin is not None:
            payload["vin"] = unit.vin
        out.append((t, payload))
    return out


def unit_lines(
    unit: Unit, track: Track, frame: LocalFrame, seed: str
) -> tuple[list[Line], dict[str, int], list[NoiseEvent]]:
    """The unit's replay lines in arrival order, its readings per stream, and the noisy
    readings it sent (multipath fixes, bumps), by time."""
    rng = random.Random(f"{seed}:unit:{unit.device_id}")
    events: list[NoiseEvent] = []
    fixes = _gps(track, frame, rng, fix_times(track, rng), unit.glitches, events)
    readings = [("gps", t, p) for t, p in fixes]
    if unit.vin is not None:
        readings += [("status", t, p) for t, p in _status(unit, track, rng)]
    bumps = _bumps(unit, track, seed)
    readings += [("vib", t, p) for t, p in bumps]
    events += [(t, Noise.BUMPS, {"g": p["g"]}) for t, p in bumps]
    if unit.silent:

        def heard(t: int) -> bool:
            return not any(a <= t < b for a, b in unit.silent)

        readings = [r for r in readings if heard(r[1])]
        events = [e for e in events if heard(e[0])]
    readings.sort(key=lambda r: (r[1], r[0]))
    lines: list[Line] = []
    arrived = -math.inf
    topic = f"telematics/{unit.device_id}/"
    for stream, t, payload in readings:
        received = max(t + 300 + min(7_700, round(rng.expovariate(1 / 700))), arrived + 1)
        arrived = received
        doc = {"topic": topic + stream, "payload": payload, "received_at": int(received)}
        line = orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)
        # orjson's bytes keep its 4 KiB buffer: a copy of the exact size is far smaller
        lines.append((int(received), memoryview(line).tobytes()))
    counts = {"gps": sum(r[0] == "gps" for r in readings)}
    counts["status"] = sum(r[0] == "status" for r in readings)
    if bumps:
        counts["vib"] = sum(r[0] == "vib" for r in readings)
    return lines, counts, sorted(events, key=lambda e: e[0])
