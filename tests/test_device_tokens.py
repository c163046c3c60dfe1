"""Per-device tokens of the HTTP inputs (DESIGN §9 "Other inputs"): made, shown, rotated and
revoked through the API (`engine.api.device_tokens`), kept as SHA-256 only in both stores
(schema version 5), and taken by `/v1/ingest/osmand` and `/v1/ingest/traccar` for their own
device's readings only (`engine.api.guard`, `engine.api.ingest`), over real connections on
SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from engine.api.app import create_app
from engine.runtime.live import Engine
from engine.store.port import IssuedToken, Store, StoreError
from engine.store.postgres_store import PostgresStore
from engine.store.sqlite_store import SqliteStore
from tests.conftest import PG_DSN, OpenStore
from tests.factories import T0
from tests.test_api import TOKEN, Api, Server, api_on_store, assert_problem
from tests.test_ingest_api import counter, iso, now_ms, traccar
from tests.test_store_consumers import versions

SHA = hashlib.sha256(b"pwd_example").hexdigest()


# -- the store


def test_the_store_keeps_one_hash_per_device(store: Store) -> None:
    assert store.get_device_token("trk-1") is None
    assert store.device_for_token(SHA) is None
    assert store.put_device_token("trk-1", SHA, T0) is False  # made
    assert store.get_device_token("trk-1") == IssuedToken("trk-1", T0)
    assert store.device_for_token(SHA) == "trk-1"
    rotated = hashlib.sha256(b"pwd_rotated").hexdigest()
    assert store.put_device_token("trk-1", rotated, T0 + 5) is True  # replaced
    assert store.get_device_token("trk-1") == IssuedToken("trk-1", T0 + 5)
    assert store.device_for_token(SHA) is None  # the old token is gone
    assert store.device_for_token(rotated) == "trk-1"
    store.put_device_token("trk-2", SHA, T0 + 6)  # another device may get any fresh token
    assert store.device_for_token(SHA) == "trk-2"
    assert store.delete_device_token("trk-1") is True
    assert store.delete_device_token("trk-1") is False
    assert store.device_for_token(rotated) is None
    assert store.get_device_token("trk-2") == IssuedToken("trk-2", T0 + 6)


def test_tokens_survive_a_reopen(open_store: OpenStore) -> None:
    store = open_store()
    store.put_device_token("trk-9", SHA, T0)
    store.close()
    assert open_store().device_for_token(SHA) == "trk-9"


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_schema_version_5_adds_the_table_to_a_version_4_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store: SqliteStore | PostgresStore
    if backend == "sqlite":
        store = SqliteStore(tmp_path / "v4.db")
    else:
        store = PostgresStore(PG_DSN, schema=request.getfixturevalue("pg_schema"), max_size=2)
    try:
        store.migrate(target=4)
        assert versions(store) == [1, 2, 3, 4]
        with pytest.raises((sqlite3.OperationalError, psycopg.errors.UndefinedTable)):
            store.device_for_token(SHA)  # no table before version 5
        store.migrate(target=5)
        assert versions(store) == [1, 2, 3, 4, 5]
        store.put_device_token("trk-1", SHA, T0)
        store.migrate(target=5)  # idempotent
        assert versions(store) == [1, 2, 3, 4, 5]
        assert store.device_for_token(SHA) == "trk-1"
    finally:
        store.close()


# -- the API and the inputs, on both stores


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """An engine fed by the HTTP inputs (and an idle queue), with the API on a loopback port."""
    with api_on_store(request.param, tmp_path_factory.mktemp("tokens")) as api:
        yield api


def issue(api: Api, device_id: str) -> str:
    response = api.admin.put(f"/v1/devices/{device_id}/token")
    assert response.status_code in (200, 201), response.text
    token: str = response.json()["token"]
    return token


def osmand(device_id: str, ts_ms: int, lat: float = 31.3) -> dict[str, str]:
    return {"id": device_id, "lat": str(lat), "lon": "121.6", "timestamp": str(ts_ms // 1000)}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_create_show_rotate_and_revoke(api: Api) -> None:
    http = api.admin
    shown = http.get("/v1/devices/phone-1/token")
    assert shown.json() == {"device_id": "phone-1", "exists": False, "created_at": None}

    made = http.put("/v1/devices/phone-1/token")
    assert made.status_code == 201, made.text
    body = made.json()
    assert set(body) == {"device_id", "token", "created_at"}
    assert body["device_id"] == "phone-1"
    assert body["token"].startswith("pwd_")
    assert len(body["token"]) == 4 + 43  # 32 random bytes, urlsafe base64 without padding
    assert made.headers["location"] == "/v1/devices/phone-1/token"
    assert made.headers["cache-control"] == "no-store"

    shown = http.get("/v1/devices/phone-1/token")
    assert shown.status_code == 200
    assert shown.json() == {
        "device_id": "phone-1",
        "exists": True,
        "created_at": body["created_at"],
    }
    assert body["token"] not in shown.text

    rotated = http.put("/v1/devices/phone-1/token")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["token"] != body["token"]
    assert rotated.headers["cache-control"] == "no-store"

    assert http.delete("/v1/devices/phone-1/token").status_code == 204
    assert http.get("/v1/devices/phone-1/token").json()["exists"] is False
    gone = assert_problem(http.delete("/v1/devices/phone-1/token"), 404, "not-found", "phone-1")
    assert "token" in gone["detail"]


def test_a_device_id_that_cannot_be_one_is_a_422_naming_it(api: Api) -> None:
    for method in ("PUT", "GET", "DELETE"):
        response = api.admin.request(method, "/v1/devices/bad%20id/token")
        body = assert_problem(response, 422, "validation-error", "device_id")
        assert body["errors"][0]["field"] == "device_id"
    too_long = api.admin.put(f"/v1/devices/{'x' * 65}/token")
    assert_problem(too_long, 422, "validation-error", "device_id")


def test_a_device_token_admits_its_own_readings(api: Api) -> None:
    token = issue(api, "phone-2")
    before = metric_of(api, "pledgewatch_readings_total", "stream", "gps")
    ts = now_ms() - 600_000
    with httpx.Client(base_url=api.url, timeout=10) as phone:
        # as Traccar Client and OsmAnd send it: in the URL
        query = phone.get("/v1/ingest/osmand", params={**osmand("phone-2", ts), "token": token})
        assert query.status_code == 200, query.text
        assert query.json() == {"accepted": 1, "rejected": []}
        # in the Authorization header: a form post, Traccar Client's JSON, Traccar forwarding
        form = phone.post(
            "/v1/ingest/osmand", data=osmand("phone-2", ts + 60_000), headers=bearer(token)
        )
        assert form.json() == {"accepted": 1, "rejected": []}
        location = {"timestamp": iso(ts + 90_000), "coords": {"latitude": 31.3, "longitude": 121.6}}
        client = phone.post(
            "/v1/ingest/osmand",
            json={"device_id": "phone-2", "location": location},
            headers=bearer(token),
        )
        assert client.json() == {"accepted": 1, "rejected": []}, client.text
        docs = [traccar("phone-2", ts + t, 31.31, 121.6) for t in (120_000, 180_000)]
        forwarded = phone.post("/v1/ingest/traccar", json=docs, headers=bearer(token))
        assert forwarded.json() == {"accepted": 2, "rejected": []}
        # junk naming no device is listed, counted and kept, as with the API token
        junk = phone.post("/v1/ingest/osmand", data={"lat": "1"}, headers=bearer(token))
        assert junk.status_code == 200
        assert junk.json()["rejected"][0]["reason"] == "missing_field"
    assert api.store.count_telemetry("phone-2") == 5
    assert metric_of(api, "pledgewatch_readings_total", "stream", "gps") == before + 5
    device = api.admin.get("/v1/devices/phone-2").json()
    assert device["last_fix"]["lat"] == 31.31  # the last Traccar position


def test_a_device_token_is_refused_for_another_device(api: Api) -> None:
    token = issue(api, "phone-3")
    issue(api, "phone-4")  # which has a token of its own: still not this one's
    ts = now_ms() - 300_000
    with httpx.Client(base_url=api.url, timeout=10) as phone:
        other = phone.get("/v1/ingest/osmand", params={**osmand("phone-4", ts), "token": token})
        body = assert_problem(other, 403, "forbidden", "'phone-3'", "'phone-4'")
        assert token not in other.text
        # a Traccar batch with one document of another device is refused whole
        docs = [traccar("phone-3", ts), traccar("phone-4", ts), traccar("phone-5", ts)]
        batch = phone.post("/v1/ingest/traccar", json=docs, headers=bearer(token))
        body = assert_problem(batch, 403, "forbidden", "'phone-4'", "'phone-5'")
        assert "nothing was taken" in body["detail"]
        assert token not in batch.text
        # a reject that names another device is that device's too
        bad = {"device": {"uniqueId": "phone-4"}}
        assert_problem(
            phone.post("/v1/ingest/traccar", json=bad, headers=bearer(token)), 403, "forbidden"
        )
        client = {"device_id": "phone-4", "location": {"coords": {"latitude": 1}}}
        refused = phone.post("/v1/ingest/osmand", json=client, headers=bearer(token))
        assert_problem(refused, 403, "forbidden", "'phone-4'")
    assert api.store.count_telemetry("phone-3") == 0
    assert api.store.count_telemetry("phone-4") == 0
    assert api.store.count_telemetry("phone-5") == 0


def test_a_device_token_opens_no_other_route(api: Api) -> None:
    token = issue(api, "phone-6")
    with httpx.Client(base_url=api.url, timeout=10, headers=bearer(token)) as phone:
        for method, path in (
            ("GET", "/v1/loans"),
            ("GET", "/v1/devices/phone-6"),
            ("PUT", "/v1/devices/phone-6/token"),  # it cannot mint tokens, not even its own
            ("DELETE", "/v1/devices/phone-6/token"),
            ("GET", "/metrics"),
        ):
            response = phone.request(method, path)
            body = assert_problem(response, 403, "forbidden", "'phone-6'", "/v1/ingest/osmand")
            assert token not in response.text, body
            assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    with httpx.Client(base_url=api.url, timeout=10) as anon:
        # the query token is for the OsmAnd route only
        assert_problem(anon.get("/v1/loans", params={"token": token}), 401, "unauthorized")
    assert api.admin.get("/v1/devices/phone-6/token").json()["exists"] is True


def test_revoked_and_rotated_tokens_are_refused(api: Api) -> None:
    first = issue(api, "phone-7")
    ts = now_ms() - 200_000
    with httpx.Client(base_url=api.url, timeout=10) as phone:

        def send(token: str, offset_s: int) -> httpx.Response:
            params = {**osmand("phone-7", ts + offset_s * 1000), "token": token}
            return phone.get("/v1/ingest/osmand", params=params)

        assert send(first, 0).status_code == 200
        second = issue(api, "phone-7")  # rotate
        stale = send(first, 1)
        assert_problem(stale, 401, "unauthorized", "not valid")
        assert 'error="invalid_token"' in stale.headers["www-authenticate"]
        assert first not in stale.text
        assert send(second, 2).status_code == 200
        assert api.admin.delete("/v1/devices/phone-7/token").status_code == 204
        assert_problem(send(second, 3), 401, "unauthorized")
        header = phone.post(
            "/v1/ingest/traccar", json=traccar("phone-7", ts), headers=bearer(second)
        )
        assert_problem(header, 401, "unauthorized")
        made_up = "pwd_" + "A" * 43
        assert_problem(send(made_up, 4), 401, "unauthorized")
    assert api.store.count_telemetry("phone-7") == 2


def test_tokens_are_not_stored_in_clear(api: Api) -> None:
    token = issue(api, "phone-8")
    if isinstance(api.store, SqliteStore):
        with sqlite3.connect(api.store.path) as conn:
            rows = conn.execute("SELECT device_id, token_sha256, created_ms FROM device_tokens")
            stored = rows.fetchall()
        files = [api.store.path, Path(f"{api.store.path}-wal")]
        for file in files:
            if file.exists():
                assert token.encode() not in file.read_bytes(), file
    else:
        stored = api.store._query("SELECT device_id, token_sha256, created_ms FROM device_tokens")
    [(_, digest, _)] = [row for row in stored if row[0] == "phone-8"]
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in str(value) for row in stored for value in row)


def test_the_routes_are_documented(api: Api) -> None:
    doc = api.admin.get("/openapi.json").json()
    ops = doc["paths"]["/v1/devices/{device_id}/token"]
    assert set(ops) == {"put", "get", "delete"}
    assert {"200", "201", "422"} <= ops["put"]["responses"].keys()
    assert (
        "token"
        in ops["put"]["responses"]["201"]["content"]["application/json"]["schema"]["properties"]
    )
    assert "404" in ops["delete"]["responses"]
    assert "403" in doc["paths"]["/v1/ingest/traccar"]["post"]["responses"]
    [query_token] = [
        p for p in doc["paths"]["/v1/ingest/osmand"]["get"]["parameters"] if p["name"] == "token"
    ]
    assert "device" in query_token["description"]


# -- a store that fails while the guard looks a token up


class DownStore(SqliteStore):
    """A SQLite store whose token lookups fail as an outage would."""

    def device_for_token(self, token_sha256: str) -> str | None:
        msg = "the database is locked; retry the operation"
        raise StoreError(msg)


def test_a_lookup_the_store_cannot_answer_is_a_503(tmp_path: Path) -> None:
    store = DownStore(tmp_path / "down.db")
    store.migrate()
    engine = Engine(store, source=None)  # never started: the guard answers first
    app = create_app(engine, store, None, TOKEN)
    with Server(app) as server, httpx.Client(base_url=server.url, timeout=5) as phone:
        params = {**osmand("phone-1", now_ms()), "token": "pwd_" + "B" * 43}
        response = phone.get("/v1/ingest/osmand", params=params)
        assert_problem(response, 503, "store-unavailable", "retry")
        assert response.headers["retry-after"] == "1"
        # not a device token at all: no lookup, a plain 401
        assert_problem(phone.get("/v1/loans", headers=bearer("nope")), 401, "unauthorized")
    store.close()


# -- helpers


def metric_of(api: Api, name: str, label: str, value: str) -> int:
    return counter(api.admin.get("/metrics").text, name, label, value)
