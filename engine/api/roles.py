"""The console's roles and names, apart from the web framework (the CLI imports them).

Roles are ordered: `viewer` reads (every GET, and a quote, which changes nothing);
`operator` also works alert cases (ack, assign, resolve, reopen, notes) and reads the
audit log; `admin` may do everything else: fences, loans, webhooks, operators, machine
tokens, device tokens, redelivery, the HTTP inputs.
"""

from __future__ import annotations

import re
from enum import StrEnum

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
"""An operator's or a machine token's name; use with `fullmatch`."""


class Role(StrEnum):
    """What a principal may do; each role admits what the ones before it admit."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def admits(self, needed: Role) -> bool:
        """Whether this role may do what needs `needed`."""
        return _RANKS[self] >= _RANKS[needed]


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
ROLES = tuple(r.value for r in Role)
