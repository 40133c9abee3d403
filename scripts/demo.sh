#!/usr/bin/env bash
# The main job end to end on the embedded default corpus (no downloads, no ../shared):
# bootstrap .venv, then preprocess the English-German and review corpora into ./runs/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL=2
OUT=${OUT:-runs/demo}
PY=.venv/bin/python

echo "== preprocess: embedded English-German corpus -> $OUT/ende"
$PY -m pipeline.preprocess --dataset=ende --output_dir="$OUT/ende" --vocab_size=2000 --num_shards=4 --overwrite
echo "== preprocess: embedded review corpus -> $OUT/imdb"
$PY -m pipeline.preprocess --dataset=imdb --output_dir="$OUT/imdb" --vocab_size=1000 --num_shards=2 --overwrite
