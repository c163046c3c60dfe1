"""The shape of the house: modules of one purpose stay short enough to read."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "geofence", "devices", "alerts", "simulator", "lending", "benchmarks")
MAX_LINES = 600


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(REPO)): n
        for package in PACKAGES
        for path in (REPO / package).rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these by concern: {long}"


def test_every_package_is_seen() -> None:
    # a renamed package would silently escape the check above
    for package in PACKAGES:
        assert (REPO / package / "__init__.py").exists(), package
