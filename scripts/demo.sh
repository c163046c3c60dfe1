#!/usr/bin/env bash
# Install everything and run `pledgewatch demo` on the embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/pledgewatch demo "$@"
