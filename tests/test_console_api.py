"""The operator console's API over real connections, on SQLite and PostgreSQL: operators
and roles, sessions with their cookie and CSRF token, throttled sign-ins, machine tokens,
alert cases, the audit log, tracks and KPIs (DESIGN §9 "Console")."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from alerts.model import iso_ms
from devices.readings import GpsFix, Reject, RejectReason
from engine.api.app import create_app
from engine.api.credentials import verify_password
from engine.api.sessions import _plain_loopback
from engine.runtime.live import Engine
from engine.store.port import Batch
from engine.store.sqlite_store import SqliteStore
from lending.consumer import LendingConsumer
from simulator.vehicles import make_vin
from tests.test_api import (
    LOOPBACK,
    Api,
    Server,
    api_on_store,
    assert_problem,
    loan_doc,
    run_live,
)
from tests.test_ingest_api import counter

PASSWORD = "correct horse battery staple"
PEOPLE = {"alice": "admin", "olga": "operator", "otto": "operator", "victor": "viewer"}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """An engine with the API on a loopback port, and the operators of `PEOPLE`."""
    directory = tmp_path_factory.mktemp("console")
    with api_on_store(request.param, directory, webhook_addresses=LOOPBACK) as api:
        for name, role in PEOPLE.items():
            made = api.admin.put(f"/v1/operators/{name}", json={"role": role, "password": PASSWORD})
            assert made.status_code == 201, made.text
        yield api


@dataclass
class Console:
    """A browser's view: the session cookie in the client's jar, and the CSRF token."""

    http: httpx.Client
    csrf: str

    def post(self, path: str, body: Any = None, *, csrf: bool = True) -> httpx.Response:
        headers = {"X-CSRF-Token": self.csrf} if csrf else {}
        return self.http.post(path, json=body, headers=headers)

    def put(self, path: str, body: Any) -> httpx.Response:
        return self.http.put(path, json=body, headers={"X-CSRF-Token": self.csrf})


@contextmanager
def signed_in(api: Api, name: str, password: str = PASSWORD) -> Iterator[Console]:
    with httpx.Client(base_url=api.url, timeout=10) as http:
        response = http.post("/v1/session", json={"name": name, "password": password})
        assert response.status_code == 200, response.text
        yield Console(http, response.json()["csrf_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def raise_alert(api: Api) -> str:
    """A `pledge.vin_conflict` alert (critical), raised by two loans with one VIN."""
    suffix = uuid.uuid4().hex[:8]
    vin = make_vin(random.Random(suffix), "LSV", 2020)
    assert api.admin.put(f"/v1/loans/A-{suffix}", json=loan_doc([f"a-{suffix}"], vin)).is_success
    response = api.admin.put(f"/v1/loans/B-{suffix}", json=loan_doc([f"b-{suffix}"], vin))
    alert_id: str = response.json()["alerts"][0]["id"]
    return alert_id


def audit_of(api: Api, target: str) -> list[dict[str, Any]]:
    response = api.admin.get("/v1/audit", params={"target": target})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# -- sessions


def test_signing_in_sets_a_safe_cookie_and_answers_the_csrf_token(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as http:
        response = http.post("/v1/session", json={"name": "olga", "password": PASSWORD})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["name"], body["role"]) == ("olga", "operator")
        assert body["csrf_token"]
        assert response.headers["cache-control"] == "no-store"
        cookie = response.headers["set-cookie"]
        attributes = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/"} <= attributes
        assert "secure" not in attributes  # plain http to 127.0.0.1
        session_id = cookie.split(";")[0].split("=", 1)[1]
        assert len(session_id) >= 43
        assert PASSWORD not in response.text

        me = http.get("/v1/session").json()
        assert me == {
            "name": "olga",
            "role": "operator",
            "kind": "operator",
            "csrf_token": body["csrf_token"],
        }
        assert http.get("/v1/alerts").status_code == 200  # the cookie is the credential
        # signing out needs the CSRF token too
        assert_problem(http.delete("/v1/session"), 403, "forbidden", "X-CSRF-Token")
        out = http.delete("/v1/session", headers={"X-CSRF-Token": body["csrf_token"]})
        assert out.status_code == 204
        assert "max-age=0" in out.headers["set-cookie"].lower()
        http.cookies.set("pw_session", session_id)  # the old cookie, kept by a thief
        assert_problem(http.get("/v1/alerts"), 401, "unauthorized", "sign in again")
    actions = [e["action"] for e in audit_of(api, "operator:olga")]
    assert actions[:2] == ["session.end", "session.start"]


def test_the_cookie_is_secure_unless_plain_http_to_loopback() -> None:
    def request(scheme: str, host: str) -> Request:
        scope = {"type": "http", "scheme": scheme, "server": (host, 8080), "path": "/v1/session"}
        return Request({**scope, "headers": [], "query_string": b""})

    assert _plain_loopback(request("http", "127.0.0.1"))
    assert _plain_loopback(request("http", "::1"))
    assert _plain_loopback(request("http", "localhost"))
    assert not _plain_loopback(request("https", "127.0.0.1"))
    assert not _plain_loopback(request("http", "10.0.0.5"))
    assert not _plain_loopback(request("http", "console.example.com"))


def test_a_bearer_token_shows_itself_and_needs_no_csrf(api: Api) -> None:
    me = api.admin.get("/v1/session").json()
    assert me == {"name": "api-token", "role": "admin", "kind": "api-token", "csrf_token": None}
    assert api.admin.delete("/v1/session").status_code == 204  # nothing to end
    with httpx.Client(base_url=api.url, timeout=5) as anon:
        assert_problem(anon.get("/v1/session"), 401, "unauthorized")


def test_csrf_token_is_required_with_the_cookie(api: Api) -> None:
    alert_id = raise_alert(api)
    with signed_in(api, "olga") as olga:
        missing = olga.post(f"/v1/alerts/{alert_id}/ack", csrf=False)
        assert_problem(missing, 403, "forbidden", "X-CSRF-Token")
        olga.csrf = "forged"
        assert_problem(olga.post(f"/v1/alerts/{alert_id}/ack"), 403, "forbidden", "CSRF")
        olga.csrf = olga.http.get("/v1/session").json()["csrf_token"]  # a page reloaded
        assert olga.post(f"/v1/alerts/{alert_id}/ack").status_code == 200
        # another operator's session has another token
        with signed_in(api, "otto") as otto:
            otto.csrf = olga.csrf
            assert_problem(otto.post(f"/v1/alerts/{alert_id}/ack"), 403, "forbidden")


def test_failed_sign_ins_are_slowed_and_never_say_whether_the_name_exists(api: Api) -> None:
    name = f"mallory-{uuid.uuid4().hex[:6]}"
    api.admin.put(f"/v1/operators/{name}", json={"role": "viewer", "password": PASSWORD})
    failures_before = counter(
        api.admin.get("/metrics").text, "pledgewatch_logins_total", "result", "failed"
    )
    details = set()
    with httpx.Client(base_url=api.url, timeout=10) as http:
        for who in (name, f"nobody-{uuid.uuid4().hex[:6]}"):
            for _ in range(3):
                wrong = http.post("/v1/session", json={"name": who, "password": "not it at all"})
                details.add(assert_problem(wrong, 401, "unauthorized")["detail"])
            throttled = http.post("/v1/session", json={"name": who, "password": PASSWORD})
            body = assert_problem(throttled, 429, "too-many-requests", "retry in")
            assert int(throttled.headers["retry-after"]) >= 1
            details.add(body["detail"])
        assert "pw_session" not in http.cookies
        time.sleep(1.1)  # the wait after the third failure is 1 s
        welcome = http.post("/v1/session", json={"name": name, "password": PASSWORD})
        assert welcome.status_code == 200, welcome.text
    assert details == {
        "the name or the password is wrong",
        "too many failed sign-ins for this name: retry in 1 s",
    }
    text = api.admin.get("/metrics").text
    assert counter(text, "pledgewatch_logins_total", "result", "failed") == failures_before + 6
    assert counter(text, "pledgewatch_logins_total", "result", "throttled") >= 2


# -- operators


def test_operators_are_made_changed_and_deleted_by_an_admin(api: Api) -> None:
    name = f"nina-{uuid.uuid4().hex[:6]}"
    path = f"/v1/operators/{name}"
    body = assert_problem(api.admin.put(path, json={"role": "viewer"}), 422, "validation-error")
    assert body["errors"][0]["field"] == "password"
    made = api.admin.put(path, json={"role": "viewer", "password": PASSWORD})
    assert made.status_code == 201, made.text
    assert made.headers["location"] == path
    assert set(made.json()) == {"name", "role", "created_at", "updated_at"}
    stored = api.store.operator_login(name)
    assert stored is not None
    assert stored[1].startswith("scrypt$")
    assert PASSWORD not in stored[1]
    assert verify_password(PASSWORD, stored[1])
    listed = {o["name"]: o for o in api.admin.get("/v1/operators").json()["items"]}
    assert listed[name]["role"] == "viewer"
    assert all("password" not in o for o in listed.values())

    with signed_in(api, name) as nina:
        assert api.admin.put(path, json={"role": "operator"}).status_code == 200
        assert nina.http.get("/v1/session").json()["role"] == "operator"  # at once
        new = "another long passphrase"
        assert api.admin.put(path, json={"role": "operator", "password": new}).status_code == 200
        assert_problem(nina.http.get("/v1/alerts"), 401, "unauthorized")  # sessions ended
    with signed_in(api, name, new) as nina:
        assert api.admin.delete(path).status_code == 204
        assert_problem(nina.http.get("/v1/alerts"), 401, "unauthorized")
    assert_problem(api.admin.delete(path), 404, "not-found", name)
    actions = [e["action"] for e in audit_of(api, f"operator:{name}")]
    assert actions == [
        "operator.delete",
        "session.start",
        "operator.update",
        "operator.update",
        "session.start",
        "operator.create",
    ]
    assert all(e["actor"] in {"api-token", name} for e in audit_of(api, f"operator:{name}"))

    for doc, field in (
        ({"role": "boss", "password": PASSWORD}, "role"),
        ({"role": "viewer", "password": "short"}, "password"),
        ({"role": "viewer", "password": 12345678901}, "password"),
        ([], None),
    ):
        body = assert_problem(api.admin.put(path, json=doc), 422, "validation-error")
        assert body["errors"][0]["field"] == field
    bad = assert_problem(
        api.admin.put("/v1/operators/-x", json={"role": "viewer"}), 422, "validation-error"
    )
    assert bad["errors"][0]["field"] == "name"


# -- roles


def test_each_role_admits_what_it_should(api: Api) -> None:
    alert_id = raise_alert(api)
    fence = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [121.5, 31.2]},
        "properties": {"kind": "zone", "radius_m": 100},
    }
    with signed_in(api, "victor") as victor, signed_in(api, "olga") as olga:
        for path in ("/v1/alerts", f"/v1/alerts/{alert_id}", "/v1/fences", "/v1/kpis", "/metrics"):
            assert victor.http.get(path).status_code == 200, path
        denied = victor.post(f"/v1/alerts/{alert_id}/ack")
        body = assert_problem(denied, 403, "forbidden", "viewer", "operator role")
        assert (body["role"], body["required_role"]) == ("viewer", "operator")
        assert_problem(victor.http.get("/v1/audit"), 403, "forbidden", "operator role")
        assert_problem(victor.put("/v1/fences/v-zone", fence), 403, "forbidden", "admin role")

        assert olga.post(f"/v1/alerts/{alert_id}/ack", {"note": "mine"}).status_code == 200
        assert olga.http.get("/v1/audit").status_code == 200
        for method, path in (
            ("PUT", "/v1/fences/o-zone"),
            ("GET", "/v1/operators"),
            ("GET", "/v1/tokens"),
            ("GET", "/v1/devices/trk-1/token"),
            ("POST", "/v1/deliveries/1:redeliver"),
        ):
            response = olga.http.request(
                method, path, json=fence, headers={"X-CSRF-Token": olga.csrf}
            )
            assert_problem(response, 403, "forbidden", "admin role")
    with signed_in(api, "alice") as alice:
        assert alice.put("/v1/fences/a-zone", fence).status_code == 201
        assert alice.http.get("/v1/operators").status_code == 200
    [put] = audit_of(api, "fence:a-zone")
    assert (put["actor"], put["actor_kind"], put["action"]) == ("alice", "operator", "fence.put")


# -- machine tokens


def test_api_tokens_are_scoped_by_their_role(api: Api) -> None:
    name = f"ci-{uuid.uuid4().hex[:6]}"
    made = api.admin.post("/v1/tokens", json={"name": name, "role": "viewer"})
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    token = made.json()["token"]
    assert token.startswith("pwt_")
    assert made.json()["created_by"] == "api-token"
    assert_problem(
        api.admin.post("/v1/tokens", json={"name": name, "role": "admin"}), 409, "conflict", name
    )
    listed = {t["name"]: t for t in api.admin.get("/v1/tokens").json()["items"]}
    assert listed[name] == {
        "name": name,
        "role": "viewer",
        "created_at": made.json()["created_at"],
        "created_by": "api-token",
    }
    assert token not in api.admin.get("/v1/tokens").text

    alert_id = raise_alert(api)
    with httpx.Client(base_url=api.url, headers=bearer(token), timeout=10) as machine:
        assert machine.get("/v1/alerts").status_code == 200
        assert_problem(machine.post(f"/v1/alerts/{alert_id}/ack"), 403, "forbidden", "operator")
        assert_problem(machine.get("/v1/audit"), 403, "forbidden", name)
        assert_problem(
            machine.post("/v1/tokens", json={"name": "x", "role": "admin"}), 403, "forbidden"
        )
        bridge = api.admin.post("/v1/tokens", json={"name": f"{name}-ops", "role": "operator"})
        ops = bridge.json()["token"]
        acked = machine.post(f"/v1/alerts/{alert_id}/ack", headers=bearer(ops))
        assert acked.status_code == 200, acked.text  # a bearer request needs no CSRF token
        assert acked.json()["case"]["acknowledged_by"] == f"{name}-ops"
        assert api.admin.delete(f"/v1/tokens/{name}").status_code == 204
        assert_problem(machine.get("/v1/alerts"), 401, "unauthorized", "not valid")
    assert_problem(api.admin.delete(f"/v1/tokens/{name}"), 404, "not-found")
    [ack] = audit_of(api, f"alert:{alert_id}")
    assert (ack["actor"], ack["actor_kind"]) == (f"{name}-ops", "token")
    actions = [e["action"] for e in audit_of(api, f"token:{name}")]
    assert actions == ["token.delete", "token.create"]
    for doc, field in (({"name": "bad name", "role": "viewer"}, "name"), ({"name": "ok"}, "role")):
        body = assert_problem(api.admin.post("/v1/tokens", json=doc), 422, "validation-error")
        assert body["errors"][0]["field"] == field


# -- alert cases


def test_operators_work_a_case_and_the_audit_log_shows_who(api: Api) -> None:
    alert_id = raise_alert(api)
    fresh = api.admin.get(f"/v1/alerts/{alert_id}").json()
    assert fresh["case"] == {
        "state": "open",
        "assignee": None,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "notes": [],
    }
    path = f"/v1/alerts/{alert_id}"
    with signed_in(api, "olga") as olga, signed_in(api, "otto") as otto:
        acked = olga.post(path + "/ack", {"note": "looking"}).json()
        assert acked["case"]["state"] == "acknowledged"
        assert acked["case"]["acknowledged_by"] == "olga"
        assert acked["ack"]["by"] == "olga"
        assigned = olga.post(path + "/assign", {"assignee": "otto"}).json()
        assert assigned["case"]["assignee"] == "otto"
        for who, why in (("victor", "viewer"), ("nobody", "no operator")):
            refused = olga.post(path + "/assign", {"assignee": who})
            assert assert_problem(refused, 422, "validation-error", why)["errors"][0]["field"] == (
                "assignee"
            )
        noted = otto.post(path + "/notes", {"text": "borrower says the car is at a garage"})
        assert [n["by"] for n in noted.json()["case"]["notes"]] == ["olga", "otto"]
        assert_problem(otto.post(path + "/notes", {"text": ""}), 422, "validation-error", "text")
        resolved = otto.post(path + "/resolve", {"note": "car back home"}).json()
        assert (resolved["case"]["state"], resolved["case"]["resolved_by"]) == ("resolved", "otto")
        assert_problem(otto.post(path + "/resolve"), 409, "conflict", "resolved")
        reopened = olga.post(path + "/reopen", {"note": "it left again"}).json()
        assert reopened["case"]["state"] == "open"
        assert_problem(olga.post(path + "/reopen"), 409, "conflict", "open")
        assert olga.post(path + "/assign", {"assignee": None}).json()["case"]["assignee"] is None
        assert_problem(olga.post("/v1/alerts/nope/resolve"), 404, "not-found", "nope")

    got = api.admin.get(path).json()
    assert [(n["by"], n["text"]) for n in got["case"]["notes"]] == [
        ("olga", "looking"),
        ("otto", "borrower says the car is at a garage"),
        ("otto", "car back home"),
        ("olga", "it left again"),
    ]
    trail = [(e["actor"], e["action"]) for e in reversed(audit_of(api, f"alert:{alert_id}"))]
    assert trail == [
        ("olga", "alert.ack"),
        ("olga", "alert.assign"),
        ("otto", "alert.note"),
        ("otto", "alert.resolve"),
        ("olga", "alert.reopen"),
        ("olga", "alert.assign"),
    ]
    by_olga = api.admin.get("/v1/audit", params={"actor": "olga", "limit": 1}).json()
    assert by_olga["items"][0]["actor"] == "olga"
    assert by_olga["next"] is not None


def test_the_queue_filters_by_case_and_sorts_by_severity(api: Api) -> None:
    first, second = raise_alert(api), raise_alert(api)
    api.admin.post(f"/v1/alerts/{first}/assign", json={"assignee": "otto"})
    api.admin.post(f"/v1/alerts/{second}/resolve")

    def ids(**params: str) -> list[str]:
        response = api.admin.get("/v1/alerts", params={**params, "limit": "1000"})
        assert response.status_code == 200, response.text
        return [a["id"] for a in response.json()["items"]]

    assert first in ids(assignee="otto")
    assert second not in ids(assignee="otto")
    assert second in ids(state="resolved")
    assert second not in ids(state="open")
    assert first in ids(state="open", severity="critical", sort="severity")
    assert ids(severity="info", type="pledge.vin_conflict") == []
    listed = api.admin.get("/v1/alerts", params={"assignee": "otto"}).json()["items"][0]
    assert listed["case"]["assignee"] == "otto"
    assert "notes" not in listed["case"]
    for params, name in (
        ({"state": "closed"}, "state"),
        ({"severity": "loud"}, "severity"),
        ({"sort": "loudest"}, "sort"),
    ):
        body = assert_problem(api.admin.get("/v1/alerts", params=params), 400, "invalid-parameter")
        assert body["errors"][0]["field"] == name


# -- the audit log of every change


def test_every_change_is_in_the_audit_log(api: Api) -> None:
    suffix = uuid.uuid4().hex[:6]
    fence = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [121.5, 31.2]},
        "properties": {"kind": "risk_site", "category": "pawnshop", "radius_m": 100},
    }
    http = api.admin
    http.put(f"/v1/fences/f-{suffix}", json=fence)
    http.delete(f"/v1/fences/f-{suffix}")
    http.put(
        f"/v1/loans/L-{suffix}",
        json=loan_doc([f"d-{suffix}"], make_vin(random.Random(suffix), "LSV", 2021)),
    )
    hook = {"url": "http://127.0.0.1:9/hook", "secret": "hush-hush-secret"}
    http.put(f"/v1/webhooks/w-{suffix}", json=hook)
    http.delete(f"/v1/webhooks/w-{suffix}")
    http.put(f"/v1/devices/d-{suffix}/token")
    http.delete(f"/v1/devices/d-{suffix}/token")
    expected = {
        f"fence:f-{suffix}": ["fence.delete", "fence.put"],
        f"loan:L-{suffix}": ["loan.put"],
        f"webhook:w-{suffix}": ["webhook.delete", "webhook.put"],
        f"device-token:d-{suffix}": ["device_token.delete", "device_token.put"],
    }
    for target, actions in expected.items():
        entries = audit_of(api, target)
        assert [e["action"] for e in entries] == actions, target
        assert {e["actor"] for e in entries} == {"api-token"}
    [loan_put] = audit_of(api, f"loan:L-{suffix}")
    assert loan_put["detail"]["device_ids"] == [f"d-{suffix}"]
    assert "hush-hush-secret" not in str(audit_of(api, f"webhook:w-{suffix}"))

    now = int(time.time() * 1000)
    window = http.get("/v1/audit", params={"since": str(now - 60_000), "until": str(now + 60_000)})
    assert len(window.json()["items"]) >= 7
    assert http.get("/v1/audit", params={"until": "2000-01-01T00:00:00Z"}).json()["items"] == []
    for params, name in (({"since": "yesterday"}, "since"), ({"cursor": "x"}, "cursor")):
        body = assert_problem(http.get("/v1/audit", params=params), 400, "invalid-parameter")
        assert body["errors"][0]["field"] == name


# -- tracks


def test_a_track_keeps_its_ends_and_respects_max_points(api: Api) -> None:
    device = f"trk-{uuid.uuid4().hex[:6]}"
    start = int(time.time() * 1000) - 3_600_000
    fixes = [
        GpsFix(device, start + i * 10_000, 31.2 + 0.0001 * i, 121.5 + 0.00005 * (i % 7), 30.0)
        for i in range(300)
    ]
    api.store.commit_batch(Batch(now_ms=start, readings=fixes))
    params = {"since": str(start), "until": str(start + 3_000_000), "max_points": "25"}
    response = api.admin.get(f"/v1/devices/{device}/track", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["fixes"], body["thinned"], body["next"]) == (300, True, None)
    items = body["items"]
    assert 2 < len(items) <= 25
    assert items[0] == {"ts": iso_ms(start), "lat": 31.2, "lon": 121.5, "speed_kmh": 30.0}
    assert items[-1]["ts"] == iso_ms(start + 299 * 10_000)
    every = api.admin.get(f"/v1/devices/{device}/track").json()  # the last 24 h
    assert (every["fixes"], len(every["items"]), every["thinned"]) == (300, 300, False)
    empty = api.admin.get("/v1/devices/nobody/track").json()
    assert (empty["fixes"], empty["items"]) == (0, [])
    with signed_in(api, "victor") as victor:
        assert victor.http.get(f"/v1/devices/{device}/track").status_code == 200
    for params, name in (
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:01Z"}, "since"),
        ({"since": "soon"}, "since"),
        ({"until": "999999999999999"}, "until"),
        ({"max_points": "1"}, "max_points"),
        ({"max_points": "10001"}, "max_points"),
        ({"max_points": "many"}, "max_points"),
    ):
        bad = api.admin.get(f"/v1/devices/{device}/track", params=params)
        assert assert_problem(bad, 400, "invalid-parameter", name)["errors"][0]["field"] == name


# -- KPIs


def test_kpis_count_alerts_cases_deliveries_and_rejects(api: Api) -> None:
    alert_id = raise_alert(api)
    api.admin.post(f"/v1/alerts/{alert_id}/ack")
    api.admin.post(f"/v1/alerts/{alert_id}/resolve")
    now = int(time.time() * 1000) - 1000
    api.store.commit_batch(
        Batch(now_ms=now, rejects=[Reject("t/x/gps", RejectReason.OUT_OF_RANGE, "lat", b"{}", "x")])
    )
    response = api.admin.get("/v1/kpis")
    assert response.status_code == 200, response.text
    kpis = response.json()
    assert set(kpis) == {
        "since",
        "until",
        "alerts_per_hour",
        "cases",
        "time_to_acknowledge_s",
        "time_to_resolve_s",
        "devices",
        "deliveries",
        "rejected",
        "loans_per_tier",
    }
    assert sum(h["by_type"].get("pledge.vin_conflict", 0) for h in kpis["alerts_per_hour"]) >= 1
    assert kpis["cases"]["resolved"] >= 1
    assert kpis["time_to_acknowledge_s"]["count"] >= 1
    assert kpis["time_to_acknowledge_s"]["p50"] >= 0
    assert kpis["time_to_resolve_s"]["count"] >= 1
    assert kpis["rejected"]["out_of_range"] >= 1
    assert set(kpis["deliveries"]) == {"pending", "delivered", "dead", "success_rate"}
    assert kpis["loans_per_tier"] is None  # no lending consumer
    assert set(kpis["devices"]) == {"online", "known"}
    old = api.admin.get(
        "/v1/kpis", params={"since": "2001-01-01T00:00:00Z", "until": "2001-03-01T00:00:00Z"}
    )
    assert old.json()["alerts_per_hour"] == []
    assert_problem(
        api.admin.get("/v1/kpis", params={"until": "x"}), 400, "invalid-parameter", "until"
    )


def test_kpis_show_loans_per_tier_with_the_lending_consumer(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    for live in run_live(tmp_path_factory.mktemp("kpis"), LendingConsumer()):
        live.http.put(
            "/v1/loans/T-1", json=loan_doc(["t-1"], make_vin(random.Random(1), "LSV", 2020))
        )
        tiers = live.http.get("/v1/kpis").json()["loans_per_tier"]
        assert set(tiers) == {"low", "medium", "high", "critical"}


# -- insecure dev mode and the OpenAPI document


def test_dev_mode_records_the_anonymous_admin(tmp_path: Any) -> None:
    store = SqliteStore(tmp_path / "dev.db")
    store.migrate()
    engine = Engine(store, source=None)
    app = create_app(engine, store, None, None)
    with Server(app) as server, httpx.Client(base_url=server.url, timeout=5) as anon:
        vin = make_vin(random.Random(7), "LSV", 2020)
        anon.put("/v1/loans/D-1", json=loan_doc(["d-1"], vin))
        alert_id = anon.put("/v1/loans/D-2", json=loan_doc(["d-2"], vin)).json()["alerts"][0]["id"]
        acked = anon.post(f"/v1/alerts/{alert_id}/ack").json()
        assert acked["case"]["acknowledged_by"] == "anonymous"
        assert anon.get("/v1/session").json()["kind"] == "anonymous"
        entries = anon.get("/v1/audit").json()["items"]
        assert {(e["actor"], e["actor_kind"]) for e in entries} == {("anonymous", "anonymous")}
    store.close()


def test_openapi_documents_the_console(api: Api) -> None:
    doc = api.admin.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["session"] == {"type": "apiKey", "in": "cookie", "name": "pw_session"}
    assert doc["security"] == [{"bearer": []}, {"session": []}]
    assert doc["paths"]["/v1/session"]["post"]["security"] == []
    assert "403" in doc["paths"]["/v1/alerts/{alert_id}/resolve"]["post"]["responses"]
    put = doc["paths"]["/v1/operators/{name}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["required"] == ["role"]
    track = {p["name"] for p in doc["paths"]["/v1/devices/{device_id}/track"]["get"]["parameters"]}
    assert track == {"device_id", "since", "until", "max_points", "coord_sys"}
