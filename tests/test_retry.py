"""The one backoff rule: exponential, capped, with equal jitter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alerts.retry import RetryPolicy, backoff_s


@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    base_s=st.floats(min_value=0.001, max_value=60),
    cap_s=st.floats(min_value=0.001, max_value=3600),
)
def test_backoff_stays_between_half_the_ceiling_and_the_ceiling(
    attempt: int, base_s: float, cap_s: float
) -> None:
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, 30))
    delay = backoff_s(attempt, base_s, cap_s)
    assert ceiling / 2 <= delay <= ceiling


def test_backoff_grows_then_stops_at_the_cap() -> None:
    assert max(backoff_s(0) for _ in range(200)) <= 0.5
    assert min(backoff_s(3) for _ in range(200)) >= 2.0  # ceiling 4 s: never under half of it
    assert all(15.0 <= backoff_s(40) <= 30.0 for _ in range(200))
    delays = {backoff_s(5) for _ in range(50)}
    assert len(delays) > 1  # jittered: reconnecting clients do not come back in step


def test_the_dispatcher_policy_uses_the_same_rule() -> None:
    policy = RetryPolicy(base_s=2.0, cap_s=100.0)
    assert all(1.0 <= policy.retry_delay_s(1) <= 2.0 for _ in range(100))
    assert all(8.0 <= policy.retry_delay_s(4) <= 16.0 for _ in range(100))
    assert all(50.0 <= policy.retry_delay_s(30) <= 100.0 for _ in range(100))
