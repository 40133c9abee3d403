#!/usr/bin/env bash
# The project's test command: bootstrap .venv, check formatting and lint, run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff format --check .
.venv/bin/ruff check .
# TensorFlow's autograph and Beam leave temporary files behind: give them a directory of
# their own that goes when the suite ends.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/tp-tests.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch
.venv/bin/python -m pytest -q "$@"
