"""The flags `run` and `worker` share (store, API, webhooks, rules), and their parsers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from alerts.address_policy import AddressPolicy, parse_allow
from alerts.retry import RetryPolicy
from alerts.sink_credentials import (
    SinkCredentials,
    SinkCredentialsError,
    load_sink_credentials,
)
from engine.api.console_config import (
    DEFAULT_ALERT_BUFFER,
    DEFAULT_MAX_STREAMS,
    ConsoleConfig,
    ConsoleConfigError,
    TileCoordSys,
    parse_attribution,
    parse_tile_url,
)
from engine.cli.http_address import HttpAddress, parse_http
from engine.cli.lending_options import lending_options, load_lending
from engine.cli.options import CliError
from engine.cli.options import flag as _flag
from engine.cli.options import option as _option
from engine.core.config import Config, ConfigError, parse_config
from engine.runtime.live_hub import ALERT_LOG

if TYPE_CHECKING:
    from engine.cli.service import ServiceSettings


def http_address(value: str) -> HttpAddress:
    """argparse type of `--http`: a bad value is a usage error naming what is wrong."""
    try:
        return parse_http(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def webhook_allow(value: str) -> AddressPolicy:
    """argparse type of `--webhook-allow`: CIDR blocks, or a usage error naming the bad one."""
    try:
        return AddressPolicy(parse_allow(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _console_type(parse: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse type of a console flag: a bad value is a usage error saying why."""

    def checked(value: str) -> str:
        try:
            return parse(value)
        except ConsoleConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return checked


def _bounded(name: str, low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        text = value.strip()
        if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
            msg = f"{name} must be an integer from {low} to {high}, got {value!r}"
            raise argparse.ArgumentTypeError(msg)
        return int(text)

    return parse


def console_options(parser: argparse.ArgumentParser) -> None:
    """The console's flags (`run`, a `worker` with `--http`, `demo`): its base map and its
    live feeds."""
    _option(
        parser,
        "--console-tile-url",
        type=_console_type(parse_tile_url),
        help="XYZ tile URL template of the console's base map, http(s) with {z}, {x} and {y} "
        "(e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png); default: the bundled offline "
        "map, and no request leaves the engine's origin",
    )
    _option(
        parser,
        "--console-tile-coord-sys",
        choices=[c.value for c in TileCoordSys],
        default=TileCoordSys.WGS84.value,
        help="the tiles' datum: wgs84 (OpenStreetMap) or gcj02 (AMap and other Chinese maps)",
    )
    _option(
        parser,
        "--console-tile-attribution",
        type=_console_type(parse_attribution),
        help="the tile provider's attribution, shown on the map (e.g. '© OpenStreetMap')",
    )
    _option(
        parser,
        "--console-max-streams",
        type=_bounded("--console-max-streams", 1, 10_000),
        default=str(DEFAULT_MAX_STREAMS),
        help=f"live feeds (GET /v1/live) open at once; one more is a 503 (default "
        f"{DEFAULT_MAX_STREAMS})",
    )
    _option(
        parser,
        "--console-alert-buffer",
        type=_bounded("--console-alert-buffer", 1, ALERT_LOG),
        default=str(DEFAULT_ALERT_BUFFER),
        help=f"alerts a live feed may have unsent (its console not reading) before it is ended "
        f"as too slow (default {DEFAULT_ALERT_BUFFER})",
    )


def console_config(args: argparse.Namespace) -> ConsoleConfig:
    """The console's settings from the flags of `console_options`."""
    return ConsoleConfig(
        tile_url=args.console_tile_url,
        tile_coord_sys=TileCoordSys(args.console_tile_coord_sys),
        tile_attribution=args.console_tile_attribution,
        max_streams=args.console_max_streams,
        alert_buffer=args.console_alert_buffer,
    )


def load_config(path: str | None) -> Config:
    """Rules from a JSON file of `Config` field names (see README), or the defaults."""
    if not path:
        return Config()
    try:
        return parse_config(read_json(path))
    except ConfigError as exc:
        raise CliError(f"{path}: {exc}") from exc


def read_json(path: str) -> object:
    try:
        return orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{path}: not valid JSON ({exc})") from exc


def load_sink_logins(path: str | None) -> SinkCredentials | None:
    """The broker sinks' logins from `--sink-credentials` (`PLEDGEWATCH_SINK_CREDENTIALS`),
    read and checked once at start; None without the flag."""
    if not path:
        return None
    try:
        return load_sink_credentials(path)
    except SinkCredentialsError as exc:
        raise CliError(str(exc)) from exc


def mqtt_options(parser: argparse.ArgumentParser) -> None:
    """The MQTT flags of `run`."""
    _option(parser, "--mqtt-url", default="mqtt://127.0.0.1:1883", help="the MQTT broker")
    _option(
        parser,
        "--client-id",
        help="MQTT client id, which names the persistent session (default: pledgewatch- and a "
        "hash of --db-url: stable across restarts, different per database)",
    )
    _flag(
        parser,
        "--mqtt-thread",
        "run the MQTT client on a thread of the engine's process, not in a child process "
        "(the child keeps MQTT parsing off the engine's GIL; a thread suits one core)",
    )


def api_options(
    parser: argparse.ArgumentParser, http_default: str | None = "127.0.0.1:8080"
) -> None:
    """The store, API, webhook and rule flags of `run` (and of `worker`, whose API is
    optional: `http_default` None)."""
    _option(
        parser,
        "--db-url",
        default="sqlite:///pledgewatch.db",
        help="sqlite:///PATH (default) or postgresql://...",
    )
    _option(
        parser,
        "--secret-key-file",
        help="file holding the key (base64 of 32 bytes) that seals webhook secrets at rest "
        "(default: PLEDGEWATCH_SECRET_KEY, else DB.key beside a SQLite file, or "
        "pledgewatch-secret.key in the working directory for PostgreSQL, made if missing)",
    )
    _option(
        parser,
        "--http",
        type=http_address,
        default=http_default,
        help="HOST:PORT the API listens on (:PORT for loopback, [::1]:PORT for IPv6)",
    )
    _option(parser, "--api-token", help="bearer token the API requires")
    _option(parser, "--config", help="JSON object of rule settings overriding the defaults")
    lending_options(parser)
    _option(parser, "--webhook-timeout-s", type=float, default=5.0, help="per POST")
    _option(
        parser,
        "--webhook-retry-base-s",
        type=float,
        default=1.0,
        help="first retry delay; doubles per attempt, with jitter, up to 300 s",
    )
    _option(
        parser,
        "--webhook-max-age-s",
        type=float,
        default=86400.0,
        help="give up (dead-letter) a delivery this long after its alert",
    )
    _option(
        parser,
        "--webhook-allow",
        type=webhook_allow,
        help="comma-separated CIDRs webhook URLs may resolve to (default: any address but "
        "loopback, link-local and unspecified)",
    )
    _option(
        parser,
        "--sink-credentials",
        metavar="FILE",
        help="JSON file of the logins of MQTT and Kafka sink brokers, keyed by "
        "scheme://host:port (mode 600; see README); default: sinks connect anonymously",
    )
    _option(
        parser,
        "--ready-stall-s",
        type=float,
        default=30.0,
        help="GET /readyz answers 503 once input has waited this long for its commit",
    )
    console_options(parser)
    _flag(parser, "--insecure-dev", "serve the API without a token (local trials only)")


def service_settings(args: argparse.Namespace) -> ServiceSettings:
    """What `run` (and a `worker` with `--http`) serves, from the flags of `api_options`
    (and `mqtt_options`, where the command has them)."""
    from engine.cli.service import ServiceSettings  # noqa: PLC0415  # heavy: FastAPI, uvicorn
    from engine.runtime.live import EngineSettings  # noqa: PLC0415

    if not args.api_token and not args.insecure_dev:
        raise CliError(
            "refusing to start without an API token: pass --api-token or set "
            "PLEDGEWATCH_API_TOKEN (or --insecure-dev for a trial on this machine)"
        )
    address: HttpAddress = args.http
    return ServiceSettings(
        mqtt_url=getattr(args, "mqtt_url", "mqtt://127.0.0.1:1883"),
        db_url=args.db_url,
        secret_key_file=args.secret_key_file,
        http_host=address.host,
        http_port=address.port,
        api_token=args.api_token or None,
        client_id=getattr(args, "client_id", None),
        mqtt_child=not getattr(args, "mqtt_thread", False),
        config=load_config(args.config),
        lending=load_lending(args),
        webhook_addresses=args.webhook_allow or AddressPolicy(),
        sink_credentials=load_sink_logins(args.sink_credentials),
        engine=EngineSettings(stall_s=args.ready_stall_s),
        console=console_config(args),
        retry=RetryPolicy(
            base_s=args.webhook_retry_base_s,
            max_age_s=args.webhook_max_age_s,
            timeout_s=args.webhook_timeout_s,
        ),
    )
