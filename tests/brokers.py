"""A private Mosquitto per test (`simulator.harness.broker`), with the settings we ship, and a
private Kafka-protocol broker (`simulator.harness.kafka_broker`: tansu, memory storage)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from simulator.harness.broker import PrivateBroker, free_port
from simulator.harness.kafka_broker import PrivateKafka

REPO = Path(__file__).resolve().parent.parent
Broker = PrivateBroker

__all__ = ["REPO", "Broker", "PrivateKafka", "broker", "free_port", "kafka", "running_kafka"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh private broker for one test."""
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@contextmanager
def running_kafka(workdir: Path, *extra_args: str) -> Iterator[PrivateKafka]:
    """A private Kafka-protocol broker (tansu, memory storage), started, stopped at the end;
    `extra_args` go to `tansu broker`."""
    k = PrivateKafka(workdir, extra_args=extra_args)
    k.start()
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    """A fresh private Kafka-protocol broker (tansu, memory storage) for one test."""
    with running_kafka(tmp_path) as k:
        yield k
