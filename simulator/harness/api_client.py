"""Bulk import through a running engine's API: fences and loans, in chunks under the body limit.

One helper for `pledgewatch fences|loans import`, the load test and the engine benchmark.
Each chunk is one request and one transaction on the engine (all or nothing per chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx
import orjson

Kind = Literal["fences", "loans"]

CHUNKS: dict[Kind, int] = {"fences": 2000, "loans": 5000}
"""Items per request: well under the 8 MiB limit of the import routes (~1 MiB of loans)."""


class ImportRefusedError(Exception):
    """The engine answered a chunk with an error; `done` items were imported before it."""

    def __init__(  # what the message needs
        self, kind: Kind, first: int, last: int, status: int, detail: str, done: int
    ) -> None:
        super().__init__(
            f"the engine refused {kind} {first}-{last} (HTTP {status}): {detail}. "
            f"{done} {kind} were imported before."
        )
        self.status = status
        self.done = done


def import_items(
    http: httpx.Client,
    kind: Kind,
    items: Sequence[object],
    progress: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """POST `items` (GeoJSON features, or loans with their `loan_id`) to `/v1/{kind}:import`
    in chunks; the alerts the engine raised (VIN conflicts). `progress` gets the count done
    and the chunk's alerts after each chunk. Raises ImportRefusedError, or httpx.HTTPError when
    no engine answers."""
    chunk = CHUNKS[kind]
    alerts: list[dict[str, Any]] = []
    for start in range(0, len(items), chunk):
        part = list(items[start : start + chunk])
        body = {"type": "FeatureCollection", "features": part} if kind == "fences" else part
        response = http.post(f"/v1/{kind}:import", content=orjson.dumps(body))
        if response.status_code != 200:
            try:
                detail = str(response.json().get("detail", response.text))
            except ValueError:
                detail = response.text[:500]
            raise ImportRefusedError(
                kind, start + 1, start + len(part), response.status_code, detail, start
            )
        raised: list[dict[str, Any]] = response.json().get("alerts", [])
        alerts.extend(raised)
        if progress is not None:
            progress(start + len(part), raised)
    return alerts
