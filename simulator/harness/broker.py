"""A Mosquitto of our own, from `deploy/mosquitto.conf`, on a free port, persistent on disk.

The demo starts one when no broker answers; the tests and benchmarks always use one, never
the machine's broker, whose `max_queued_messages` may be the default that drops messages.
The security tests start one from `deploy/mosquitto-secure.conf` with their own files.
"""

from __future__ import annotations

import getpass
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

SHIPPED_CONF = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto.conf"
SECURE_CONF = SHIPPED_CONF.with_name("mosquitto-secure.conf")


class BrokerUnavailable(RuntimeError):  # noqa: N818  # reads as the condition it is
    """Mosquitto is not installed or did not start; the message says what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections there."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    """Block until something accepts connections on 127.0.0.1:`port`; TimeoutError if not."""
    deadline = time.monotonic() + timeout_s
    while not answers("127.0.0.1", port, 0.2):
        if time.monotonic() > deadline:
            msg = f"nothing listens on 127.0.0.1:{port} after {timeout_s} s"
            raise TimeoutError(msg)
        time.sleep(0.05)


def mosquitto_binary() -> str:
    """The mosquitto executable; BrokerUnavailable with the install hint if there is none."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        msg = (
            "Mosquitto is not installed. Debian/Ubuntu: sudo apt-get install mosquitto; "
            "macOS: brew install mosquitto (`bash scripts/test.sh` installs it on Debian)"
        )
        raise BrokerUnavailable(msg)
    return binary


def with_settings(conf: str, settings: Mapping[str, str]) -> str:
    """The config text with the value of each named setting replaced (one line each)."""
    for key, value in settings.items():
        found = list(re.finditer(rf"^{re.escape(key)}(?: .*)?$", conf, re.MULTILINE))
        if len(found) != 1:
            msg = f"the broker config sets {key!r} {len(found)} times; expected once"
            raise ValueError(msg)
        conf = f"{conf[: found[0].start()]}{key} {value}{conf[found[0].end() :]}"
    return conf


class PrivateBroker:
    """Mosquitto with the shipped settings on a free port, its sessions kept in `workdir`.

    `conf` is the config to start from (its one `listener` moves to the free port on
    127.0.0.1); `settings` replaces the values of settings it has, e.g. the paths of
    `password_file` and `certfile`, or `message_size_limit`; `extra` is appended after it,
    e.g. a second listener (with `per_listener_settings true`, one with other logins).
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        conf: Path = SHIPPED_CONF,
        settings: Mapping[str, str] | None = None,
        extra: str = "",
    ) -> None:
        self.binary = mosquitto_binary()
        self.port = port or free_port()
        text = with_settings(conf.read_text(), {"listener": f"{self.port} 127.0.0.1"})
        text = with_settings(text, settings or {}) + (f"\n{extra}\n" if extra else "")
        tls = re.search(r"^certfile ", text, re.MULTILINE) is not None
        self.url = f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"
        text += f"\npersistence_location {workdir}/\nlog_dest file {workdir}/mosquitto.log\n"
        text += f"user {getpass.getuser()}\n"  # as root it would switch to `mosquitto`
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The broker's process id (it must be running)."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        with (self.conf.parent / "mosquitto.out").open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603  # the broker binary and our config
                [self.binary, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_port(self.port)
        except TimeoutError as exc:
            self.stop()
            msg = f"the private Mosquitto did not start; see {self.conf.parent}/mosquitto.log"
            raise BrokerUnavailable(msg) from exc

    def stop(self) -> None:
        """Stop the broker (it saves its persistent sessions)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same sessions."""
        self.stop()
        self.start()
