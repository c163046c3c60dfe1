"""The console's page and files under `/console/` and its `config.json`, over real HTTP
(uvicorn on loopback), from a static directory of the test's own; the console's flags of
`pledgewatch run` (DESIGN §9 "Console")."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from engine.api.app import create_app
from engine.api.console import STATIC_DIR
from engine.api.console_config import ConsoleConfig, TileCoordSys
from engine.cli.main import build_parser
from engine.cli.main import main as cli_main
from engine.cli.service_options import service_settings
from engine.runtime.live import Engine
from engine.store.sqlite_store import SqliteStore
from tests.test_api import TOKEN, Server, assert_problem

OSM = "https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png"
CSP_OFFLINE = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
FILES = {
    "index.html": (b"<!doctype html><title>console</title>", "text/html; charset=utf-8"),
    "app-3F9C2B1A.js": (b"console.log(1)", "text/javascript; charset=utf-8"),
    "console.css": (b"body{margin:0}", "text/css; charset=utf-8"),
    "basemap/world.json": (b'{"type":"FeatureCollection","features":[]}', "application/json"),
    "img/marker.png": (b"\x89PNG\r\n\x1a\n", "image/png"),
    "img/car.svg": (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
    "fonts/inter.woff2": (b"wOF2", "font/woff2"),
}
SECRET = b"the token is hunter2"


def static_dir(root: Path) -> Path:
    """A console's files, and a secret beside (not under) them."""
    static = root / "static"
    for name, (body, _) in FILES.items():
        (static / name).parent.mkdir(parents=True, exist_ok=True)
        (static / name).write_bytes(body)
    (root / "secret.txt").write_bytes(SECRET)
    (static / ".env").write_bytes(SECRET)
    (static / "link.txt").symlink_to(root / "secret.txt")
    return static


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API (with a token) serving a console from a test directory, with a tile layer."""
    root = tmp_path_factory.mktemp("console")
    store = SqliteStore(root / "pw.db")
    store.migrate()
    engine = Engine(store, None)
    config = ConsoleConfig(OSM, TileCoordSys.WGS84, "© OpenStreetMap contributors", 2000)
    app = create_app(engine, store, None, TOKEN, console=config, console_dir=static_dir(root))
    try:
        with Server(app) as server:
            yield server.url
    finally:
        store.close()


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET with the path sent exactly as given (httpx would resolve dot segments)."""
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_the_page_and_its_files_need_no_credentials(console: str) -> None:
    with httpx.Client(base_url=console, timeout=5) as anon:
        moved = anon.get("/console?x=1")
        assert moved.status_code == 308
        assert moved.headers["location"] == "/console/?x=1"
        page = anon.get("/console/")
        assert page.status_code == 200
        assert page.content == FILES["index.html"][0]
        assert page.headers["cache-control"] == "no-cache"
        for name, (body, media_type) in FILES.items():
            got = anon.get(f"/console/{name}")
            assert got.status_code == 200, (name, got.text)
            assert got.content == body
            assert got.headers["content-type"] == media_type
            assert got.headers["x-content-type-options"] == "nosniff"
        hashed = anon.get("/console/app-3F9C2B1A.js").headers["cache-control"]
        assert "immutable" in hashed
        assert anon.get("/console/console.css").headers["cache-control"] == "no-cache"
        # the data routes still need them
        assert_problem(anon.get("/v1/fences"), 401, "unauthorized")


def test_every_console_answer_carries_the_security_headers(console: str) -> None:
    csp = CSP_OFFLINE.replace("data:", "data: https://*.tile.openstreetmap.org")
    with httpx.Client(base_url=console, timeout=5) as anon:
        for path in ("/console", "/console/", "/console/config.json", "/console/nope.js"):
            r = anon.get(path)
            assert r.headers["content-security-policy"] == csp, path
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["referrer-policy"] == "no-referrer", path


def test_config_json_says_what_the_run_was_given(console: str) -> None:
    with httpx.Client(base_url=console, timeout=5) as anon:
        r = anon.get("/console/config.json")
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-cache"
        assert r.json() == {
            "tile_url": OSM,
            "tile_coord_sys": "wgs84",
            "tile_attribution": "© OpenStreetMap contributors",
            "live_interval_ms": 2000,
        }
        again = anon.get("/console/config.json", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
        page = anon.get("/console/")
        assert (
            anon.get("/console/", headers={"If-None-Match": page.headers["etag"]}).status_code
            == 304
        )


@pytest.mark.parametrize(
    "path",
    [
        "/console/../secret.txt",
        "/console/%2e%2e/secret.txt",
        "/console/..%2fsecret.txt",
        "/console/img/../../secret.txt",
        "/console/%2e%2e%5csecret.txt",
        "/console//etc/passwd",
        "/console/.env",
        "/console/link.txt",
        "/console/img",
        "/console/img/",
        "/console/missing.js",
    ],
)
def test_nothing_outside_the_static_files_is_served(console: str, path: str) -> None:
    status, body = raw_get(console, path)
    assert status == 404, (path, body)
    assert SECRET not in body
    assert b"problems/not-found" in body


def test_a_console_that_is_not_built_says_so(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "pw.db")
    store.migrate()
    (tmp_path / "empty").mkdir()
    app = create_app(Engine(store, None), store, None, TOKEN, console_dir=tmp_path / "empty")
    try:
        with Server(app) as server, httpx.Client(base_url=server.url, timeout=5) as anon:
            assert_problem(anon.get("/console/"), 404, "not-found", "not built")
            offline = anon.get("/console/config.json")
            assert offline.json()["tile_url"] is None
            assert offline.json()["tile_coord_sys"] == "wgs84"
            assert offline.headers["content-security-policy"] == CSP_OFFLINE
    finally:
        store.close()
    assert STATIC_DIR.name == "static"  # the default: the package's bundle


def test_the_run_flags_make_the_console_config() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--api-token",
            "t",
            "--console-tile-url",
            "https://webrd0{s}.is.autonavi.com/appmaptile?style=8&x={x}&y={y}&z={z}",
            "--console-tile-coord-sys",
            "gcj02",
            "--console-tile-attribution",
            "© AutoNavi",
            "--console-max-streams",
            "7",
        ]
    )
    config = service_settings(args).console
    assert config.page_json() == {
        "tile_url": "https://webrd0{s}.is.autonavi.com/appmaptile?style=8&x={x}&y={y}&z={z}",
        "tile_coord_sys": "gcj02",
        "tile_attribution": "© AutoNavi",
        "live_interval_ms": 1000,
    }
    assert config.tile_origin() == "https://*.is.autonavi.com"
    assert config.max_streams == 7
    default = service_settings(build_parser().parse_args(["run", "--api-token", "t"])).console
    assert default == ConsoleConfig()
    assert default.page_json()["tile_url"] is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://tiles.example/{z}/{x}/{y}.png", "must start with https:// or http://"),
        ("javascript:alert(1)//{z}/{x}/{y}", "must start with https:// or http://"),
        ("https://tiles.example/{z}/{x}.png", "lacks {y}"),
        ("https://tiles.example/tile.png", "lacks {z}, {x}, {y}"),
        ("https:///{z}/{x}/{y}.png", "has no host"),
        ("https://tiles.example/{z}/{x}/{y}.png'; img-src *", "a quote"),
        ("https://user:pw@tiles.example/{z}/{x}/{y}.png", "user or password"),
        ("https://a.{s}.example/{z}/{x}/{y}.png", "first label"),
    ],
)
def test_a_bad_tile_url_is_a_usage_error_saying_why(
    url: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["run", "--api-token", "t", "--console-tile-url", url])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--console-tile-url" in err
    assert says in err, err
