"""Reassembly of sub-packaged JT/T 808 messages (body properties bit 13), in bounded memory.

The packages of one message carry consecutive serial numbers and indexes 1..total, so
they are grouped by (terminal number, message id, serial of package 1) where the first
serial is `serial - (index - 1)` modulo 2**16. When a group is complete the bodies are
joined in index order into one `Frame` with the first package's serial and no package item.

Memory is bounded three ways: packages per message, bytes per message, and pending groups
and bytes overall; when a new package would pass the overall bounds the least recently
touched group is dropped and counted in `evicted`. There is no clock here: a gateway calls
`drop(phone)` when a terminal disconnects, and the bounds do the rest.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from devices.jt808.header import Frame, Header

DEFAULT_MAX_PACKAGES: Final = 256
DEFAULT_MAX_MESSAGE_BYTES: Final = 256 * 1024
DEFAULT_MAX_GROUPS: Final = 64
DEFAULT_MAX_PENDING_BYTES: Final = 1024 * 1024

_SERIAL_MOD: Final = 1 << 16

GroupKey = tuple[str, int, int]
"""(terminal number, message id, serial of package 1)."""


@dataclass(frozen=True, slots=True)
class ReassemblyError:
    """A package that cannot join a message; the group it named is dropped."""

    detail: str


@dataclass(slots=True)
class _Group:
    total: int
    first: Header
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Collect packages until their message is whole; bounded, deterministic, no clock."""

    __slots__ = (
        "_groups",
        "_max_groups",
        "_max_message_bytes",
        "_max_packages",
        "_max_pending_bytes",
        "_pending_bytes",
        "evicted",
    )

    def __init__(
        self,
        *,
        max_packages: int = DEFAULT_MAX_PACKAGES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_groups: int = DEFAULT_MAX_GROUPS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        if min(max_packages, max_message_bytes, max_groups, max_pending_bytes) < 1:
            msg = "reassembly bounds must all be at least 1"
            raise ValueError(msg)
        self._max_packages = max_packages
        self._max_message_bytes = max_message_bytes
        self._max_groups = max_groups
        self._max_pending_bytes = max_pending_bytes
        self._groups: OrderedDict[GroupKey, _Group] = OrderedDict()
        self._pending_bytes = 0
        self.evicted = 0  # groups dropped to make room, never completed

    @property
    def pending_groups(self) -> int:
        """Messages with some but not all of their packages."""
        return len(self._groups)

    @property
    def pending_bytes(self) -> int:
        """Body bytes held for incomplete messages."""
        return self._pending_bytes

    def add(self, frame: Frame) -> Frame | ReassemblyError | None:
        """Take one frame: a whole message comes back as is, a completed one joined, else None."""
        header = frame.header
        package = header.package
        if package is None:
            return frame
        if package.total > self._max_packages:
            return ReassemblyError(
                f"message 0x{header.msg_id:04x} in {package.total} packages, "
                f"over the limit of {self._max_packages}"
            )
        first_serial = (header.serial - (package.index - 1)) % _SERIAL_MOD
        key = (header.phone, header.msg_id, first_serial)
        group = self._groups.get(key)
        if group is not None and group.total != package.total:
            self._forget(key)
            return ReassemblyError(
                f"package {package.index} says {package.total} packages, "
                f"earlier ones said {group.total}; message dropped"
            )
        if group is None:
            group = _Group(package.total, header)
            self._groups[key] = group
        else:
            self._groups.move_to_end(key)
        old = group.parts.get(package.index)
        grow = len(frame.body) - (len(old) if old is not None else 0)
        if group.size + grow > self._max_message_bytes:
            self._forget(key)
            return ReassemblyError(
                f"message 0x{header.msg_id:04x} passes {self._max_message_bytes} bytes "
                "in its packages; message dropped"
            )
        if package.index == 1:
            group.first = header
        group.parts[package.index] = frame.body
        group.size += grow
        self._pending_bytes += grow
        if len(group.parts) == group.total:
            self._forget(key)
            body = b"".join(group.parts[i] for i in range(1, group.total + 1))
            first = group.first
            whole = Header(first.msg_id, first.phone, first_serial, first.version, first.encryption)
            return Frame(whole, body)
        self._make_room(keep=key)
        return None

    def drop(self, phone: str) -> int:
        """Forget every incomplete message of one terminal; return how many were dropped."""
        keys = [key for key in self._groups if key[0] == phone]
        for key in keys:
            self._forget(key)
        return len(keys)

    def _forget(self, key: GroupKey) -> None:
        group = self._groups.pop(key)
        self._pending_bytes -= group.size

    def _make_room(self, keep: GroupKey) -> None:
        """Drop the least recently touched groups until within bounds, `keep` (newest) last."""
        while len(self._groups) > self._max_groups or self._pending_bytes > self._max_pending_bytes:
            oldest = next(iter(self._groups))
            self._forget(oldest)
            self.evicted += 1
            if oldest == keep:
                return
