"""What the endpoints of broker sinks (`mqtt(s)://`, `kafka(s)://`) share: the sink's URL
parsed once, the address policy, the delivery timeout, a client id of their own and the
lock held while connecting. A URL that does not parse (the API refuses such URLs; one
already in the store may not) fails each send with the parser's reason."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from alerts.address_policy import AddressPolicy

AddressT = TypeVar("AddressT")


class BrokerEndpoint(Generic[AddressT]):
    """One sink's URL, policy, timeout and client id; subclasses connect and send."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        policy: AddressPolicy | None,
        name: str,
        parse: Callable[[str], AddressT],
    ) -> None:
        self.url = url
        self.policy = policy or AddressPolicy()
        self.timeout_s = timeout_s
        self.client_id = f"pledgewatch-alerts-{name[:40]}-{uuid.uuid4().hex[:12]}"
        try:
            self.address: AddressT | None = parse(url)
            self.invalid: str | None = None
        except ValueError as exc:
            self.address, self.invalid = None, str(exc)
        self._lock = threading.Lock()  # held while connecting: one connect at a time

    def parsed(self) -> AddressT:
        """The sink's address (ValueError with the parser's reason if its URL is bad)."""
        if self.address is None:
            raise ValueError(self.invalid)
        return self.address
