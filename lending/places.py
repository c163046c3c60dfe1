"""Learned places (常驻点): where a car sleeps, works and often parks, from its own fixes.

A *stay* is the car parked (ignition off, or slow without an ignition line) within
`stay_radius_m` of where it stopped. A finished stay joins the nearest *place* (a cluster
within `cluster_radius_m`) or makes one; a car keeps at most `max_clusters` places, so its
history is bounded: counts and sums, never every fix.

Days are local days in the loan's time zone (zoneinfo, so DST is honoured). The night of day
D is D 22:00 to D+1 06:00, work hours D 09:00-17:00 on weekdays. When the car's event time
passes D+1 06:00, day D closes: its night counts for the place where the car was parked
longest in the night window (if at least `min_night_parked_s`), and likewise its workday.
The learned home is the place with the most nights of the last `window_days`; the learned
work place likewise for workdays (a place other than home).

Pure: no I/O, no clock; event time comes with the fixes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from alerts.model import Detail
from geofence.geo import haversine_m
from lending.model import GeoPoint, iso_instant
from lending.params import PlacesParams

DAY_MS = 86_400_000
_HOUR_MS = 3_600_000


@dataclass(slots=True)
class Place:
    """A place the car parks at: a running centre, how often and how long."""

    cid: int
    lat: float
    lon: float
    radius_m: float
    visits: int
    dwell_ms: int
    last_ms: int


@dataclass(slots=True)
class Stay:
    """The car parked since `start_ms` near (`lat`, `lon`); `last_ms` its latest parked fix."""

    lat: float
    lon: float
    start_ms: int
    last_ms: int
    cid: int | None = None  # the place it counts for, once known


@dataclass(frozen=True, slots=True)
class FinishedStay:
    """A stay that ended: what risk-site discovery is told."""

    lat: float
    lon: float
    start_ms: int
    end_ms: int
    cid: int | None


@dataclass(slots=True)
class Places:
    """One car's learned places and the days still open. Mutable; owned by one consumer."""

    tz: str
    places: list[Place] = field(default_factory=list)
    next_cid: int = 0
    stay: Stay | None = None
    last_fix_ms: int = -1
    open_day: int | None = None  # local date ordinal of the first day not closed
    close_at_ms: int = 0  # when `open_day` closes
    night_credit: dict[int, dict[int, int]] = field(default_factory=dict)  # day -> place -> ms
    work_credit: dict[int, dict[int, int]] = field(default_factory=dict)
    nights: list[tuple[int, int, int]] = field(default_factory=list)  # (day, place, ms) observed
    workdays: list[tuple[int, int, int]] = field(default_factory=list)

    # -- the fold
    def observe(
        self, ts_ms: int, lat: float, lon: float, parked: bool, params: PlacesParams
    ) -> tuple[FinishedStay | None, bool]:
        """Fold one fix (in event-time order; older ones are ignored). Returns the stay it
        finished, if any, and whether a day closed (the learned places may have changed)."""
        if ts_ms <= self.last_fix_ms:
            return None, False
        self.last_fix_ms = ts_ms
        finished: FinishedStay | None = None
        stay = self.stay
        if stay is not None:
            gap_ok = ts_ms - stay.last_ms <= params.max_gap_s * 1000
            if (
                parked
                and gap_ok
                and haversine_m(stay.lat, stay.lon, lat, lon) <= params.stay_radius_m
            ):
                stay.last_ms = ts_ms
            else:
                finished = self._end_stay(ts_ms if gap_ok else stay.last_ms, params)
                stay = None
        if stay is None and parked:
            self.stay = Stay(lat, lon, ts_ms, ts_ms)
        if self.open_day is None:
            self.open_day = local_day(self.tz, ts_ms) - 1  # its night may run into today
            self.close_at_ms = _windows(self.tz, self.open_day, _hours(params))[1]
        closed = False
        if ts_ms >= self.close_at_ms:
            self._close_days(ts_ms, params)
            closed = True
        return finished, closed

    def _end_stay(self, end_ms: int, params: PlacesParams) -> FinishedStay | None:
        stay = self.stay
        self.stay = None
        if stay is None or end_ms - stay.start_ms < params.min_visit_s * 1000:
            return None
        cid = stay.cid if stay.cid is not None else self._place_for(stay.lat, stay.lon, params)
        place = self._place(cid)
        if place is not None:
            place.visits += 1
            place.dwell_ms += end_ms - stay.start_ms
            place.last_ms = max(place.last_ms, end_ms)
            weight = min(place.visits, 20)  # the centre follows the newest stays a little
            place.lat += (stay.lat - place.lat) / weight
            place.lon += (stay.lon - place.lon) / weight
            spread = haversine_m(place.lat, place.lon, stay.lat, stay.lon)
            place.radius_m = min(params.cluster_radius_m, max(place.radius_m, spread))
        self._credit(cid, stay.start_ms, end_ms, params)
        return FinishedStay(stay.lat, stay.lon, stay.start_ms, end_ms, cid)

    def _credit(self, cid: int, start_ms: int, end_ms: int, params: PlacesParams) -> None:
        """Add a stay's parked time to the night and work windows of the open days."""
        if self.open_day is None:
            return
        hours = _hours(params)
        first = max(self.open_day, local_day(self.tz, start_ms) - 1)
        for day in range(first, local_day(self.tz, end_ms) + 1):
            self._credit_day(day, cid, start_ms, end_ms, hours)

    def _close_days(self, ts_ms: int, params: PlacesParams) -> None:
        hours = _hours(params)
        assert self.open_day is not None  # set by `observe` before
        if ts_ms - self.close_at_ms > params.window_days * DAY_MS:
            # silent for longer than the window: those days saw nothing; skip them
            self.night_credit.clear()
            self.work_credit.clear()
            self.open_day = local_day(self.tz, ts_ms) - 2
            self.close_at_ms = _windows(self.tz, self.open_day, hours)[1]
        while ts_ms >= self.close_at_ms:
            day = self.open_day
            stay = self.stay
            if stay is not None and stay.last_ms - stay.start_ms >= params.min_visit_s * 1000:
                # the stay goes on: the part of it in this day's windows counts now
                if stay.cid is None:
                    stay.cid = self._place_for(stay.lat, stay.lon, params)
                self._credit_day(day, stay.cid, stay.start_ms, stay.last_ms, hours)
            self._settle(day, params)
            self.open_day = day + 1
            self.close_at_ms = _windows(self.tz, day + 1, hours)[1]

    def _credit_day(
        self, day: int, cid: int, start_ms: int, end_ms: int, hours: tuple[int, int, int, int]
    ) -> None:
        night_start, night_end, work_start, work_end = _windows(self.tz, day, hours)
        night = min(end_ms, night_end) - max(start_ms, night_start)
        if night > 0:
            credit = self.night_credit.setdefault(day, {})
            credit[cid] = credit.get(cid, 0) + night
        if work_start is not None and work_end is not None:
            work = min(end_ms, work_end) - max(start_ms, work_start)
            if work > 0:
                credit = self.work_credit.setdefault(day, {})
                credit[cid] = credit.get(cid, 0) + work

    def _settle(self, day: int, params: PlacesParams) -> None:
        """Close day `day`: its night and workday count for their longest places."""
        for by_day, kept, least_ms in (
            (self.night_credit, self.nights, params.min_night_parked_s * 1000),
            (self.work_credit, self.workdays, params.min_work_parked_s * 1000),
        ):
            credit = by_day.pop(day, None)
            if credit:
                cid, ms = max(credit.items(), key=lambda item: (item[1], -item[0]))
                if ms >= least_ms:
                    kept.append((day, cid, ms))
            while kept and kept[0][0] <= day - params.window_days:
                kept.pop(0)

    def _place(self, cid: int) -> Place | None:
        for place in self.places:
            if place.cid == cid:
                return place
        return None

    def _place_for(self, lat: float, lon: float, params: PlacesParams) -> int:
        """The place a stay at (lat, lon) counts for: the nearest within reach, or a new one
        (the least used place goes when there are `max_clusters`)."""
        best: tuple[float, Place] | None = None
        for place in self.places:
            d = haversine_m(place.lat, place.lon, lat, lon)
            if d <= params.cluster_radius_m and (best is None or d < best[0]):
                best = (d, place)
        if best is not None:
            return best[1].cid
        if len(self.places) >= params.max_clusters:
            nights = _counts(self.nights)
            work = _counts(self.workdays)
            least = min(
                self.places,
                key=lambda p: (nights.get(p.cid, 0) + work.get(p.cid, 0), p.visits, p.last_ms),
            )
            self.places.remove(least)
        cid = self.next_cid
        self.next_cid += 1
        self.places.append(Place(cid, lat, lon, 0.0, 0, 0, -1))
        return cid

    # -- what was learned
    def home(self) -> Place | None:
        """The place of the most nights in the window (ties: more parked time)."""
        return self._most(self.nights, None)

    def work(self) -> Place | None:
        """The place of the most workdays in the window, other than home."""
        home = self.home()
        return self._most(self.workdays, None if home is None else home.cid)

    def _most(self, days: list[tuple[int, int, int]], skip: int | None) -> Place | None:
        tally: dict[int, tuple[int, int]] = {}
        for _, cid, ms in days:
            if cid != skip and self._place(cid) is not None:
                n, total = tally.get(cid, (0, 0))
                tally[cid] = (n + 1, total + ms)
        if not tally:
            return None
        cid = max(tally, key=lambda c: (*tally[c], -c))
        return self._place(cid)

    def conditions(
        self, declared_home: GeoPoint | None, params: PlacesParams
    ) -> list[tuple[str, dict[str, Detail]]]:
        """The place reasons that hold now: `home_mismatch`, `night_parking_drift`."""
        home = self.home()
        if home is None:
            return []
        out: list[tuple[str, dict[str, Detail]]] = []
        if declared_home is not None and len(self.nights) >= params.min_nights_for_home:
            d = haversine_m(home.lat, home.lon, declared_home.lat, declared_home.lon)
            if d > params.home_mismatch_m:
                out.append(
                    (
                        "home_mismatch",
                        {
                            "learned_lat": round(home.lat, 6),
                            "learned_lon": round(home.lon, 6),
                            "declared_lat": declared_home.lat,
                            "declared_lon": declared_home.lon,
                            "distance_m": round(d),
                            "nights": len(self.nights),
                        },
                    )
                )
        recent = self.nights[-params.drift_window_nights :]
        away = []
        for _, cid, _ in recent:
            place = self._place(cid)
            if place is not None:
                d = haversine_m(home.lat, home.lon, place.lat, place.lon)
                if d > params.drift_m:
                    away.append(d)
        if len(away) >= params.drift_nights:
            out.append(
                (
                    "night_parking_drift",
                    {"nights": len(away), "of": len(recent), "max_distance_m": round(max(away))},
                )
            )
        return out

    def listing(self, params: PlacesParams) -> list[dict[str, object]]:
        """`GET /v1/loans/{id}/places`: home, work, then frequent places by dwell."""
        home, work = self.home(), self.work()
        nights, workdays = _counts(self.nights), _counts(self.workdays)
        out: list[dict[str, object]] = []
        for kind, place, count_key, count in (
            ("home", home, "nights", nights),
            ("work", work, "visits", workdays),
        ):
            if place is not None:
                out.append(_place_json(kind, place, count_key, count.get(place.cid, 0)))
        taken = {p.cid for p in (home, work) if p is not None}
        frequent = [
            p for p in self.places if p.cid not in taken and p.visits >= params.frequent_min_visits
        ]
        out.extend(
            _place_json("frequent", place, "visits", place.visits)
            for place in sorted(frequent, key=lambda p: (-p.dwell_ms, p.cid))
        )
        return out

    # -- snapshots
    def to_json(self) -> dict[str, object]:
        """A JSON-able snapshot."""
        stay = self.stay
        return {
            "tz": self.tz,
            "places": [
                [p.cid, p.lat, p.lon, p.radius_m, p.visits, p.dwell_ms, p.last_ms]
                for p in self.places
            ],
            "next_cid": self.next_cid,
            "stay": None
            if stay is None
            else [stay.lat, stay.lon, stay.start_ms, stay.last_ms, stay.cid],
            "last_fix_ms": self.last_fix_ms,
            "open_day": self.open_day,
            "close_at_ms": self.close_at_ms,
            "night_credit": _credit_json(self.night_credit),
            "work_credit": _credit_json(self.work_credit),
            "nights": [list(n) for n in self.nights],
            "workdays": [list(w) for w in self.workdays],
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Places:
        """Restore a snapshot of `to_json`."""
        stay = doc["stay"]
        open_day = doc["open_day"]
        return cls(
            tz=str(doc["tz"]),
            places=[Place(*p) for p in _rows(doc["places"])],  # type: ignore[arg-type]  # a snapshot's row
            next_cid=_int(doc["next_cid"]),
            stay=None if not isinstance(stay, list) else Stay(*stay),
            last_fix_ms=_int(doc["last_fix_ms"]),
            open_day=None if open_day is None else _int(open_day),
            close_at_ms=_int(doc["close_at_ms"]),
            night_credit=_credit_from(doc["night_credit"]),
            work_credit=_credit_from(doc["work_credit"]),
            nights=_triples(doc["nights"]),
            workdays=_triples(doc["workdays"]),
        )


def _rows(value: object) -> list[list[object]]:
    if not isinstance(value, list) or not all(isinstance(v, list) for v in value):
        msg = f"places snapshot: expected a list of rows, got {value!r}"
        raise ValueError(msg)
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"places snapshot: expected an integer, got {value!r}"
        raise ValueError(msg)  # noqa: TRY004  # a malformed document
    return value


def _triples(value: object) -> list[tuple[int, int, int]]:
    return [(_int(a), _int(b), _int(c)) for a, b, c in _rows(value)]


def _credit_json(credit: dict[int, dict[int, int]]) -> list[list[int]]:
    return [[day, cid, ms] for day, by in sorted(credit.items()) for cid, ms in sorted(by.items())]


def _credit_from(value: object) -> dict[int, dict[int, int]]:
    out: dict[int, dict[int, int]] = {}
    for day, cid, ms in _triples(value):
        out.setdefault(day, {})[cid] = ms
    return out


def _counts(days: list[tuple[int, int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for _, cid, _ in days:
        out[cid] = out.get(cid, 0) + 1
    return out


def _place_json(kind: str, place: Place, count_key: str, count: int) -> dict[str, object]:
    return {
        "kind": kind,
        "lat": round(place.lat, 6),
        "lon": round(place.lon, 6),
        "radius_m": round(max(place.radius_m, 25.0), 1),
        count_key: count,
        "dwell_h": round(place.dwell_ms / _HOUR_MS, 1),
        "last_seen": None if place.last_ms < 0 else iso_instant(place.last_ms),
    }


def _hours(params: PlacesParams) -> tuple[int, int, int, int]:
    return (params.night_start_h, params.night_end_h, params.work_start_h, params.work_end_h)


@lru_cache(maxsize=64)
def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)


def local_day(tz: str, ts_ms: int) -> int:
    """The local date (proleptic ordinal) of an instant in zone `tz`."""
    return datetime.fromtimestamp(ts_ms / 1000, _zone(tz)).date().toordinal()


@lru_cache(maxsize=65_536)
def _windows(
    tz: str, day: int, hours: tuple[int, int, int, int]
) -> tuple[int, int, int | None, int | None]:
    """Day `day`'s night (start, end) and work hours (start, end, None on weekends), epoch ms,
    by the local clock of `tz` (DST included: a night may last 7 or 9 hours)."""
    night_start_h, night_end_h, work_start_h, work_end_h = hours
    zone = _zone(tz)
    d = date.fromordinal(day)
    end_day = d + timedelta(days=1) if night_end_h <= night_start_h else d

    def at(on: date, hour: int) -> int:
        return int(datetime(on.year, on.month, on.day, hour, tzinfo=zone).timestamp() * 1000)

    night = (at(d, night_start_h), at(end_day, night_end_h))
    if d.weekday() >= 5:  # Saturday and Sunday
        return (*night, None, None)
    return (*night, at(d, work_start_h), at(d, work_end_h))
