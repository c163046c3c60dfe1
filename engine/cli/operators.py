"""`pledgewatch operators add|list|delete`: operator accounts on the database itself, without
the API: how the first admin is made (DESIGN §9 "Console").

The password is read from standard input (its first line) when that is not a terminal,
else asked for twice at a prompt without echo: never from the command line, where `ps`
and the shell's history would show it. It is stored as a scrypt hash
(`engine.api.credentials`). Each change goes to the audit log with the command's OS user as
its actor (kind `cli`). The schema is migrated first if it needs to be (as `run` does).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from alerts.model import iso_ms
from engine.api.credentials import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, hash_password
from engine.api.roles import NAME_RE, ROLES
from engine.cli.options import CliError, option
from engine.store.console_types import Actor, ActorKind, AuditEntry, PutOperator
from engine.store.factory import open_store, redact_url, secret_box_for
from engine.store.port import Store, StoreConfigError, StoreError
from engine.store.sql_base import clock_ms


def operators_options(parser: argparse.ArgumentParser) -> None:
    """The `add`, `list` and `delete` verbs under `operators`, and their flags."""
    verbs = parser.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser(
        "add", help="create an operator, or change its role and password (read from stdin)"
    )
    add.add_argument("name", help="the operator's name (letters, digits, _ . @ -)")
    option(add, "--role", choices=ROLES, required=True, help="viewer, operator or admin")
    add.set_defaults(func=cmd_add)
    listing = verbs.add_parser("list", help="the operators and their roles")
    listing.set_defaults(func=cmd_list)
    delete = verbs.add_parser("delete", help="delete an operator and end its sessions")
    delete.add_argument("name")
    delete.set_defaults(func=cmd_delete)
    for verb in (add, listing, delete):
        option(verb, "--db-url", default="sqlite:///pledgewatch.db", help="the engine's database")
        option(verb, "--secret-key-file", help="the key of webhook secrets, as for `run`")


def cmd_add(args: argparse.Namespace) -> int:
    """`pledgewatch operators add NAME --role ROLE`: the password from stdin or a prompt."""
    name: str = args.name
    if not NAME_RE.fullmatch(name):
        raise CliError(f"{name!r} is not a valid operator name (letters, digits, _ . @ -)")
    hashed = hash_password(read_password(name))
    with _store(args) as store:
        action = "operator.create" if store.get_operator(name) is None else "operator.update"
        outcome = store.put_operator(name, args.role, hashed, _audit(action, name))
    verb = "created" if outcome is PutOperator.CREATED else "updated"
    print(f"operator {name} {verb} (role {args.role})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """`pledgewatch operators list`: name, role and last change of each operator."""
    with _store(args) as store:
        operators = store.list_operators()
    for o in operators:
        print(f"{o.name:<32} {o.role:<9} {iso_ms(o.updated_ms)}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """`pledgewatch operators delete NAME`."""
    with _store(args) as store:
        if not store.delete_operator(args.name, _audit("operator.delete", args.name)):
            raise CliError(f"there is no operator named {args.name!r}")
    print(f"operator {args.name} deleted")
    return 0


def read_password(name: str) -> str:
    """The new password: the first line of stdin, or asked twice at a terminal."""
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise CliError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        msg = f"the password must have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        raise CliError(msg)
    return password


def _audit(action: str, name: str) -> AuditEntry:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name in this environment
        user = "cli"
    return AuditEntry(clock_ms(), Actor(user, ActorKind.CLI), action, f"operator:{name}")


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[Store]:
    """The migrated store of `--db-url`; a usage error when it cannot be opened."""
    try:
        store = open_store(args.db_url, secrets=secret_box_for(args.db_url, args.secret_key_file))
    except (StoreConfigError, StoreError) as exc:
        raise CliError(f"{redact_url(args.db_url)}: {exc}") from exc
    try:
        store.migrate()
        yield store
    except StoreError as exc:
        raise CliError(f"{redact_url(args.db_url)}: {exc}") from exc
    finally:
        store.close()
