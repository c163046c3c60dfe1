"""`pledgewatch run`: the engine, the HTTP API and the webhook dispatcher in one process.

This is the composition root: it opens the store, runs migrations, wires the MQTT source
into the engine, starts the dispatcher and the API server, and on SIGTERM or SIGINT stops
them in the order that loses nothing: the engine first (it commits and acks the batch in
hand), then the dispatcher (it finishes the requests in flight), then the API.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

import uvicorn

from alerts.address_policy import AddressPolicy
from alerts.dispatcher import Dispatcher
from alerts.model import Alert
from alerts.retry import RetryPolicy
from alerts.sink_credentials import SinkCredentials
from devices.mqtt_process import MqttProcessSource
from devices.mqtt_source import MqttSource
from engine.api.console_config import ConsoleConfig
from engine.core.config import Config
from engine.runtime.gc_policy import tune_gc
from engine.runtime.live import Engine, EngineSettings
from engine.store.factory import open_store, redact_url, secret_box_for, sqlite_path
from engine.store.port import Store, StoreConfigError
from engine.store.secret_box import unreadable_reason
from lending.consumer import LendingConsumer
from lending.params import DEFAULT_PARAMS, LendingParams

_log = logging.getLogger(__name__)

_DATABASE_PARAMS = frozenset({"host", "hostaddr", "port", "dbname", "options", "service"})


def default_client_id(db_url: str) -> str:
    """The MQTT client id of an installation: `pledgewatch-` and a hash of its database.

    Stable across restarts and hosts, as the persistent session must be; different for
    engines on different databases, since two engines with one client id take each other's
    session and readings. The hash leaves out user and password (rotating them keeps the
    session) and takes a SQLite path as absolute (`sqlite:///pledgewatch.db` in two
    directories is two installations).
    """
    parts = urlsplit(db_url)
    key = db_url
    try:
        if parts.scheme.lower() == "sqlite":
            key = f"sqlite://{sqlite_path(db_url).resolve()}"
        elif parts.scheme.lower() in {"postgresql", "postgres"}:
            params = sorted((k, v) for k, v in parse_qsl(parts.query) if k in _DATABASE_PARAMS)
            where = f"{(parts.hostname or '').lower()}:{parts.port or 5432}{parts.path}"
            key = f"postgresql://{where}?{urlencode(params)}"
    except (StoreConfigError, ValueError):
        pass  # the store refuses the URL with a better message
    return "pledgewatch-" + hashlib.sha256(key.encode()).hexdigest()[:11]  # 23 chars: MQTT 3.1.1


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Everything `pledgewatch run` takes from flags and `PLEDGEWATCH_*` variables."""

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    db_url: str = "sqlite:///pledgewatch.db"
    secret_key_file: str | None = None  # None: secret_box_for's rule (environment, key file)
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    api_token: str | None = None  # None only with insecure_dev
    client_id: str | None = None  # None: default_client_id(db_url)
    mqtt_child: bool = True  # MQTT in a child process (devices/mqtt_process.py), or a thread
    config: Config = field(default_factory=Config)
    lending: LendingParams | None = DEFAULT_PARAMS  # None: no lending consumer
    engine: EngineSettings = field(default_factory=EngineSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    webhook_addresses: AddressPolicy = field(default_factory=AddressPolicy)
    sink_credentials: SinkCredentials | None = None  # logins of MQTT and Kafka sink brokers
    console: ConsoleConfig = field(default_factory=ConsoleConfig)


class Service:
    """The running process."""

    def __init__(
        self,
        settings: ServiceSettings,
        store: Store | None = None,
        make_engine: Callable[[Store, Callable[[Sequence[Alert]], None]], Engine] | None = None,
    ) -> None:
        """`make_engine` builds the engine (given the store and what to call after each
        commit) instead of the MQTT-fed one: the distributed runtime's API worker."""
        self.settings = settings
        self.store = store or open_store(
            settings.db_url, secrets=secret_box_for(settings.db_url, settings.secret_key_file)
        )
        try:
            # One engine per database (LeaseError names the other), and no migration
            # under a running engine's feet.
            self.store.acquire_lease()
            self.store.migrate()
            for hook in self.store.list_webhooks():  # said once here; each delivery too
                if (why := unreadable_reason(hook.secret)) is not None:
                    _log.error("%s", why)
        except BaseException:
            if store is None:
                self.store.close()
            raise
        self.dispatcher = Dispatcher(
            self.store,
            settings.retry,
            addresses=settings.webhook_addresses,
            credentials=settings.sink_credentials,
        )
        if make_engine is not None:
            self.engine = make_engine(self.store, lambda _alerts: self.dispatcher.wake())
        else:
            source = MqttProcessSource if settings.mqtt_child else MqttSource
            self.engine = Engine(
                self.store,
                source(
                    settings.mqtt_url,
                    settings.client_id or default_client_id(settings.db_url),
                    receive_maximum=max(2 * settings.engine.max_batch, 100),
                ),
                settings.config,
                settings.engine,
                on_commit=lambda _alerts: self.dispatcher.wake(),
                consumer=None if settings.lending is None else LendingConsumer(settings.lending),
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
            console=self.settings.console,
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
            redact_url(self.settings.mqtt_url),
            redact_url(self.settings.db_url),
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
