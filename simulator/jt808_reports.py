"""A wired tracker as a JT/T 808 terminal: what it sends instead of its MQTT messages
(`simulator.trackers`), and the readings the gateway publishes for each.

- a `gps` fix: a 0x0200 with the fix (hdop and seq have no place in it);
- a `status` that changes the alarm bits (the power wire cut, the case opened): a 0x0200 at
  that time with the car's true position and the new bits; any other `status` (a
  heartbeat of unchanged state): a 0x0002 heartbeat, which publishes nothing;
- a `vib` at or over the terminal's collision threshold (the engine's default `shock_g`): a
  0x0200 with the collision bit; road bumps below it: nothing (a terminal reports alarms,
  not every bump);
- a catch-up array after a dead zone: 0x0704 blind-area batches of the same reports.

Every report carries the alarm bits in force at its time (from the tracker's
`StatusChange` events), the collision bit only the shock's own. The BCD time is whole
seconds, so a reading is stamped up to 999 ms before its MQTT twin would be. Each message's
readings are found by reading it back as the gateway does (`devices.jt808.messages` and
`mapping`, with the alarm word of the connection's last live report), so what the load test
counts and times is what the engine receives. A terminal sends no VIN: a car whose story
needs one stays on MQTT (`simulator.jt808_choice`). Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from devices.jt808.mapping import Mapped, bcd_time_ms, map_batch, map_location
from devices.jt808.messages import LocationBatch, LocationReport, MsgId, parse_batch, parse_location
from devices.readings import Stream
from engine.core.config import Config
from simulator.frame import LocalFrame
from simulator.jt808_wire import BLIND_AREA, Fix, alarm_word, batch_bodies, location_body
from simulator.trackers import JsonObject, StatusChange, Tracker, TrackerMessage

COLLISION_G: Final = Config().shock_g
Reading = tuple[str, int, int | None]
"""(stream, ts_ms, seq) of a reading the gateway publishes; seq is always None here."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message a terminal sends at `ts_ms` (its arrival time, as the MQTT message's)."""

    ts_ms: int
    msg_id: int
    body: bytes
    readings: tuple[Reading, ...]


class _Alarms:
    """The alarm word of a tracker at any time, from its `StatusChange` events."""

    def __init__(self, tracker: Tracker) -> None:
        ext_power, tamper = True, False
        self.times: list[int] = []
        self.words: list[int] = [alarm_word()]
        for change in sorted(
            (e for e in tracker.events if isinstance(e, StatusChange)), key=lambda e: e.at_ms
        ):
            ext_power = change.ext_power if change.ext_power is not None else ext_power
            tamper = change.tamper if change.tamper is not None else tamper
            word = alarm_word(ext_power=ext_power, tamper=tamper)
            if word != self.words[-1]:
                self.times.append(change.at_ms)
                self.words.append(word)

    def at(self, ts_ms: int) -> int:
        """The word in force at `ts_ms`."""
        return self.words[bisect.bisect_right(self.times, ts_ms)]

    def changes_at(self, ts_ms: int) -> bool:
        """Whether the word changes at exactly `ts_ms`."""
        k = bisect.bisect_left(self.times, ts_ms)
        return k < len(self.times) and self.times[k] == ts_ms


class _GatewayView:
    """The gateway's state of one connection: the alarm word of its last live report."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.alarm: int | None = None

    def live(self, body: bytes) -> tuple[Reading, ...]:
        report = parse_location(body)
        assert isinstance(report, LocationReport), report
        mapped = map_location(self.device_id, report, previous_alarm=self.alarm)
        self.alarm = mapped.alarm
        return _readings(mapped)

    def blind(self, body: bytes) -> tuple[Reading, ...]:
        batch = parse_batch(body)
        assert isinstance(batch, LocationBatch), batch
        return _readings(map_batch(self.device_id, batch))  # old items: the live alarm stays


def _readings(mapped: Mapped) -> tuple[Reading, ...]:
    assert not mapped.faults, mapped.faults
    return tuple(
        (topic[topic.rfind("/") + 1 :], int(payload["ts"]), None)
        for topic, payload in mapped.publications
    )


def terminal_messages(
    tracker: Tracker, frame: LocalFrame, sent: Iterable[TrackerMessage]
) -> list[Outgoing]:
    """What `tracker`, a JT/T 808 terminal, sends in place of its MQTT messages `sent`."""
    alarms = _Alarms(tracker)
    view = _GatewayView(tracker.device_id)
    out: list[Outgoing] = []
    for m in sent:
        if isinstance(m.payload, list):
            fixes = [
                fix
                for obj, (stream, ts, _) in zip(m.payload, m.readings, strict=True)
                if (fix := _fix(tracker, frame, alarms, stream, obj, ts)) is not None
            ]
            out.extend(
                Outgoing(m.ts_ms, MsgId.LOCATION_BATCH, body, view.blind(body))
                for body in batch_bodies(fixes, BLIND_AREA)
            )
        elif isinstance(m.payload, dict):
            stream, ts, _ = m.readings[0]
            fix = _fix(tracker, frame, alarms, stream, m.payload, ts)
            if fix is not None:
                body = location_body(fix)
                out.append(Outgoing(m.ts_ms, MsgId.LOCATION, body, view.live(body)))
            elif stream == Stream.STATUS:
                out.append(Outgoing(m.ts_ms, MsgId.HEARTBEAT, b"", ()))
    return out


def _fix(
    tracker: Tracker,
    frame: LocalFrame,
    alarms: _Alarms,
    stream: str,
    obj: JsonObject,
    ts_ms: int,
) -> Fix | None:
    """The report of one reading, or None when the terminal reports nothing for it."""
    if stream == Stream.GPS:
        return Fix(
            ts_ms,
            _float(obj, "lat"),
            _float(obj, "lon"),
            _float(obj, "speed_kmh"),
            _float(obj, "heading_deg"),
            obj.get("ignition") is True,
            alarms.at(ts_ms),
            odometer_km=_float(obj, "odometer_km") if "odometer_km" in obj else None,
            sats=int(_float(obj, "sats")) if "sats" in obj else None,
        )
    if stream == Stream.STATUS and alarms.changes_at(ts_ms):
        return _true_fix(tracker, frame, ts_ms, alarms.at(ts_ms))
    if stream == Stream.VIB and _float(obj, "g") >= COLLISION_G:
        return _true_fix(tracker, frame, ts_ms, alarms.at(ts_ms) | alarm_word(shock=True))
    return None


def _true_fix(tracker: Tracker, frame: LocalFrame, ts_ms: int, alarm: int) -> Fix:
    """An alarm report between fixes: where the car truly is then."""
    state = tracker.track.state_at(ts_ms)
    lat, lon = frame.to_latlon(*state.point)
    return Fix(
        ts_ms,
        round(lat, 6),
        round(lon, 6),
        round(state.speed_kmh, 1),
        frame.compass_deg(state.angle_deg),
        state.ignition is True,
        alarm,
        odometer_km=round(state.odo_m / 1000, 1),
    )


def _float(obj: Mapping[str, object], key: str) -> float:
    value = obj[key]
    assert isinstance(value, int | float), (key, value)
    return float(value)


def positions(msg_id: int, body: bytes) -> list[tuple[int, float, float]]:
    """(ts_ms, lat, lon) of the positioned reports in a 0x0200 or 0x0704 body (for maps)."""
    if msg_id == MsgId.LOCATION:
        reports: list[object] = [parse_location(body)]
    elif msg_id == MsgId.LOCATION_BATCH:
        batch = parse_batch(body)
        reports = list(batch.items) if isinstance(batch, LocationBatch) else []
    else:
        return []
    out = []
    for r in reports:
        if not isinstance(r, LocationReport) or not r.status >> 1 & 1:
            continue
        ts = bcd_time_ms(r.time_bcd)
        if isinstance(ts, int):
            lat = r.lat_e6 / 1e6 * (-1 if r.status >> 2 & 1 else 1)
            lon = r.lon_e6 / 1e6 * (-1 if r.status >> 3 & 1 else 1)
            out.append((ts, lat, lon))
    return out
