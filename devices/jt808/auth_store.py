"""Durable JT/T 808 auth codes: one per device_id, kept in a small JSON file (DESIGN §9).

A terminal registers once (0x0100), stores the code of the 0x8100, and authenticates with
it (0x0102) on every connection from then on, for years. So a code must outlive the
gateway: it is on disk before the terminal sees it. The file maps the pledgewatch
device_id (`jt808-{number}`) to the code and the terminal id the registration carried, so
the 2013 and 2019 numbers of one SIM share them.

Registering again with the same terminal id gives the same code (a terminal that lost it,
or was upgraded to the 2019 edition, keeps working). With another terminal id it is
refused (0x8100 result 3, "terminal already registered"): the SIM number is no secret,
and a stranger who registers with it must not receive the code of the tracker in a pledged
car, then report for it. To move a SIM to a new tracker, remove its entry from the file
while the gateway is stopped.

Writes replace the whole file atomically (temp file, fsync, rename, fsync of the folder),
readable by its owner only: the codes are credentials. Registrations that arrive together
share one write (a group commit), so a fleet registering at once costs a few writes, not
one per terminal. An exclusive `flock` on `PATH.lock` keeps a second gateway off the same
file. The file is read once at start; edit it only while the gateway is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hmac
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import orjson

FORMAT: Final = "pledgewatch-jt808-auth/1"
_SHAPE: Final = (
    f'{{"format": "{FORMAT}", "terminals": {{"jt808-...": {{"code": "<code>", '
    '"terminal_id": "<id>", "registered_at": "<ISO time>"}, ...}}'
)
CODE_BYTES: Final = 8
"""Random bytes in a code: 16 hex characters."""


class AuthStoreError(Exception):
    """The state file cannot be read, written or locked; the message says which and why."""


class AuthStore:
    """Auth codes by device_id, saved to `path` before `register` returns one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd = _lock(path)
        try:
            self._terminals = _load(path)
        except AuthStoreError:
            os.close(self._lock_fd)
            raise
        self._codes = {device: entry["code"] for device, entry in self._terminals.items()}
        self._version = 0  # bumped by each change in memory
        self._saved_version = 0  # the last version on disk
        self._flush: asyncio.Task[None] | None = None
        self.writes = 0

    def __len__(self) -> int:
        return len(self._codes)

    def code(self, device_id: str) -> str | None:
        """The saved code of a device, or None when it never registered here."""
        return self._codes.get(device_id)

    def check(self, device_id: str, code: str) -> bool:
        """Whether `code` is the device's code (compared in constant time)."""
        known = self._codes.get(device_id)
        return known is not None and hmac.compare_digest(known.encode(), code.encode())

    async def register(self, device_id: str, terminal_id: str) -> str | None:
        """The device's code, made and saved if it has none; None when the device is
        registered with another terminal id (see the module's docstring). AuthStoreError
        if the save fails."""
        entry = self._terminals.get(device_id)
        if entry is not None and entry["terminal_id"] != terminal_id:
            return None
        if entry is None:
            code = secrets.token_hex(CODE_BYTES)
            stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            self._terminals[device_id] = {
                "code": code,
                "terminal_id": terminal_id,
                "registered_at": stamp,
            }
            self._codes[device_id] = code
            self._version += 1
        else:
            code = entry["code"]
        target = self._version  # a code made by an earlier caller may still be on its way
        while self._saved_version < target:
            if self._flush is None or self._flush.done():
                self._flush = asyncio.get_running_loop().create_task(self._write())
            await asyncio.shield(self._flush)
        return code

    async def close(self) -> None:
        """Wait for a write under way, then release the file's lock."""
        if self._flush is not None:
            with contextlib.suppress(AuthStoreError):
                await self._flush
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    async def _write(self) -> None:
        version = self._version
        doc = {"format": FORMAT, "terminals": dict(sorted(self._terminals.items()))}
        data = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        await asyncio.to_thread(write_atomic, self.path, data)
        self._saved_version = version
        self.writes += 1


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` (mode 0600) so a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        msg = f"cannot write the JT/T 808 auth codes to {path}: {exc.strerror}"
        raise AuthStoreError(msg) from exc


def _lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        msg = f"cannot open {lock_path}: {exc.strerror}; choose another --state-file"
        raise AuthStoreError(msg) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        msg = (
            f"{path} is in use by another JT/T 808 gateway ({lock_path} is locked); "
            "give each gateway its own --state-file"
        )
        raise AuthStoreError(msg) from exc
    return fd


def _load(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        msg = f"cannot read the JT/T 808 auth codes in {path}: {exc.strerror}"
        raise AuthStoreError(msg) from exc
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        msg = f"{path} is not JSON ({exc}); restore it from a backup, or move it away"
        raise AuthStoreError(msg) from exc
    terminals = doc.get("terminals") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != FORMAT
        or not isinstance(terminals, dict)
        or not all(_entry_ok(k, v) for k, v in terminals.items())
    ):
        msg = f"{path} is not a JT/T 808 auth file: expected {_SHAPE}"
        raise AuthStoreError(msg)
    return terminals


def _entry_ok(device_id: object, entry: object) -> bool:
    return (
        isinstance(device_id, str)
        and isinstance(entry, dict)
        and isinstance(entry.get("code"), str)
        and bool(entry["code"])
        and isinstance(entry.get("terminal_id"), str)
        and all(isinstance(v, str) for v in entry.values())
    )
