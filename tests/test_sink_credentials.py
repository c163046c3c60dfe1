"""Logins of the broker sinks (alerts.sink_credentials): the file's checks, its flag and
variable, and the sinks logging in with it against a real private Mosquitto that wants a
password, and a real tansu that wants SASL."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import given
from hypothesis import strategies as st

from alerts.dispatcher import Dispatcher
from alerts.kafka_sink import KafkaAddress, KafkaEndpoint
from alerts.outbox import Delivery, Webhook
from alerts.retry import RetryPolicy
from alerts.sink_credentials import (
    SinkCredentials,
    SinkCredentialsError,
    SinkLogin,
    load_sink_credentials,
    parse_sink_credentials,
)
from devices.broker_acl import hash_password
from engine.cli.main import build_parser, main
from engine.cli.service_options import service_settings
from engine.store.port import Store
from simulator.harness.broker import SHIPPED_CONF, free_port
from simulator.harness.kafka_broker import PrivateKafka
from tests.brokers import Broker, kafka, running_kafka
from tests.test_mqtt_sink import (
    FAST,
    LOOPBACK,
    SECRET,
    TOPIC,
    Subscriber,
    by_loan,
    raise_alerts,
    store,
    until,
)

__all__ = ["kafka", "store"]

USER = "pw-alerts"
PASSWORD = "correct-horse-battery-staple"  # the test broker's, made here
WRONG = "hunter2-not-the-password"
PATIENT = RetryPolicy(base_s=30.0, cap_s=60.0, max_age_s=86_400.0, timeout_s=2.0)
"""A retry would wait 30 s: any delivery not dead or delivered at once shows as pending."""


def write_credentials(path: Path, doc: object, mode: int = 0o600) -> Path:
    """The credentials file `doc` (JSON) at `path` with `mode`."""
    path.write_bytes(doc if isinstance(doc, bytes) else orjson.dumps(doc))
    path.chmod(mode)
    return path


def credentials(tmp_path: Path, doc: dict[str, object]) -> SinkCredentials:
    """The logins of `doc`, through the file loader as the CLI reads them."""
    return load_sink_credentials(str(write_credentials(tmp_path / "sinks.json", doc)))


def dispatch(store: Store, creds: SinkCredentials | None, policy: RetryPolicy) -> Dispatcher:
    d = Dispatcher(store, policy, poll_s=0.05, addresses=LOOPBACK, credentials=creds)
    d.start()
    return d


def dead_letters(
    store: Store, creds: SinkCredentials, loans: dict[str, int], timeout_s: float
) -> tuple[list[str], list[Delivery], dict[str, int]]:
    """Raise alerts for `loans`, dispatch until every delivery is recorded: their ids, the
    dead letters and the dispatcher's counters."""
    ids = [i for i, _ in raise_alerts(store, loans)]
    d = dispatch(store, creds, PATIENT)
    try:
        until(lambda: store.outbox_pending() == 0, "every delivery recorded", timeout_s)
    finally:
        d.stop()
    return ids, list(store.list_dead(None, 10).items), d.counters.snapshot()


# The file


def test_a_good_file_gives_each_broker_its_login(tmp_path: Path) -> None:
    creds = credentials(
        tmp_path,
        {
            "mqtts://Broker.Lender.Example:8883": {"username": "u1", "password": "p1"},
            "kafka://kafka-1.example:9092": {
                "username": "u2",
                "password": "p2",
                "sasl_mechanism": "SCRAM-SHA-512",
            },
            "kafkas://[2001:DB8::1]:9093/": {"username": "u3", "password": "p3"},
            "mqtt://10.0.0.5:1884": {"username": "u4", "password": "p4"},
        },
    )
    assert creds.source == f"sink credentials {tmp_path / 'sinks.json'}"
    find = creds.login_for
    assert find("mqtts://broker.lender.example:8883/lender/alerts") == SinkLogin("u1", "p1")
    assert find("mqtts://broker.lender.example/other/topic") == SinkLogin("u1", "p1")  # 8883
    assert find("kafka://KAFKA-1.example/pledgewatch.alerts") == SinkLogin(
        "u2", "p2", "SCRAM-SHA-512"
    )
    assert find("kafkas://[2001:db8::1]/t") == SinkLogin("u3", "p3", "PLAIN")  # the default
    assert find("mqtt://10.0.0.5:1884/a") == SinkLogin("u4", "p4")
    # another scheme, port or host is another broker: no login, an anonymous connection
    assert find("mqtt://broker.lender.example:8883/a") is None
    assert find("mqtt://10.0.0.5/a") is None
    assert find("kafkas://kafka-1.example:9092/t") is None
    assert find("mqtt://10.0.0.5:99999/a") is None  # a URL that does not parse
    assert "p1" not in repr(creds)  # a repr that reaches a log carries no password
    assert "username='u1'" in repr(creds)


def test_an_empty_object_is_no_logins(tmp_path: Path) -> None:
    assert credentials(tmp_path, {}).logins == {}


LOGIN = {"username": "u", "password": PASSWORD}


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        (b'{"mqtt://b:1883": ', "not valid JSON"),
        ([], "must be a JSON object of broker (scheme://host:port) to login"),
        ({"http://b:80": LOGIN}, "key 'http://b:80': the scheme must be one of mqtt, mqtts,"),
        ({"b:1883": LOGIN}, "key 'b:1883': the scheme must be one of"),
        ({"mqtt://b": LOGIN}, "key 'mqtt://b': a key is scheme://host:port with the port"),
        ({"mqtt://:1883": LOGIN}, "with the port written out"),
        ({"mqtt://b:1883/alerts": LOGIN}, "names the broker only (scheme://host:port): no topic"),
        ({"kafka://b:9092?x=1": LOGIN}, "no topic, no ?query"),
        ({"mqtt://u:p@b:1883": LOGIN}, "a key names the broker only: the login goes in"),
        ({"mqtt://b:99999": LOGIN}, "the port is not a number from 0 to 65535"),
        ({"mqtt://b:1883": "u:" + PASSWORD}, 'the value must be an object {"username"'),
        ({"mqtt://b:1883": {"password": PASSWORD}}, "username is missing or not a non-empty"),
        ({"mqtt://b:1883": {"username": "u"}}, "password is missing or not a non-empty string"),
        ({"mqtt://b:1883": {"username": "u", "password": ""}}, "password is missing"),
        ({"mqtt://b:1883": {"username": "u", "password": 7}}, "password is missing"),
        ({"mqtt://b:1883": {"username": "u\x00", "password": "p"}}, "username holds a NUL"),
        (
            {"mqtt://b:1883": {**LOGIN, "passwd": "x", "tls": True}},
            "unknown field(s) 'passwd', 'tls'; known: password, username",
        ),
        (
            {"mqtts://b:8883": {**LOGIN, "sasl_mechanism": "PLAIN"}},
            (
                "unknown field(s) 'sasl_mechanism'; known: password, username (sasl_mechanism "
                "is for kafka:// and kafkas:// brokers)"
            ),
        ),
        (
            {"kafka://b:9092": {**LOGIN, "sasl_mechanism": "GSSAPI"}},
            "sasl_mechanism 'GSSAPI' is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        ),
        (
            {"kafka://b:9092": {**LOGIN, "sasl_mechanism": "scram-sha-256"}},
            "sasl_mechanism 'scram-sha-256' is not one of",
        ),
        (
            {"mqtt://B:1883": LOGIN, "mqtt://b:1883/": LOGIN},
            "key 'mqtt://b:1883/': the broker mqtt://b:1883 has another entry already",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_what_is_wrong(
    tmp_path: Path, doc: object, why: str
) -> None:
    path = write_credentials(tmp_path / "sinks.json", doc)
    with pytest.raises(SinkCredentialsError) as caught:
        load_sink_credentials(str(path))
    message = str(caught.value)
    assert message.startswith(f"sink credentials {path}: "), message
    assert why in message
    assert PASSWORD not in message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o610, 0o666])
def test_a_file_group_or_others_may_access_is_refused_naming_the_fix(
    tmp_path: Path, mode: int
) -> None:
    path = write_credentials(tmp_path / "sinks.json", {"mqtt://b:1883": LOGIN}, mode)
    with pytest.raises(SinkCredentialsError) as caught:
        load_sink_credentials(str(path))
    assert str(caught.value) == (
        f"sink credentials {path}: group or others may access it (mode {mode:04o}) and it "
        f"holds passwords; run: chmod 600 {path}"
    )
    path.chmod(0o600)
    assert load_sink_credentials(str(path)).login_for("mqtt://b/t") == SinkLogin("u", PASSWORD)
    path.chmod(0o400)
    assert load_sink_credentials(str(path)).logins


def test_a_missing_file_or_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SinkCredentialsError, match=r"cannot read sink credentials .*missing"):
        load_sink_credentials(str(tmp_path / "missing.json"))
    folder = tmp_path / "dir"
    folder.mkdir(mode=0o700)
    with pytest.raises(SinkCredentialsError) as caught:
        load_sink_credentials(str(folder))
    assert str(folder) in str(caught.value)


HOSTS = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,10}(\.[A-Za-z0-9-]{1,8}){0,3}", fullmatch=True)


@given(
    scheme=st.sampled_from(["mqtt", "mqtts", "kafka", "kafkas"]),
    host=HOSTS,
    port=st.integers(1, 65535),
    topic=st.from_regex(r"[a-z0-9._-]{1,20}", fullmatch=True),
)
def test_a_sink_finds_the_login_of_its_broker_and_no_other(
    scheme: str, host: str, port: int, topic: str
) -> None:
    login = {"username": "u", "password": "p"}
    creds = parse_sink_credentials(orjson.dumps({f"{scheme}://{host}:{port}": login}), "f")
    assert creds.login_for(f"{scheme}://{host.lower()}:{port}/{topic}") is not None
    assert creds.login_for(f"{scheme}://{host.upper()}:{port}/{topic}") is not None
    assert creds.login_for(f"{scheme}://{host}:{port % 65535 + 1}/{topic}") is None
    assert creds.login_for(f"{scheme}://x{host}:{port}/{topic}") is None
    other = {"mqtt": "mqtts", "mqtts": "mqtt", "kafka": "kafkas", "kafkas": "kafka"}[scheme]
    assert creds.login_for(f"{other}://{host}:{port}/{topic}") is None


# The flag and the variable


def test_run_refuses_to_start_with_a_bad_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_credentials(tmp_path / "sinks.json", {"mqtt://b:1883": LOGIN}, 0o644)
    db = f"sqlite:///{tmp_path / 'pw.db'}"
    assert main(["run", "--insecure-dev", "--db-url", db, "--sink-credentials", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"pledgewatch: sink credentials {path}: group or others may access it (mode 0644) "
        f"and it holds passwords; run: chmod 600 {path}\n"
    )
    assert not (tmp_path / "pw.db").exists()  # refused before anything started
    monkeypatch.setenv("PLEDGEWATCH_SINK_CREDENTIALS", str(path))
    assert main(["run", "--insecure-dev", "--db-url", db]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_run_and_worker_take_the_file_from_the_flag_or_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_credentials(tmp_path / "sinks.json", {"mqtt://b:1883": LOGIN})
    for command in (["run"], ["worker", "--http", ":8080"]):
        args = build_parser().parse_args([*command, "--insecure-dev"])
        assert service_settings(args).sink_credentials is None  # no file: anonymous sinks
        args = build_parser().parse_args(
            [*command, "--insecure-dev", "--sink-credentials", str(path)]
        )
        logins = service_settings(args).sink_credentials
        assert logins is not None
        assert logins.login_for("mqtt://b/t") == SinkLogin("u", PASSWORD)
    monkeypatch.setenv("PLEDGEWATCH_SINK_CREDENTIALS", str(path))
    args = build_parser().parse_args(["run", "--insecure-dev"])
    logins = service_settings(args).sink_credentials
    assert logins is not None
    assert logins.login_for("mqtt://b:1883/t") is not None


# MQTT, against a Mosquitto that wants a password


@dataclass
class Locked:
    """A private Mosquitto whose listener for the engine wants a login (USER, PASSWORD), and
    a second, anonymous listener for the test's subscriber."""

    broker: Broker
    observer_url: str

    def log(self) -> str:
        return (self.broker.conf.parent / "mosquitto.log").read_text()


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Locked]:
    passwd = tmp_path / "passwd"
    passwd.write_text(f"{USER}:{hash_password(PASSWORD, os.urandom(12))}\n")
    conf = tmp_path / "locked-template.conf"
    conf.write_text(
        "per_listener_settings true\n" + SHIPPED_CONF.read_text() + f"\npassword_file {passwd}\n"
    )
    observer = free_port()
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Broker(
        workdir,
        conf=conf,
        settings={"allow_anonymous": "false"},
        extra=f"listener {observer} 127.0.0.1\nallow_anonymous true",
    )
    broker.start()
    try:
        yield Locked(broker, f"mqtt://127.0.0.1:{observer}")
    finally:
        broker.stop()


def test_with_its_login_the_sink_publishes_signed_alerts(
    store: Store, locked: Locked, tmp_path: Path
) -> None:
    url = locked.broker.url
    creds = credentials(tmp_path, {url: {"username": USER, "password": PASSWORD}})
    sub = Subscriber(locked.observer_url)
    store.put_webhook(Webhook("bus", f"{url}/{TOPIC}", SECRET))
    raised: list[tuple[str, str | None]] = list(raise_alerts(store, {"L-1": 4, "L-2": 3}))
    d = dispatch(store, creds, FAST)
    try:
        until(lambda: store.outbox_pending() == 0, "every delivery recorded")
        until(lambda: len(sub.got) >= len(raised), "every alert received")
    finally:
        d.stop()
        sub.close()
    assert sorted(r.alert_id for r in sub.got) == sorted(i for i, _ in raised)
    assert all(r.signed and not r.retained and r.qos == 1 for r in sub.got)
    assert by_loan([(r.alert_id, r.loan_id) for r in sub.got]) == by_loan(raised)
    assert d.counters.snapshot() == {"delivered": len(raised)}
    assert f"u'{USER}'" in locked.log()  # the sink's connection logged in as USER


def test_a_wrong_password_is_dead_at_once_as_a_refused_login(
    store: Store, locked: Locked, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = locked.broker.url
    creds = credentials(tmp_path, {url: {"username": USER, "password": WRONG}})
    store.put_webhook(Webhook("bus", f"{url}/{TOPIC}", SECRET))
    ids, dead, counted = dead_letters(store, creds, {"L-1": 2, "L-2": 1}, 10)
    assert sorted(x.alert_id for x in dead) == sorted(ids)  # the queues moved on at once
    assert all(x.attempts == 1 for x in dead)  # no retries
    refused = (
        f"MQTT login refused: Not authorized (0x87), as user {USER!r} "  # Mosquitto 2.0 says
        f"(from sink credentials {tmp_path / 'sinks.json'})"
    )
    assert {x.last_error for x in dead} == {refused}
    assert counted == {"dead": len(ids)}
    # one refused connection per alert, no more: no retry storm on the lender's broker
    assert locked.log().count("disconnected, not authorised") == len(ids)
    assert all(WRONG not in r.getMessage() for r in caplog.records)
    assert any("login refused" in r.getMessage() for r in caplog.records)  # the dead letter


def test_without_a_login_the_broker_refuses_the_anonymous_connection(
    store: Store, locked: Locked, tmp_path: Path
) -> None:
    url = locked.broker.url
    creds = credentials(tmp_path, {"mqtt://127.0.0.1:1": {"username": USER, "password": "x"}})
    store.put_webhook(Webhook("bus", f"{url}/{TOPIC}", SECRET))
    ids, (dead,), _ = dead_letters(store, creds, {"L-1": 1}, 10)
    assert dead.alert_id == ids[0]
    assert dead.attempts == 1
    assert dead.last_error == (
        "MQTT login refused: Not authorized (0x87), to an anonymous connection; add a login "
        f"for {url} to sink credentials {tmp_path / 'sinks.json'}"
    )


# Kafka, against tansu with SASL


@pytest.fixture
def sasl_kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    """tansu that wants SASL (`--authentication`). Its users live in its storage, and with
    memory storage they can only be made over a connection already logged in: this broker
    knows no user, so it refuses every login."""
    with running_kafka(tmp_path, "--authentication") as k:
        yield k


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
def test_a_refused_sasl_login_is_dead_at_once(
    store: Store,
    sasl_kafka: PrivateKafka,
    tmp_path: Path,
    mechanism: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    login = {"username": USER, "password": WRONG, "sasl_mechanism": mechanism}
    creds = credentials(tmp_path, {sasl_kafka.url: login})
    store.put_webhook(Webhook("lake", f"{sasl_kafka.url}/pledgewatch.alerts", SECRET))
    ids, dead, counted = dead_letters(store, creds, {"L-1": 2, "L-2": 1}, 20)
    assert sorted(x.alert_id for x in dead) == sorted(ids)
    assert all(x.attempts == 1 for x in dead)
    refused = (
        f"Kafka login refused: the broker's {mechanism} exchange did not accept it, as user "
        f"{USER!r} (from sink credentials {tmp_path / 'sinks.json'})"
    )
    assert {x.last_error for x in dead} == {refused}
    assert counted == {"dead": len(ids)}
    assert all(WRONG not in r.getMessage() for r in caplog.records)


def test_a_login_for_a_broker_without_sasl_is_a_refused_login(
    store: Store, kafka: PrivateKafka, tmp_path: Path
) -> None:
    """tansu without `--authentication` answers the SASL handshake: no mechanism offered.
    (With it, tansu closes a PLAIN connection instead: an outage to aiokafka, retried.)"""
    login = {"username": USER, "password": WRONG, "sasl_mechanism": "SCRAM-SHA-512"}
    creds = credentials(tmp_path, {kafka.url: login})
    store.put_webhook(Webhook("lake", f"{kafka.url}/pledgewatch.alerts", SECRET))
    _, (dead,), _ = dead_letters(store, creds, {"L-1": 1}, 20)
    assert dead.attempts == 1
    assert dead.last_error == (
        "Kafka login refused: the broker does not offer SASL SCRAM-SHA-512, as user "
        f"{USER!r} (from sink credentials {tmp_path / 'sinks.json'})"
    )


def test_without_a_login_a_sasl_broker_looks_away_and_is_retried(
    store: Store, sasl_kafka: PrivateKafka
) -> None:
    """A broker that wants SASL closes an anonymous connection: to aiokafka an outage."""
    store.put_webhook(Webhook("lake", f"{sasl_kafka.url}/pledgewatch.alerts", SECRET))
    raise_alerts(store, {"L-1": 1})
    d = dispatch(store, None, FAST)
    try:
        until(lambda: d.counters.snapshot().get("failed", 0) >= 2, "retried attempts", 30)
    finally:
        d.stop()
    assert store.list_dead(None, 10).items == []
    (head,) = store.due_deliveries("lake", 2**62, 10)
    assert "cannot reach the Kafka cluster" in (head.last_error or "")


def test_the_producer_speaks_sasl_with_the_login_of_its_broker(tmp_path: Path) -> None:
    creds = credentials(
        tmp_path,
        {
            "kafka://127.0.0.1:9092": {"username": "u", "password": "p", "sasl_mechanism": "PLAIN"},
            "kafkas://kafka.example:9093": {
                "username": "v",
                "password": "q",
                "sasl_mechanism": "SCRAM-SHA-256",
            },
        },
    )

    def config(url: str, bootstrap: str, logins: SinkCredentials | None = creds) -> dict[str, Any]:
        endpoint = KafkaEndpoint(url, 2.0, LOOPBACK, "lake", logins)
        return endpoint.producer_config(KafkaAddress.parse(url), bootstrap)

    plain = config("kafka://127.0.0.1:9092/t", "127.0.0.1")
    assert plain["bootstrap_servers"] == "127.0.0.1:9092"
    assert plain["security_protocol"] == "SASL_PLAINTEXT"
    assert plain["ssl_context"] is None
    assert (plain["sasl_mechanism"], plain["sasl_plain_username"]) == ("PLAIN", "u")
    assert plain["sasl_plain_password"] == "p"
    tls = config("kafkas://kafka.example/t", "kafka.example")
    assert tls["security_protocol"] == "SASL_SSL"
    assert isinstance(tls["ssl_context"], ssl.SSLContext)
    assert (tls["sasl_mechanism"], tls["sasl_plain_username"]) == ("SCRAM-SHA-256", "v")
    assert tls["sasl_plain_password"] == "q"
    anonymous = config("kafka://127.0.0.1:9093/t", "127.0.0.1")  # another port, no login
    assert anonymous["security_protocol"] == "PLAINTEXT"
    assert not any(k.startswith("sasl") for k in anonymous)
    assert config("kafkas://kafka.example/t", "kafka.example", None)["security_protocol"] == "SSL"

    async def accepted(settings: dict[str, Any]) -> str:
        # aiokafka checks the protocol and mechanism when the producer is made, unstarted
        producer = AIOKafkaProducer(**settings)
        try:
            return str(producer.client._security_protocol)
        finally:
            await producer.stop()

    assert asyncio.run(accepted(plain)) == "SASL_PLAINTEXT"
    assert asyncio.run(accepted(tls)) == "SASL_SSL"
