"""`pledgewatch bridge` and `pledgewatch worker` as child processes, for the tests and the
benchmark of the distributed runtime.

Ready means a line of the process's own log since its start: the bridge's MQTT connection,
a worker's fleet loaded from the changes topic (and, with `--http`, its API answering).
The environment follows `engine_env` (the harness's token, secret key and `--webhook-allow`).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from simulator.harness.broker import free_port
from simulator.harness.engine_process import HOST, EngineStartError, engine_command, engine_env
from simulator.harness.logged_process import LoggedProcess
from simulator.harness.prometheus import Metrics

BRIDGE_READY = "MQTT connected"
WORKER_READY = "fleet loaded"


class ClusterProcess(LoggedProcess):
    """One `pledgewatch bridge` or `worker`; `start` again after `kill9` or `terminate`."""

    def __init__(
        self,
        command: str,
        args: Sequence[str],
        *,
        token: str,
        log_path: Path,
        ready: str,
        http_port: int | None = None,
        metrics_port: int | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.command = command
        self.args = list(args)
        self.token = token
        self.log_path = log_path
        self.ready = ready
        self.http_port = http_port
        self.metrics_port = metrics_port
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0  # the log's size at the last spawn: readiness is looked for past it

    @classmethod
    def worker(
        cls,
        kafka_url: str,
        db_url: str,
        workdir: Path,
        *,
        token: str,
        name: str,
        http: bool = False,
        args: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> ClusterProcess:
        """A worker with its own data directory and /metrics port (and API with `http`)."""
        metrics_port = free_port()
        http_port = free_port() if http else None
        argv = [
            "--kafka-url",
            kafka_url,
            "--db-url",
            db_url,
            "--data-dir",
            str(workdir / f"{name}-data"),
            "--metrics",
            f"{HOST}:{metrics_port}",
            *(["--http", f"{HOST}:{http_port}"] if http_port else []),
            *args,
        ]
        return cls(
            "worker",
            argv,
            token=token,
            log_path=workdir / f"{name}.log",
            ready=WORKER_READY,
            http_port=http_port,
            metrics_port=metrics_port,
            cwd=cwd,
        )

    @property
    def url(self) -> str:
        """The API's base URL (a worker started with `http`)."""
        return f"http://{HOST}:{self.http_port}"

    def start(self, timeout_s: float = 60.0) -> None:
        """Start and block until ready; EngineStartError with the log's end if not."""
        self.spawn()
        self.wait_ready(timeout_s)

    def spawn(self) -> None:
        """Start the process and return at once (`wait_ready` waits for it): several can then
        start side by side."""
        if self.running():
            msg = f"pledgewatch {self.command} is already running"
            raise EngineStartError(msg)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603  # our own interpreter and flags
                [*engine_command(), self.command, *self.args],
                cwd=self.cwd,
                env=engine_env(self.token),
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=0,
            )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until the spawned process is ready; EngineStartError with the log's end if
        it exits or is not ready in time."""
        proc = self.proc
        if proc is None:
            msg = f"pledgewatch {self.command} was not started"
            raise EngineStartError(msg)
        deadline = time.monotonic() + timeout_s
        while not self._ready(self._offset):
            code = proc.poll()
            if code is not None or time.monotonic() > deadline:
                why = f"exited with status {code}" if code is not None else "timed out"
                self.kill9()
                msg = f"pledgewatch {self.command} was not ready ({why}):\n{self.log_tail()}"
                raise EngineStartError(msg)
            time.sleep(0.1)

    def _ready(self, offset: int) -> bool:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                seen = self.ready.encode() in log.read()
        except OSError:
            return False
        if not seen or self.http_port is None:
            return seen
        try:
            return httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL and reap: no checkpoint, no commit, no ack."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM; SIGKILL after `timeout_s`. The exit status."""
        if self.proc is None:
            msg = f"pledgewatch {self.command} was never started"
            raise RuntimeError(msg)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)

    def client(self, timeout_s: float = 10.0) -> httpx.Client:
        """An HTTP client on the worker's API with the bearer token."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout_s
        )

    @property
    def metrics_url(self) -> str:
        """The worker's `/metrics`."""
        return f"http://{HOST}:{self.metrics_port}/metrics"

    def metrics(self) -> Metrics:
        """Scrape the worker's `/metrics`."""
        r = httpx.get(self.metrics_url, timeout=5.0)
        r.raise_for_status()
        return Metrics.parse(r.text)
