"""`pledgewatch gateway jt808`: JT/T 808 terminals over TCP in, MQTT readings out (DESIGN §9).

The composition root of the gateway: the auth store, the MQTT sink and the TCP server from
`devices.jt808`, the `/metrics` exposition from `engine.runtime.metrics`, the signals.
SIGTERM or SIGINT: stop accepting and reading, answer the terminals whose readings the
broker acks within `--drain-s`, close. What is left unanswered the terminals send again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
import secrets
import signal
from pathlib import Path

import orjson

from devices.jt808.auth_store import AuthStore, AuthStoreError
from devices.jt808.gateway import Gateway, GatewaySettings
from devices.jt808.mqtt_sink import MAX_PENDING, MqttSink
from engine.cli.http_address import HttpAddress, parse_http
from engine.cli.options import CliError, option
from engine.runtime.metrics import (
    Histogram,
    counter_lines,
    gauge_lines,
    render,
)

_log = logging.getLogger("pledgewatch.gateway")

ACK_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0)
_REQUEST_LIMIT = 8192  # bytes of a /metrics request we read before answering 400


def listen_address(value: str) -> HttpAddress:
    """argparse type of `--listen`: HOST:PORT, or a usage error naming what is wrong."""
    try:
        return parse_http(value, "--listen")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def metrics_address(value: str) -> HttpAddress:
    """argparse type of the gateway's `--http`."""
    try:
        return parse_http(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def gateway_options(gateway: argparse.ArgumentParser) -> None:
    """The `jt808` protocol under `gateway`, and its flags (each also `PLEDGEWATCH_<FLAG>`)."""
    kinds = gateway.add_subparsers(dest="protocol", required=True)
    jt = kinds.add_parser("jt808", help="JT/T 808 (2013 and 2019) terminals over TCP")
    option(
        jt,
        "--listen",
        type=listen_address,
        default="127.0.0.1:6808",
        help="HOST:PORT terminals connect to (default 127.0.0.1:6808; 0.0.0.0:PORT for all)",
    )
    option(jt, "--mqtt-url", default="mqtt://127.0.0.1:1883", help="the MQTT broker")
    option(
        jt,
        "--state-file",
        default="jt808-auth.json",
        help="JSON file of the terminals' auth codes, kept across restarts "
        "(default ./jt808-auth.json; mode 0600: the codes are credentials)",
    )
    option(jt, "--http", type=metrics_address, help="HOST:PORT serving /metrics and /healthz")
    option(jt, "--client-id", help="MQTT client id (default pledgewatch-jt808- and random hex)")
    option(
        jt,
        "--max-pending",
        type=int,
        default=10_000,
        help="publishes awaiting the broker's PUBACK before the gateway stops reading "
        "terminals (default 10000)",
    )
    option(
        jt,
        "--max-inflight",
        type=int,
        default=1000,
        help="MQTT publishes on the wire unacknowledged; more wait in the client (default 1000)",
    )
    option(
        jt,
        "--idle-timeout-s",
        type=float,
        default=600.0,
        help="close a connection that sent no valid frame for this long (default 600)",
    )
    option(jt, "--summary-s", type=float, default=60.0, help="log a summary this often")
    option(
        jt,
        "--drain-s",
        type=float,
        default=10.0,
        help="on SIGTERM, wait this long for the broker's acks before closing",
    )
    jt.set_defaults(func=cmd_gateway_jt808)


def cmd_gateway_jt808(args: argparse.Namespace) -> int:
    """`pledgewatch gateway jt808`: serve until SIGTERM or SIGINT."""
    if not 1 <= args.max_pending < MAX_PENDING:
        raise CliError(f"--max-pending must be 1 to {MAX_PENDING - 1}, got {args.max_pending}")
    if args.max_inflight < 1:
        raise CliError(f"--max-inflight must be at least 1, got {args.max_inflight}")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    raise_fd_limit()
    return asyncio.run(_serve(args))


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (a connection is a file); the new one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _serve(args: argparse.Namespace) -> int:
    try:
        store = AuthStore(Path(args.state_file))
    except AuthStoreError as exc:
        raise CliError(str(exc)) from exc
    client_id = args.client_id or f"pledgewatch-jt808-{secrets.token_hex(4)}"
    try:
        sink = MqttSink(args.mqtt_url, client_id, max_inflight=args.max_inflight)
    except ValueError as exc:
        await store.close()
        raise CliError(str(exc)) from exc
    histogram = Histogram(ACK_BUCKETS_S)
    settings = GatewaySettings(
        max_pending=args.max_pending,
        idle_timeout_s=args.idle_timeout_s,
        summary_s=args.summary_s,
    )
    gateway = Gateway(sink, store, settings, histogram.observe)
    sink.start()
    listen: HttpAddress = args.listen
    http_server: asyncio.Server | None = None
    where = f"{listen.host}:{listen.port}"
    try:
        host, port = await gateway.start(listen.host, listen.port)
        if args.http is not None:
            where = f"{args.http.host}:{args.http.port} (--http)"
            http_server = await _serve_metrics(args.http, gateway, sink, histogram)
    except OSError as exc:
        await gateway.stop(0)
        await sink.close()
        await store.close()
        raise CliError(f"cannot listen on {where}: {exc.strerror}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _log.info(
        "jt808 gateway listening on %s:%d (%d codes in %s, up to %d open files), "
        "publishing to %s:%d as %r",
        host,
        port,
        len(store),
        args.state_file,
        resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        sink.address.host,
        sink.address.port,
        client_id,
    )
    await stop.wait()
    _log.info(
        "stopping: %d connections, %d publishes pending", len(gateway.connections), sink.pending
    )
    if http_server is not None:
        http_server.close()
    await gateway.stop(args.drain_s)
    await sink.close()
    await store.close()
    _log.info("%s", gateway.summary())
    return 0


def render_metrics(gateway: Gateway, sink: MqttSink, histogram: Histogram) -> str:
    """The Prometheus text exposition of the gateway's counters."""
    c = gateway.counters
    p = "pledgewatch_jt808_"

    def lines() -> list[str]:
        out = gauge_lines(p + "connections", "terminal connections open", c.connections_open)
        out += gauge_lines(p + "connections_paused", "not read from (back-pressure)", c.paused)
        out += gauge_lines(p + "publishes_pending", "publishes awaiting PUBACK", sink.pending)
        out += gauge_lines(p + "mqtt_connected", "1 when the broker is connected", sink.connected)
        out += _counter(p + "connections_opened_total", "connections accepted", c.connections_total)
        out += _counter(
            p + "connections_idle_closed_total",
            "connections closed after --idle-timeout-s without a valid frame",
            c.connections_idle_closed,
        )
        out += counter_lines(p + "frames_total", "checked frames by message id", "msg_id", c.frames)
        out += counter_lines(
            p + "readings_published_total", "readings acked by the broker", "stream", c.published
        )
        out += _counter(
            p + "reports_acked_total",
            "0x0200/0x0704 answered result 0 after the broker acked their readings",
            c.acked,
        )
        out += counter_lines(
            p + "rejected_total", "frames, messages and readings refused", "reason", c.rejects
        )
        out += _counter(p + "registrations_total", "0x0100 answered 0x8100", c.registrations)
        out += _counter(p + "authentications_total", "0x0102 accepted", c.authentications)
        out += _counter(p + "mqtt_reconnects_total", "broker reconnections", sink.reconnects)
        out += _counter(
            p + "backpressure_pauses_total",
            "times reading stopped because --max-pending publishes awaited their PUBACK",
            c.pressure_pauses,
        )
        out += histogram.render(
            p + "publish_seconds", "from a report's arrival to the PUBACK of its last reading"
        )
        return out

    return render([lines])


def _counter(name: str, help_: str, value: int) -> list[str]:
    return [f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name} {value}"]


async def _serve_metrics(
    address: HttpAddress, gateway: Gateway, sink: MqttSink, histogram: Histogram
) -> asyncio.Server:
    """GET /metrics and /healthz over a minimal HTTP/1.0 responder on the gateway's loop."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        method, _, rest = head.decode("latin-1").partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        if method != "GET":
            status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
        elif path == "/metrics":
            status, ctype = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
            body = render_metrics(gateway, sink, histogram).encode()
        elif path == "/healthz":
            status, ctype = "200 OK", "application/json"
            doc = {
                "mqtt_connected": sink.connected,
                "connections": gateway.counters.connections_open,
                "publishes_pending": sink.pending,
            }
            body = orjson.dumps(doc)
        else:
            status, ctype, body = "404 Not Found", "text/plain", b"try /metrics or /healthz\n"
        writer.write(
            f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    return await asyncio.start_server(
        handle, address.host, address.port, limit=_REQUEST_LIMIT, reuse_address=True
    )
