"""The live runtime: MQTT batches through the core, one transaction per batch, then acks.

One engine thread owns the pipeline. Each turn it applies pending fence and loan changes,
takes a batch of messages, decodes them, steps the core (readings, then timers due on the
wall clock), and commits telemetry, dead letters, alerts with their outbox rows and the
changed states in one transaction. Only then are the batch's messages acknowledged to the
broker (DESIGN §6): a crash at any point loses nothing, because what was not committed was
not acked and comes again, and alert ids do not depend on when they were raised. A reading
that comes again after its batch was committed is found by the store's unique key and
counted as a duplicate, not as an accepted reading.

Housekeeping (telemetry partitions made ahead, retention, the lease check) runs on a thread
of its own, never between batches: a DDL waiting for a lock must not hold up ingestion.
The counters `/metrics` shows are published after each commit, so they never go down, and
`readiness()` says whether commits keep up: input that has waited `stall_s` for its commit
makes the engine not ready.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from alerts.model import Alert
from alerts.retry import backoff_s
from devices.columns import without
from devices.mqtt_source import Message
from devices.readings import Reading, Reject
from engine.core.config import Config
from engine.core.state import DeviceState
from engine.runtime.batch_decode import decode_batch
from engine.runtime.consumers import ConsumerStage
from engine.runtime.live_hub import LiveHub
from engine.runtime.metrics import Histogram, counter_lines, gauge_lines
from engine.runtime.pipeline import Counters, Pipeline
from engine.runtime.submitted import (
    EngineUnavailableError,
    Outcome,
    Submission,
    SubmissionQueue,
    fail,
    resolve,
)
from engine.store.port import (
    Batch,
    Committed,
    ConsumerRow,
    LeaseError,
    Store,
    StoreError,
)
from geofence.fence import Fence
from geofence.index import FenceIndex
from geofence.positions import PositionIndex
from lending.consumer import LendingConsumer
from lending.model import Loan

_log = logging.getLogger(__name__)
VIN_CONFLICT_LOOKBACK_MS = 7 * 86_400_000  # at start, PUT conflicts this recent are re-fed

# A seam for the crash tests (tests/test_e2e_crash.py), inert unless set:
# "<before_commit|after_commit>:<device id>:<marker file>" makes the engine thread, at that
# point of the first batch holding a reading of that device, create the marker file and
# sleep until the test kills the process. It fires once: a restarted engine finds the marker.
_TEST_PAUSE = os.environ.get("PLEDGEWATCH_TEST_PAUSE", "")


def _test_pause(point: str, readings: Sequence[Reading]) -> None:
    """Pause here for good if `PLEDGEWATCH_TEST_PAUSE` asks for it (tests only)."""
    if not _TEST_PAUSE:
        return
    at, device_id, marker = _TEST_PAUSE.split(":", 2)
    if at != point or all(r.device_id != device_id for r in readings):
        return
    try:
        Path(marker).touch(exist_ok=False)
    except FileExistsError:
        return
    _log.warning("PLEDGEWATCH_TEST_PAUSE: %s of a batch of %s; sleeping", point, device_id)
    while True:
        time.sleep(3600)


class Source(Protocol):
    """Where messages come from (`devices.mqtt_source.MqttSource`, or a test's queue)."""

    @property
    def connected(self) -> bool:
        """Whether messages can arrive now."""

    def start(self) -> None:
        """Begin receiving."""

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop receiving; send what acks are queued."""

    def get_batch(self, max_messages: int, max_wait_s: float) -> list[Message]:
        """Up to `max_messages`, waiting at most `max_wait_s` for the first."""

    def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge messages whose batch is committed."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the engine batches. `max_batch` must stay below the broker's Receive Maximum."""

    max_batch: int = 1000
    max_wait_s: float = 0.05
    commit_retry_cap_s: float = 10.0
    retention_every_s: float = 3600.0
    retention_retry_s: float = 300.0  # after a retention that could not get its locks
    maintenance_every_s: float = 60.0  # partitions ahead, lease check (`Store.maintain`)
    stall_s: float = 30.0  # not ready when input has waited this long for its commit


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the engine keeps up: `GET /readyz`. Ages in seconds."""

    ready: bool
    engine_alive: bool
    last_commit_age_s: float  # since the last commit (since the start before the first)
    input_waiting_s: float  # how long the input in hand has waited for its commit; 0 if none
    stall_s: float  # the limit on `input_waiting_s`


@dataclass(frozen=True, slots=True)
class _PutFences:
    fences: tuple[Fence, ...]


@dataclass(frozen=True, slots=True)
class _DeleteFence:
    fence_id: str


@dataclass(frozen=True, slots=True)
class _PutLoan:
    loan: Loan
    alerts: tuple[Alert, ...] = ()  # the VIN conflict its PUT raised (stored by the API)


_Change = _PutFences | _DeleteFence | _PutLoan


class Engine:
    """The engine thread and what the API may ask of it."""

    def __init__(
        self,
        store: Store,
        source: Source | None,
        config: Config | None = None,
        settings: EngineSettings | None = None,
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[Sequence[Alert]], None] = lambda _: None,
        consumer: LendingConsumer | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.settings = settings or EngineSettings()
        self._clock = clock
        self.on_commit = on_commit
        self.pipeline = Pipeline(FenceIndex(), config)
        self.stage = None if consumer is None else ConsumerStage(self.pipeline, consumer)
        self._loan_alerts: list[Alert] = []  # PUT alerts for the consumer, at the next batch
        self.positions = PositionIndex()
        self.positions_lock = threading.Lock()
        self.feed = LiveHub(self.now_ms)  # the consoles' live feed (GET /v1/live)
        self.batch_seconds = Histogram()
        self.batches = 0
        self._changes: queue.Queue[_Change] = queue.Queue()
        self._submitted = SubmissionQueue()  # from other threads: the HTTP inputs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._maintainer: threading.Thread | None = None
        self.failure: BaseException | None = None
        self.published = Counters()  # the counters as of the last commit: what /metrics shows
        self.commits = 0
        self._last_commit = time.monotonic()  # or the start, before the first commit
        self._waiting_since: float | None = None  # monotonic: input in hand not committed

    def now_ms(self) -> int:
        """The wall clock, epoch milliseconds."""
        return int(self._clock() * 1000)

    # -- life cycle
    def load(self) -> None:
        """Read fences, loans and the last checkpoint from the store."""
        self.pipeline.set_fences(FenceIndex.build(self.store.all_fences()))
        for loan in self.store.all_loans():
            self.pipeline.put_loan(loan, 0, 0, check_vin=False)  # checked when it was PUT
        devices, loans = self.store.load_checkpoint()
        self.pipeline.restore_states(devices, loans)
        if self.stage is not None:
            self.stage.restore(self.store)
            self._loan_alerts = self.stage.unseen_vin_conflicts(
                self.store, self.now_ms() - VIN_CONFLICT_LOOKBACK_MS
            )
        with self.positions_lock:
            for state in devices:
                if state.fix is not None:
                    self.positions.update(state.device_id, state.fix.lat, state.fix.lon)
        self.feed.seed(devices, self.loan_for)
        _log.info(
            "engine loaded %d fences, %d loans, %d device states",
            len(self.pipeline.index),
            len(self.pipeline.loans),
            len(devices),
        )

    def start(self) -> None:
        """Load state and run the engine thread (and the MQTT source, if any), and the
        maintenance thread."""
        self.load()
        self._last_commit = time.monotonic()
        if self.source is not None:
            self.source.start()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()
        self._maintainer = threading.Thread(
            target=self._maintain, name="engine-maintenance", daemon=True
        )
        self._maintainer.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the batch in hand, commit it, ack it, and stop (SIGTERM lands here)."""
        self._stop.set()
        self.feed.close()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._submitted.close(EngineUnavailableError("the engine stopped"))
        if self.source is not None:
            self.source.stop()
        if self._maintainer is not None:
            self._maintainer.join(timeout_s)

    @property
    def running(self) -> bool:
        """Whether the engine thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.turn()
        except BaseException as exc:
            # A failure we cannot retry: stop rather than go on with state the store lacks.
            # Nothing uncommitted was acked; a restart resumes from the checkpoint.
            self.failure = exc
            _log.exception("engine stopped on an unexpected error")
            self._submitted.close(EngineUnavailableError(f"the engine stopped: {exc!r}"))
            raise

    # -- one turn
    def turn(self) -> list[Alert]:
        """One batch: changes, messages (MQTT and submitted), timers, commit, ack. Returns the
        alerts raised. Submitted input takes at most half a batch when MQTT waits too."""
        self._apply_changes()
        max_batch, max_wait_s = self.settings.max_batch, self.settings.max_wait_s
        submitted = self._submitted.take(max(1, max_batch // 2))
        room = max(1, max_batch - sum(s.size for s in submitted))
        messages: list[Message] = []
        if self.source is not None:
            messages = self.source.get_batch(room, 0.0 if submitted else max_wait_s)
        elif not submitted:
            self._submitted.wait(max_wait_s)
        if messages or submitted:
            self._waiting_since = time.monotonic()
        started = time.perf_counter()
        try:
            alerts = self.process(messages, submitted)
        except BaseException as exc:
            fail(submitted, exc)  # not committed: their clients get no 200 and send again
            raise
        self.batch_seconds.observe(time.perf_counter() - started)
        if self.source is not None and messages:
            self.source.ack(messages)
        self._waiting_since = None
        return alerts

    def process(
        self, messages: Sequence[Message], submitted: Sequence[Submission] = ()
    ) -> list[Alert]:
        """Decode, step and commit messages, submitted input (and the timers due now) as one
        batch; resolve the submissions once it is committed."""
        readings, clocks, rejects, outcomes = decode_batch(messages, submitted, self.pipeline.fast)
        now = self.now_ms()
        alerts = self.pipeline.process(readings, clocks)
        accepted = without(readings, self.pipeline.dropped)  # telemetry: all but duplicates
        alerts += self.pipeline.advance(now)
        consumer_rows: list[ConsumerRow] = []
        if self.stage is not None:
            # the same alerts, with the consumer's after the events that raised them
            alerts = self.stage.feed(now, self._loan_alerts)
            self._loan_alerts = []
            consumer_rows = self.stage.take_rows()
        self.pipeline.count_rejects(r.reason for r in rejects)
        devices, loans = self.pipeline.take_dirty()
        evicted = self.pipeline.take_evicted()
        if accepted or rejects or alerts or devices or loans or evicted or consumer_rows:
            _test_pause("before_commit", readings)
            batch = Batch(now, accepted, rejects, alerts, devices, loans, evicted, consumer_rows)
            committed = self._commit(batch)
            _test_pause("after_commit", readings)
            if committed.duplicates:
                self.pipeline.count_stored_duplicates(committed.duplicates)
            self._track_positions(devices, evicted)
            self.feed.publish(devices, evicted, accepted, alerts, self.loan_for)
            self.batches += 1
        self.published = self.pipeline.counters.copy()
        resolve(submitted, outcomes)
        if alerts:
            self.on_commit(alerts)
        return alerts

    def _commit(self, batch: Batch) -> Committed:
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        attempt = 0
        while True:
            try:
                committed = self.store.commit_batch(batch)
            except StoreError as exc:
                delay = min(backoff_s(attempt), self.settings.commit_retry_cap_s)
                attempt += 1
                _log.warning(
                    "commit failed (%s); input has waited %.0f s; retrying in %.1f s",
                    exc,
                    self.readiness().input_waiting_s,
                    delay,
                )
                if self._stop.wait(delay) and attempt > 3:
                    raise  # shutting down and the store stays away: nothing is acked
                continue
            self._last_commit = time.monotonic()
            self._waiting_since = None
            self.commits += 1
            return committed

    def readiness(self) -> Readiness:
        """Whether the engine runs and its commits keep up with its input."""
        now = time.monotonic()
        since = self._waiting_since
        waiting = 0.0 if since is None else max(0.0, now - since)
        alive = self.running
        stall_s = self.settings.stall_s
        return Readiness(
            alive and waiting < stall_s, alive, now - self._last_commit, waiting, stall_s
        )

    # -- housekeeping, on its own thread
    def _maintain(self) -> None:
        """Every `maintenance_every_s`: `Store.maintain` (partitions ahead, the lease); every
        `retention_every_s`: retention. A step that could not get its locks waits for the
        next turn; a lost lease stops the engine."""
        retention_due = time.monotonic()
        delay = 0.0
        while not self._stop.wait(delay):
            delay = self.settings.maintenance_every_s
            try:
                self.store.maintain(self.now_ms())
            except LeaseError as exc:
                _log.critical("stopping the engine: %s", exc)
                self.failure = exc
                self._stop.set()
                return
            except StoreError as exc:
                _log.warning("store maintenance deferred: %s", exc)
            except Exception:  # noqa: BLE001  # housekeeping must outlive a bug; logged in full
                _log.exception("store maintenance failed; trying again at the next turn")
            if time.monotonic() < retention_due:
                continue
            try:
                dropped = self.store.enforce_retention(self.now_ms())
            except Exception as exc:  # noqa: BLE001  # as above
                if isinstance(exc, StoreError):
                    _log.warning("retention deferred: %s", exc)
                else:
                    _log.exception("retention failed")
                retention_due = time.monotonic() + self.settings.retention_retry_s
            else:
                retention_due = time.monotonic() + self.settings.retention_every_s
                if dropped:
                    _log.info("retention dropped %d telemetry partitions or rows", dropped)
            delay = min(delay, max(0.0, retention_due - time.monotonic()))

    def _track_positions(self, devices: Sequence[DeviceState], evicted: Sequence[str]) -> None:
        with self.positions_lock:
            for state in devices:
                if state.fix is not None:
                    self.positions.update(state.device_id, state.fix.lat, state.fix.lon)
            for device_id in evicted:
                self.positions.remove(device_id)

    # -- input and changes from the API, taken by the engine thread between batches
    def submit(
        self, messages: Sequence[tuple[str, bytes]], rejects: Sequence[Reject] = ()
    ) -> Future[Outcome]:
        """Take messages (topic, payload: the MQTT wire format) and rejects into the next
        batch; the future resolves once that batch is committed, or fails with
        `EngineUnavailableError` when the engine does not run or stops first."""
        future: Future[Outcome] = Future()
        submission = Submission(tuple(messages), tuple(rejects), self.now_ms(), future)
        if not self.running or self._stop.is_set():
            future.set_running_or_notify_cancel()
            future.set_exception(EngineUnavailableError("the engine is not running"))
            return future
        self._submitted.put(submission)
        return future

    def put_fences(self, fences: Sequence[Fence]) -> None:
        """Take added or replaced fences into the next batch's index."""
        self._changes.put(_PutFences(tuple(fences)))
        self.feed.fences_changed()

    def delete_fence(self, fence_id: str) -> None:
        """Drop a fence from the next batch's index."""
        self._changes.put(_DeleteFence(fence_id))
        self.feed.fences_changed()

    def put_loan(self, loan: Loan, alerts: Sequence[Alert] = ()) -> None:
        """Take a new or changed loan, and the alerts its PUT raised, into the next batch."""
        self._changes.put(_PutLoan(loan, tuple(alerts)))

    def _apply_changes(self) -> None:
        index = self.pipeline.index
        changed_index = False
        loans: list[Loan] = []
        while True:
            try:
                change = self._changes.get_nowait()
            except queue.Empty:
                break
            if isinstance(change, _PutFences):
                index, changed_index = index.with_fences(change.fences), True
            elif isinstance(change, _DeleteFence):
                index, changed_index = index.without([change.fence_id]), True
            else:
                now = self.now_ms()
                # the API judged the VIN against the store and stored its alert with the loan
                self.pipeline.put_loan(change.loan, now, now, check_vin=False)
                self._loan_alerts += change.alerts
                loans.append(change.loan)
        if loans:
            self.feed.relink(loans, self.loan_for)
        if changed_index:
            self.pipeline.set_fences(index)

    # -- what the API reads
    def device(self, device_id: str) -> DeviceState | None:
        """A device's latest committed-or-about-to-be state, or None if never seen."""
        return self.pipeline.devices.get(device_id)

    def loan_for(self, device_id: str) -> Loan | None:
        """The loan a tracker belongs to, as the engine sees it now."""
        return self.pipeline.ctx.loan_for(device_id)

    def devices_inside(self, fence: Fence) -> list[str]:
        """Devices whose last fix is inside the fence."""
        with self.positions_lock:
            return self.positions.inside(fence)

    def devices_near(self, lat: float, lon: float, radius_m: float) -> list[tuple[str, float]]:
        """Devices whose last fix is within `radius_m`, nearest first."""
        with self.positions_lock:
            return self.positions.near(lat, lon, radius_m)

    # -- what the API reads of the lending consumer
    def lending(self) -> tuple[LendingConsumer, threading.Lock] | None:
        """The lending consumer and the lock to hold while reading it, or None."""
        if self.stage is None:
            return None
        return self.stage.consumer, self.stage.lock

    def metrics(self) -> list[str]:
        """This engine's part of `/metrics`."""
        c = self.published
        ready = self.readiness()
        online = sum(1 for s in list(self.pipeline.devices.values()) if not s.offline)
        return [
            *counter_lines(
                "pledgewatch_readings_total",
                "Accepted readings (late included).",
                "stream",
                {str(k): v for k, v in c.readings.items()},
            ),
            *counter_lines(
                "pledgewatch_rejected_total",
                "Rejected input, by reason.",
                "reason",
                {str(k): v for k, v in c.rejected.items()},
            ),
            *counter_lines(
                "pledgewatch_duplicates_total",
                "Duplicate readings dropped.",
                "stream",
                {str(k): v for k, v in c.duplicates.items()},
            ),
            *counter_lines(
                "pledgewatch_late_total",
                "Readings older than the device's last.",
                "stream",
                {str(k): v for k, v in c.late.items()},
            ),
            *counter_lines(
                "pledgewatch_clock_skew_total",
                "Readings far behind the device's clock, held back (DESIGN device.clock_skew).",
                "stream",
                {str(k): v for k, v in c.clock_skew.items()},
            ),
            "# HELP pledgewatch_readings_missing_total Gaps in devices' seq numbers.",
            "# TYPE pledgewatch_readings_missing_total counter",
            f"pledgewatch_readings_missing_total {c.missing}",
            *counter_lines(
                "pledgewatch_alerts_total",
                "Alerts raised, by type.",
                "type",
                {str(k): v for k, v in c.alerts.items()},
            ),
            *self.batch_seconds.render("pledgewatch_batch_seconds", "Engine batch latency."),
            *gauge_lines("pledgewatch_devices_online", "Devices reporting.", online),
            *gauge_lines("pledgewatch_devices", "Devices known.", len(self.pipeline.devices)),
            "# HELP pledgewatch_devices_evicted_total Devices on no active loan forgotten.",
            "# TYPE pledgewatch_devices_evicted_total counter",
            f"pledgewatch_devices_evicted_total {c.evicted}",
            *gauge_lines(
                "pledgewatch_last_commit_age_seconds",
                "Seconds since the engine's last commit (since its start before the first).",
                round(ready.last_commit_age_s, 3),
            ),
            *gauge_lines(
                "pledgewatch_input_waiting_seconds",
                "How long the input in hand has waited for its commit (0: none waits).",
                round(ready.input_waiting_s, 3),
            ),
            *gauge_lines(
                "pledgewatch_ready", "1 when commits keep up (GET /readyz).", int(ready.ready)
            ),
            *self._source_lines(),
            *self.feed.metric_lines(),
            *([] if self.stage is None else self.stage.metric_lines()),
        ]

    def _source_lines(self) -> list[str]:
        """The MQTT connection's state; a source without one (a test's queue) shows none."""
        source = self.source
        if source is None:
            return []
        lines = gauge_lines(
            "pledgewatch_mqtt_connected",
            "1 while the MQTT source is connected.",
            int(source.connected),
        )
        # The MQTT sources count these; other sources (a test's queue) have none to show.
        for attr, name, help_ in (
            (
                "reconnects",
                "pledgewatch_mqtt_reconnects_total",
                "MQTT reconnects (and restarts of its child).",
            ),
            (
                "takeovers",
                "pledgewatch_mqtt_session_takeovers_total",
                "Disconnects because another client took the engine's MQTT session.",
            ),
        ):
            value = getattr(source, attr, None)
            if isinstance(value, int):
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name} {value}"]
        return lines
