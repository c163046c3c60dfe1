"""`pledgewatch gateway jt808` as a child process: the launcher of the tests and the benchmark.

One readiness rule, like the engine's: the gateway is ready when its `GET /healthz`
answers 200 with `mqtt_connected` true (or, with `require_mqtt=False`, answers at all),
from the process we started; then its `--listen` port accepts terminals. The environment
is the caller's without any `PLEDGEWATCH_*` variable (flags say everything), unbuffered.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from simulator.harness.broker import answers, free_port
from simulator.harness.logged_process import LoggedProcess
from simulator.harness.procfs import proc_cpu_s, proc_memory
from simulator.harness.prometheus import Metrics

HOST = "127.0.0.1"


class GatewayStartError(RuntimeError):
    """The gateway did not become ready; the message ends with its log's tail."""


class GatewayProcess(LoggedProcess):
    """The gateway on 127.0.0.1: terminals on `port`, /metrics and /healthz on `http_port`,
    auth codes in `state_file`, output appended to `log_path`. `start` may be called again
    after `terminate`/`kill9`: same ports, same state file."""

    def __init__(
        self,
        mqtt_url: str,
        state_file: Path,
        log_path: Path,
        *,
        port: int | None = None,
        http_port: int | None = None,
        args: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> None:
        self.mqtt_url = mqtt_url
        self.state_file = state_file
        self.log_path = log_path
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.args = list(args)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of /metrics and /healthz."""
        return f"http://{HOST}:{self.http_port}"

    @property
    def pid(self) -> int:
        """The gateway's process id."""
        if self.proc is None:
            msg = "the gateway was never started: call start() first"
            raise RuntimeError(msg)
        return self.proc.pid

    def argv(self) -> list[str]:
        """The command line `start` runs."""
        return [
            sys.executable,
            "-m",
            "engine.cli",
            "gateway",
            "jt808",
            "--listen",
            f"{HOST}:{self.port}",
            "--mqtt-url",
            self.mqtt_url,
            "--state-file",
            str(self.state_file),
            "--http",
            f"{HOST}:{self.http_port}",
            *self.args,
        ]

    def start(self, timeout_s: float = 30.0, *, require_mqtt: bool = True) -> None:
        """Start the gateway and block until it is ready (the module's rule)."""
        if self.running():
            msg = f"the gateway (pid {self.pid}) is already running"
            raise GatewayStartError(msg)
        deadline = time.monotonic() + 5.0
        while answers(HOST, self.port, 0.2) and time.monotonic() < deadline:
            time.sleep(0.05)  # a gateway stopped a moment ago may still hold the port
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603  # our own interpreter and flags
                self.argv(),
                cwd=self.cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        try:
            self._wait_ready(self.proc, timeout_s, require_mqtt=require_mqtt)
        except BaseException:
            self.kill9()
            raise

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], timeout_s: float, *, require_mqtt: bool
    ) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            code = proc.poll()
            if code is not None:
                msg = f"the gateway exited with status {code} before it was ready"
                raise GatewayStartError(self._failure(msg))
            health = self.health()
            if health is not None:
                last = f"/healthz: {health}"
                if health.get("mqtt_connected") is True or not require_mqtt:
                    return
            if time.monotonic() > deadline:
                msg = f"the gateway was not ready within {timeout_s:.0f} s ({last})"
                raise GatewayStartError(self._failure(msg))
            time.sleep(0.05)

    def _failure(self, why: str) -> str:
        return f"{why}; command: {' '.join(self.argv())}\n--- log tail ---\n{self.log_tail()}"

    def health(self) -> dict[str, object] | None:
        """`GET /healthz` now, or None when nothing answers."""
        try:
            body = httpx.get(self.url + "/healthz", timeout=2.0).json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def metrics(self) -> Metrics:
        """Scrape `/metrics`."""
        r = httpx.get(self.url + "/metrics", timeout=10.0)
        r.raise_for_status()
        return Metrics.parse(r.text)

    def running(self) -> bool:
        """Whether the child process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (the gateway answers what the broker acks, then stops); SIGKILL after
        `timeout_s`. The exit status."""
        proc = self.proc
        if proc is None:
            msg = "the gateway was never started: nothing to terminate"
            raise RuntimeError(msg)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait(10)

    def kill9(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)

    def cpu_s(self) -> float:
        """CPU seconds the gateway has used (all its threads)."""
        return proc_cpu_s(self.pid)

    def rss(self) -> int:
        """Resident set size in bytes."""
        return proc_memory(self.pid)["VmRSS"]
