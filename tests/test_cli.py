"""The command line: flags parsed once, bad values as usage errors that say what is wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.cli.http_address import HttpAddress, parse_http
from engine.cli.main import build_parser
from tests.brokers import REPO


@pytest.mark.parametrize(
    ("value", "host", "port", "base_url"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080, "http://127.0.0.1:8080"),
        (":8080", "127.0.0.1", 8080, "http://127.0.0.1:8080"),
        ("localhost:1", "localhost", 1, "http://localhost:1"),
        ("0.0.0.0:9000", "0.0.0.0", 9000, "http://127.0.0.1:9000"),  # noqa: S104
        ("[::1]:8080", "::1", 8080, "http://[::1]:8080"),
        ("[::]:8080", "::", 8080, "http://[::1]:8080"),
    ],
)
def test_http_addresses(value: str, host: str, port: int, base_url: str) -> None:
    address = parse_http(value)
    assert address == HttpAddress(host, port)
    assert address.base_url == base_url


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("8080", "no port"),
        ("host:", "must be a number"),
        (":0", "must be a number"),
        (":65536", "must be a number"),
        (":80x", "must be a number"),
        (":\uff18\uff10", "must be a number"),  # full-width digits: str.isdigit says yes
        ("::1:8080", "IPv6 address in brackets"),
        ("a b:80", "not a host name"),
        ("user@host:80", "not a host name"),
    ],
)
def test_bad_http_addresses_say_what_is_wrong(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_http(value)


def test_run_and_demo_parse_http_the_same_way() -> None:
    parser = build_parser()
    for command in (["run"], ["demo"]):
        args = parser.parse_args([*command, "--http", ":8181"])
        assert args.http == HttpAddress("127.0.0.1", 8181)
        assert parser.parse_args(command).http == HttpAddress("127.0.0.1", 8080)


@pytest.mark.parametrize("command", ["run", "demo"])
def test_a_malformed_port_is_a_usage_error_not_a_traceback(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", command, "--http", "127.0.0.1:80a"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "argument --http: --http '127.0.0.1:80a': the port must be a number" in done.stderr
