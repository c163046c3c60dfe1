#!/usr/bin/env bash
# Install everything and run the whole check: ruff, mypy --strict, the import contracts, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/services.sh postgres mosquitto timescaledb
echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy" && .venv/bin/mypy
echo "== import contracts" && .venv/bin/lint-imports --no-cache
echo "== pytest" && .venv/bin/python -m pytest "$@"
