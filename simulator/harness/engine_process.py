"""`pledgewatch run` as a child process: the one launcher of the tests, load test and benchmarks.

One readiness rule: the engine is ready when `GET /healthz` answers 200 with
`engine_alive` and `mqtt_connected` both true, from the process we started. Before that a
reading published to the broker may be lost (its session does not exist yet) and a request
may meet a closed port. `start` blocks until then, or raises EngineStartError with the end
of the engine's log when the child exits or the time runs out. Its counterpart at the end
of a load, `wait_handled`: every input handled, and the batch that finished them committed.

One environment policy (`engine_env`): the caller's environment without any
`PLEDGEWATCH_*` variable (the launcher's flags say everything, a developer's shell
settings must not leak into the engine under test), the API token in
`PLEDGEWATCH_API_TOKEN` (not on the command line, where `ps` shows it), webhooks allowed
to loopback addresses in `PLEDGEWATCH_WEBHOOK_ALLOW` (the harness's receivers listen on
127.0.0.1, which the engine's default policy refuses), a fixed webhook-secret key in
`PLEDGEWATCH_SECRET_KEY`, unbuffered output (the log tail of a crash is complete), then
what the caller adds. Everything else is a flag: `args` for `--mqtt-thread` or webhook
timings, `config` for a rules file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from simulator.harness.broker import answers, free_port
from simulator.harness.logged_process import LoggedProcess
from simulator.harness.procfs import tree_cpu_s, tree_memory
from simulator.harness.prometheus import BATCHES, Metrics

HOST = "127.0.0.1"
PORT_RELEASE_S = 5.0  # a killed engine's port is free at once; allow a slow exit this long
STALL_S = 60.0  # `wait_handled`: no input handled for this long means the engine is stuck


class EngineStartError(RuntimeError):
    """The engine did not become ready; the message ends with its log's tail."""


def engine_command() -> list[str]:
    """How to run the `pledgewatch` CLI: this interpreter with `-m engine.cli`."""
    return [sys.executable, "-m", "engine.cli"]


LOCAL_RECEIVERS = "127.0.0.0/8"  # `--webhook-allow` for the harness's own receivers
HARNESS_SECRET_KEY = base64.b64encode(hashlib.sha256(b"pledgewatch harness").digest()).decode()
"""The webhook-secret key of every engine the harness starts: one key, so an engine
restarted on the same database (or a second one refused its lease) opens the same secrets,
and no key file is left in the working directory. Never a production key."""


def engine_env(token: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment (the policy in the module's docstring)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    env["PLEDGEWATCH_API_TOKEN"] = token
    env["PLEDGEWATCH_WEBHOOK_ALLOW"] = LOCAL_RECEIVERS
    env["PLEDGEWATCH_SECRET_KEY"] = HARNESS_SECRET_KEY
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def is_ready(health: object) -> bool:
    """The readiness rule on a `/healthz` body: the engine thread runs and MQTT is connected."""
    return (
        isinstance(health, dict)
        and health.get("engine_alive") is True
        and health.get("mqtt_connected") is True
    )


class EngineProcess(LoggedProcess):
    """`pledgewatch run` on 127.0.0.1 (a free port unless given), its output appended to
    `log_path`, in a process group of its own (a Ctrl-C at the terminal reaches the driver,
    which stops the engine itself). `start` may be called again after `kill9`/`terminate`:
    same port, store, client id (MQTT session) and log.

    `config` is a rules file (`--config`); `args` are more flags of `pledgewatch run`
    (`--mqtt-thread`, `--webhook-timeout-s 1`, ...); `env` adds to the environment policy;
    `command` is the CLI to run (default `engine_command()`, e.g. an installed script)."""

    def __init__(  # the flags of `pledgewatch run`, spelled out
        self,
        mqtt_url: str,
        db_url: str,
        *,
        token: str,
        log_path: Path,
        client_id: str = "pledgewatch-harness",
        port: int | None = None,
        config: Path | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.mqtt_url = mqtt_url
        self.db_url = db_url
        self.token = token
        self.log_path = log_path
        self.client_id = client_id
        self.port = port or free_port()
        self.config = config
        self.args = list(args)  # may be changed before `start`
        self.env = dict(env or {})
        self.cwd = cwd
        self.command = list(command) if command is not None else engine_command()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The API's base URL."""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """The engine's process id (the MQTT client runs in a child of it unless
        `--mqtt-thread`; `cpu_s` and `rss` count the whole tree)."""
        if self.proc is None:
            msg = "the engine was never started: call start() first"
            raise RuntimeError(msg)
        return self.proc.pid

    def argv(self) -> list[str]:
        """The command line `start` runs."""
        argv = [
            *self.command,
            "run",
            "--mqtt-url",
            self.mqtt_url,
            "--db-url",
            self.db_url,
            "--http",
            f"{HOST}:{self.port}",
            "--client-id",
            self.client_id,
        ]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        return [*argv, *self.args]

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the engine and block until it is ready (the module's rule); on failure the
        child is killed and EngineStartError shows why, with the end of its log."""
        if self.running():
            msg = f"the engine (pid {self.pid}) is already running"
            raise EngineStartError(msg)
        self._wait_port_free()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603  # our own interpreter and flags
                self.argv(),
                cwd=self.cwd,
                env=engine_env(self.token, self.env),
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        try:
            self._wait_ready(self.proc, timeout_s)
        except BaseException:
            self._kill()  # a half-started engine is never left behind, whatever stopped us
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        with httpx.Client(base_url=self.url, timeout=2.0) as probe:
            while True:
                code = proc.poll()
                if code is not None:
                    why = f"the engine exited with status {code} before it was ready"
                    raise EngineStartError(self._failure(why))
                try:
                    r = probe.get("/healthz")
                    last = f"/healthz answered {r.status_code}: {r.text[:300]}"
                    if r.status_code == 200 and is_ready(r.json()):
                        return
                except (httpx.HTTPError, ValueError) as exc:
                    last = f"/healthz: {type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    why = f"the engine was not ready within {timeout_s:.0f} s ({last})"
                    raise EngineStartError(self._failure(why))
                time.sleep(0.05)

    def health(self) -> dict[str, object] | None:
        """`GET /healthz` now, or None when nothing answers."""
        try:
            r = httpx.get(self.url + "/healthz", timeout=2.0)
            body = r.json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def running(self) -> bool:
        """Whether the child process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has ended; None while it runs or before `start`."""
        return None if self.proc is None else self.proc.poll()

    def kill9(self) -> None:
        """SIGKILL and reap: no chance to commit or ack (DESIGN §6's crash)."""
        self._kill()

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (the engine commits and acks the batch in hand, then stops); SIGKILL if it
        has not exited after `timeout_s`. The exit status; that of the earlier exit if the
        child had already ended."""
        proc = self.proc
        if proc is None:
            msg = "the engine was never started: nothing to terminate"
            raise RuntimeError(msg)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait(10)

    def send_signal(self, sig: int) -> None:
        """Send a signal to the engine (SIGSTOP/SIGCONT pause and resume it)."""
        os.kill(self.pid, sig)

    def client(self, timeout_s: float = 10.0) -> httpx.Client:
        """A new HTTP client on the API with the bearer token (the caller closes it)."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout_s
        )

    def metrics(self, http: httpx.Client | None = None) -> Metrics:
        """Scrape `/metrics` (through `http` when given, else a client of its own)."""
        if http is not None:
            r = http.get("/metrics")
            r.raise_for_status()
            return Metrics.parse(r.text)
        with self.client() as own:
            return self.metrics(own)

    def wait_handled(
        self,
        target: float,
        http: httpx.Client | None = None,
        *,
        timeout_s: float = 900.0,
        stall_s: float = STALL_S,
    ) -> tuple[float, Metrics]:
        """Poll `/metrics` (through `http` when given, else one client of its own) until the
        engine has handled and committed `target` inputs in all (`Metrics.handled`); the
        wall time (unix seconds) of the poll that saw it, and that scrape. RuntimeError when
        nothing moved for `stall_s` or `timeout_s` passed.

        The reading counters move while a batch is processed, before its commit; a batch
        is observed in `pledgewatch_batch_seconds` after its commit (and every idle turn,
        each `max_wait_s`). So once the counters reach the target, one more observed batch
        means the batch that reached it is committed. Polls are frequent only near the end
        (a scrape costs the engine CPU): the end is known to a few tens of milliseconds."""
        if http is None:
            with self.client() as own:
                return self.wait_handled(target, own, timeout_s=timeout_s, stall_s=stall_s)
        started = time.time()
        last_change = started
        prev: tuple[float, float] | None = None
        speed = 0.0
        while True:
            m = self.metrics(http)
            now = time.time()
            done = m.handled()
            if done >= target:
                break
            if prev is not None and done > prev[1]:
                speed = (done - prev[1]) / (now - prev[0])
                last_change = now
            if now - last_change > stall_s or now - started > timeout_s:
                msg = f"the engine stalled at {done:.0f} of {target:.0f} inputs"
                raise RuntimeError(msg)
            prev = (now, done)
            remaining = (target - done) / speed if speed > 0 else 0.5
            time.sleep(min(0.5, max(0.003, remaining / 2)))
        batches = m.total(BATCHES)
        while True:
            time.sleep(0.01)
            m = self.metrics(http)
            now = time.time()
            if m.total(BATCHES) > batches:
                return now, m
            if now - started > timeout_s:
                msg = f"the engine's last batch did not commit within {timeout_s} s"
                raise RuntimeError(msg)

    def cpu_s(self) -> float:
        """CPU seconds of the engine and its child processes (Linux /proc)."""
        return tree_cpu_s(self.pid)

    def rss(self) -> int:
        """Resident set size in bytes of the engine and its child processes."""
        return tree_memory(self.pid)["VmRSS"]

    def peak_rss(self) -> int:
        """Peak resident set size (VmHWM) in bytes, summed over the engine and its live child
        processes."""
        return tree_memory(self.pid)["VmHWM"]

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def _wait_port_free(self) -> None:
        deadline = time.monotonic() + PORT_RELEASE_S
        while answers(HOST, self.port, 0.2):
            if time.monotonic() > deadline:
                msg = (
                    f"something else listens on {HOST}:{self.port}: the engine's readiness "
                    "would be read from it; stop it or let the launcher pick a free port"
                )
                raise EngineStartError(msg)
            time.sleep(0.05)

    def _failure(self, why: str) -> str:
        tail = self.log_tail() or "(nothing)"
        return f"{why}.\n  command: {shlex.join(self.argv())}\n  log {self.log_path} ends:\n{tail}"
