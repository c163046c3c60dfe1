"""Failed sign-ins, counted and slowed per name (`POST /v1/session`).

After `FREE_FAILURES` failures in a row for one name, the next attempt must wait
`2 ** (failures - FREE_FAILURES)` seconds (1, 2, 4 ... up to `MAX_WAIT_S`); an attempt
during the wait is refused at once (429 with Retry-After) without checking the password.
A success clears the name. Names are keyed case-folded and whether or not an account has
them, so the answers never tell which names exist.

In memory, per API process: a restart forgets (the wait is short anyway), and several
API processes each count their own. At most `MAX_NAMES` names are kept; when full, names
whose wait is over and whose last failure is older than `FORGET_S` go first, then the
oldest. The clock is monotonic seconds, injectable for tests.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

FREE_FAILURES = 3
MAX_WAIT_S = 900.0
MAX_NAMES = 10_000
FORGET_S = 3600.0


@dataclass(slots=True)
class _Failures:
    count: int
    last_s: float
    until_s: float


class LoginThrottle:
    """Per-name backoff of failed sign-ins, and counts of sign-ins by result."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """`clock`: monotonic seconds."""
        self._clock = clock
        self._lock = threading.Lock()
        self._names: dict[str, _Failures] = {}
        self.results: Counter[str] = Counter()  # ok, failed, throttled

    def wait_s(self, name: str) -> float:
        """Seconds until `name` may try again (0: now); counts a refused attempt."""
        with self._lock:
            failures = self._names.get(name.casefold())
            wait = 0.0 if failures is None else failures.until_s - self._clock()
            if wait > 0:
                self.results["throttled"] += 1
                return wait
            return 0.0

    def failed(self, name: str) -> None:
        """Count a failed attempt of `name` and start its wait."""
        now = self._clock()
        with self._lock:
            self.results["failed"] += 1
            key = name.casefold()
            failures = self._names.pop(key, None) or _Failures(0, now, now)
            failures.count += 1
            failures.last_s = now
            over = failures.count - FREE_FAILURES
            failures.until_s = now + (min(2.0**over, MAX_WAIT_S) if over >= 0 else 0.0)
            if len(self._names) >= MAX_NAMES:
                self._forget(now)
            self._names[key] = failures  # re-inserted: the dict stays oldest-first

    def succeeded(self, name: str) -> None:
        """Clear `name` after a successful sign-in."""
        with self._lock:
            self.results["ok"] += 1
            self._names.pop(name.casefold(), None)

    def _forget(self, now: float) -> None:
        stale = [
            k for k, f in self._names.items() if f.until_s <= now and now - f.last_s > FORGET_S
        ]
        for key in stale:
            del self._names[key]
        while len(self._names) >= MAX_NAMES:
            del self._names[next(iter(self._names))]

    def metric_lines(self) -> list[str]:
        """`pledgewatch_logins_total` by result, for `/metrics`."""
        with self._lock:
            counts = {r: self.results[r] for r in ("ok", "failed", "throttled")}
        lines = [
            "# HELP pledgewatch_logins_total Operator sign-ins (POST /v1/session), by result.",
            "# TYPE pledgewatch_logins_total counter",
        ]
        return lines + [f'pledgewatch_logins_total{{result="{r}"}} {n}' for r, n in counts.items()]
