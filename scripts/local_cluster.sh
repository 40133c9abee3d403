#!/usr/bin/env bash
# Runs an N-worker multi-worker training cluster on this machine (see infra/local_cluster.py):
#   scripts/local_cluster.sh 2 -- --data_dir=DIR --model_dir=DIR --flagfile=configs/tiny.cfg
# Uses the repository's .venv when there is one; the working directory is left as it is,
# so relative paths in the trainer flags mean what they say.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
if [[ ! -x $python ]]; then
  python=python3
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m infra.local_cluster "$@"
