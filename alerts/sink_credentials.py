"""Logins of the broker sinks (`mqtt(s)://`, `kafka(s)://`), from a file the operator keeps.

Passwords never go into the store, the API or a sink's URL (URLs with `user:password@` stay
refused): the engine reads them at start from a JSON file named by `--sink-credentials` or
`PLEDGEWATCH_SINK_CREDENTIALS`, keyed by the broker a sink URL names, without its topic:

    {"mqtts://broker.lender.example:8883": {"username": "pw-alerts", "password": "..."},
     "kafka://kafka-1.lender.example:9092":
         {"username": "pw", "password": "...", "sasl_mechanism": "SCRAM-SHA-512"}}

Every sink on that scheme, host and port logs in with that login; a sink whose broker has
no entry connects anonymously, as before. `sasl_mechanism` (Kafka only) is PLAIN (the
default), SCRAM-SHA-256 or SCRAM-SHA-512, the mechanisms aiokafka speaks with a password.

The file is read and checked once, at start: a file group or others may read or write
(mode & 0o077) is refused as ssh refuses such a key, and so is anything malformed, with the
file's path and what is wrong. No message here carries a password, and a `SinkLogin`'s
repr leaves it out.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

from alerts.address_policy import DEFAULT_PORTS

MQTT_BROKER_SCHEMES = ("mqtt", "mqtts")
KAFKA_BROKER_SCHEMES = ("kafka", "kafkas")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
"""The SASL mechanisms a Kafka sink logs in with (aiokafka's, less GSSAPI and OAUTHBEARER,
which take no password)."""
DEFAULT_SASL_MECHANISM = "PLAIN"  # aiokafka's default
ENV_VAR = "PLEDGEWATCH_SINK_CREDENTIALS"
_FIELDS = {
    "mqtt": frozenset({"username", "password"}),
    "kafka": frozenset({"username", "password", "sasl_mechanism"}),
}


class SinkCredentialsError(ValueError):
    """The credentials file cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class SinkLogin:
    """How the engine logs in to one broker. `sasl_mechanism` is None for MQTT brokers."""

    username: str
    password: str = field(repr=False)  # never in a repr, a log line or an error
    sasl_mechanism: str | None = None


@dataclass(frozen=True, slots=True)
class SinkCredentials:
    """The logins by broker (`scheme://host:port`), and the file they came from."""

    logins: Mapping[str, SinkLogin] = field(default_factory=dict)
    source: str | None = None

    def login_for(self, url: str) -> SinkLogin | None:
        """The login of the broker a sink URL names; None for none (or a URL that does not
        parse: its deliveries fail on that)."""
        parts = urlsplit(url)
        try:
            port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return None
        if port is None or not parts.hostname:
            return None
        return self.logins.get(broker_key(parts.scheme, parts.hostname, port))


def broker_key(scheme: str, host: str, port: int) -> str:
    """The key of a broker in the file: `scheme://host:port`, the host in lower case (and
    an IPv6 address in brackets)."""
    host = host.lower()
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _key_problem(key: str) -> tuple[str | None, str]:
    """(the normalized key, "") for a good key; (None, why not) otherwise."""
    parts = urlsplit(key)
    schemes = MQTT_BROKER_SCHEMES + KAFKA_BROKER_SCHEMES
    example = "e.g. mqtts://broker.example:8883 or kafka://kafka-1.example:9092"
    if parts.scheme not in schemes:
        return None, f"the scheme must be one of {', '.join(schemes)} ({example})"
    if parts.username is not None or parts.password is not None:
        return None, "a key names the broker only: the login goes in the value"
    try:
        port = parts.port
    except ValueError:
        return None, "the port is not a number from 0 to 65535"
    if not parts.hostname or port is None:
        return None, f"a key is scheme://host:port with the port written out ({example})"
    if parts.path not in {"", "/"} or parts.query or parts.fragment or "#" in key:
        return None, "a key names the broker only (scheme://host:port): no topic, no ?query"
    return broker_key(parts.scheme, parts.hostname, port), ""


def _login(kind: str, entry: object) -> tuple[SinkLogin | None, str]:
    """(the login, "") for a good entry of a broker of `kind` (mqtt or kafka); (None, why)."""
    if not isinstance(entry, dict):
        return None, 'the value must be an object {"username": ..., "password": ...}'
    unknown = sorted(set(entry) - _FIELDS[kind])
    if unknown:
        known = ", ".join(sorted(_FIELDS[kind]))
        hint = " (sasl_mechanism is for kafka:// and kafkas:// brokers)" * (kind == "mqtt")
        return None, f"unknown field(s) {', '.join(map(repr, unknown))}; known: {known}{hint}"
    for name in ("username", "password"):
        value = entry.get(name)
        if not isinstance(value, str) or not value:
            return None, f"{name} is missing or not a non-empty string"
        if "\x00" in value:
            return None, f"{name} holds a NUL character"
    mechanism: str | None = None
    if kind == "kafka":
        mechanism = entry.get("sasl_mechanism", DEFAULT_SASL_MECHANISM)
        if mechanism not in SASL_MECHANISMS:
            shown = repr(mechanism)[:40]
            return None, f"sasl_mechanism {shown} is not one of {', '.join(SASL_MECHANISMS)}"
    return SinkLogin(entry["username"], entry["password"], mechanism), ""


def parse_sink_credentials(data: bytes, source: str) -> SinkCredentials:
    """The logins of a credentials file's bytes; SinkCredentialsError names `source` and
    what is wrong (a key, a field), never a password."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        msg = f"{source}: not valid JSON ({exc})"
        raise SinkCredentialsError(msg) from None
    if not isinstance(doc, dict):
        msg = f"{source}: must be a JSON object of broker (scheme://host:port) to login"
        raise SinkCredentialsError(msg)
    logins: dict[str, SinkLogin] = {}
    for raw, entry in doc.items():
        shown = repr(raw[:120])
        key, why = _key_problem(raw)
        if key is None:
            msg = f"{source}: key {shown}: {why}"
            raise SinkCredentialsError(msg)
        if key in logins:
            msg = f"{source}: key {shown}: the broker {key} has another entry already"
            raise SinkCredentialsError(msg)
        kind = "mqtt" if key.split(":", 1)[0] in MQTT_BROKER_SCHEMES else "kafka"
        login, why = _login(kind, entry)
        if login is None:
            msg = f"{source}: key {shown}: {why}"
            raise SinkCredentialsError(msg)
        logins[key] = login
    return SinkCredentials(logins, source)


def load_sink_credentials(path: str) -> SinkCredentials:
    """The logins of the file at `path`, which only its owner may read or write;
    SinkCredentialsError names the file and what is wrong (with `chmod 600` for a file
    others may read)."""
    try:
        with open(path, "rb") as file:  # noqa: PTH123  # fstat of the very file read
            mode = os.fstat(file.fileno()).st_mode
            if not stat.S_ISREG(mode):
                msg = f"sink credentials {path}: not a regular file"
                raise SinkCredentialsError(msg)
            if mode & 0o077:
                msg = (
                    f"sink credentials {path}: group or others may access it (mode "
                    f"{stat.S_IMODE(mode):04o}) and it holds passwords; run: chmod 600 {path}"
                )
                raise SinkCredentialsError(msg)
            data = file.read()
    except OSError as exc:
        msg = f"cannot read sink credentials {path}: {exc.strerror}"
        raise SinkCredentialsError(msg) from None
    return parse_sink_credentials(data, f"sink credentials {path}")
