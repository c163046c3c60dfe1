"""`pledgewatch operators add|list|delete` (`engine.cli.operators`): the first admin without
the API, on SQLite and PostgreSQL, the password from stdin and never from argv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.api.credentials import verify_password
from engine.store.console_types import AuditQuery
from engine.store.postgres_store import PostgresStore
from engine.store.sqlite_store import SqliteStore
from tests.brokers import REPO
from tests.conftest import PG_DSN, with_search_path

PASSWORD = "a long enough passphrase"


def pledgewatch(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_first_admin_is_made_on_the_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'console.db'}"
    else:
        url = with_search_path(PG_DSN, request.getfixturevalue("pg_schema"))
    db = ("--db-url", url)
    made = pledgewatch(
        "operators", "add", "root-admin", "--role", "admin", *db, stdin=PASSWORD + "\n"
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "operator root-admin created (role admin)"
    changed = pledgewatch(
        "operators", "add", "root-admin", "--role", "operator", *db, stdin=PASSWORD
    )
    assert changed.stdout.strip() == "operator root-admin updated (role operator)"
    listed = pledgewatch("operators", "list", *db)
    assert listed.stdout.split()[:2] == ["root-admin", "operator"]

    store = SqliteStore(tmp_path / "console.db") if backend == "sqlite" else PostgresStore(url)
    try:
        found = store.operator_login("root-admin")
        assert found is not None
        assert found[0] == "operator"
        assert verify_password(PASSWORD, found[1])
        assert PASSWORD not in found[1]
        entries = store.list_audit(AuditQuery(target="operator:root-admin")).items
        assert [(e.action, e.actor.kind.value) for e in entries] == [
            ("operator.update", "cli"),
            ("operator.create", "cli"),
        ]
    finally:
        store.close()

    gone = pledgewatch("operators", "delete", "root-admin", *db)
    assert (gone.returncode, gone.stdout.strip()) == (0, "operator root-admin deleted")
    again = pledgewatch("operators", "delete", "root-admin", *db)
    assert again.returncode == 2
    assert "no operator named 'root-admin'" in again.stderr


def test_bad_input_is_a_usage_error(tmp_path: Path) -> None:
    db = ("--db-url", f"sqlite:///{tmp_path / 'bad.db'}")
    short = pledgewatch("operators", "add", "ann", "--role", "admin", *db, stdin="short\n")
    assert short.returncode == 2
    assert "the password must have 10 to 1024 characters" in short.stderr
    name = pledgewatch("operators", "add", "no spaces", "--role", "admin", *db, stdin=PASSWORD)
    assert (name.returncode, "not a valid operator name" in name.stderr) == (2, True)
    role = pledgewatch("operators", "add", "ann", "--role", "boss", *db, stdin=PASSWORD)
    assert (role.returncode, "invalid choice" in role.stderr) == (2, True)
    argv = pledgewatch("operators", "add", "ann", "--role", "admin", "--password", PASSWORD, *db)
    assert argv.returncode == 2  # no such flag: a password never goes on the command line
    assert "unrecognized arguments" in argv.stderr
    url = pledgewatch("operators", "list", "--db-url", "mysql://nowhere")
    assert (url.returncode, "unsupported database URL" in url.stderr) == (2, True)
    for done in (short, name, role, argv, url):
        assert "Traceback" not in done.stderr
