"""Webhook secrets at rest: AES-256-GCM, and where the key comes from.

A sealed secret is `pwenc1:` and base64 of (12-byte nonce | ciphertext and tag), with the
webhook's id as associated data: a sealed value copied into another webhook's row does not
open. A stored value without the prefix is a legacy plaintext secret (schema version 3
seals those).

The key (32 bytes) comes from `--secret-key-file PATH` / `PLEDGEWATCH_SECRET_KEY_FILE` (the
file holds base64 of the key), or from `PLEDGEWATCH_SECRET_KEY` (base64) in the environment;
with neither, a key file is made once: `<database>.key` beside a SQLite file, or
`pledgewatch-secret.key` in the working directory for PostgreSQL, which every engine and
dispatcher on that database then needs a copy of.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.store.port import StoreConfigError

PREFIX = "pwenc1:"
KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ENV = "PLEDGEWATCH_SECRET_KEY"
KEY_FILE_ENV = "PLEDGEWATCH_SECRET_KEY_FILE"
POSTGRES_KEY_FILE = "pledgewatch-secret.key"

_log = logging.getLogger(__name__)


class SecretKeyError(StoreConfigError):
    """The secret key is missing, unreadable or not base64 of 32 bytes (a start-up error)."""


class SecretBoxError(ValueError):
    """A stored secret that this key cannot open (another key sealed it, or it was altered)."""


class UnreadableSecret(str):  # noqa: SLOT000  # a str subclass with one slot-free attribute
    """A webhook secret the store could not open: signing with it raises `SecretBoxError`
    with the reason, so that webhook's deliveries fail saying why and every other one goes
    on."""

    reason: str

    def __new__(cls, reason: str) -> Self:
        """An empty secret that remembers why it is empty."""
        secret = super().__new__(cls, "")
        secret.reason = reason
        return secret

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        """Refuse: there is no secret to sign with."""
        del encoding, errors
        raise SecretBoxError(self.reason)


def unreadable_reason(secret: str) -> str | None:
    """Why a webhook's secret could not be opened; None when it was."""
    return secret.reason if isinstance(secret, UnreadableSecret) else None


class SecretBox:
    """Seals and opens webhook secrets with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        """A box on `key` (32 bytes)."""
        if len(key) != KEY_BYTES:
            msg = f"the secret key must be {KEY_BYTES} bytes, got {len(key)}"
            raise SecretKeyError(msg)
        self._aead = AESGCM(key)

    def seal(self, text: str, hook_id: str) -> str:
        """`text` encrypted, bound to the webhook `hook_id`."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, text.encode(), hook_id.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, text: str, hook_id: str) -> str:
        """The secret in a stored value of webhook `hook_id`; a legacy plaintext value as is.

        `SecretBoxError` names the webhook when this key cannot open it."""
        if not is_sealed(text):
            return text
        try:
            raw = base64.b64decode(text[len(PREFIX) :], validate=True)
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], hook_id.encode())
            return plain.decode()
        except (binascii.Error, InvalidTag, ValueError) as exc:
            why = type(exc).__name__ if isinstance(exc, InvalidTag) else str(exc)
            msg = (
                f"webhook {hook_id!r}: its stored secret does not open with this secret key "
                f"({why}): start every engine and dispatcher on this database with the key "
                "that sealed it (--secret-key-file or PLEDGEWATCH_SECRET_KEY), or register "
                "the webhook again with its secret"
            )
            raise SecretBoxError(msg) from None


def is_sealed(text: str) -> bool:
    """Whether a stored secret is sealed (else it is legacy plaintext)."""
    return text.startswith(PREFIX)


def parse_key(text: str, where: str) -> bytes:
    """The key in base64 `text` (from `where`, named in the error)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        msg = (
            f"{where}: the secret key must be base64 of {KEY_BYTES} bytes; "
            "make one with `head -c 32 /dev/urandom | base64`"
        )
        raise SecretKeyError(msg)
    return key


def read_key_file(path: Path) -> bytes:
    """The key in a key file; `SecretKeyError` if it is missing or malformed."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not base64 text"
        msg = f"cannot read the secret key file {path}: {why}"
        raise SecretKeyError(msg) from None
    if path.stat().st_mode & 0o077:
        _log.warning("secret key file %s is readable by others: chmod 600 it", path)
    return parse_key(text, f"secret key file {path}")


def create_key_file(path: Path) -> bool:
    """Make a key file with a random key (mode 0600) unless one exists; whether it made it.

    The key is written to a private temporary file and linked into place, so a process that
    races to make the same file reads a whole key, never a half-written one."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def key_path(database: Path) -> Path:
    """The default secret key file of a SQLite database file: `<database>.key`."""
    return database.with_name(database.name + ".key")


def load_secret_box(
    default_file: Path | None,
    key_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> SecretBox:
    """The box of the configured key: `key_file` (else `PLEDGEWATCH_SECRET_KEY_FILE`), else
    `PLEDGEWATCH_SECRET_KEY`, else `default_file` (made once if missing; None: PostgreSQL's
    `pledgewatch-secret.key` in the working directory, with a warning)."""
    env = os.environ if environ is None else environ
    key_file = key_file or env.get(KEY_FILE_ENV) or None
    key_text = env.get(KEY_ENV) or None
    if key_file is not None and key_text is not None:
        msg = (
            f"both a secret key file ({key_file}) and {KEY_ENV} are set: give one, "
            "so that it is clear which key seals the webhook secrets"
        )
        raise SecretKeyError(msg)
    if key_file is not None:
        return SecretBox(read_key_file(Path(key_file)))
    if key_text is not None:
        return SecretBox(parse_key(key_text, KEY_ENV))
    path = default_file or Path.cwd() / POSTGRES_KEY_FILE
    try:
        created = create_key_file(path)
    except OSError as exc:
        msg = f"cannot create the secret key file {path}: {exc.strerror}"
        raise SecretKeyError(msg) from None
    if default_file is None:
        _log.warning(
            "webhook secrets are sealed with the key in %s (%s): every engine and dispatcher "
            "on this database needs this same key; pass it with --secret-key-file or %s",
            path.resolve(),
            "just created" if created else "found in the working directory",
            KEY_FILE_ENV,
        )
    elif created:
        _log.info("created the secret key file %s for webhook secrets", path)
    return SecretBox(read_key_file(path))
