"""Exponential backoff with jitter: one rule for every retry in the product.

The dispatcher spaces webhook attempts with it (DESIGN §5), the MQTT adapter its reconnects
and child restarts, the engine its commit retries. Equal jitter: the delay is uniform in
[ceiling / 2, ceiling], so retries spread out but never come back at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def backoff_s(attempt: int, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """The delay before retry number `attempt` (0 first): ceiling min(cap, base * 2**attempt)."""
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, 30))
    return ceiling / 2 + random.uniform(0.0, ceiling / 2)  # noqa: S311  # jitter, not crypto


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When the dispatcher tries a delivery again, and when it gives up. Seconds."""

    base_s: float = 1.0
    cap_s: float = 300.0
    max_age_s: float = 24 * 3600.0
    timeout_s: float = 5.0
    parallel: int = 8  # deliveries in flight per endpoint (each to a different loan)

    def retry_delay_s(self, attempts: int) -> float:
        """The delay after `attempts` (1 or more) failed attempts."""
        return backoff_s(attempts - 1, self.base_s, self.cap_s)
