"""The console's live feed inside one engine: car positions, alerts and fence changes, fanned
out to the consoles watching (`GET /v1/live`, `engine.api.live_feed`).

The engine thread writes after each commit, at a cost that follows the batch, never the
number of consoles: the cars whose position changed go into `latest` (one entry per device,
for snapshots) and, as one tuple, into a log of batches numbered by `car_seq`; the alerts
go into a log numbered by `alert_seq`. Readers never wait on the engine and the engine never
waits on a reader: both hold `_lock` only for a few dict and deque operations.

Each console is a `Subscription`: its place in both logs. On its own schedule its reader
takes the cars changed since its place, latest per device (coalesced: never more than the
fleet), and the alerts after its place. The car log is bounded by a number of cars: a reader
whose place fell out of it gets the changed cars from `latest` instead (same answer, more
work). The alert log keeps `ALERT_LOG` alerts; a subscription whose unsent alerts exceed its
own `alert_limit` while its reader is stuck writing to the console is overflowed: a console
that slow is ended (it reconnects and refetches). A reader that is not stuck takes all the
alerts in the log at once, however many one batch raised.

Listeners (the API's event loops) are called, from the writing thread, after alerts or a
fence change: they wake their readers, which otherwise wake on their own interval.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from alerts.model import Alert
from devices.columns import ReadingBatch
from devices.readings import GpsFix, Reading
from engine.core.state import DeviceState
from engine.runtime.metrics import counter_lines, gauge_lines
from lending.model import Loan

CAR_LOG = 100_000
"""Car entries the log of changed cars keeps (about 10 MB), over all batches."""
ALERT_LOG = 4096
"""Alerts the alert log keeps: the largest per-console alert buffer."""
DEFAULT_ALERT_LIMIT = 256
"""A console's default buffer of unsent alerts; past it the console is too slow."""


@dataclass(frozen=True, slots=True)
class Car:
    """A car's last position as the console shows it: WGS84 degrees, epoch ms, km/h."""

    device_id: str
    lat: float
    lon: float
    ts_ms: int
    speed_kmh: float | None
    loan_id: str | None


@dataclass(slots=True, eq=False)
class Subscription:
    """One console's place in the feed. Used by its reader alone (one thread)."""

    car_seq: int
    alert_seq: int
    fences_version: int
    alert_limit: int
    ended: bool = False


class LiveHub:
    """The feed of one engine: written by the engine thread (and fence changes by the API),
    read by any number of subscriptions. Thread-safe; memory bounded by the fleet and the
    two logs."""

    def __init__(self, clock_ms: Callable[[], int], car_log: int = CAR_LOG) -> None:
        """`clock_ms`: the engine's wall clock, epoch ms (the `now_ms` of events)."""
        self.now_ms = clock_ms
        self.closed = False
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[int, Car]] = {}  # device_id -> (car_seq, car)
        self._car_log: deque[tuple[int, tuple[Car, ...]]] = deque()
        self._car_log_size = 0
        self._car_log_cap = car_log
        self._car_seq = 0
        self._alerts: deque[tuple[int, Alert]] = deque(maxlen=ALERT_LOG)
        self._alert_seq = 0
        self._fences_version = 0
        self._subs: set[Subscription] = set()
        self._listeners: list[Callable[[], None]] = []
        self.car_updates = 0  # cars whose position changed, as the writer put them
        self.events_sent = 0  # counted by the readers, on their event loop
        self.bytes_sent = 0
        self.dropped_slow = 0
        self.refused = 0

    # -- the writers' side
    def seed(self, states: Iterable[DeviceState], loan_for: Callable[[str], Loan | None]) -> None:
        """The positions of the devices the engine loaded (their speed is not stored)."""
        cars = [
            Car(s.device_id, s.fix.lat, s.fix.lon, s.fix.ts_ms, None, _loan_id(loan_for, s))
            for s in states
            if s.fix is not None
        ]
        self._put_cars(cars, ())

    def publish(
        self,
        states: Sequence[DeviceState],
        evicted: Sequence[str],
        readings: Sequence[Reading],
        alerts: Sequence[Alert],
        loan_for: Callable[[str], Loan | None],
    ) -> None:
        """After a commit: the changed states (those whose fix moved become cars, with the
        speed their reading in `readings` gave), the evicted devices, the alerts."""
        latest = self._latest
        cars: list[Car] = []
        speeds: dict[tuple[str, int], float | None] | None = None
        for state in states:
            fix = state.fix
            if fix is None:
                continue
            known = latest.get(state.device_id)
            if known is not None:
                car = known[1]
                if car.ts_ms == fix.ts_ms and car.lat == fix.lat and car.lon == fix.lon:
                    continue
            if speeds is None:
                speeds = _speeds(readings)
            speed = speeds.get((state.device_id, fix.ts_ms))
            loan_id = _loan_id(loan_for, state)
            cars.append(Car(state.device_id, fix.lat, fix.lon, fix.ts_ms, speed, loan_id))
        if cars or evicted:
            self._put_cars(cars, evicted)
        if alerts:
            with self._lock:
                for alert in alerts:
                    self._alert_seq += 1
                    self._alerts.append((self._alert_seq, alert))
            self._notify()

    def relink(self, loans: Sequence[Loan], loan_for: Callable[[str], Loan | None]) -> None:
        """Loans were put: their cars, and those that were theirs, show their loan now (sent
        as changed cars). Looks at every car once."""
        ids = {loan.loan_id for loan in loans}
        devices = {d for loan in loans for d in loan.device_ids}
        with self._lock:
            held = [car for _, car in self._latest.values()]
        cars = []
        for car in held:
            if car.device_id in devices or car.loan_id in ids:
                loan = loan_for(car.device_id)
                loan_id = None if loan is None else loan.loan_id
                if loan_id != car.loan_id:
                    cars.append(replace(car, loan_id=loan_id))
        if cars:
            self._put_cars(cars, ())

    def fences_changed(self) -> None:
        """Fences were put or deleted (the store has them): consoles refetch them."""
        with self._lock:
            self._fences_version += 1
        self._notify()

    def close(self) -> None:
        """The engine stops: every feed ends."""
        self.closed = True
        self._notify()

    def _put_cars(self, cars: Sequence[Car], evicted: Iterable[str]) -> None:
        with self._lock:
            for device_id in evicted:
                self._latest.pop(device_id, None)
            if not cars:
                return
            self._car_seq += 1
            seq = self._car_seq
            for car in cars:
                self._latest[car.device_id] = (seq, car)
            self.car_updates += len(cars)
            if not self._subs:  # a new subscriber starts from a snapshot: no log needed
                self._car_log.clear()
                self._car_log_size = 0
                return
            self._car_log.append((seq, tuple(cars)))
            self._car_log_size += len(cars)
            while self._car_log_size > self._car_log_cap and len(self._car_log) > 1:
                self._car_log_size -= len(self._car_log.popleft()[1])

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    # -- the readers' side
    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from the writing thread) after alerts or a fence change."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling `listener`."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def subscribe(
        self, max_subscriptions: int, alert_limit: int = DEFAULT_ALERT_LIMIT
    ) -> tuple[Subscription, list[Car]] | None:
        """A new subscription with the snapshot it starts from: every car the engine holds a
        position for, and the time of that; None (counted) when `max_subscriptions` are open."""
        with self._lock:
            if len(self._subs) >= max_subscriptions:
                self.refused += 1
                return None
            limit = max(1, min(alert_limit, ALERT_LOG))
            sub = Subscription(self._car_seq, self._alert_seq, self._fences_version, limit)
            self._subs.add(sub)
            cars = [car for _, car in self._latest.values()]
        return sub, cars

    def unsubscribe(self, sub: Subscription) -> None:
        """End a subscription (its console went away or was dropped)."""
        sub.ended = True
        with self._lock:
            self._subs.discard(sub)

    def cars_since(self, sub: Subscription) -> tuple[int, int, list[Car]]:
        """The cars whose position changed since the subscription's place, latest per
        device, and the place moved past them: `(from_seq, to_seq, cars)`."""
        since = sub.car_seq
        with self._lock:
            now = self._car_seq
            if now == since:
                return since, now, []
            log = self._car_log
            if log and log[0][0] <= since + 1:
                batches = []
                for entry in reversed(log):
                    if entry[0] <= since:
                        break
                    batches.append(entry[1])
                rescan = None
            else:  # fell out of the log: look at every device's last change
                batches = []
                rescan = list(self._latest.values())
        sub.car_seq = now
        if rescan is not None:
            return since, now, [car for seq, car in rescan if seq > since]
        out: dict[str, Car] = {}
        for cars in reversed(batches):  # oldest first: the latest of a device wins
            for car in cars:
                out[car.device_id] = car
        return since, now, list(out.values())

    def alerts_since(self, sub: Subscription) -> list[Alert] | None:
        """The alerts committed after the subscription's place, which moves past them;
        None when some of them have left the log (the reader is far too slow)."""
        with self._lock:
            waiting = self._alert_seq - sub.alert_seq
            if waiting == 0:
                return []
            if waiting > len(self._alerts):
                return None
            out = [alert for seq, alert in list(self._alerts)[-waiting:]]
            sub.alert_seq = self._alert_seq
        return out

    def overflowed(self, sub: Subscription) -> bool:
        """Whether more alerts wait for the subscription than it may buffer: asked while
        its reader is stuck writing to its console."""
        return self._alert_seq - sub.alert_seq > sub.alert_limit

    @property
    def fences_version(self) -> int:
        """How many fence changes there have been (since the engine started)."""
        return self._fences_version

    @property
    def car_seq(self) -> int:
        """The number of the last batch of changed cars."""
        return self._car_seq

    def cars_held(self) -> int:
        """How many devices the feed holds a position for."""
        return len(self._latest)

    def metric_lines(self) -> list[str]:
        """The feed's part of `/metrics`."""
        return [
            *gauge_lines(
                "pledgewatch_live_streams", "Open live feeds (GET /v1/live).", len(self._subs)
            ),
            *_counter(
                "pledgewatch_live_car_updates_total",
                "Car positions that changed, for the live feeds.",
                self.car_updates,
            ),
            *_counter(
                "pledgewatch_live_events_total", "Events sent on live feeds.", self.events_sent
            ),
            *_counter("pledgewatch_live_bytes_total", "Bytes sent on live feeds.", self.bytes_sent),
            *counter_lines(
                "pledgewatch_live_streams_ended_total",
                "Live feeds the server ended or refused: slow (their alert buffer overflowed), "
                "limit (refused: the most streams were open).",
                "reason",
                {"slow": self.dropped_slow, "limit": self.refused},
            ),
        ]


def _counter(name: str, help_: str, value: int) -> list[str]:
    return [f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name} {value}"]


def _loan_id(loan_for: Callable[[str], Loan | None], state: DeviceState) -> str | None:
    loan = loan_for(state.device_id)
    return None if loan is None else loan.loan_id


def _speeds(readings: Sequence[Reading]) -> dict[tuple[str, int], float | None]:
    """The reported speed of each gps reading, by (device, ts_ms)."""
    if isinstance(readings, ReadingBatch):
        c = readings.columns
        return {
            (device_id, ts_ms): speed
            for device_id, ts_ms, speed, gps in zip(
                c.device_ids, c.ts_list, c.speed_list, c.gps.tolist(), strict=True
            )
            if gps
        }
    return {(r.device_id, r.ts_ms): r.speed_kmh for r in readings if type(r) is GpsFix}
