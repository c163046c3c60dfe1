"""The console's settings, apart from the web framework (the CLI imports them): the base map's
tile layer the page draws under the fences and cars, and the live feed's limits.

The page gets the browser's part as `GET /console/config.json`. Without a tile URL it draws
its bundled offline base map, and no request leaves the engine's origin (DESIGN §9); with
one, the page's Content-Security-Policy admits images from that URL's origin only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from engine.runtime.live_hub import DEFAULT_ALERT_LIMIT

DEFAULT_INTERVAL_MS = 1000
MIN_INTERVAL_MS = 200
MAX_INTERVAL_MS = 10_000
DEFAULT_MAX_STREAMS = 50
DEFAULT_ALERT_BUFFER = DEFAULT_ALERT_LIMIT
MAX_TILE_URL_CHARS = 2048
MAX_ATTRIBUTION_CHARS = 500
_PLACEHOLDERS = ("{z}", "{x}", "{y}")


class TileCoordSys(StrEnum):
    """The datum of a tile layer: AMap and other Chinese maps draw in GCJ-02."""

    WGS84 = "wgs84"
    GCJ02 = "gcj02"


class ConsoleConfigError(ValueError):
    """A console setting that cannot work; the message says what to pass instead."""


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """What `pledgewatch run` tells the console page, and how many live feeds it serves.

    `tile_url` is an XYZ template (`https://tile.example/{z}/{x}/{y}.png`, `{s}` for a
    subdomain allowed) or None for the bundled offline map; `alert_buffer`: the alerts a
    live feed may have unsent before it is ended as too slow."""

    tile_url: str | None = None
    tile_coord_sys: TileCoordSys = TileCoordSys.WGS84
    tile_attribution: str | None = None
    live_interval_ms: int = DEFAULT_INTERVAL_MS
    max_streams: int = DEFAULT_MAX_STREAMS
    alert_buffer: int = DEFAULT_ALERT_BUFFER

    def page_json(self) -> dict[str, object]:
        """`GET /console/config.json`."""
        return {
            "tile_url": self.tile_url,
            "tile_coord_sys": self.tile_coord_sys.value,
            "tile_attribution": self.tile_attribution,
            "live_interval_ms": self.live_interval_ms,
        }

    def tile_origin(self) -> str | None:
        """The origin of the tile URL (what the page's CSP admits images from), or None;
        a `{s}` subdomain becomes `*`."""
        if self.tile_url is None:
            return None
        parts = urlsplit(self.tile_url)
        first, dot, rest = parts.netloc.partition(".")
        host = ("*" if "{s}" in first else first) + dot + rest
        return f"{parts.scheme}://{host}"


def parse_tile_url(value: str) -> str:
    """A tile URL template, checked: http(s), a host, `{z}`, `{x}` and `{y}`; else
    `ConsoleConfigError` saying what is wrong."""
    url = value.strip()
    example = "e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    if not url:
        msg = f"the tile URL is empty; pass an XYZ template, {example}"
        raise ConsoleConfigError(msg)
    if len(url) > MAX_TILE_URL_CHARS:
        msg = f"the tile URL is longer than {MAX_TILE_URL_CHARS} characters"
        raise ConsoleConfigError(msg)
    if any(c.isspace() or ord(c) < 0x20 or c in "\"'<>\\`;" for c in url):
        msg = f"the tile URL {url!r} holds a space, a quote or a character a URL cannot hold"
        raise ConsoleConfigError(msg)
    try:
        parts = urlsplit(url.replace("{s}", "a"))
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number
    except ValueError as exc:
        msg = f"the tile URL {url!r} is not a URL ({exc}); {example}"
        raise ConsoleConfigError(msg) from None
    if parts.scheme not in {"http", "https"}:
        msg = f"the tile URL {url!r} must start with https:// or http://; {example}"
        raise ConsoleConfigError(msg)
    if not parts.hostname:
        msg = f"the tile URL {url!r} has no host; {example}"
        raise ConsoleConfigError(msg)
    netloc = urlsplit(url).netloc
    if "{" in netloc.partition(".")[2] or "{" in netloc.partition(".")[0].replace("{s}", ""):
        msg = (
            f"the tile URL {url!r} may have a placeholder in its host only as {{s}} in the "
            "first label (a subdomain, e.g. https://{s}.tile.example/{z}/{x}/{y}.png)"
        )
        raise ConsoleConfigError(msg)
    if parts.username is not None or parts.password is not None:
        msg = f"the tile URL {url!r} must not hold a user or password (every browser sees it)"
        raise ConsoleConfigError(msg)
    missing = [p for p in _PLACEHOLDERS if p not in url]
    if missing:
        msg = (
            f"the tile URL {url!r} lacks {', '.join(missing)}: it must be an XYZ template "
            f"with {{z}}, {{x}} and {{y}}, {example}"
        )
        raise ConsoleConfigError(msg)
    return url


def parse_attribution(value: str) -> str:
    """A tile attribution: one line of text, at most `MAX_ATTRIBUTION_CHARS`."""
    text = value.strip()
    if not text or len(text) > MAX_ATTRIBUTION_CHARS or any(ord(c) < 0x20 for c in text):
        msg = (
            f"the tile attribution must be one line of 1 to {MAX_ATTRIBUTION_CHARS} characters "
            "(the page shows it as text)"
        )
        raise ConsoleConfigError(msg)
    return text


def parse_interval_ms(value: str | None, default: int = DEFAULT_INTERVAL_MS) -> int:
    """A live feed's interval in ms, from `MIN_INTERVAL_MS` to `MAX_INTERVAL_MS`; else
    `ConsoleConfigError` saying the range."""
    if value is None:
        return default
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 6):
        msg = (
            f"interval_ms must be an integer from {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS} "
            f"(milliseconds), got {value!r}"
        )
        raise ConsoleConfigError(msg)
    interval = int(text)
    if not MIN_INTERVAL_MS <= interval <= MAX_INTERVAL_MS:
        msg = (
            f"interval_ms must be from {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS} (milliseconds), "
            f"got {interval}"
        )
        raise ConsoleConfigError(msg)
    return interval
