"""The operator console end to end in a real browser (issue 11): Debian's Chromium, driven
by Selenium through Debian's chromedriver, on the page a real engine serves at `/console/`,
with readings published to a real Mosquitto.

One engine, one broker and one browser for the module (each test signs in as whom it
needs). Screenshots go to `tests/artifacts/` (kept by CI as artifacts; gitignored).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from geofence.coords import wgs84_to_gcj02
from simulator.harness.broker import PrivateBroker, free_port
from simulator.harness.browser import ConsolePage, chromium, chromium_missing
from simulator.harness.engine_process import EngineProcess
from tests.brokers import REPO, Broker, broker  # noqa: F401  # the fixture
from tests.factories import HOME, offset
from tests.live import SECRET, TOKEN, Publisher, Receiver, engines  # noqa: F401  # the fixture
from tests.test_e2e import HOME_FENCE, VINS, leave_and_return

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.slow,
    pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing())),
]

PASSWORD = "correct-horse-battery"
FLEET = 300  # cars on no loan around HOME, so that the map clusters
PAWNSHOP = offset(*HOME, 1800, 1500)
OPERATORS = {"ann": "operator", "bob": "operator", "vic": "viewer", "ada": "admin"}
CAR_BLUE = [30, 136, 229, 255]  # map_view.js CAR_STYLE fillColor #1e88e5, opaque
SELECTED_ORANGE = [255, 111, 0, 255]  # SELECTED_STYLE fillColor #ff6f00


@dataclass
class Stack:
    engine: EngineProcess
    publisher: Publisher
    receiver: Receiver  # the webhook of `shock` alerts: refuses them (400) until `accept`
    accept: list[bool]

    def api(self) -> httpx.Client:
        return self.engine.client()

    def listed(
        self, path: str, keep: Callable[[dict[str, Any]], bool], timeout_s: float = 15
    ) -> list[dict[str, Any]]:
        """The items of a list endpoint that `keep` keeps, once there are some (polled)."""
        deadline = time.monotonic() + timeout_s
        with self.api() as api:
            while True:
                found = [x for x in api.get(path).json()["items"] if keep(x)]
                if found or time.monotonic() > deadline:
                    return found
                time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("console")
    mosquitto = PrivateBroker(work)
    mosquitto.start()
    engine = EngineProcess(
        mosquitto.url,
        f"sqlite:///{work}/pw.db",
        token=TOKEN,
        log_path=work / "engine.log",
        client_id="pw-console-browser",
        cwd=REPO,
    )
    accept = [False]
    receiver = Receiver()
    receiver.behave = lambda _n: 200 if accept[0] else 400  # 400: dead at once, kept
    receiver.start()
    try:
        engine.start()
        with engine.client() as api:
            hook = {"url": receiver.url, "secret": SECRET, "types": ["shock"]}
            assert api.put("/v1/webhooks/ops", json=hook).status_code == 201
            assert api.put("/v1/fences/home", json=HOME_FENCE).status_code == 201
            assert api.put("/v1/fences/pawn-1", json=square(PAWNSHOP, 150)).status_code == 201
            for i in range(3):
                loan = {"vin": VINS[i], "device_ids": [f"trk-{i}"], "zone_ids": ["home"]}
                assert api.put(f"/v1/loans/L-{i}", json=loan).status_code == 201
            for name, role in OPERATORS.items():
                r = api.put(f"/v1/operators/{name}", json={"role": role, "password": PASSWORD})
                assert r.status_code == 201, r.text
        time.sleep(0.5)  # the engine takes changes between batches
        publisher = Publisher(mosquitto)
        rng = random.Random(11)
        now = int(time.time() * 1000)
        infos = []
        for i in range(FLEET):
            at = offset(*HOME, rng.gauss(0, 2500), rng.gauss(0, 2500))
            fix = orjson.dumps({"ts": now - 60_000, "lat": at[0], "lon": at[1]})
            infos.append(publisher.client.publish(f"telematics/bg-{i}/gps", fix, qos=1))
        for info in infos:
            info.wait_for_publish(10)
        try:
            yield Stack(engine, publisher, receiver, accept)
        finally:
            publisher.close()
    finally:
        if engine.running():
            engine.terminate()
        mosquitto.stop()
        receiver.stop()


def square(center: tuple[float, float], half_m: float) -> dict[str, object]:
    """A square risk-site fence (a pawnshop's lot) around `center`."""
    (s, w), (n, e) = offset(*center, -half_m, -half_m), offset(*center, half_m, half_m)
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"name": "Pawnshop", "kind": "risk_site", "category": "pawnshop"},
    }


@pytest.fixture(scope="module")
def page(stack: Stack) -> Iterator[ConsolePage]:
    with chromium() as driver:
        yield ConsolePage(driver, stack.engine.url)


def signed_in(page: ConsolePage, name: str) -> None:
    """The page of the engine, signed in as `name` (signing out whoever else was)."""
    who = page.session_name()
    if who == name:
        return
    if who is not None:
        page.sign_out()
    else:
        page.open()
    page.sign_in(name, PASSWORD)


def csp_violations(page: ConsolePage) -> list[str]:
    return [
        str(e["message"])
        for e in page.browser_log()
        if "Content Security Policy" in str(e.get("message", ""))
    ]


def test_the_page_loads_from_the_engine_and_a_reading_moves_a_car(
    stack: Stack, page: ConsolePage
) -> None:
    page.open()
    assert page.find("#signin").is_displayed()  # no session yet: the sign-in form
    page.sign_in("ann", PASSWORD)
    assert page.js("return window.pledgewatch.session") == {"name": "ann", "role": "operator"}
    page.wait_for(lambda: page.js("return window.pledgewatch.carCount()") >= FLEET, 15, "the fleet")
    # fitted to the whole fleet: clusters, and fewer markers than cars
    page.wait_for(lambda: page.js("return window.pledgewatch.clusterCount()") > 0, 10, "clusters")
    assert page.js("return window.pledgewatch.stats().map.markers") < FLEET
    page.js("window.pledgewatch.show(arguments[0], arguments[1], 16)", *HOME)
    now = int(time.time() * 1000)
    stack.publisher.send(
        "telematics/trk-0/gps", {"ts": now - 20_000, "lat": HOME[0], "lon": HOME[1]}
    )
    car = page.wait_for(
        lambda: page.js("return window.pledgewatch.car('trk-0')"), 15, "trk-0 on the live map"
    )
    assert (car["lat"], car["lon"], car["loan_id"]) == (HOME[0], HOME[1], "L-0")
    first = page.wait_for(
        lambda: page.js("return window.pledgewatch.drawn('trk-0')"), 10, "trk-0's marker"
    )
    assert (first["lat"], first["lon"]) == (HOME[0], HOME[1])  # WGS84 tiles: drawn as is
    north = offset(*HOME, 400, 0)
    stack.publisher.send(
        "telematics/trk-0/gps",
        {"ts": now - 5_000, "lat": north[0], "lon": north[1], "speed_kmh": 30},
    )
    moved = page.wait_for(
        lambda: (
            (d := page.js("return window.pledgewatch.drawn('trk-0')"))
            and d["lat"] == north[0]
            and d["rgba"] == CAR_BLUE
            and d
        ),
        15,
        "trk-0's marker to move north",
    )
    assert moved["y"] < first["y"] - 5  # north is up, on screen too
    assert abs(moved["x"] - first["x"]) < 2
    assert page.js("return window.pledgewatch.car('trk-0').speed_kmh") == 30
    assert page.js("return window.pledgewatch.stats().carUpdates") >= 1
    assert page.js("return window.pledgewatch.fenceCount()") == 2
    page.screenshot("console-map")
    assert csp_violations(page) == []


def test_an_alert_is_acknowledged_assigned_and_resolved_in_the_page(
    stack: Stack, page: ConsolePage
) -> None:
    signed_in(page, "ann")
    for topic, payload in leave_and_return(1):
        stack.publisher.send(topic, payload)
    found = page.wait_for(
        lambda: page.js(
            "return window.pledgewatch.alerts()"
            ".find(a => a.type === 'zone.left' && a.loan_id === 'L-1') || null"
        ),
        30,
        "L-1's zone.left in the queue",
    )
    alert_id = found["id"]
    assert found["severity"] == "critical"
    page.click(f"#alert-list .alert-row[data-alert-id='{alert_id}']")
    state = lambda: page.text("#case-state")  # noqa: E731
    page.wait_for(lambda: state() == "open", 10, "the case to show, open")

    page.click("#case-ack")
    page.wait_for(lambda: state() == "acknowledged", 10, "the acknowledgement")
    assert str(page.text("#case-acked")).startswith("ann, ")

    assignee = page.find("#case-assignee")
    assignee.clear()
    assignee.send_keys("bob")
    page.click("#case-assign")
    page.wait_for(lambda: page.text("#case-assignee-shown") == "bob", 10, "bob assigned")

    page.find("#case-note-text").send_keys("called the borrower: car at a repair shop")
    page.click("#case-add-note")
    page.wait_for(
        lambda: "called the borrower" in str(page.text("#case-notes")), 10, "the note shown"
    )
    assert str(page.text("#case-notes")).startswith("ann, ")

    page.click("#case-resolve")
    page.wait_for(lambda: state() == "resolved", 10, "the resolution")
    assert str(page.text("#case-resolved")).startswith("ann, ")
    page.screenshot("console-case")

    with stack.api() as api:
        case = api.get(f"/v1/alerts/{alert_id}").json()["case"]
        assert (case["state"], case["assignee"]) == ("resolved", "bob")
        assert (case["acknowledged_by"], case["resolved_by"]) == ("ann", "ann")
        audit = api.get("/v1/audit", params={"target": f"alert:{alert_id}"}).json()["items"]
    actions = {e["action"]: e for e in audit}
    assert set(actions) == {"alert.ack", "alert.assign", "alert.note", "alert.resolve"}
    for entry in audit:
        assert (entry["actor"], entry["actor_kind"]) == ("ann", "operator"), entry
    assert actions["alert.assign"]["detail"]["assignee"] == "bob"
    assert csp_violations(page) == []


def test_a_viewer_cannot_acknowledge(stack: Stack, page: ConsolePage) -> None:
    ts = int(time.time() * 1000) - 10_000
    stack.publisher.send("telematics/trk-2/vib", {"ts": ts, "g": 3.5})
    shocks = stack.listed("/v1/alerts?device_id=trk-2", lambda a: True)
    assert [a["type"] for a in shocks] == ["shock"]
    alert_id = shocks[0]["id"]

    signed_in(page, "vic")
    assert page.js("return window.pledgewatch.session.role") == "viewer"
    page.click(f"#alert-list .alert-row[data-alert-id='{alert_id}']")
    page.wait_for(lambda: page.text("#case-state") == "open", 10, "the case, open")
    for control in ("#case-ack", "#case-assign", "#case-add-note", "#case-resolve"):
        assert not page.find(control).is_enabled(), control
    assert "needs the operator role" in str(page.find("#case-ack").get_attribute("title"))
    assert not page.find("#tab-button-audit").is_enabled()
    page.click("#tab-button-deliveries")  # the shock's webhook was refused: a dead letter
    redeliver = page.wait_for(lambda: page.find_all("#dead-table button.redeliver"), 15, "it")
    assert not any(b.is_enabled() for b in redeliver)  # an admin's action
    page.click("#tab-button-alerts")

    # The page's own session, with its CSRF token, is refused by the API itself.
    answer = page.js_async(
        """
        const done = arguments[arguments.length - 1];
        const session = await (await fetch('/v1/session')).json();
        const r = await fetch('/v1/alerts/' + arguments[0] + '/ack', {
          method: 'POST', headers: {'X-CSRF-Token': session.csrf_token}});
        done({status: r.status, problem: await r.json()});
        """,
        alert_id,
    )
    assert answer["status"] == 403
    assert answer["problem"]["required_role"] == "operator"
    with stack.api() as api:
        assert api.get(f"/v1/alerts/{alert_id}").json()["case"]["state"] == "open"
    page.screenshot("console-viewer")
    assert csp_violations(page) == []


def test_an_admin_redelivers_a_dead_webhook(stack: Stack, page: ConsolePage) -> None:
    ts = int(time.time() * 1000) - 8_000
    stack.publisher.send("telematics/trk-0/vib", {"ts": ts, "g": 4.0})
    dead = stack.listed("/v1/deliveries/dead", lambda d: d["alert"]["device_id"] == "trk-0")
    [delivery] = dead
    assert delivery["last_status"] == 400

    signed_in(page, "ada")
    page.click("#tab-button-deliveries")
    button = f"#dead-table button.redeliver[data-delivery-id='{delivery['delivery_id']}']"
    page.wait_for(lambda: page.find_all(button), 10, "the dead delivery listed")
    stack.accept[0] = True
    page.click(button)
    got = stack.receiver.wait_for(
        lambda rs: delivery["alert_id"] in [r.alert["id"] for r in rs], 15
    )
    assert got, stack.receiver.refusals
    page.wait_for(lambda: not page.find_all(button), 10, "the delivery to leave the list")
    with stack.api() as api:
        target = f"delivery:{delivery['delivery_id']}"
        audit = api.get("/v1/audit", params={"target": target}).json()["items"]
    assert [(e["action"], e["actor"]) for e in audit] == [("delivery.redeliver", "ada")]


def test_on_gcj02_tiles_cars_and_fences_are_drawn_converted(
    broker: Broker,  # noqa: F811
    engines: Callable[[str], EngineProcess],  # noqa: F811
    tmp_path: Path,
) -> None:
    # AMap-style tiles from a server that does not answer: the page converts everything it
    # draws to GCJ-02, and falls back to its offline map for the base layer.
    engine = engines(f"sqlite:///{tmp_path}/pw.db")
    tiles = f"http://127.0.0.1:{free_port()}/{{z}}/{{x}}/{{y}}.png"
    engine.args = ["--console-tile-url", tiles, "--console-tile-coord-sys", "gcj02"]
    engine.start()
    with engine.client() as api:
        assert api.put("/v1/fences/home", json=HOME_FENCE).status_code == 201
        body = {"role": "operator", "password": PASSWORD}
        assert api.put("/v1/operators/ann", json=body).status_code == 201
    time.sleep(0.5)
    publisher = Publisher(broker)
    fix = {"ts": int(time.time() * 1000) - 10_000, "lat": HOME[0], "lon": HOME[1]}
    publisher.send("telematics/gcj-car/gps", fix)
    publisher.close()
    want_lat, want_lon = wgs84_to_gcj02(*HOME)
    with chromium() as driver:
        page = ConsolePage(driver, engine.url)
        page.open()
        page.sign_in("ann", PASSWORD)
        assert page.js("return window.pledgewatch.coordSys") == "gcj02"
        page.wait_for(lambda: page.js("return window.pledgewatch.car('gcj-car')"), 15, "the car")
        assert page.js("return window.pledgewatch.car('gcj-car').lat") == HOME[0]  # kept WGS84
        page.js("window.pledgewatch.show(arguments[0], arguments[1], 16)", *HOME)
        drawn = page.wait_for(
            lambda: page.js("return window.pledgewatch.drawn('gcj-car')"), 10, "its marker"
        )
        assert abs(drawn["lat"] - want_lat) < 1e-9
        assert abs(drawn["lon"] - want_lon) < 1e-9
        assert abs(drawn["lat"] - HOME[0]) > 1e-3 or abs(drawn["lon"] - HOME[1]) > 1e-3
        fences = page.wait_for(
            lambda: page.js("return window.pledgewatch.drawnFences()"), 10, "the fence"
        )
        [home] = fences
        lon, lat = home["geometry"]["coordinates"]
        assert abs(lat - want_lat) < 1e-9
        assert abs(lon - want_lon) < 1e-9
        page.wait_for(
            lambda: (
                page.js("return window.pledgewatch.stats().map.base") == "tiles failed: offline"
            ),
            15,
            "the offline map after the tiles failed",
        )
        page.screenshot("console-gcj02")
        assert csp_violations(page) == []
    assert engine.terminate() == 0
