"""`pledgewatch demo`: the whole system on this machine with the embedded defaults.

It starts a private Mosquitto when none answers, runs the engine, API and dispatcher on a
SQLite file, loads the bundled example city through the API, registers a webhook receiver
of its own and an admin operator for the console (`/console/`, whose address and sign-in
it prints), drives the city's simulated cars over MQTT (their recorded day moved to end
now, played fast), then keeps the reporting cars' heartbeats going, and prints every alert
the webhook receives, as a table, until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from alerts.address_policy import AddressPolicy, parse_allow
from devices.mqtt_source import BrokerAddress
from engine.api.console_config import ConsoleConfig
from engine.cli.http_address import HttpAddress
from engine.cli.service import Service, ServiceSettings
from engine.core.config import Config
from simulator.harness.api_client import ImportRefusedError, import_items
from simulator.harness.broker import BrokerUnavailable, PrivateBroker, answers, free_port
from simulator.harness.receiver import ReceivedWebhook, WebhookReceiver

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "city"
HEARTBEAT_S = 20.0
DEMO_OPERATOR = "demo"
HEADER = f"{'event time':<24} {'severity':<8} {'type':<26} {'loan':<8} {'device':<14} fence"


class DemoError(Exception):
    """Something the demo needs is missing; the message says how to get it."""


@contextlib.contextmanager
def broker(url: str, workdir: Path) -> Iterator[str]:
    """The broker at `url` if it answers, else a private Mosquitto with our settings."""
    address = BrokerAddress.parse(url)
    if answers(address.host, address.port):
        yield url
        return
    try:
        private = PrivateBroker(workdir)
        private.start()
    except BrokerUnavailable as exc:
        msg = (
            f"no MQTT broker answers at {url}, and a private one could not be started: {exc}\n"
            "  or point the demo at a broker: pledgewatch demo --mqtt-url mqtt://HOST:PORT"
        )
        raise DemoError(msg) from exc
    print(f"started a private Mosquitto on 127.0.0.1:{private.port} (none answered at {url})")
    try:
        yield private.url
    finally:
        private.stop()


class _Console:
    """Prints each alert the first time its id arrives (delivery is at least once), and
    then how many it printed: the receiver's threads may still be answering at the end."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.printed = 0
        self.closed = False

    def show(self, delivery: ReceivedWebhook) -> None:
        if not delivery.first_seen:
            return
        alert = delivery.alert
        with self.lock:
            if self.closed:
                return
            print(
                f"{alert['ts']!s:<24} {alert['severity']!s:<8} {alert['type']!s:<26} "
                f"{alert['loan_id'] or '-'!s:<8} {alert['device_id'] or '-'!s:<14} "
                f"{alert['fence_id'] or '-'}",
                flush=True,
            )
            self.printed += 1

    def close(self) -> int:
        with self.lock:
            self.closed = True
            return self.printed


def _shift_ts(payload: object, offset_ms: int) -> object:
    """Move a recorded payload's timestamps by `offset_ms` (epoch ms, ISO, or OwnTracks s)."""
    if isinstance(payload, list):
        return [_shift_ts(p, offset_ms) for p in payload]
    if not isinstance(payload, dict):
        return payload
    out = dict(payload)
    ts = out.get("ts")
    if isinstance(ts, int) and not isinstance(ts, bool):
        out["ts"] = ts + offset_ms
    elif isinstance(ts, str):
        with contextlib.suppress(ValueError):
            moved = datetime.fromisoformat(ts) + timedelta(milliseconds=offset_ms)
            out["ts"] = moved.isoformat(timespec="milliseconds")
    tst = out.get("tst")
    if isinstance(tst, int) and not isinstance(tst, bool):
        out["tst"] = tst + offset_ms // 1000
    return out


def _recorded_ts(payload: object) -> int | None:
    first = payload[0] if isinstance(payload, list) and payload else payload
    if not isinstance(first, dict):
        return None
    ts, tst = first.get("ts"), first.get("tst")
    if isinstance(ts, int) and not isinstance(ts, bool):
        return ts
    if isinstance(ts, str):
        with contextlib.suppress(ValueError):
            return int(datetime.fromisoformat(ts).timestamp() * 1000)
    return tst * 1000 if isinstance(tst, int) and not isinstance(tst, bool) else None


def _drive(
    client: mqtt.Client, play_s: float, stop: threading.Event, example: Path = EXAMPLE
) -> set[str]:
    """Publish the example city, moved to end now, over `play_s` seconds. Returns the gps
    topics of the cars still reporting at the end (they get heartbeats)."""
    lines = [orjson.loads(x) for x in (example / "readings.jsonl").read_bytes().splitlines() if x]
    # Pace by the running largest time, ignoring stamps far ahead of it (a bad clock must
    # not stall the playback; the engine rejects such readings itself).
    stamps: list[int] = []
    for t in (_recorded_ts(x["payload"]) for x in lines):
        if t is not None and (not stamps or t <= stamps[-1] + 300_000):
            stamps.append(max(t, stamps[-1]) if stamps else t)
    first, last = stamps[0], stamps[-1]
    offset = int(time.time() * 1000) - 1000 - last
    pace = play_s / max((last - first) / 1000, 1.0)
    started = time.monotonic()
    last_seen: dict[str, int] = {}
    for line in lines:
        if stop.is_set():
            break
        payload, topic = line["payload"], line["topic"]
        recorded = _recorded_ts(payload)
        if recorded is not None and recorded <= last:
            wait = started + (recorded - first) / 1000 * pace - time.monotonic()
            if wait > 0:
                stop.wait(wait)
            last_seen[topic] = recorded
        data = (
            payload.encode("utf-8", "surrogateescape")
            if isinstance(payload, str)
            else orjson.dumps(_shift_ts(payload, offset))
        )
        client.publish(topic, data, qos=1)
    quiet_after = last - 10 * 60 * 1000
    return {
        t.rsplit("/", 1)[0] + "/status"
        for t, ts in last_seen.items()
        if ts >= quiet_after and t.startswith("telematics/") and t.endswith("/gps")
    }


def _heartbeats(client: mqtt.Client, topics: set[str], stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        now = int(time.time() * 1000)
        for topic in sorted(topics):
            client.publish(topic, orjson.dumps({"ts": now, "ext_power": True}), qos=1)


def run_demo(
    mqtt_url: str,
    http: HttpAddress,
    play_s: float,
    duration_s: float | None,
    example: Path = EXAMPLE,
    *,
    console_settings: ConsoleConfig | None = None,
) -> int:
    """Run the demo until Ctrl-C (or `duration_s`); returns the exit status. Whatever
    fails, every part it started (broker, service, receiver, clients) is stopped."""
    workdir = Path(tempfile.mkdtemp(prefix="pledgewatch-demo-"))
    token = secrets.token_urlsafe(16)
    secret = secrets.token_urlsafe(16)
    if answers(http.host, http.port):  # taken (another engine?): any free port will do
        http = HttpAddress(http.host, free_port())
    console = _Console()
    stop = threading.Event()
    with contextlib.ExitStack() as parts:  # stopped in reverse order, whatever fails
        broker_url = parts.enter_context(broker(mqtt_url, workdir))
        settings = ServiceSettings(
            mqtt_url=broker_url,
            db_url=f"sqlite:///{workdir}/demo.db",
            http_host=http.host,
            http_port=http.port,
            api_token=token,
            client_id=f"pledgewatch-demo-{os.getpid()}",
            config=Config(offline_s=90),  # the demo is short: a silent car shows in 90 s
            webhook_addresses=AddressPolicy(parse_allow("127.0.0.0/8")),  # its own receiver
            console=console_settings or ConsoleConfig(),
        )
        # The receiver outlives the service: the dispatcher finishes its requests in flight.
        printer = parts.enter_context(WebhookReceiver(secret, on_delivery=console.show, keep=False))
        service = Service(settings)
        parts.callback(service.stop)  # also after a start that failed half-way
        service.start()
        api = parts.enter_context(
            httpx.Client(
                base_url=http.base_url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
        )
        _load_example(api, example, printer.url, secret)
        password = _console_operator(api)
        print(f"console {http.base_url}/console/  sign in: {DEMO_OPERATOR} / {password}")
        print(f"API {http.base_url}  token {token}")
        print(f"MQTT {broker_url}   store {settings.db_url}")
        print(f"playing the example city's recorded day over {play_s:.0f} s; Ctrl-C to stop\n")
        print(HEADER)
        print("-" * len(HEADER), flush=True)
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"demo-fleet-{os.getpid()}"
        )
        address = BrokerAddress.parse(broker_url)
        client.connect(address.host, address.port)
        client.loop_start()
        parts.callback(client.loop_stop)
        parts.callback(stop.set)  # first of all: the heartbeats and the playback end
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            topics = _drive(client, play_s, stop, example)
            beats = threading.Thread(target=_heartbeats, args=(client, topics, stop), daemon=True)
            beats.start()
            while deadline is None or time.monotonic() < deadline:
                if not service.healthy():
                    print("the engine stopped; see the log above", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
    printed = console.close()
    print(f"\n{printed} alerts. The demo's database stays at {workdir}/demo.db")
    return 0


def _console_operator(api: httpx.Client) -> str:
    """An admin operator for the console's sign-in page; its new password."""
    password = secrets.token_urlsafe(12)
    body = {"role": "admin", "password": password}
    try:
        api.put(f"/v1/operators/{DEMO_OPERATOR}", json=body).raise_for_status()
    except httpx.HTTPStatusError as exc:
        msg = f"the engine refused the console's operator: {exc.response.text[:500]}"
        raise DemoError(msg) from exc
    return password


def _load_example(api: httpx.Client, example: Path, hook_url: str, secret: str) -> None:
    """The example's fences and loans, and the console's webhook, through the API."""
    try:
        fences = orjson.loads((example / "fences.geojson").read_bytes())["features"]
        loans = orjson.loads((example / "loans.json").read_bytes())
        import_items(api, "fences", fences)
        for loan in loans:
            api.put(f"/v1/loans/{loan['loan_id']}", json=loan).raise_for_status()
        hook = {"url": hook_url, "secret": secret}
        api.put("/v1/webhooks/demo-console", json=hook).raise_for_status()
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        msg = f"the example in {example} cannot be read: {exc}"
        raise DemoError(msg) from exc
    except ImportRefusedError as exc:
        msg = f"the engine refused the example's fences ({example}): {exc}"
        raise DemoError(msg) from exc
    except httpx.HTTPStatusError as exc:
        msg = f"the engine refused the example ({example}): {exc.response.text[:500]}"
        raise DemoError(msg) from exc
