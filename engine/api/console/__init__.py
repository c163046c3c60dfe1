"""The operator console's static files (DESIGN §9): the page, its script bundle, styles and
the offline base map, built from `web/console/` by its build script and committed, so the
engine serves them with no Node.js and no network at install or run time."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
