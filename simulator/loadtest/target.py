"""The engine under test: `pledgewatch run` started as a child process, or one already running.

Either way it is reached through its HTTP API (DESIGN §3): fences, loans and the webhook go
in, `/metrics` comes out. CPU and memory come from `/proc/<pid>` (Linux), so they are known
for an engine we started, or one attached with its pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx
import orjson

from simulator.harness.api_client import ImportRefusedError, Kind, import_items
from simulator.harness.broker import free_port

READINGS = "pledgewatch_readings_total"
DUPLICATES = "pledgewatch_duplicates_total"
REJECTED = "pledgewatch_rejected_total"
ALERTS = "pledgewatch_alerts_total"
OUTBOX = "pledgewatch_outbox_pending"
DELIVERIES = "pledgewatch_deliveries_total"
BATCHES = "pledgewatch_batch_seconds_count"
BATCH_SECONDS = "pledgewatch_batch_seconds_sum"


class TargetError(RuntimeError):
    """The engine cannot be started or reached, or refused the setup; says what to do."""


@dataclass(frozen=True, slots=True)
class Metrics:
    """One scrape of `/metrics`: sample name with its labels -> value."""

    values: dict[str, float]

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse the Prometheus text format (no timestamps, as the engine writes it)."""
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                try:
                    values[key] = float(value)
                except ValueError:
                    continue
        return cls(values)

    def total(self, name: str) -> float:
        """A metric summed over its labels (0 when absent)."""
        return sum(v for k, v in self.values.items() if k == name or k.startswith(name + "{"))

    def by_label(self, name: str) -> dict[str, float]:
        """A one-label metric as {label value: value}."""
        return {
            k[k.index('"') + 1 : k.rindex('"')]: v
            for k, v in self.values.items()
            if k.startswith(name + "{")
        }

    @property
    def processed(self) -> float:
        """Valid readings the engine has taken: accepted plus dropped as duplicates."""
        return self.total(READINGS) + self.total(DUPLICATES)


class Target:
    """An engine reached through its API; `pid` is None when its process is unknown."""

    def __init__(self, url: str, token: str, pid: int | None, mode: str, store: str) -> None:
        self.url = url.rstrip("/")
        self.pid = pid
        self.mode = mode  # "started" or "attached"
        self.store = store
        self.api = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def metrics(self) -> Metrics:
        """Scrape `/metrics`."""
        r = self.api.get("/metrics", timeout=10)
        r.raise_for_status()
        return Metrics.parse(r.text)

    def check(self) -> None:
        """TargetError unless the API answers, accepts our token and the engine is connected."""
        try:
            health = self.api.get("/healthz", timeout=5)
            probe = self.api.get("/metrics", timeout=10)
        except httpx.HTTPError as exc:
            msg = f"no pledgewatch API answers at {self.url} ({exc}); check --api"
            raise TargetError(msg) from exc
        if probe.status_code == 401:
            msg = f"{self.url} refused the token: pass the engine's --api-token"
            raise TargetError(msg)
        if health.status_code != 200 or not health.json().get("mqtt_connected"):
            msg = f"the engine at {self.url} is not healthy: {health.text[:300]}"
            raise TargetError(msg)

    def import_fences(self, doc: Mapping[str, object], progress: Callable[[str], None]) -> int:
        """`POST /v1/fences:import` in chunks; the number of fences."""
        features = doc.get("features")
        if not isinstance(features, list):
            msg = "the plan's fences are not a FeatureCollection"
            raise TargetError(msg)
        return self._import("fences", features, progress)

    def import_loans(
        self, loans: Sequence[Mapping[str, object]], progress: Callable[[str], None]
    ) -> int:
        """`POST /v1/loans:import` in chunks (each one transaction); the number imported."""
        return self._import("loans", loans, progress)

    def _import(self, kind: Kind, items: Sequence[object], progress: Callable[[str], None]) -> int:
        try:
            import_items(
                self.api, kind, items, lambda done, _: progress(f"{kind} {done}/{len(items)}")
            )
        except ImportRefusedError as exc:
            raise TargetError(str(exc)) from exc
        return len(items)

    def put_webhook(self, hook_id: str, url: str, secret: str) -> None:
        """Register the receiver for every alert type."""
        r = self.api.put(f"/v1/webhooks/{hook_id}", json={"url": url, "secret": secret})
        if r.status_code not in {200, 201}:
            msg = f"the engine refused the webhook: {r.status_code} {r.text[:500]}"
            raise TargetError(msg)

    def delete_webhook(self, hook_id: str) -> None:
        """Unregister the receiver (best effort: the engine may be gone)."""
        with contextlib.suppress(httpx.HTTPError):
            self.api.delete(f"/v1/webhooks/{hook_id}", timeout=10)

    def close(self) -> None:
        """Close the HTTP client."""
        self.api.close()


class StartedEngine(Target):
    """`pledgewatch run` as our child process, on a free port, with its log in a file."""

    def __init__(
        self,
        mqtt_url: str,
        db_url: str,
        config: Mapping[str, object],
        work: Path,
        log_path: Path,
        token: str,
    ) -> None:
        port = free_port()
        super().__init__(
            f"http://127.0.0.1:{port}", token, None, "started", db_url.split(":", maxsplit=1)[0]
        )
        self.log_path = log_path
        config_path = work / "engine-config.json"
        config_path.write_bytes(orjson.dumps(dict(config)))
        self.command = [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            "--mqtt-url",
            mqtt_url,
            "--db-url",
            db_url,
            "--http",
            f"127.0.0.1:{port}",
            "--client-id",
            f"pledgewatch-loadtest-{os.getpid()}",
            "--config",
            str(config_path),
        ]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
        self.env["PLEDGEWATCH_API_TOKEN"] = token
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the engine; return once its API answers and MQTT is connected."""
        with self.log_path.open("ab") as out:
            # Its own process group: a Ctrl-C at the terminal stops the load test, which then
            # scrapes the engine once more and stops it itself.
            self.proc = subprocess.Popen(  # noqa: S603  # our own interpreter and arguments
                self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT, process_group=0
            )
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                r = self.api.get("/healthz", timeout=2)
                if r.status_code == 200 and r.json().get("mqtt_connected"):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        msg = f"the engine did not come up within {timeout_s:.0f} s; its log ends:\n{tail}"
        raise TargetError(msg)

    def running(self) -> bool:
        """Whether the child process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (it commits the batch in hand), then SIGKILL after 60 s; the exit status."""
        self.close()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)
