#!/usr/bin/env bash
# Creates (or refreshes) ./.venv from the pinned constraints. Idempotent: it reinstalls
# only when setup.py or constraints.txt changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || { echo "bootstrap: error: $PYTHON not found (Python 3.11 is required)" >&2; exit 1; }
stamp=.venv/.installed
want=$(cat setup.py constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "bootstrap: installing pinned dependencies into .venv (first run takes a few minutes)" >&2
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip==25.3" >&2
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev,gcp,aws]" >&2
echo "$want" > "$stamp"
