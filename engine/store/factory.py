"""Open a `Store` from a `--db-url`.

`sqlite:///relative/path.db` and `sqlite:////absolute/path.db` (SQLAlchemy's convention:
three slashes, then the path) open the embedded default; `postgresql://…` (or
`postgres://…`) opens PostgreSQL. The backends are imported on demand: the SQLite default
never loads psycopg.

Webhook secrets are sealed with the key of `secret_box_for` (secret_box.py).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from engine.store.port import Store, StoreConfigError
from engine.store.secret_box import SecretBox, key_path, load_secret_box


def open_store(url: str, *, secrets: SecretBox | None = None) -> Store:
    """Open the store a `--db-url` names: `sqlite:///path` or `postgresql://…`.

    `secrets` seals webhook secrets (default: `secret_box_for(url)`, loaded now, so a bad
    key is an error here). The schema is not touched: call `migrate()` before use.
    """
    scheme = _scheme(url)
    if scheme == "sqlite":
        from engine.store.sqlite_store import SqliteStore  # noqa: PLC0415  # keep psycopg unloaded

        return SqliteStore(sqlite_path(url), secrets=secrets or secret_box_for(url))
    if scheme in {"postgresql", "postgres"}:
        from engine.store.postgres_store import PostgresStore  # noqa: PLC0415  # load psycopg on demand

        return PostgresStore(url, secrets=secrets or secret_box_for(url))
    raise _unsupported(url)


def secret_box_for(url: str, key_file: str | None = None) -> SecretBox:
    """The box of the database `url`: `key_file` (else `PLEDGEWATCH_SECRET_KEY_FILE`), else
    `PLEDGEWATCH_SECRET_KEY`, else the default key file (`<database>.key` for SQLite,
    `pledgewatch-secret.key` in the working directory for PostgreSQL), made if missing.
    `SecretKeyError` (a `StoreConfigError`) says what is wrong with a given key."""
    scheme = _scheme(url)
    if scheme == "sqlite":
        return load_secret_box(key_path(sqlite_path(url)), key_file)
    if scheme in {"postgresql", "postgres"}:
        return load_secret_box(None, key_file)
    raise _unsupported(url)


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].lower() if ":" in url else ""


def _unsupported(url: str) -> StoreConfigError:
    msg = (
        f"unsupported database URL {redact_url(url)!r}: use sqlite:///relative/path.db, "
        "sqlite:////absolute/path.db or postgresql://user@host:port/dbname"
    )
    return StoreConfigError(msg)


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///relative` or `sqlite:////absolute` URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        msg = (
            f"bad SQLite URL {url!r}: write sqlite:///relative/path.db (three slashes) "
            "or sqlite:////absolute/path.db (four)"
        )
        raise StoreConfigError(msg)
    path = unquote(parts.path[1:])
    if not path or path.endswith("/") or path == ":memory:":
        msg = f"bad SQLite URL {url!r}: name a database file, e.g. sqlite:///pledgewatch.db"
        raise StoreConfigError(msg)
    return Path(path)


_SECRET_PARAMS = frozenset({"password", "passfile", "sslpassword", "secret", "token"})


def redact_url(url: str) -> str:
    """The URL without its secrets (the password after `user:`, and query parameters such
    as `password=`), for logs and error messages."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    pairs = [pair.partition("=") for pair in parts.query.split("&") if pair]
    query = "&".join(
        f"{key}=***" if key.lower() in _SECRET_PARAMS else f"{key}{eq}{value}"
        for key, eq, value in pairs
    )
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # unsplit would turn `sqlite:///x.db` into `sqlite:/x.db`
    return parts._replace(netloc=netloc, query=query).geturl()


# rows in
