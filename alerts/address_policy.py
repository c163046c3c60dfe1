"""Which addresses webhooks may reach (DESIGN §5, `--webhook-allow`), MQTT and Kafka sinks too.

Without it a webhook URL could point the engine at anything it can reach (its database,
a cloud metadata service, the broker) and the dead-letter errors would make it a port
scanner. A URL must resolve to addresses the policy allows: checked when the webhook is
registered (the API answers 422) and again each time a connection is opened (the delivery
is dead with the reason), and the connection goes to the very address that was checked, so
a name that resolves differently the second time (DNS rebinding) gains nothing.

Default: every address except loopback, link-local and unspecified ones. With an allow
list (comma-separated CIDRs), only addresses inside it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "mqtt": 1883,
    "mqtts": 8883,
    "kafka": 9092,
    "kafkas": 9093,
}
"""The port of a webhook URL that names none, by scheme (`mqtt(s)://` are MQTT sinks,
`kafka(s)://` Kafka sinks)."""

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressRefusedError(OSError):
    """The URL names, or resolves to, an address the policy does not allow."""


def parse_allow(text: str) -> tuple[IpNetwork, ...]:
    """`10.0.0.0/8, 192.168.1.7` into networks; a ValueError names the entry that is wrong."""
    networks: list[IpNetwork] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            msg = f"--webhook-allow: {entry!r} is not an address or CIDR block ({exc})"
            raise ValueError(msg) from exc
    if not networks:
        msg = "--webhook-allow: name at least one CIDR block, e.g. 10.0.0.0/8"
        raise ValueError(msg)
    return tuple(networks)


def _plain(address: IpAddress) -> IpAddress:
    """An IPv4-mapped IPv6 address (::ffff:127.0.0.1) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The addresses webhooks may reach: `allow` networks, or None for the default rule."""

    allow: tuple[IpNetwork, ...] | None = None

    def why_refused(self, address: IpAddress) -> str | None:
        """None if webhooks may reach `address`; else why not."""
        address = _plain(address)
        if self.allow is not None:
            if any(address in network for network in self.allow):
                return None
            allowed = ", ".join(str(n) for n in self.allow)
            return f"{address} is outside --webhook-allow ({allowed})"
        if address.is_loopback:
            return f"{address} is a loopback address (pass --webhook-allow to permit it)"
        if address.is_link_local:
            return f"{address} is a link-local address (pass --webhook-allow to permit it)"
        if address.is_unspecified:
            return f"{address} is the unspecified address"
        return None

    def resolve(self, host: str, port: int) -> list[IpAddress]:
        """The addresses `host` resolves to, every one allowed; AddressRefusedError names
        the first that is not (or says the name does not resolve)."""
        try:
            literal: IpAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            found = [literal]
        else:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                msg = f"{host!r} does not resolve ({exc})"
                raise AddressRefusedError(msg) from exc
            found = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        for address in found:
            why = self.why_refused(address)
            if why is not None:
                msg = f"webhook host {host!r}: {why}"
                raise AddressRefusedError(msg)
        return found

    def check_url(self, url: str) -> str | None:
        """None if the URL may be registered; else why not (credentials, or its addresses)."""
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            return "a webhook URL must not carry user:password@ (use the signing secret)"
        try:
            port = parts.port or DEFAULT_PORTS.get(parts.scheme, 80)
        except ValueError:
            return f"the port of {url[:100]!r} is not a number from 0 to 65535"
        try:
            self.resolve(parts.hostname or "", port)
        except AddressRefusedError as exc:
            return str(exc)
        return None
