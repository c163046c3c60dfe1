"""`pledgewatch run`: the engine, the HTTP API and the webhook dispatcher in one process.

This is the composition root: it opens the store, runs migrations, wires the MQTT source
into the engine, starts the dispatcher and the API server, and on SIGTERM or SIGINT stops
them in the order that loses nothing: the engine first (it commits and acks the batch in
hand), then the dispatcher (it finishes the requests in flight), then the API.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import uvicorn

from alerts.address_policy import AddressPolicy
from alerts.dispatcher import Dispatcher
from alerts.retry import RetryPolicy
from devices.mqtt_process import MqttProcessSource
from devices.mqtt_source import MqttSource
from engine.core.config import Config
from engine.runtime.gc_policy import tune_gc
from engine.runtime.live import Engine, EngineSettings
from engine.store.factory import open_store
from engine.store.port import Store

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Everything `pledgewatch run` takes from flags and `PLEDGEWATCH_*` variables."""

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    db_url: str = "sqlite:///pledgewatch.db"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    api_token: str | None = None  # None only with insecure_dev
    client_id: str = "pledgewatch-engine"
    mqtt_child: bool = True  # MQTT in a child process (devices/mqtt_process.py), or a thread
    config: Config = field(default_factory=Config)
    engine: EngineSettings = field(default_factory=EngineSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    webhook_addresses: AddressPolicy = field(default_factory=AddressPolicy)


class Service:
    """The running process."""

    def __init__(self, settings: ServiceSettings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(settings.db_url)
        self.store.migrate()
        self.dispatcher = Dispatcher(
            self.store, settings.retry, addresses=settings.webhook_addresses
        )
        source = MqttProcessSource if settings.mqtt_child else MqttSource
        self.source = source(
            settings.mqtt_url,
            settings.client_id,
            receive_maximum=max(2 * settings.engine.max_batch, 100),
        )
        self.engine = Engine(
            self.store,
            self.source,
            settings.config,
            settings.engine,
            on_commit=lambda _alerts: self.dispatcher.wake(),
        )
        self._server: uvicorn.Server | None = None
        self._http_thread: threading.Thread | None = None

    def start(self) -> None:
        """Start every part; returns once the API answers."""
        from engine.api.app import create_app  # noqa: PLC0415  # keeps replay free of FastAPI

        self.engine.start()
        tune_gc()
        self.dispatcher.start()
        app = create_app(
            self.engine,
            self.store,
            self.dispatcher,
            self.settings.api_token,
            webhook_addresses=self.settings.webhook_addresses,
        )
        config = uvicorn.Config(
            app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_level="warning",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._http_thread = threading.Thread(target=self._server.run, name="http", daemon=True)
        self._http_thread.start()
        while not self._server.started:
            if not self._http_thread.is_alive():
                where = f"{self.settings.http_host}:{self.settings.http_port}"
                msg = f"the HTTP API could not listen on {where}"
                raise RuntimeError(msg)
            threading.Event().wait(0.05)
        _log.info(
            "pledgewatch running: MQTT %s, store %s, API http://%s:%d",
            self.settings.mqtt_url,
            self.settings.db_url,
            self.settings.http_host,
            self.settings.http_port,
        )

    def healthy(self) -> bool:
        """Whether the engine thread still runs."""
        return self.engine.running

    def stop(self) -> None:
        """Stop in the order that loses nothing; the store is closed last."""
        self.engine.stop()
        self.dispatcher.stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._http_thread is not None:
            self._http_thread.join(10)
        self.store.close()
