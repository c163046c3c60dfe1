"""Alerts produced to a Kafka topic: a webhook whose URL is `kafka://` or `kafkas://`.

`PUT /v1/webhooks/{id}` with `"url": "kafka://kafka-1.lender.example:9092/pledgewatch.alerts"`
makes a sink that shares everything with the HTTP webhooks (outbox, ids, retries, dead
letters, redelivery, per-loan order); only the last hop differs. Each alert is one record
of the URL's path as the topic: the value is the alert JSON exactly as a webhook body is,
the key its `loan_id` (its `device_id` when it has no loan), so one loan's alerts land on
one partition in order; the signing headers are record headers (`X-Pledgewatch-Id`,
`-Type`, `-Timestamp`, `-Signature`: the same HMAC, so `alerts.signing.verify` checks it),
with `content-type: application/json`.

Delivered means the brokers acknowledged the record with `acks=all` within the timeout. A
refusal no retry changes (not authorized for the topic, record too large, invalid topic,
a policy violation: the broker's non-retriable errors) is permanent, like a 4xx: dead at
once with the reason, and so is a refused SASL login. A timeout or a lost connection is
retried with the usual backoff; a record whose acknowledgement was lost may then be written
twice, with one id: consumers deduplicate by `X-Pledgewatch-Id`, as webhook receivers do.

One aiokafka producer per sink, on an event loop thread of its own, started on first use.
The bootstrap host passes `--webhook-allow` like an HTTP host, and so does every broker the
cluster's metadata names before a record is sent to it; a `kafka://` producer connects to
the very bootstrap address that was checked (`kafkas://` connects by name so that TLS can
verify it, against the system's CAs or `SSL_CERT_FILE`). A URL with `user:password@` is
refused: the login of the sink's bootstrap broker comes from the sink credentials file
(`alerts.sink_credentials`, keyed by `kafka[s]://host:port`), and with one the producer
speaks SASL (SASL_PLAINTEXT for `kafka://`, SASL_SSL for `kafkas://`) with its mechanism.
aiokafka's bootstrap turns every failure into "unable to bootstrap", so a producer with a
login first opens one connection of its own to the bootstrap broker, to learn whether the
login is refused (permanent) or the cluster is away (retried). Without a login, a broker
that wants SASL closes the connection, which looks like an outage: retried. Idempotent
producers are not used (not every Kafka-protocol broker has them); per-loan order comes
from the dispatcher, which sends a loan's next alert only after the previous one was
acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import threading
from collections.abc import Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.conn import create_conn
from aiokafka.errors import (
    BrokerResponseError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from alerts.address_policy import DEFAULT_PORTS, AddressPolicy, IpAddress
from alerts.broker_endpoint import BrokerEndpoint, LoginRefusedError
from alerts.mqtt_sink import SIGNED
from alerts.sender import Answer
from alerts.sink_credentials import SinkCredentials

KAFKA_SCHEMES = frozenset({"kafka", "kafkas"})
TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
"""Kafka's rule for topic names."""
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class KafkaAddress:
    """Where a Kafka sink produces: the bootstrap broker, TLS or not, and the topic."""

    host: str
    port: int
    tls: bool
    topic: str

    @classmethod
    def parse(cls, url: str) -> KafkaAddress:
        """`kafka[s]://host[:port]/topic`; a ValueError says what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in KAFKA_SCHEMES or not parts.hostname:
            msg = f"{url[:100]!r} is not a kafka:// or kafkas:// URL with a host"
            raise ValueError(msg)
        if parts.username is not None or parts.password is not None:
            msg = (
                "a Kafka sink URL must not carry user:password@: the broker's login goes in "
                "the --sink-credentials file"
            )
            raise ValueError(msg)
        if parts.query or parts.fragment:
            msg = "a Kafka sink URL takes no ?query or #fragment: the path is the topic"
            raise ValueError(msg)
        port = parts.port or DEFAULT_PORTS[parts.scheme]  # a bad port raises ValueError
        topic = parts.path[1:]
        if not TOPIC_RE.fullmatch(topic) or topic in {".", ".."}:
            msg = (
                f"the topic {topic[:100]!r} is not a Kafka topic name "
                "(1 to 249 of A-Z a-z 0-9 . _ -), e.g. kafka://broker:9092/pledgewatch.alerts"
            )
            raise ValueError(msg)
        return cls(parts.hostname, port, parts.scheme == "kafkas", topic)


def record_key(body: bytes) -> bytes:
    """The record key of an alert body: its loan, else its tracker, else its id."""
    doc = orjson.loads(body)
    for field in ("loan_id", "device_id", "id"):
        value = doc.get(field)
        if isinstance(value, str) and value:
            return value.encode()
    return b""


def permanent(exc: BaseException) -> bool:
    """A broker's refusal that no retry changes (authorization, size, topic, policy)."""
    return isinstance(exc, BrokerResponseError) and not exc.retriable


class LoopThread:
    """An asyncio loop on a daemon thread; other threads run coroutines on it (aiokafka is
    asyncio-only; the dispatcher's and the API's threads are not)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout_s: float) -> _T:
        """The coroutine's result; TimeoutError after `timeout_s` (the coroutine is cancelled)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            future.cancel()
            msg = f"no answer from the Kafka cluster within {timeout_s:g} s"
            raise TimeoutError(msg) from None

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class KafkaEndpoint(BrokerEndpoint[KafkaAddress]):
    """Produces one sink's alerts to its topic over one producer; a `Sender`."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        policy: AddressPolicy | None = None,
        name: str = "sink",
        credentials: SinkCredentials | None = None,
    ) -> None:
        super().__init__(url, timeout_s, policy, name, KafkaAddress.parse, credentials)
        self._loop: LoopThread | None = None
        self._producer: AIOKafkaProducer | None = None
        self._checked: set[tuple[str, int]] = set()  # brokers the policy allowed

    def send(self, body: bytes, sent: dict[str, str]) -> Answer:
        """Produce one alert and wait for its acknowledgement (see the module docstring)."""
        address = self.parsed()
        try:
            loop, producer = self._connected(address)
        except LoginRefusedError as exc:
            return Answer(delivered=False, permanent=True, error=str(exc))
        headers = [(key, sent[key].encode()) for key in SIGNED]
        headers.append(("content-type", b"application/json"))
        key = record_key(body)
        try:
            self._check_brokers(producer)
            loop.run(
                producer.send_and_wait(address.topic, body, key=key, headers=headers),
                self.timeout_s + 1.0,  # aiokafka's own request timeout comes first
            )
        except KafkaError as exc:
            if permanent(exc):
                error = f"Kafka refused the record: {type(exc).__name__}: {exc}"
                return Answer(delivered=False, permanent=True, error=error)
            self._discard()
            msg = f"{type(exc).__name__}: {exc}"
            raise ConnectionError(msg) from exc
        except OSError:
            self._discard()
            raise
        return Answer(delivered=True)

    def _connected(self, address: KafkaAddress) -> tuple[LoopThread, AIOKafkaProducer]:
        """The running producer, starting one if there is none (OSError if that fails;
        AddressRefusedError if the policy refuses the bootstrap address)."""
        with self._lock:
            if self._loop is None:
                self._loop = LoopThread(f"kafka-sink-{self.client_id}")
            if self._producer is not None:
                return self._loop, self._producer
            checked = self.policy.resolve(address.host, address.port)
            host = address.host if address.tls else str(checked[0])
            bootstrap = address.host if address.tls else _host(checked[0])
            loop = self._loop
            config = self.producer_config(address, bootstrap)

            async def start() -> AIOKafkaProducer:
                producer = AIOKafkaProducer(**config)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                return producer

            try:
                if self.login is not None:
                    loop.run(self._check_login(host, address.port, config), self.timeout_s + 1.0)
                self._producer = loop.run(start(), self.timeout_s + 1.0)
            except KafkaError as exc:
                msg = f"cannot reach the Kafka cluster at {bootstrap}:{address.port}: {exc}"
                raise ConnectionError(msg) from exc
            self._checked = {(address.host, address.port), (bootstrap, address.port)}
            return loop, self._producer

    def producer_config(self, address: KafkaAddress, bootstrap: str) -> dict[str, Any]:
        """The producer's settings for the sink, with SASL when its broker has a login
        (`bootstrap`: the host to connect to, the checked address unless TLS needs the name)."""
        config: dict[str, Any] = {
            "bootstrap_servers": f"{bootstrap}:{address.port}",
            "client_id": self.client_id,
            "acks": "all",
            "enable_idempotence": False,
            "request_timeout_ms": int(self.timeout_s * 1000),
            "retry_backoff_ms": 100,
            "linger_ms": 0,
            "security_protocol": "SSL" if address.tls else "PLAINTEXT",
            "ssl_context": ssl.create_default_context() if address.tls else None,
        }
        if self.login is not None:
            config["security_protocol"] = "SASL_SSL" if address.tls else "SASL_PLAINTEXT"
            config["sasl_mechanism"] = self.login.sasl_mechanism
            config["sasl_plain_username"] = self.login.username
            config["sasl_plain_password"] = self.login.password
        return config

    async def _check_login(self, host: str, port: int, config: dict[str, Any]) -> None:
        """Log in to the bootstrap broker on a connection of our own, then close it:
        LoginRefusedError if the broker refuses the login, KafkaError or OSError if it
        cannot be reached (the producer's own bootstrap would say neither)."""
        try:
            conn = await create_conn(
                host,
                port,
                client_id=self.client_id,
                request_timeout_ms=config["request_timeout_ms"],
                ssl_context=config["ssl_context"],
                security_protocol=config["security_protocol"],
                sasl_mechanism=config["sasl_mechanism"],
                sasl_plain_username=config["sasl_plain_username"],
                sasl_plain_password=config["sasl_plain_password"],
            )
        except (SaslAuthenticationFailed, IllegalSaslStateError) as exc:
            raise self.login_refused("Kafka", str(exc)) from None  # names its class
        except UnsupportedSaslMechanismError:
            why = f"the broker does not offer SASL {config['sasl_mechanism']}"
            raise self.login_refused("Kafka", why) from None
        except (KeyError, ValueError, AssertionError):
            # aiokafka's SASL steps fail so when the broker's answer is not a success: a
            # SCRAM server-final message with an error (RFC 5802 `e=...`) in place of the
            # `v=` verifier, a wrong verifier, a PLAIN answer that is not empty.
            why = f"the broker's {config['sasl_mechanism']} exchange did not accept it"
            raise self.login_refused("Kafka", why) from None
        conn.close()

    def _check_brokers(self, producer: AIOKafkaProducer) -> None:
        """Every broker the metadata names passes the policy (AddressRefusedError if not)."""
        for broker in producer.client.cluster.brokers():
            where = (broker.host, broker.port)
            if where not in self._checked:
                self.policy.resolve(broker.host, broker.port)
                self._checked.add(where)

    def _discard(self) -> None:
        """Throw the producer away; the next delivery starts a new one."""
        with self._lock:
            producer, self._producer = self._producer, None
            loop = self._loop
        if producer is not None and loop is not None:
            with contextlib.suppress(KafkaError, OSError):  # it is gone either way
                loop.run(producer.stop(), self.timeout_s)

    def close(self) -> None:
        """Stop the producer and its loop."""
        self._discard()
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.close()


def _host(address: IpAddress) -> str:
    """An address as a bootstrap host: IPv6 in brackets."""
    return f"[{address}]" if address.version == 6 else str(address)
