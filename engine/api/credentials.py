"""Secrets of the API as the store keeps them: random tokens by their SHA-256, passwords
by scrypt.

A token (a device's `pwd_…`, a machine's `pwt_…`, a session id) is 32 random bytes: a
hash of 256 random bits cannot be inverted or guessed, so its SHA-256 is all the store
needs, and a slow hash would add cost and nothing else (`engine.api.device_tokens` says
more). A password is chosen by a person and can be guessed: it is kept as
`scrypt$<n>$<r>$<p>$<salt>$<hash>` (base64), with a random 16-byte salt, and checked in
constant time. `SCRYPT_N` = 2**14 with r = 8 takes 16 MiB and about 50 ms per check here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from functools import cache

TOKEN_BYTES = 32
MAX_TOKEN_CHARS = 128  # a longer credential is no token of ours: not worth a hash and a read
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024
_MAXMEM = 64 * 1024 * 1024
# Each check takes 16 MiB and ~50 ms of a core: at most two at once, so a flood of logins
# (which need no credential) queues here instead of taking every core and worker thread.
_CHECKS = threading.BoundedSemaphore(2)


def new_token(prefix: str) -> str:
    """A new random token: `prefix` and 32 random bytes, urlsafe base64."""
    return prefix + secrets.token_urlsafe(TOKEN_BYTES)


def token_sha256(token: str) -> str:
    """What the store keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """The scrypt hash of a password with a new random salt, as the store keeps it."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(key).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` (from `hash_password`) was made of; False for
    a stored value of any other shape."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


@cache
def dummy_hash() -> str:
    """A hash to check against when a name has no account, so that an unknown name takes
    as long to refuse as a wrong password."""
    return hash_password(secrets.token_urlsafe(TOKEN_BYTES))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    with _CHECKS:
        return hashlib.scrypt(
            password.encode("utf-8", "surrogatepass"),
            salt=salt,
            n=n,
            r=r,
            p=p,
            maxmem=_MAXMEM,
            dklen=KEY_BYTES,
        )
