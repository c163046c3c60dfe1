"""The API's engine in the distributed runtime: changes and HTTP input go to Kafka.

A worker with `--http` serves the same API as `pledgewatch run` over the same store. Its
engine holds no devices (the workers do); what the API hands it goes to the cluster:
- a fence or loan put or deleted becomes a `pledgewatch.changes` record (the API stored it
  first), and at start every stored fence and loan is written there again, so the topic
  holds the whole fleet even after a store was filled by other means;
- a PUT's VIN conflict (stored by the API with its outbox row) becomes a loan-events
  record of its own, so the lending consumer of that loan's partition sees it;
- readings posted to the HTTP inputs (Traccar, OsmAnd) are decoded and produced to
  `pledgewatch.readings` (rejects to `pledgewatch.rejects`) like the bridge's, and the
  client's 200 comes after the brokers acknowledged them;
- a device's state (`GET /v1/devices/{id}`) is read from the store, where the workers write
  it at each checkpoint; the last-position searches (`?inside=`, `?near=`) run on an index
  of every device's last fix built from the store, read again when it is older than
  `POSITIONS_TTL_S` (the workers' checkpoints are `--checkpoint-s` apart anyway).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from aiokafka.errors import KafkaError

from alerts.model import Alert
from devices.inputs import decode_message
from devices.readings import Reject
from engine.core.config import Config
from engine.core.state import DeviceState
from engine.distributed.bridge import input_records
from engine.distributed.kafka_io import Producer, Record
from engine.distributed.records import LoanEvent, fence_change, loan_change, loan_event_records
from engine.distributed.settings import CHANGES, LOAN_EVENTS
from engine.runtime.live import Engine, EngineSettings
from engine.runtime.submitted import EngineUnavailableError, Outcome
from engine.store.port import Store
from geofence.fence import Fence
from geofence.index import FenceIndex
from geofence.positions import PositionIndex
from lending.model import Loan

_log = logging.getLogger(__name__)
POSITIONS_TTL_S = 2.0
"""How old the index of the devices' last fixes may be before a search reads them again."""


class ClusterEngine(Engine):
    """An `Engine` without input of its own whose changes go to the cluster."""

    def __init__(
        self,
        store: Store,
        producer: Producer,
        config: Config | None = None,
        settings: EngineSettings | None = None,
        on_commit: Callable[[Sequence[Alert]], None] = lambda _: None,
    ) -> None:
        super().__init__(store, None, config, settings, on_commit=on_commit)
        self.producer = producer
        self._positions_read = -POSITIONS_TTL_S  # monotonic time of the last read
        self._positions_reading = threading.Lock()  # one read at a time

    def load(self) -> None:
        """Fences and loans only: the device states in the store are the workers' (their
        timers run there, never here)."""
        self.pipeline.set_fences(FenceIndex.build(self.store.all_fences()))
        for loan in self.store.all_loans():
            self.pipeline.put_loan(loan, 0, 0, check_vin=False)

    def start(self) -> None:
        """Start, and write the stored fleet to the changes topic."""
        super().start()
        records: list[Record] = [
            (CHANGES, *fence_change(f.fence_id, f)) for f in self.store.all_fences()
        ]
        records += [(CHANGES, *loan_change(loan)) for loan in self.store.all_loans()]
        self.producer.send(records)
        _log.info("published %d fences and loans to %s", len(records), CHANGES)

    def device(self, device_id: str) -> DeviceState | None:
        """A device's state as the workers last checkpointed it to the store."""
        return self.store.get_device_state(device_id)

    def devices_inside(self, fence: Fence) -> list[str]:
        """Devices whose last checkpointed fix is inside the fence."""
        self._read_positions()
        return super().devices_inside(fence)

    def devices_near(self, lat: float, lon: float, radius_m: float) -> list[tuple[str, float]]:
        """Devices whose last checkpointed fix is within `radius_m`, nearest first."""
        self._read_positions()
        return super().devices_near(lat, lon, radius_m)

    def _read_positions(self) -> None:
        """Rebuild the position index from the store if it is older than the TTL."""
        with self._positions_reading:
            now = time.monotonic()
            if now - self._positions_read < POSITIONS_TTL_S:
                return
            index = PositionIndex()
            for device_id, lat, lon in self.store.device_positions():
                index.update(device_id, lat, lon)
            with self.positions_lock:
                self.positions = index
            self._positions_read = now

    def put_fences(self, fences: Sequence[Fence]) -> None:
        """Take fences here and send them to every worker."""
        super().put_fences(fences)
        self.producer.send([(CHANGES, *fence_change(f.fence_id, f)) for f in fences])

    def delete_fence(self, fence_id: str) -> None:
        """Drop a fence here and on every worker."""
        super().delete_fence(fence_id)
        self.producer.send([(CHANGES, *fence_change(fence_id, None))])

    def put_loan(self, loan: Loan, alerts: Sequence[Alert] = ()) -> None:
        """Take a loan here and send it to every worker; its PUT's alerts to its consumer."""
        super().put_loan(loan, alerts)
        records: list[Record] = [(CHANGES, *loan_change(loan))]
        if alerts:
            event = LoanEvent(loan.loan_id, self.now_ms(), alerts=tuple(alerts))
            # keyed by the loan: the default partitioner puts it where `loan_partition` says
            key = loan.loan_id.encode()
            records += [(LOAN_EVENTS, key, value) for value in loan_event_records([event])]
        self.producer.send(records)

    def submit(
        self, messages: Sequence[tuple[str, bytes]], rejects: Sequence[Reject] = ()
    ) -> Future[Outcome]:
        """Decode HTTP input and produce it; the future resolves once the brokers acked."""
        future: Future[Outcome] = Future()
        future.set_running_or_notify_cancel()
        now = self.now_ms()
        decoded = tuple(decode_message(topic, payload, now) for topic, payload in messages)
        readings = [r for d in decoded for r in d.readings]
        every_reject = [*rejects, *(j for d in decoded for j in d.rejects)]
        records = input_records(readings, every_reject, now)
        try:
            self.producer.send(records)
        except (KafkaError, TimeoutError, OSError) as exc:
            future.set_exception(EngineUnavailableError(f"Kafka did not take the input: {exc}"))
            return future
        future.set_result(Outcome(decoded, tuple(rejects)))
        return future
