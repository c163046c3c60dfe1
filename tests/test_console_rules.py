"""The console's pure rules: which role a request needs, the sign-in backoff, and how
passwords and tokens are kept (`engine.api.principals`, `login_throttle`, `credentials`)."""

from __future__ import annotations

import pytest

from engine.api import login_throttle
from engine.api.credentials import hash_password, new_token, token_sha256, verify_password
from engine.api.login_throttle import LoginThrottle
from engine.api.principals import csrf_token, required_role
from engine.api.roles import Role


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/v1/alerts", Role.VIEWER),
        ("GET", "/v1/devices/trk-1/track", Role.VIEWER),
        ("GET", "/metrics", Role.VIEWER),
        ("HEAD", "/v1/fences", Role.VIEWER),
        ("POST", "/v1/quotes", Role.VIEWER),
        ("GET", "/v1/session", Role.VIEWER),
        ("DELETE", "/v1/session", Role.VIEWER),
        ("GET", "/v1/audit", Role.OPERATOR),
        ("POST", "/v1/alerts/abc/ack", Role.OPERATOR),
        ("POST", "/v1/alerts/abc/assign", Role.OPERATOR),
        ("POST", "/v1/alerts/abc/resolve", Role.OPERATOR),
        ("POST", "/v1/alerts/abc/reopen", Role.OPERATOR),
        ("POST", "/v1/alerts/abc/notes", Role.OPERATOR),
        ("POST", "/v1/alerts/a/b/ack", Role.ADMIN),  # no such alert route
        ("GET", "/v1/operators", Role.ADMIN),
        ("GET", "/v1/tokens", Role.ADMIN),
        ("GET", "/v1/devices/trk-1/token", Role.ADMIN),
        ("PUT", "/v1/fences/f", Role.ADMIN),
        ("PUT", "/v1/loans/L-1", Role.ADMIN),
        ("DELETE", "/v1/webhooks/h", Role.ADMIN),
        ("POST", "/v1/deliveries/1:redeliver", Role.ADMIN),
        ("POST", "/v1/ingest/traccar", Role.ADMIN),
        ("PATCH", "/v1/alerts/abc", Role.ADMIN),
    ],
)
def test_the_role_each_request_needs(method: str, path: str, role: Role) -> None:
    assert required_role(method, path) is role


def test_roles_are_ordered() -> None:
    assert Role.ADMIN.admits(Role.OPERATOR)
    assert Role.OPERATOR.admits(Role.VIEWER)
    assert Role.OPERATOR.admits(Role.OPERATOR)
    assert not Role.VIEWER.admits(Role.OPERATOR)
    assert not Role.OPERATOR.admits(Role.ADMIN)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_doubles_after_three_failures_and_a_success_clears_it() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    waits = []
    for _ in range(15):
        throttle.failed("Olga")
        waits.append(throttle.wait_s("olga"))  # names are case-folded
    assert waits[:6] == [0.0, 0.0, 1.0, 2.0, 4.0, 8.0]
    assert max(waits) == login_throttle.MAX_WAIT_S
    clock.now += login_throttle.MAX_WAIT_S
    assert throttle.wait_s("olga") == 0.0
    throttle.succeeded("OLGA")
    throttle.failed("olga")
    assert throttle.wait_s("olga") == 0.0  # counting starts again
    assert throttle.results["throttled"] == 13
    assert 'pledgewatch_logins_total{result="failed"} 16' in throttle.metric_lines()


def test_the_throttle_keeps_a_bounded_number_of_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(login_throttle, "MAX_NAMES", 10)
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(5):
        throttle.failed("target")
    for i in range(30):
        clock.now += 1
        throttle.failed(f"spray-{i}")
    assert len(throttle._names) <= 10
    # the oldest went first: a sprayer can push a name out only with as many names
    assert "target" not in throttle._names


def test_passwords_are_salted_scrypt_and_checked() -> None:
    first, second = hash_password("a long passphrase"), hash_password("a long passphrase")
    assert first != second  # a random salt each
    assert first.startswith("scrypt$16384$8$1$")
    assert verify_password("a long passphrase", first)
    assert not verify_password("a long passphrasE", first)
    for stored in ("", "plain", "bcrypt$x$y$z$a$b", "scrypt$16384$8$1$!!$!!", "scrypt$x$8$1$a$b"):
        assert not verify_password("a long passphrase", stored)


def test_tokens_and_csrf_tokens() -> None:
    token = new_token("pwt_")
    assert token.startswith("pwt_")
    assert len(token) == 4 + 43
    assert token_sha256(token) != token_sha256(new_token("pwt_"))
    assert csrf_token("session-a") == csrf_token("session-a") != csrf_token("session-b")
