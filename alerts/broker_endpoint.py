"""What the endpoints of broker sinks (`mqtt(s)://`, `kafka(s)://`) share: the sink's URL
parsed once, the address policy, the delivery timeout, a client id of their own, the lock
held while connecting, and the login of the sink's broker (`alerts.sink_credentials`), if
the credentials file has one. A URL that does not parse (the API refuses such URLs; one
already in the store may not) fails each send with the parser's reason."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from alerts.address_policy import DEFAULT_PORTS, AddressPolicy
from alerts.sink_credentials import ENV_VAR, SinkCredentials, SinkLogin, broker_key

AddressT = TypeVar("AddressT")


class LoginRefusedError(ConnectionError):
    """The broker refused the sink's login (or its anonymous connection): permanent, like a
    refused PUBACK, since no retry changes the credentials. The message names the user,
    never the password."""


class BrokerEndpoint(Generic[AddressT]):
    """One sink's URL, policy, timeout, client id and login; subclasses connect and send."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        policy: AddressPolicy | None,
        name: str,
        parse: Callable[[str], AddressT],
        credentials: SinkCredentials | None = None,
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
        self.credentials = credentials
        self.login: SinkLogin | None = None if credentials is None else credentials.login_for(url)
        self._lock = threading.Lock()  # held while connecting: one connect at a time

    def parsed(self) -> AddressT:
        """The sink's address (ValueError with the parser's reason if its URL is bad)."""
        if self.address is None:
            raise ValueError(self.invalid)
        return self.address

    def login_refused(self, protocol: str, why: str) -> LoginRefusedError:
        """The error of a refused login: the broker's reason, who we logged in as (or that
        we had no login for this broker, and where one goes)."""
        parts = urlsplit(self.url)
        key = broker_key(
            parts.scheme, parts.hostname or "", parts.port or DEFAULT_PORTS[parts.scheme]
        )
        source = None if self.credentials is None else self.credentials.source
        if self.login is not None:
            who = f"as user {self.login.username!r} (from {source or 'the sink credentials'})"
        else:
            where = source or f"the file --sink-credentials or {ENV_VAR} names"
            who = f"to an anonymous connection; add a login for {key} to {where}"
        return LoginRefusedError(f"{protocol} login refused: {why}, {who}")
