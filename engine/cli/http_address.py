"""The `--http HOST:PORT` flag: parsed once, for `pledgewatch run`, `demo` and `gateway`
(whose `--listen` takes the same form)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HttpAddress:
    """Where the API listens (`--http HOST:PORT`)."""

    host: str
    port: int

    @property
    def base_url(self) -> str:
        """The URL a client on this machine reaches the API at."""
        host = self.host
        if host in {"0.0.0.0", "::"}:  # noqa: S104  # a wildcard listens; a client needs an address
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"  # noqa: S104
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"


def parse_http(value: str, flag: str = "--http") -> HttpAddress:
    """`HOST:PORT`, `:PORT` (this machine's loopback) or `[IPv6]:PORT`; a ValueError says
    what is wrong (argparse shows it as a usage error), naming `flag`."""
    example = "expected HOST:PORT, e.g. 127.0.0.1:8080, :8080 or [::1]:8080"
    host, sep, port_text = value.strip().rpartition(":")
    if not sep:
        msg = f"{flag} {value!r}: no port; {example}"
        raise ValueError(msg)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        msg = f"{flag} {value!r}: put an IPv6 address in brackets; {example}"
        raise ValueError(msg)
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        msg = f"{flag} {value!r}: the port must be a number from 1 to 65535; {example}"
        raise ValueError(msg)
    if any(c.isspace() or c in "/?#@[]" for c in host):
        msg = f"{flag} {value!r}: {host!r} is not a host name or address; {example}"
        raise ValueError(msg)
    return HttpAddress(host or "127.0.0.1", int(port_text))
