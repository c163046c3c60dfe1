"""What the route modules share: the engine, the store, the webhook dispatcher, and the
count of failed sign-ins."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from alerts.address_policy import AddressPolicy
from alerts.dispatcher import Dispatcher
from engine.api.login_throttle import LoginThrottle
from engine.runtime.live import Engine
from engine.store.port import Store


@dataclass(slots=True)
class ApiContext:
    """What the handlers work with."""

    engine: Engine
    store: Store
    dispatcher: Dispatcher | None
    webhook_addresses: AddressPolicy = field(default_factory=AddressPolicy)
    # One loan PUT or import at a time: two loans with one VIN must see each other.
    loan_lock: threading.Lock = field(default_factory=threading.Lock)
    logins: LoginThrottle = field(default_factory=LoginThrottle)

    def wake_dispatcher(self) -> None:
        """New outbox rows are committed: let the webhook workers look now."""
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def sync_dispatcher(self) -> None:
        """Webhooks changed: start or stop their workers now rather than at the next poll."""
        if self.dispatcher is not None:
            self.dispatcher.sync()
