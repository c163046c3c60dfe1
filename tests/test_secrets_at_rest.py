"""Webhook secrets at rest (issue 9, item 10): sealed with AES-256-GCM in both real stores,
opened for signing, legacy plaintext rows sealed by schema version 3, a wrong key failing
only that webhook's deliveries; the SQLite file, its lock and key files private; the key
from a file or the environment, and a bad key a one-line start-up error."""

from __future__ import annotations

import base64
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.outbox import Webhook
from alerts.retry import RetryPolicy
from engine.store.factory import open_store, secret_box_for
from engine.store.port import Store
from engine.store.postgres_store import PostgresStore
from engine.store.secret_box import (
    PREFIX,
    SecretBox,
    SecretBoxError,
    SecretKeyError,
    unreadable_reason,
)
from engine.store.sqlite_store import SqliteStore
from tests.conftest import PG_DSN
from tests.test_dispatcher import SECRET, Server, raise_alerts, run, until

ROOT = Path(__file__).resolve().parent.parent
OTHER_KEY = bytes(range(100, 132))


def stored_secrets(store: Store) -> dict[str, str]:
    """The webhooks' secret column as the database holds it."""
    rows = store._query("SELECT id, secret FROM webhooks ORDER BY id")
    return dict(rows)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_box_seals_with_a_fresh_nonce_bound_to_the_webhook() -> None:
    box = SecretBox(OTHER_KEY)
    one, two = box.seal("s3cret", "a"), box.seal("s3cret", "a")
    assert one.startswith(PREFIX)
    assert one != two
    assert "s3cret" not in one
    assert box.open(one, "a") == box.open(two, "a") == "s3cret"
    assert box.open("legacy-plain", "a") == "legacy-plain"
    with pytest.raises(SecretBoxError, match=r"webhook 'b'.*InvalidTag"):
        box.open(one, "b")  # moved to another webhook's row
    with pytest.raises(SecretBoxError, match="webhook 'a'"):
        SecretBox(bytes(32)).open(one, "a")
    with pytest.raises(SecretKeyError, match="32 bytes"):
        SecretBox(b"short")


def test_a_stored_secret_is_sealed_and_opens_again(store: Store) -> None:
    store.put_webhook(Webhook("ops", "https://example.com/hook", SECRET))
    raw = stored_secrets(store)["ops"]
    assert raw.startswith(PREFIX)
    assert SECRET not in raw
    got = store.get_webhook("ops")
    assert got is not None
    assert got.secret == SECRET
    assert [h.secret for h in store.list_webhooks()] == [SECRET]


def test_a_sealed_secret_copied_to_another_row_does_not_open(store: Store) -> None:
    store.put_webhook(Webhook("a", "https://example.com/a", "secret-a"))
    store.put_webhook(Webhook("b", "https://example.com/b", "secret-b"))
    sealed_a = stored_secrets(store)["a"]
    store._execute("UPDATE webhooks SET secret = ? WHERE id = 'b'", (sealed_a,))
    got = store.get_webhook("b")
    assert got is not None
    assert "webhook 'b'" in (unreadable_reason(got.secret) or "")


def test_the_dispatcher_signs_with_the_opened_secret_and_a_wrong_key_fails_that_webhook(
    store: Store,
) -> None:
    good, lost = Server(), Server()
    try:
        store.put_webhook(Webhook("ops", good.url, SECRET))
        store.put_webhook(Webhook("lost", lost.url, SECRET))
        # "lost" was sealed by another key: another engine's, or before the key changed.
        sealed = SecretBox(OTHER_KEY).seal(SECRET, "lost")
        store._execute("UPDATE webhooks SET secret = ? WHERE id = 'lost'", (sealed,))
        ids = raise_alerts(store, {"L-1": 2})
        d = run(store, RetryPolicy(base_s=0.05, cap_s=0.1, max_age_s=0.0, timeout_s=2.0))
        try:
            until(lambda: store.outbox_pending() == 0, "every delivery recorded")
        finally:
            d.stop()
    finally:
        good.close()
        lost.close()
    assert [h.alert_id for h in good.hits] == ids
    assert all(h.signature_ok for h in good.hits)
    assert lost.requests == 0  # nothing sent unsigned or signed with a wrong key
    dead = store.list_dead(None, 10).items
    assert {x.hook_id for x in dead} == {"lost"}
    assert all("SecretBoxError: webhook 'lost'" in (x.last_error or "") for x in dead)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_schema_version_3_seals_legacy_plaintext_secrets(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store: Store
    if backend == "sqlite":
        store = SqliteStore(tmp_path / "v2.db")
    else:
        store = PostgresStore(PG_DSN, schema=request.getfixturevalue("pg_schema"), max_size=2)
    try:
        store.migrate(target=2)
        store._execute(
            "INSERT INTO webhooks (id, url, secret, types) VALUES (?, ?, ?, NULL)",
            ("old", "https://example.com/old", "plain-old"),
        )
        legacy = store.get_webhook("old")
        assert legacy is not None
        assert legacy.secret == "plain-old"  # a legacy row still works before the upgrade
        store.migrate()
        raw = stored_secrets(store)["old"]
        assert raw.startswith(PREFIX)
        assert "plain-old" not in raw
        upgraded = store.get_webhook("old")
        assert upgraded is not None
        assert upgraded.secret == "plain-old"
        store.migrate()  # idempotent: sealed once
        assert stored_secrets(store)["old"] == raw
    finally:
        store.close()


def test_the_sqlite_file_its_wal_lock_and_key_files_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLEDGEWATCH_SECRET_KEY")
    old_umask = os.umask(0o022)
    try:
        store = open_store(f"sqlite:///{tmp_path}/data/pw.db")
        try:
            store.acquire_lease()
            store.migrate()
            store.put_webhook(Webhook("ops", "https://example.com/hook", SECRET))
            files = ["pw.db", "pw.db-wal", "pw.db-shm", "pw.db.lock", "pw.db.key"]
            assert {f: mode(tmp_path / "data" / f) for f in files} == dict.fromkeys(files, 0o600)
        finally:
            store.close()
    finally:
        os.umask(old_umask)
    reopened = open_store(f"sqlite:///{tmp_path}/data/pw.db")  # the same key file
    try:
        hook = reopened.get_webhook("ops")
        assert hook is not None
        assert hook.secret == SECRET
    finally:
        reopened.close()


def test_a_key_from_the_environment_is_used_and_no_key_file_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLEDGEWATCH_SECRET_KEY", base64.b64encode(OTHER_KEY).decode())
    url = f"sqlite:///{tmp_path}/pw.db"
    store = open_store(url)
    try:
        store.migrate()
        store.put_webhook(Webhook("ops", "https://example.com/hook", SECRET))
        assert SecretBox(OTHER_KEY).open(stored_secrets(store)["ops"], "ops") == SECRET
    finally:
        store.close()
    assert not (tmp_path / "pw.db.key").exists()
    key_file = tmp_path / "other.key"
    key_file.write_text(base64.b64encode(bytes(32)).decode())
    monkeypatch.delenv("PLEDGEWATCH_SECRET_KEY")
    wrong = open_store(url, secrets=secret_box_for(url, str(key_file)))
    try:
        hook = wrong.get_webhook("ops")
        assert hook is not None
        assert "does not open with this secret key" in (unreadable_reason(hook.secret) or "")
    finally:
        wrong.close()


def test_postgres_without_a_key_makes_one_in_the_working_directory_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("PLEDGEWATCH_SECRET_KEY")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="engine.store.secret_box"):
        box = secret_box_for("postgresql://postgres@127.0.0.1:5432/test")
    key = tmp_path / "pledgewatch-secret.key"
    assert mode(key) == 0o600
    assert str(key) in caplog.text
    assert "every engine and dispatcher on this database needs this same key" in caplog.text
    assert box.open(secret_box_for("postgres://h/db").seal("x", "h"), "h") == "x"  # kept


@pytest.mark.parametrize(
    ("flag", "env", "said"),
    [
        (["--secret-key-file", "/nonexistent"], {}, "cannot read the secret key file /nonexistent"),
        ([], {"PLEDGEWATCH_SECRET_KEY": "not-a-key"}, "PLEDGEWATCH_SECRET_KEY: the secret key"),
    ],
)
def test_a_bad_key_is_a_one_line_start_up_error(
    tmp_path: Path, flag: list[str], env: dict[str, str], said: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEWATCH_")}
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "--insecure-dev", *flag],
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("pledgewatch: ")
    assert said in done.stderr
    assert not (tmp_path / "pledgewatch.db").exists()  # refused before the database
