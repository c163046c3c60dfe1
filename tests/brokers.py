"""A private Mosquitto per test: started from `deploy/mosquitto.conf` on a free port.

The machine's own broker keeps its own settings (its `max_queued_messages` may be the
default 1000, which drops messages for an absent persistent subscriber); tests run a broker
with the settings we ship, and can restart it.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    """Block until something accepts connections on the port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    msg = f"nothing listens on 127.0.0.1:{port} after {timeout_s} s"
    raise TimeoutError(msg)


class Broker:
    """A Mosquitto process with the shipped configuration, persistent on disk."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            msg = "mosquitto is not installed: run `bash scripts/test.sh` (it installs it)"
            raise RuntimeError(msg)
        self.binary = binary
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.workdir = workdir
        shipped = (REPO / "deploy" / "mosquitto.conf").read_text()
        conf = shipped.replace("listener 1883 127.0.0.1", f"listener {self.port} 127.0.0.1")
        conf += f"\npersistence_location {workdir}/\nlog_dest file {workdir}/mosquitto.log\n"
        conf += f"user {getpass.getuser()}\n"  # as root it would switch to `mosquitto`
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)])
        wait_port(self.port)

    def stop(self) -> None:
        """Stop the broker (it saves its persistent sessions)."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same sessions."""
        self.stop()
        self.start()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh private broker for one test."""
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()
