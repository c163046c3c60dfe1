"""The flags `run` and `worker` share (store, API, webhooks, rules), and their parsers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from alerts.address_policy import AddressPolicy, parse_allow
from alerts.retry import RetryPolicy
from engine.cli.http_address import HttpAddress, parse_http
from engine.cli.lending_options import lending_options, load_lending
from engine.cli.options import CliError
from engine.cli.options import flag as _flag
from engine.cli.options import option as _option
from engine.core.config import Config, ConfigError, parse_config

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
        "--ready-stall-s",
        type=float,
        default=30.0,
        help="GET /readyz answers 503 once input has waited this long for its commit",
    )
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
        engine=EngineSettings(stall_s=args.ready_stall_s),
        retry=RetryPolicy(
            base_s=args.webhook_retry_base_s,
            max_age_s=args.webhook_max_age_s,
            timeout_s=args.webhook_timeout_s,
        ),
    )
