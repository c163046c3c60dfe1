"""A fleet plan published over MQTT: its schedule paced against the wall clock.

`publish` spreads the trackers over a pool of paho connections that the publishing thread
serves itself (one `select` over their sockets), hands a JT/T 808 terminal's messages to
whoever sends them (the load test's terminals), and reports what it sent and how far it fell
behind the schedule.
"""

from __future__ import annotations

import itertools
import random
import select
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt_source import BrokerAddress
from simulator.fleet_plan import FleetPlan, Scheduled
from simulator.fleet_spec import FleetError

MAX_CLIENTS = 1000  # select() watches at most 1024 sockets


@dataclass(frozen=True, slots=True)
class PublishStats:
    """What `publish` did: messages sent, wall time taken, achieved rate, lag behind schedule.

    `failed` counts publishes paho refused (no connection: QoS 0 is lost, QoS 1 is queued
    and sent on reconnection); `unacked` the QoS 1 publishes still unacknowledged at the end;
    `jt808` the messages handed to JT/T 808 terminals (counted in `sent` too).
    """

    sent: int
    bytes_sent: int
    elapsed_s: float
    rate: float
    max_lag_s: float
    final_lag_s: float
    stopped: bool
    failed: int = 0
    unacked: int = 0
    readings: int = 0
    jt808: int = 0


@dataclass(frozen=True, slots=True)
class PublishProgress:
    """A snapshot while publishing, about once a second."""

    sent: int
    elapsed_s: float
    duration_s: float
    rate: float  # messages/s over the last snapshot interval
    lag_s: float  # how far the publish of the latest message is behind its due time


class _Pool:
    """Paho connections served by the publishing thread itself: one `select` over their
    sockets instead of a network thread per connection (eight such threads halve the
    rate of one in a single Python process: they fight over the GIL)."""

    def __init__(self, address: BrokerAddress, count: int, prefix: str) -> None:
        self.address = address
        self.clients: list[mqtt.Client] = []
        tag = f"{random.getrandbits(32):08x}"  # an id, not a secret
        for k in range(count):
            client = mqtt.Client(
                callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"{prefix}-{tag}-{k}"
            )
            if address.username is not None:
                client.username_pw_set(address.username, address.password)
            client.max_inflight_messages_set(0)  # no limit: acks are read when served
            self.clients.append(client)
        self.next_misc = 0.0

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect every client; FleetError naming the broker if that fails."""
        where = f"{self.address.host}:{self.address.port}"
        try:
            for client in self.clients:
                client.connect(self.address.host, self.address.port, keepalive=60)
        except OSError as exc:
            msg = (
                f"cannot connect to the MQTT broker at {where}: {exc}; start one or pass --mqtt-url"
            )
            raise FleetError(msg) from exc
        deadline = time.monotonic() + timeout_s
        while not all(c.is_connected() for c in self.clients):
            if time.monotonic() > deadline:
                msg = f"the broker at {where} accepted no MQTT session in {timeout_s:g} s"
                raise FleetError(msg)
            self.serve(0.05)

    def serve(self, timeout_s: float) -> None:
        """Read acknowledgements, write what is pending, ping: waits up to `timeout_s`."""
        socks = {}
        for client in self.clients:
            sock = client.socket()
            if sock is not None:
                socks[sock] = client
        writable = [sock for sock, c in socks.items() if c.want_write()]
        if socks:
            readable, writable, _ = select.select(list(socks), writable, [], max(0.0, timeout_s))
            for sock in readable:
                socks[sock].loop_read()
            for sock in writable:
                socks[sock].loop_write()
        elif timeout_s > 0:
            time.sleep(timeout_s)
        now = time.monotonic()
        if now >= self.next_misc:  # keepalive pings
            for client in self.clients:
                client.loop_misc()
            self.next_misc = now + 1.0

    def drain(self, qos: int, timeout_s: float = 30.0) -> int:
        """Serve until every QoS 1 publish is acknowledged; how many clients still wait."""
        deadline = time.monotonic() + timeout_s

        def waiting() -> int:
            return sum(bool(c._out_messages) for c in self.clients)  # noqa: SLF001  # paho has no public count

        while (qos and waiting()) or any(c.want_write() for c in self.clients):
            if time.monotonic() > deadline:
                break
            self.serve(0.05)
        return waiting() if qos else 0

    def close(self) -> None:
        """Disconnect every client."""
        for client in self.clients:
            client.disconnect()


def publish(
    plan: FleetPlan,
    mqtt_url: str,
    *,
    clients: int,
    on_sent: Callable[[Scheduled, float], None] | None,
    stop: threading.Event | None,
    limit: int | None = None,
    progress: Callable[[PublishProgress], None] | None = None,
    terminals: Callable[[Scheduled], None] | None = None,
) -> PublishStats:
    """Publish the plan's schedule at its pace over `clients` paho connections.

    Trackers are spread over the connections (a tracker always uses the same one); QoS is
    the spec's. The cars are generated first (`plan.prepare`), then the clock starts: a
    message is published when its `due_s` has passed. `on_sent(msg, wall_s)` is called
    after each publish with `time.time()`; `stop` ends the run early, `limit` after that
    many messages. A JT/T 808 message (with a `msg_id`) goes to `terminals` instead, which
    must not block. Returns counts, the achieved rate and the lag behind schedule.
    """
    try:
        address = BrokerAddress.parse(mqtt_url)
    except ValueError as exc:
        raise FleetError(str(exc)) from exc
    if not 1 <= clients <= MAX_CLIENTS:
        msg = f"clients must be 1 to {MAX_CLIENTS}, got {clients}"
        raise FleetError(msg)
    pool = _Pool(address, clients, plan.spec.id_prefix)
    qos = plan.spec.qos
    sent = bytes_sent = failed = readings = unacked = jt808 = 0
    max_lag = lag = elapsed = 0.0
    stopped = False
    route: dict[str | None, mqtt.Client] = {}
    try:
        pool.connect()
        items = plan.schedule()
        first = next(items, None)  # generates the cars
        head: list[Scheduled] = [] if first is None else [first]
        started = time.monotonic()
        next_report, reported_sent = started + 1.0, 0
        for item in itertools.chain(head, items):
            if (stop is not None and stop.is_set()) or (limit is not None and sent >= limit):
                stopped = stop is not None and stop.is_set()
                break
            ahead = item.due_s - (time.monotonic() - started)
            if ahead > 0.002:
                pool.serve(ahead)
                ahead = item.due_s - (time.monotonic() - started)
                while ahead > 0.002:  # woken early by an acknowledgement
                    pool.serve(ahead)
                    ahead = item.due_s - (time.monotonic() - started)
            elif sent % 200 == 0:
                pool.serve(0.0)  # behind schedule: still read the acks now and then
            now = time.monotonic()
            lag = max(0.0, now - started - item.due_s)
            max_lag = max(max_lag, lag)
            if item.msg_id:
                if terminals is None:
                    msg = "the plan has JT/T 808 trackers: publish needs their terminals"
                    raise FleetError(msg)
                terminals(item)
                jt808 += 1
            else:
                client = route.get(item.device_id)
                if client is None:
                    k = zlib.crc32((item.device_id or "").encode()) % clients
                    client = route[item.device_id] = pool.clients[k]
                if client.publish(item.topic, item.payload, qos=qos).rc != mqtt.MQTT_ERR_SUCCESS:
                    failed += 1
            sent += 1
            readings += len(item.readings)
            bytes_sent += len(item.payload)
            if on_sent is not None:
                on_sent(item, time.time())
            if progress is not None and now >= next_report:
                rate = (sent - reported_sent) / max(now - next_report + 1.0, 1e-9)
                progress(PublishProgress(sent, now - started, plan.wall_s, rate, lag))
                next_report, reported_sent = now + 1.0, sent
        elapsed = time.monotonic() - started if head else 0.0
        unacked = pool.drain(qos)
    finally:
        pool.close()
    return PublishStats(
        sent,
        bytes_sent,
        elapsed,
        sent / elapsed if elapsed > 0 else 0.0,
        max_lag,
        lag,
        stopped,
        failed,
        unacked,
        readings,
        jt808,
    )
