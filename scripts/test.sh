#!/usr/bin/env bash
# The project's test command: bootstrap .venv, check formatting and lint, run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff format --check .
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
