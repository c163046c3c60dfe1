"""Mosquitto credentials and ACL for the trackers of a loan book (`pledgewatch broker-acl`).

Pure: device ids and the passwords already handed out go in; the texts of Mosquitto's
`password_file` and `acl_file` and the credentials to provision come out. Randomness (new
passwords, salts) is passed in, so a test can fix it.

Choices, for `deploy/mosquitto-secure.conf` (which sets `use_username_as_clientid true`):

- One credential per device. Its username is the device_id, with each `:` written as `/`:
  Mosquitto's password file cannot hold a `:` in a username, `/` is not a device_id
  character, so no two devices and no device and the engine can share a username, and
  with `use_username_as_clientid` no client can take over another's session.
- A device may publish only readings of its own device_id: `telematics/{device_id}/#`, and
  for a device_id `user:device` the OwnTracks topics that map to it (DESIGN §2),
  `owntracks/user/device/#` (the OwnTracks app also publishes events under its topic). It
  may read nothing: an anonymous or device client on `#` sees no car.
- The engine's credential reads `telematics/#`, `owntracks/#` and `traccar/#` (Traccar's MQTT
  forwarding, `devices.inputs`) and publishes nothing. A Traccar server that forwards over
  MQTT needs its own login with `topic write traccar/#`, added by hand.
- Passwords already handed out are kept (re-provisioning a fleet of trackers is expensive);
  a device that left the loan book loses its credential; new devices get a random password.
- The password file holds PBKDF2-SHA512 hashes in Mosquitto 2.0's `$7$` format, the one
  `mosquitto_passwd` writes (101 iterations, its default: the passwords are random 192-bit
  tokens, so stretching adds nothing, while every connect pays for it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import orjson

from devices.topics import DEVICE_ID_RE, NATIVE_PREFIX, OWNTRACKS_PREFIX, TRACCAR_PREFIX

ENGINE_USERNAME = "pledgewatch-engine"
"""The engine's MQTT username unless told otherwise (with the secure config, its client id)."""

PBKDF2_ITERATIONS = 101
SALT_BYTES = 12  # what mosquitto_passwd uses
PASSWORD_BYTES = 24  # 192 random bits, 32 URL-safe characters: no escaping in an mqtt:// URL


class BrokerAclError(ValueError):
    """Device ids or a credentials file that cannot be turned into broker files."""


@dataclass(frozen=True, slots=True)
class Credential:
    """One MQTT login: who, its password, and the topics it may publish to or read."""

    username: str
    password: str
    publish: tuple[str, ...]
    read: tuple[str, ...] = ()
    device_id: str | None = None  # None for the engine


@dataclass(frozen=True, slots=True)
class BrokerAuth:
    """The generated files: Mosquitto's password and ACL files, and the credentials."""

    credentials: tuple[Credential, ...]  # the engine first, then devices by device_id
    passwd: str
    acl: str
    new: tuple[str, ...]  # usernames that got a new password
    revoked: tuple[str, ...]  # usernames in the old credentials that are gone

    def credentials_json(self) -> bytes:
        """The credentials to provision trackers and the engine with (keep it secret)."""
        doc = [
            {
                "username": c.username,
                "password": c.password,
                "role": "device" if c.device_id is not None else "engine",
                "device_id": c.device_id,
                "publish": list(c.publish),
                "read": list(c.read),
            }
            for c in self.credentials
        ]
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def new_password() -> str:
    """A random password, safe to put in an `mqtt://user:password@host` URL as it is."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def device_username(device_id: str) -> str:
    """The MQTT username of a device: its device_id with each `:` written as `/`."""
    if DEVICE_ID_RE.fullmatch(device_id) is None:
        msg = f"device_id {device_id!r} does not match {DEVICE_ID_RE.pattern}"
        raise BrokerAclError(msg)
    return device_id.replace(":", "/")


def device_topics(device_id: str) -> tuple[str, ...]:
    """The topic filters a device may publish to: those whose readings map to its id."""
    topics = [f"{NATIVE_PREFIX}/{device_id}/#"]
    for i, char in enumerate(device_id):
        user, device = device_id[:i], device_id[i + 1 :]
        if char == ":" and user and device:
            topics.append(f"{OWNTRACKS_PREFIX}/{user}/{device}/#")
    return tuple(topics)


def hash_password(password: str, salt: bytes, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A password file hash in Mosquitto 2.0's `$7$` (PBKDF2-HMAC-SHA512) format."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def parse_credentials(data: bytes) -> dict[str, str]:
    """Username to password from an earlier `credentials_json`; raises BrokerAclError."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        msg = f"not JSON ({exc})"
        raise BrokerAclError(msg) from exc
    if not isinstance(doc, list):
        msg = "expected a JSON array of credentials"
        raise BrokerAclError(msg)
    known: dict[str, str] = {}
    for i, item in enumerate(doc):
        user = item.get("username") if isinstance(item, dict) else None
        password = item.get("password") if isinstance(item, dict) else None
        if not isinstance(user, str) or not isinstance(password, str) or not password:
            msg = f"credential {i} needs a string username and a non-empty password"
            raise BrokerAclError(msg)
        known[user] = password
    return known


def build_broker_auth(
    device_ids: Iterable[str],
    known: Mapping[str, str],
    engine_username: str = ENGINE_USERNAME,
    password: Callable[[], str] = new_password,
    salt: Callable[[int], bytes] = os.urandom,
    source: str = "",
) -> BrokerAuth:
    """Credentials, password file and ACL for these devices and the engine.

    `known` maps usernames to the passwords handed out before: they are kept. `source` names
    where the device ids came from, for the files' header.
    """
    if not engine_username or ":" in engine_username or engine_username != engine_username.strip():
        msg = f"engine username {engine_username!r} must be non-empty, without ':' or spaces"
        raise BrokerAclError(msg)
    owners: dict[str, str] = {}
    for device_id in sorted(set(device_ids)):
        owners.setdefault(device_username(device_id), device_id)
    if engine_username in owners:
        msg = (
            f"device {owners[engine_username]!r} would log in as the engine's username "
            f"{engine_username!r}; pick another with --engine-user"
        )
        raise BrokerAclError(msg)
    new: list[str] = []

    def credential(username: str, publish: tuple[str, ...], read: tuple[str, ...]) -> Credential:
        given = known.get(username)
        if given is None:
            new.append(username)
        device_id = owners.get(username)
        return Credential(username, given or password(), publish, read, device_id)

    reads = (f"{NATIVE_PREFIX}/#", f"{OWNTRACKS_PREFIX}/#", f"{TRACCAR_PREFIX}#")
    engine = credential(engine_username, (), reads)
    devices = [credential(user, device_topics(did), ()) for user, did in owners.items()]
    creds = (engine, *sorted(devices, key=lambda c: c.device_id or ""))
    names = {c.username for c in creds}
    header = _header(source, len(devices))
    passwd = header + "".join(
        f"{c.username}:{hash_password(c.password, salt(SALT_BYTES))}\n" for c in creds
    )
    return BrokerAuth(
        credentials=creds,
        passwd=passwd,
        acl=header + "".join(_acl_block(c) for c in creds),
        new=tuple(new),
        revoked=tuple(sorted(set(known) - names)),
    )


def _header(source: str, devices: int) -> str:
    where = f" from {source}" if source else ""
    return (
        f"# Generated by `pledgewatch broker-acl`{where}: the engine and {devices} devices.\n"
        "# Do not edit: run the command again (it keeps the passwords already handed out).\n"
    )


def _acl_block(c: Credential) -> str:
    what = f"device {c.device_id}" if c.device_id is not None else "the engine: reads every car"
    lines = [f"\n# {what}", f"user {c.username}"]
    lines += [f"topic write {t}" for t in c.publish]
    lines += [f"topic read {t}" for t in c.read]
    return "\n".join(lines) + "\n"
