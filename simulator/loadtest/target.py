"""The engine under test: `pledgewatch run` started as a child process, or one already running.

Either way it is reached through its HTTP API (DESIGN §3): fences, loans and the webhook go
in, `/metrics` comes out. CPU and memory come from `/proc/<pid>` (Linux), so they are known
for an engine we started, or one attached with its pid.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx
import orjson

from simulator.harness.api_client import ImportRefusedError, Kind, import_items
from simulator.harness.engine_process import EngineProcess, EngineStartError, is_ready
from simulator.harness.prometheus import Metrics


class TargetError(RuntimeError):
    """The engine cannot be started or reached, or refused the setup; says what to do."""


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
        if health.status_code != 200 or not is_ready(health.json()):
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
    """`pledgewatch run` as our child process (the harness launcher), on a free port, with
    its log in a file and the plan's rules in a config file."""

    def __init__(
        self,
        mqtt_url: str,
        db_url: str,
        config: Mapping[str, object],
        work: Path,
        log_path: Path,
        token: str,
    ) -> None:
        config_path = work / "engine-config.json"
        config_path.write_bytes(orjson.dumps(dict(config)))
        self.process = EngineProcess(
            mqtt_url,
            db_url,
            token=token,
            log_path=log_path,
            client_id=f"pledgewatch-loadtest-{os.getpid()}",
            config=config_path,
        )
        super().__init__(self.process.url, token, None, "started", db_url.split(":", maxsplit=1)[0])
        self.log_path = log_path

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the engine; return once it is ready (its API answers, MQTT is connected)."""
        try:
            self.process.start(timeout_s)
        except EngineStartError as exc:
            raise TargetError(str(exc)) from exc
        self.pid = self.process.pid

    def running(self) -> bool:
        """Whether the child process is alive."""
        return self.process.running()

    def stop(self) -> int | None:
        """SIGTERM (it commits the batch in hand), then SIGKILL after 60 s; the exit status
        (None if it was never started)."""
        self.close()
        if self.process.proc is None:
            return None
        return self.process.terminate(60.0)
