"""A private Mosquitto per test (`simulator.harness.broker`), with the settings we ship."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.harness.broker import PrivateBroker, free_port

REPO = Path(__file__).resolve().parent.parent
Broker = PrivateBroker

__all__ = ["REPO", "Broker", "broker", "free_port"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh private broker for one test."""
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()
