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
# Two pytest processes, each taking whole test files (module fixtures that train a model then
# run once): much of a test's time is single-threaded (TF start-up and tracing, Beam, waits on
# subprocesses), so two use the two cores this suite is sized for. `-n 0` runs one process.
.venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
