"""The floor of `bench_jt808`: a bare asyncio TCP server answering the same JT/T 808 frames.

It does what any JT/T 808 server must and nothing more: split the stream into frames with
`FrameReader` (escapes and checksum), read the message id, number and serial from the
header, and answer: 0x8100 with a fixed code for a 0x0100, 0x8001 result 0 for anything
else. No decoding, no mapping, no auth store, no MQTT: the gap between this and the
gateway is what those cost.

`python -m benchmarks.jt808_floor --listen HOST:PORT` serves until SIGTERM; it prints
`ready` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct
import sys
from collections.abc import Sequence
from typing import Final

from devices.jt808.frame import FrameReader, seal
from engine.cli.gateway import raise_fd_limit

_WORD: Final = struct.Struct(">H")
_CODE: Final = b"0123456789abcdef"


class _Floor(asyncio.Protocol):
    __slots__ = ("reader", "serial", "transport")

    def __init__(self) -> None:
        self.reader = FrameReader()
        self.serial = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        out = []
        for content in self.reader.feed(data):
            if not isinstance(content, bytes):
                continue
            v2019 = content[2] & 0x40
            head = 17 if v2019 else 12
            if len(content) < head:
                continue
            ident = content[4 : head - 2] if v2019 else content[4:10]  # version+phone / phone
            props_v = b"\x40" if v2019 else b"\x00"
            request_serial = content[head - 2 : head]
            if content[0:2] == b"\x01\x00":
                msg_id, body = b"\x81\x00", request_serial + b"\x00" + _CODE
            else:
                msg_id, body = b"\x80\x01", request_serial + content[0:2] + b"\x00"
            header = msg_id + props_v + bytes((len(body),)) + ident + _WORD.pack(self.serial)
            self.serial = (self.serial + 1) & 0xFFFF
            out.append(seal(header + body))
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Floor, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="jt808_floor", description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    raise_fd_limit()
    asyncio.run(_serve(host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
