"""Which addresses webhooks may reach (DESIGN §5): the default rule and `--webhook-allow`."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest

from alerts.address_policy import AddressPolicy, AddressRefusedError, parse_allow
from tests.brokers import REPO

DEFAULT = AddressPolicy()


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 address it is
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),  # noqa: S104
        ("::", "unspecified"),
    ],
)
def test_the_default_refuses_loopback_link_local_and_unspecified(address: str, why: str) -> None:
    reason = DEFAULT.why_refused(ipaddress.ip_address(address))
    assert reason is not None
    assert why in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "10.0.0.5", "192.168.1.20", "2001:db8::5"])
def test_the_default_allows_everything_else(address: str) -> None:
    assert DEFAULT.why_refused(ipaddress.ip_address(address)) is None


def test_an_allow_list_replaces_the_default() -> None:
    policy = AddressPolicy(parse_allow(" 127.0.0.0/8, 10.20.0.0/16 ,::1"))
    assert policy.why_refused(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.why_refused(ipaddress.ip_address("10.20.3.4")) is None
    assert policy.why_refused(ipaddress.ip_address("::1")) is None
    refused = policy.why_refused(ipaddress.ip_address("10.21.0.1"))
    assert refused is not None
    assert "outside --webhook-allow (127.0.0.0/8, 10.20.0.0/16, ::1/128)" in refused


@pytest.mark.parametrize(("text", "why"), [("10.0.0.0/33", "'10.0.0.0/33'"), (" , ", "at least")])
def test_a_bad_allow_list_names_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_allow(text)


def test_urls_are_checked_by_every_address_their_host_resolves_to() -> None:
    assert DEFAULT.check_url("http://93.184.216.34/hook") is None
    assert "loopback" in (DEFAULT.check_url("http://localhost:8080/hook") or "")
    assert "user:password@" in (DEFAULT.check_url("https://u:p@93.184.216.34/") or "")
    assert "does not resolve" in (DEFAULT.check_url("http://no-such-host.invalid/") or "")
    loopback = AddressPolicy(parse_allow("127.0.0.0/8"))
    assert loopback.check_url("http://localhost:8080/hook") is None
    with pytest.raises(AddressRefusedError, match="outside --webhook-allow"):
        loopback.resolve("169.254.169.254", 80)


def test_a_bad_webhook_allow_flag_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "--webhook-allow", "10.0.0.0/99"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "argument --webhook-allow: --webhook-allow: '10.0.0.0/99'" in done.stderr
