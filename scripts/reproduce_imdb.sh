#!/usr/bin/env bash
# IMDB sentiment from scratch, end to end, with the project's own commands:
# preprocess the 25,000 training reviews (validation carved out by content hash) ->
# train (configs/imdb.cfg) -> choose the weights (best or averaged checkpoints) by
# validation accuracy -> report it. Rerunning resumes training where it stopped.
# Extra arguments go to trainer.train.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/imdb/aclImdb_train.tar.gz}
OUT=${OUT:-runs/imdb}
[ -f "$DATA" ] || { echo "reproduce_imdb: error: $DATA not found; set DATA=<aclImdb dir or .tar.gz>" >&2; exit 2; }
bash scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL=2
PY=.venv/bin/python
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1/3 preprocess: $DATA -> $OUT/data"
# One tokenizer thread: the tokenizer of the runs in docs/RESULTS.md (the model depends on it).
if [ ! -f "$OUT/data/metadata.json" ]; then
  $PY -m pipeline.preprocess --dataset=imdb --input="$DATA" --output_dir="$OUT/data" \
    --tokenizer_threads=1
fi

echo "== 2/3 train: configs/imdb.cfg -> $OUT/model"
$PY -m trainer.train --flagfile=configs/imdb.cfg --data_dir="$OUT/data" --model_dir="$OUT/model" "$@"

echo "== 3/3 choose weights on validation and report their accuracy"
$PY -m trainer.tune --model_dir="$OUT/model" | tee "$OUT/validation_accuracy.txt"
echo "wall time: $(( $(date +%s) - start )) s"
