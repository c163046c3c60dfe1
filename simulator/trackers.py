"""Virtual trackers: sample a car's true track into MQTT messages as real devices send them.

A tracker reports GPS on a cadence that depends on whether it moves (15 s driving, 120 s
standing; an OwnTracks phone 30 s / 120 s) plus an immediate fix when the ignition or motion
changes, vibration peaks from road bumps (wired units), and status heartbeats every 5 min.
Positions carry GPS error: a slowly wandering offset (AR(1), 45 s correlation) with a
standard deviation of 2 m times the fix's hdop. `Event`s script what a scenario needs
(silences, dead zones sent later as catch-up arrays, status changes, shocks, a wild fix,
resent messages); `glitches` adds the faults of a real fleet (dropped, late and duplicate
fixes) to background cars.

`messages(tracker, frame, rng)` yields one tracker's messages in arrival order; `merge`
interleaves many by arrival time. Both are pure: the same inputs give the same messages.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import orjson

from devices.readings import Stream
from simulator.frame import LocalFrame
from simulator.motion import Move, Track

JsonObject = dict[str, object]
Payload = JsonObject | list[JsonObject] | str
"""A JSON object, an array of them (catch-up), or raw text (for injected garbage)."""

MIN_FIX_GAP_MS = 5_000  # a tracker never sends two fixes closer than this
MOVING_MS = 15_000  # fix interval of a moving tracker
PHONE_MOVING_MS = 30_000  # ... of a moving OwnTracks phone
STILL_MS = 120_000  # ... of any tracker standing still
GLITCH_DELAY_MIN_MS = 100_000  # a fix held up in the network arrives this much later ...
GLITCH_DELAY_MAX_MS = 200_000  # ... at most
STATUS_INTERVAL_MS = 300_000
CST = timedelta(hours=8)  # China Standard Time, the offset of ISO timestamps


class TrackerModel(StrEnum):
    """What kind of device it is, which decides the fields it can send."""

    WIRED = "wired"  # hard-wired: ignition sense, external power, OBD VIN, vibration sensor
    BATTERY = "battery"  # hidden battery unit: GPS and battery status only
    OWNTRACKS = "owntracks"  # a phone running OwnTracks


class TsFormat(StrEnum):
    """How a native tracker writes `ts`."""

    EPOCH_MS = "epoch_ms"
    ISO_CST = "iso_cst"  # ISO-8601 local time with a +08:00 offset


@dataclass(frozen=True, slots=True)
class Silence:
    """The tracker sends nothing from `start_ms` to `end_ms` (unplugged, switched off)."""

    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class DeadZone:
    """No coverage: readings are kept and sent at `end_ms` as one array per stream."""

    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class StatusChange:
    """From `at_ms` the status reads differently; a status report is sent at once."""

    at_ms: int
    ext_power: bool | None = None
    tamper: bool | None = None
    vin: str | None = None


@dataclass(frozen=True, slots=True)
class Shock:
    """A vibration peak of `g` at `at_ms` (a tow truck lifting the car, a crash)."""

    at_ms: int
    g: float


@dataclass(frozen=True, slots=True)
class WildFix:
    """One fix at `at_ms` reports (`lat`, `lon`) instead of the truth (spoofing, a glitch)."""

    at_ms: int
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Resend:
    """The first `stream` message at or after `at_ms` is sent twice (a QoS 1 redelivery)."""

    at_ms: int
    stream: Stream


Event = Silence | DeadZone | StatusChange | Shock | WildFix | Resend


@dataclass(frozen=True, slots=True)
class Tracker:
    """One device: what it is, the true track it rides along, and its scripted events.

    An OwnTracks `device_id` is `user:device` and publishes on `owntracks/user/device`.
    """

    device_id: str
    model: TrackerModel
    track: Track
    ts_format: TsFormat = TsFormat.EPOCH_MS
    vin: str | None = None
    events: tuple[Event, ...] = ()
    glitches: bool = False
    still_ms: int = STILL_MS  # fix interval standing still (a fleet's parked units save power)


@dataclass(frozen=True, slots=True)
class TrackerMessage:
    """One MQTT publish, at its arrival time `ts_ms`.

    `readings` lists the valid readings it carries as (stream, ts_ms, seq); `rejects` the
    reasons the decoder must refuse its bad parts with (injected garbage only).
    """

    ts_ms: int
    topic: str
    payload: Payload
    device_id: str | None
    readings: tuple[tuple[str, int, int | None], ...] = ()
    rejects: tuple[str, ...] = field(default=())

    def line(self) -> JsonObject:
        """The message as a replay input line (DESIGN §7)."""
        return {"topic": self.topic, "payload": self.payload}

    def body(self) -> bytes:
        """The MQTT payload bytes to publish."""
        if isinstance(self.payload, str):
            return self.payload.encode("utf-8", "surrogateescape")
        return orjson.dumps(self.payload)


@dataclass(frozen=True, slots=True)
class _Obs:
    """A reading the tracker made: stream, event time, fields (without `ts`), seq."""

    t_ms: int
    stream: Stream
    fields: JsonObject
    seq: int | None = None
    moving: bool = False


def iso_cst(ts_ms: int) -> str:
    """`ts_ms` as ISO-8601 China Standard Time with milliseconds, e.g. `...T16:00:00.237+08:00`."""
    local = datetime.fromtimestamp(ts_ms // 1000, tz=UTC) + CST
    return f"{local:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}+08:00"


def _gps_times(
    tracker: Tracker, rng: random.Random, silences: list[Silence]
) -> list[tuple[int, bool]]:
    """Times of GPS fixes, with whether the car moves then."""
    phone = tracker.model is TrackerModel.OWNTRACKS  # OwnTracks `tst` is whole seconds
    ms_offset = 0 if phone else rng.randrange(1000)
    moving_ms = PHONE_MOVING_MS if phone else MOVING_MS
    times: list[tuple[int, bool]] = []
    phases = tracker.track.phases
    for n, phase in enumerate(phases):
        moving = isinstance(phase, Move)
        interval = moving_ms if moving else tracker.still_ms
        end = phase.t1_ms if n == len(phases) - 1 else phase.t1_ms - MIN_FIX_GAP_MS
        t = phase.t0_ms + rng.randint(1, 3) * 1000 + ms_offset
        if n == 0:
            t = phase.t0_ms + rng.randrange(0, 20_000, 1000) + ms_offset
        for silence in silences:
            if silence.start_ms <= t < silence.end_ms:
                t = silence.end_ms + rng.randint(1, 3) * 1000 + ms_offset
        if times and t - times[-1][0] < MIN_FIX_GAP_MS:
            t = times[-1][0] + MIN_FIX_GAP_MS
        if phone:
            t -= t % 1000
        while t <= end:
            times.append((t, moving))
            t += interval + (0 if phone else rng.randrange(-200, 300, 100))
    if not silences:
        return times
    return [(t, m) for t, m in times if not any(s.start_ms <= t < s.end_ms for s in silences)]


def _observe(tracker: Tracker, frame: LocalFrame, rng: random.Random) -> list[_Obs]:
    """Everything the tracker measures, in event-time order, before transmission."""
    events = list(tracker.events)
    silences = [e for e in events if isinstance(e, Silence)]
    wild = {e.at_ms: e for e in events if isinstance(e, WildFix)}
    track = tracker.track
    model = tracker.model
    obs: list[_Obs] = []

    # GPS, with a slowly wandering error
    times = _gps_times(tracker, rng, silences)
    for at in wild:
        times = [tm for tm in times if abs(tm[0] - at) >= MIN_FIX_GAP_MS]
        times.append((at, True))
    times.sort()
    hdop_base = rng.uniform(0.7, 1.3)
    err_u = err_v = 0.0
    last_t: int | None = None
    seq = rng.randrange(1_000, 60_000) if model is not TrackerModel.OWNTRACKS else None
    battery_start = rng.randint(55, 95)
    for t, moving in times:
        state = track.state_at(t)
        hdop = min(4.0, hdop_base + (rng.expovariate(4.0) if rng.random() < 0.3 else 0.0))
        sigma = 2.0 * hdop
        rho = math.exp(-(t - last_t) / 45_000) if last_t is not None else 0.0
        scale = math.sqrt(1 - rho * rho) * sigma
        err_u = rho * err_u + rng.gauss(0.0, scale)
        err_v = rho * err_v + rng.gauss(0.0, scale)
        last_t = t
        if t in wild:
            lat, lon = wild[t].lat, wild[t].lon
        else:
            lat, lon = frame.to_latlon(state.point[0] + err_u, state.point[1] + err_v)
        speed = max(0.0, state.speed_kmh + rng.gauss(0.0, 0.8)) if state.speed_kmh > 1.0 else 0.0
        heading = round(frame.compass_deg(state.angle_deg), 1) % 360.0
        fields: JsonObject
        if model is TrackerModel.OWNTRACKS:
            fields = {
                "_type": "location",
                "tid": tracker.device_id[-2:],
                "lat": round(lat, 6),
                "lon": round(lon, 6),
                "acc": max(3, round(sigma * 2)),
                "vel": round(speed),
                "cog": round(heading) % 360,
                "batt": max(15, battery_start - (t - track.t0_ms) // 600_000),
                "conn": "m",
                "t": "t" if moving else "p",
            }
        else:
            fields = {
                "lat": round(lat, 6),
                "lon": round(lon, 6),
                "speed_kmh": round(speed, 1),
                "heading_deg": heading,
                "hdop": round(hdop, 1),
                "sats": max(4, min(20, round(13 - 2.5 * hdop + rng.gauss(0.0, 1.2)))),
            }
            if model is TrackerModel.WIRED:
                fields["ignition"] = state.ignition
                fields["odometer_km"] = round(state.odo_m / 1000.0, 1)
        obs.append(_Obs(t, Stream.GPS, fields, seq, moving))
        if seq is not None:
            seq += 1

    if model is not TrackerModel.OWNTRACKS:
        obs.extend(_status(tracker, rng, events, silences))
    if model is TrackerModel.WIRED:
        obs.extend(_vibration(tracker, rng, events, silences))
    obs.sort(key=lambda o: (o.t_ms, list(Stream).index(o.stream)))
    return obs


def _silent(t: int, silences: list[Silence]) -> bool:
    return any(s.start_ms <= t < s.end_ms for s in silences)


def _status(
    tracker: Tracker, rng: random.Random, events: list[Event], silences: list[Silence]
) -> list[_Obs]:
    track = tracker.track
    wired = tracker.model is TrackerModel.WIRED
    changes = [e for e in events if isinstance(e, StatusChange)]
    times = list(range(track.t0_ms + rng.randrange(5_000, 60_000), track.t1_ms, STATUS_INTERVAL_MS))
    times = [t + rng.randrange(-500, 500) for t in times]
    for change in changes:
        times = [t for t in times if abs(t - change.at_ms) >= 2_000]
        times.append(change.at_ms)
    times.sort()
    ext_power: bool | None = True if wired else None
    tamper = False
    vin = tracker.vin
    internal_v = rng.uniform(4.0, 4.15)
    out = []
    for t in times:
        for change in changes:
            if change.at_ms <= t:
                ext_power = change.ext_power if change.ext_power is not None else ext_power
                tamper = change.tamper if change.tamper is not None else tamper
                vin = change.vin if change.vin is not None else vin
        if _silent(t, silences) or not track.t0_ms <= t <= track.t1_ms:
            continue
        state = track.state_at(t)
        hours = (t - track.t0_ms) / 3_600_000
        if ext_power:
            volts = rng.uniform(13.7, 14.2) if state.ignition else rng.uniform(12.3, 12.7)
        else:
            volts = internal_v - 0.05 * hours + rng.uniform(-0.01, 0.01)
        fields: JsonObject = {}
        if ext_power is not None:
            fields["ext_power"] = ext_power
        fields["battery_v"] = round(volts, 2)
        fields["tamper"] = tamper
        if wired and vin is not None:
            fields["vin"] = vin
        out.append(_Obs(t, Stream.STATUS, fields))
    return out


def _vibration(
    tracker: Tracker, rng: random.Random, events: list[Event], silences: list[Silence]
) -> list[_Obs]:
    out = []
    for phase in tracker.track.phases:
        if not isinstance(phase, Move):
            continue
        t = phase.t0_ms + 10_000 + round(rng.expovariate(1 / 60_000))
        while t < phase.t1_ms - 5_000:
            g = min(1.9, 0.12 + rng.lognormvariate(-1.2, 0.55))
            fields: JsonObject = {
                "g": round(g, 2),
                "duration_ms": rng.randrange(40, 400, 10),
                "ignition": phase.ignition,
            }
            if not _silent(t, silences):
                out.append(_Obs(t, Stream.VIB, fields, moving=True))
            t += 20_000 + round(rng.expovariate(1 / 70_000))
    for event in events:
        if isinstance(event, Shock) and not _silent(event.at_ms, silences):
            phase = tracker.track.phase_at(event.at_ms)
            fields = {
                "g": round(event.g, 2),
                "duration_ms": rng.randrange(150, 600, 10),
                "ignition": phase.ignition,
            }
            out.append(_Obs(event.at_ms, Stream.VIB, fields, moving=isinstance(phase, Move)))
    return out


def _topic(tracker: Tracker, stream: Stream) -> str:
    if tracker.model is TrackerModel.OWNTRACKS:
        user, _, device = tracker.device_id.partition(":")
        return f"owntracks/{user}/{device}"
    return f"telematics/{tracker.device_id}/{stream.value}"


def _payload(tracker: Tracker, o: _Obs) -> JsonObject:
    if tracker.model is TrackerModel.OWNTRACKS:
        fields = dict(o.fields)
        fields["tst"] = o.t_ms // 1000
        return fields
    ts: object = o.t_ms if tracker.ts_format is TsFormat.EPOCH_MS else iso_cst(o.t_ms)
    head: JsonObject = {"ts": ts}
    if o.seq is not None:
        return {**head, **o.fields, "seq": o.seq}
    return {**head, **o.fields}


def messages(tracker: Tracker, frame: LocalFrame, rng: random.Random) -> list[TrackerMessage]:
    """The tracker's MQTT messages in arrival order."""
    obs = _observe(tracker, frame, rng)
    dead = sorted((e for e in tracker.events if isinstance(e, DeadZone)), key=lambda e: e.start_ms)
    out: list[TrackerMessage] = []
    held: dict[Stream, list[_Obs]] = {}
    current: DeadZone | None = None

    def flush(zone: DeadZone) -> None:
        for stream in Stream:
            batch = held.pop(stream, [])
            if batch:
                out.append(
                    TrackerMessage(
                        zone.end_ms,
                        _topic(tracker, stream),
                        [_payload(tracker, o) for o in batch],
                        tracker.device_id,
                        tuple((o.stream.value, o.t_ms, o.seq) for o in batch),
                    )
                )

    gps_moving = [o.moving for o in obs if o.stream is Stream.GPS]
    wild_times = {e.at_ms for e in tracker.events if isinstance(e, WildFix)}
    silences = [e for e in tracker.events if isinstance(e, Silence)]
    gps_k = -1
    glitched_last = False
    for o in obs:
        zone = next((z for z in dead if z.start_ms <= o.t_ms < z.end_ms), None)
        if current is not None and zone is not current:
            flush(current)
        current = zone
        if o.stream is Stream.GPS:
            gps_k += 1
        if zone is not None:
            held.setdefault(o.stream, []).append(o)
            continue
        message = TrackerMessage(
            o.t_ms,
            _topic(tracker, o.stream),
            _payload(tracker, o),
            tracker.device_id,
            ((o.stream.value, o.t_ms, o.seq),),
        )
        interior = (
            o.stream is Stream.GPS
            and 0 < gps_k < len(gps_moving) - 1
            and all(gps_moving[gps_k - 1 : gps_k + 2])
            and o.t_ms not in wild_times
            # a late arrival would move the start of a scripted silence
            and not any(0 <= s.start_ms - o.t_ms <= GLITCH_DELAY_MAX_MS for s in silences)
        )
        if tracker.glitches and interior and not glitched_last:
            roll = rng.random()
            glitched_last = roll < 0.036
            if roll < 0.012:  # lost on the way: the seq shows a gap
                continue
            if roll < 0.024:  # held up in the network: arrives after newer fixes
                delay_ms = rng.randrange(GLITCH_DELAY_MIN_MS, GLITCH_DELAY_MAX_MS)
                out.append(replace(message, ts_ms=o.t_ms + delay_ms))
                continue
            if roll < 0.036:  # redelivered
                out.append(message)
        else:
            glitched_last = False
        out.append(message)
    if current is not None:
        flush(current)
    out.sort(key=lambda m: m.ts_ms)
    for resend in sorted(
        (e for e in tracker.events if isinstance(e, Resend)), key=lambda e: e.at_ms
    ):
        k = next(
            i
            for i, m in enumerate(out)
            if m.readings and m.readings[0][0] == resend.stream.value and m.ts_ms >= resend.at_ms
        )
        out.insert(k + 1, out[k])
    return out


def merge(streams: Iterable[Iterable[TrackerMessage]]) -> Iterator[TrackerMessage]:
    """Interleave message streams (each in arrival order) by arrival time; stable on ties."""
    return heapq.merge(*streams, key=lambda m: m.ts_ms)
