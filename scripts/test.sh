#!/usr/bin/env bash
# Install everything and run the whole check: ruff, mypy --strict, the import contracts, the
# console's JavaScript unit tests, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/services.sh postgres mosquitto timescaledb chromium node
echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy" && .venv/bin/mypy
echo "== import contracts" && .venv/bin/lint-imports --no-cache
echo "== console unit tests" && node --test web/console/test/*.test.js
# Two pytest workers (one per core here): most tests wait on brokers, engines and sockets.
echo "== pytest" && .venv/bin/python -m pytest -n auto --dist worksteal "$@"
