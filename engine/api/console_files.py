"""Routes of `/console/`: the operator console's page and files, and its `config.json`
(DESIGN §9 "Console"). No auth: the page signs in through the API, whose data routes need it.

`/console` redirects (308) to `/console/`, which is `index.html`; `/console/{path}` is a
file under the static directory (`engine.api.console.STATIC_DIR` unless the app is given
another): no path outside it, no hidden file, no directory; a missing one is a 404 problem.
`config.json` is made from the run's settings (`engine.api.console_config`). The page and
its config are revalidated on every load (`no-cache`, with an ETag answering 304); a file
whose name carries a content hash (`app-3f9c2b1a.js`) is cached for a year, any other is
revalidated too. Every answer carries the page's Content-Security-Policy: nothing but the
engine's origin, and images from the tile server when one is configured.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.responses import FileResponse, RedirectResponse, Response

from engine.api.console_config import ConsoleConfig
from engine.api.guard import CONSOLE_PATH
from engine.api.problems import JsonResponse, Problem

CONFIG_NAME = "config.json"
INDEX_NAME = "index.html"
NO_CACHE = "no-cache"
READ = ["GET", "HEAD"]
IMMUTABLE = "public, max-age=31536000, immutable"
_HASHED = re.compile(r".+[.-][0-9A-Za-z_]{8,}\.[0-9A-Za-z]+")
"""A name with a content hash before its extension (esbuild `[name]-[hash]`, or `.hash.`)."""
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".map": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm",
    ".pbf": "application/x-protobuf",
}
"""Media types by extension (the platform's mimetypes tables differ between machines)."""


def security_headers(console: ConsoleConfig) -> dict[str, str]:
    """The headers of every console answer: its CSP, no sniffing, no referrer."""
    origin = console.tile_origin()
    img = "img-src 'self' data:" + (f" {origin}" if origin else "")
    csp = (
        f"default-src 'self'; {img}; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def add_console_routes(app: FastAPI, console: ConsoleConfig, static_dir: Path) -> None:
    """Register the console's routes, serving files from `static_dir`."""
    headers = security_headers(console)
    root = static_dir.resolve()
    config_body = JsonResponse(console.page_json()).body
    config_etag = '"' + hashlib.sha256(config_body).hexdigest()[:32] + '"'

    def missing(detail: str) -> Problem:
        return Problem(404, "not-found", detail, headers=headers)

    @app.api_route(CONSOLE_PATH, methods=READ, include_in_schema=False)
    def console_root(request: Request) -> Response:
        """The console lives at `/console/`."""
        query = request.url.query
        target = f"{CONSOLE_PATH}/" + (f"?{query}" if query else "")
        return RedirectResponse(target, status_code=308, headers=headers)

    @app.api_route(
        f"{CONSOLE_PATH}/{CONFIG_NAME}", methods=["GET", "HEAD"], include_in_schema=False
    )
    def console_config(request: Request) -> Response:
        """The page's settings: tile layer, its datum and attribution, live interval."""
        extra = {**headers, "Cache-Control": NO_CACHE, "ETag": config_etag}
        return _conditional(request, config_etag, extra) or Response(
            config_body, media_type="application/json", headers=extra
        )

    @app.api_route(
        f"{CONSOLE_PATH}/{{path:path}}", methods=["GET", "HEAD"], include_in_schema=False
    )
    def console_file(request: Request, path: str) -> Response:
        """A file of the console (`index.html` for the directory itself)."""
        name = path or INDEX_NAME
        found = _resolve(root, name)
        if found is None:
            if name == INDEX_NAME and not (root / INDEX_NAME).is_file():
                raise missing(
                    f"the console is not built: {root} holds no {INDEX_NAME} "
                    "(build web/console, or install a release of pledgewatch)"
                )
            raise missing(f"the console has no file {name!r}")
        stat = found.stat()
        etag = (
            '"'
            + hashlib.md5(  # a cache validator, not a secret
                f"{stat.st_mtime_ns}-{stat.st_size}".encode(), usedforsecurity=False
            ).hexdigest()
            + '"'
        )
        cache = IMMUTABLE if _HASHED.fullmatch(found.name) else NO_CACHE
        extra = {**headers, "Cache-Control": cache, "ETag": etag}
        return _conditional(request, etag, extra) or FileResponse(
            found,
            media_type=MEDIA_TYPES.get(found.suffix.lower(), "application/octet-stream"),
            headers=extra,
            stat_result=stat,
        )


def _resolve(root: Path, name: str) -> Path | None:
    """The regular file `name` names under `root`, or None: never a path outside it, a
    hidden file or directory, or a directory."""
    parts = name.split("/")
    if any(not p or p.startswith(".") or "\\" in p or ":" in p for p in parts):
        return None
    try:
        found = (root / name).resolve()
    except (OSError, RuntimeError):  # a loop of symlinks
        return None
    if not found.is_relative_to(root) or not found.is_file():
        return None
    return found


def _conditional(request: Request, etag: str, headers: dict[str, str]) -> Response | None:
    """A 304 (with `headers`) when the request's If-None-Match holds `etag`, else None."""
    sent = request.headers.get("if-none-match")
    if sent is None:
        return None
    tags = {t.strip().removeprefix("W/") for t in sent.split(",")}
    if etag in tags or "*" in tags:
        return Response(status_code=304, headers=headers)
    return None
