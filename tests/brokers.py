"""A private Mosquitto per test (`simulator.harness.broker`), with the settings we ship, and a
private Kafka-protocol broker (`simulator.harness.kafka_broker`: tansu, memory storage)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.harness.broker import PrivateBroker, free_port
from simulator.harness.kafka_broker import PrivateKafka

REPO = Path(__file__).resolve().parent.parent
Broker = PrivateBroker

__all__ = ["REPO", "Broker", "PrivateKafka", "broker", "free_port", "kafka"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh private broker for one test."""
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    """A fresh private Kafka-protocol broker (tansu, memory storage) for one test."""
    k = PrivateKafka(tmp_path)
    k.start()
    try:
        yield k
    finally:
        k.stop()
