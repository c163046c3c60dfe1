"""`pledgewatch bridge` and `pledgewatch worker`: the distributed runtime (DESIGN §9).

The composition roots of the bridge (MQTT source, Kafka producer, signals) and of a worker
(the Faust app of `engine.distributed.worker`, the store, and with `--http` the API and the
webhook dispatcher of `pledgewatch run`, whose engine sends to the cluster).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import socket
import sys
from typing import Any

from engine.cli.http_address import HttpAddress
from engine.cli.lending_options import load_lending
from engine.cli.options import CliError, option
from engine.cli.service_options import api_options, http_address, load_config, service_settings

_log = logging.getLogger("pledgewatch.distributed")


def default_store() -> str:
    """RocksDB where available (rocksdict is a dependency), memory otherwise."""
    return "rocksdb://" if importlib.util.find_spec("rocksdict") else "memory://"


def kafka_options(parser: argparse.ArgumentParser) -> None:
    """The flags of the cluster, shared by the bridge and the worker."""
    option(
        parser,
        "--kafka-url",
        default="kafka://127.0.0.1:9092",
        help="kafka://HOST:PORT[,HOST:PORT...] of the brokers",
    )
    option(
        parser,
        "--partitions",
        type=int,
        default=8,
        help="partitions of the keyed topics when they are made (default 8; fix it before "
        "production: a table's changelog must keep its topic's count)",
    )
    option(
        parser,
        "--loan-partitions",
        type=int,
        help="partitions of pledgewatch.loan-events (default: --partitions). 1 puts every "
        "loan's per-loan stage on one worker, so risk-site discovery sees every loan",
    )
    option(parser, "--replication", type=int, default=1, help="replication factor of new topics")
    option(
        parser,
        "--producer-batch-bytes",
        type=int,
        default=16384,
        help="aiokafka batch size of the producers whose topics are read to their end offsets: "
        "the tables' changelogs (table recovery) and pledgewatch.changes (default 16384; 1 "
        "for tansu, which reports a batch's end offset short). Loan events and alerts are "
        "batched whatever this says",
    )


def bridge_options(parser: argparse.ArgumentParser) -> None:
    """`pledgewatch bridge`'s flags."""
    option(parser, "--mqtt-url", default="mqtt://127.0.0.1:1883", help="the MQTT broker")
    kafka_options(parser)
    option(
        parser,
        "--client-id",
        help="MQTT client id, naming this bridge's persistent session (default: "
        "pledgewatch-bridge- and the host name; give each bridge its own)",
    )
    option(
        parser,
        "--share-group",
        default="pledgewatch-bridge",
        help="MQTT shared subscription group the bridges split the traffic in",
    )
    option(parser, "--max-batch", type=int, default=1000, help="MQTT messages per Kafka batch")
    parser.set_defaults(func=cmd_bridge)


def worker_options(parser: argparse.ArgumentParser) -> None:
    """`pledgewatch worker`'s flags: the cluster's, the tables', and those of the API it
    serves with `--http` (as `pledgewatch run` takes them)."""
    kafka_options(parser)
    option(parser, "--app-id", default="pledgewatch", help="Faust app id: consumer group, tables")
    option(
        parser,
        "--store",
        default=default_store(),
        help="Faust table store: rocksdb:// (the default where rocksdict is installed: tables "
        "kept on disk under --data-dir, recovered from the changelog's tail) or memory://",
    )
    option(parser, "--data-dir", default="pledgewatch-worker", help="the tables' local files")
    option(
        parser,
        "--checkpoint-s",
        type=float,
        default=5.0,
        help="how often changed state is written to the tables and offsets committed",
    )
    option(
        parser,
        "--fetch-wait-ms",
        type=int,
        help="how long the worker's fetches wait for records (default: Faust's 1500; Kafka "
        "answers as records come, tansu holds a fetch for the whole wait: 100 there)",
    )
    option(parser, "--metrics", type=http_address, help="HOST:PORT serving this worker's /metrics")
    api_options(parser, http_default=None)
    parser.set_defaults(func=cmd_worker)


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from engine.distributed.settings import KafkaSettings  # noqa: PLC0415  # aiokafka

    try:
        settings = KafkaSettings(
            url=args.kafka_url,
            partitions=args.partitions,
            loan_partitions=args.loan_partitions,
            replication=args.replication,
            producer_batch_bytes=args.producer_batch_bytes,
            **extra,
        )
        settings.bootstrap  # noqa: B018  # parses the URL: a usage error names what is wrong
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    return settings


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def cmd_bridge(args: argparse.Namespace) -> int:
    """`pledgewatch bridge`: MQTT → Kafka until SIGTERM or SIGINT."""
    from devices.mqtt_source import MqttSource  # noqa: PLC0415
    from engine.distributed.bridge import Bridge, shared_topics  # noqa: PLC0415
    from engine.distributed.kafka_io import Producer  # noqa: PLC0415

    _logging()
    settings = _settings(args)
    client_id = args.client_id or f"pledgewatch-bridge-{socket.gethostname()}"[:64]
    try:
        source = MqttSource(
            args.mqtt_url,
            client_id,
            topics=shared_topics(args.share_group),
            receive_maximum=max(2 * args.max_batch, 100),
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    producer = Producer(settings, client_id)
    bridge = Bridge(source, producer, max_batch=args.max_batch)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: bridge.stopping.set())
    while not bridge.stopping.is_set():
        try:
            producer.start()
            break
        except Exception as exc:  # noqa: BLE001  # the cluster may come later: say so, retry
            _log.warning("Kafka at %s not reachable (%s); retrying", settings.bootstrap, exc)
            bridge.stopping.wait(2.0)
    source.start()
    _log.info("bridge %s: MQTT %s → Kafka %s", client_id, args.mqtt_url, settings.bootstrap)
    try:
        bridge.run()
    finally:
        source.stop()
        producer.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """`pledgewatch worker`: a Faust worker (and, with --http, the API and the dispatcher)."""
    import faust  # noqa: PLC0415  # heavy

    from engine.cli.service import Service  # noqa: PLC0415
    from engine.distributed.cluster_api import ClusterEngine  # noqa: PLC0415
    from engine.distributed.kafka_io import Producer  # noqa: PLC0415
    from engine.distributed.worker import Worker  # noqa: PLC0415
    from engine.store.factory import open_store, secret_box_for  # noqa: PLC0415
    from engine.store.port import LeaseError, StoreConfigError  # noqa: PLC0415
    from lending.consumer import LendingConsumer  # noqa: PLC0415

    _logging()
    settings = _settings(
        args,
        app_id=args.app_id,
        store=args.store,
        data_dir=args.data_dir,
        checkpoint_s=args.checkpoint_s,
        fetch_wait_ms=args.fetch_wait_ms,
    )
    config = load_config(args.config)
    params = load_lending(args)
    service = None
    try:
        if args.http is not None:
            producer = Producer(settings, f"pledgewatch-api-{socket.gethostname()}")
            producer.start()

            def make_engine(store: Any, on_commit: Any) -> ClusterEngine:
                return ClusterEngine(store, producer, config, on_commit=on_commit)

            service = Service(service_settings(args), make_engine=make_engine)
            store = service.store
        else:
            store = open_store(args.db_url, secrets=secret_box_for(args.db_url, None))
            store.migrate()
    except StoreConfigError as exc:
        raise CliError(str(exc)) from exc
    except LeaseError as exc:
        print(f"pledgewatch: {exc}", file=sys.stderr)
        return 1
    metrics: HttpAddress | None = args.metrics
    worker = Worker(
        settings,
        config,
        store,
        None if params is None else (lambda: LendingConsumer(params)),
        web=None if metrics is None else (metrics.host, metrics.port),
    )
    if service is not None:
        service.start()
    runner = faust.Worker(worker.app, loglevel="INFO", quiet=True, override_logging=False)
    try:
        runner.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if service is not None:
            service.stop()
        else:
            store.close()
    return 0
