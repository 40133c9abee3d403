#!/usr/bin/env bash
# Multi30k English->German from scratch, end to end, with the project's own commands:
# preprocess -> train (configs/multi30k.cfg) -> choose weights (best or averaged
# checkpoints) and beam size / length penalty on `val` only -> translate
# test_2016_flickr -> sacreBLEU (13a, cased, detokenized) against the raw references.
# Rerunning resumes training where it stopped. Extra arguments go to trainer.train,
# e.g. --train_steps=2000 for a shorter run.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/multi30k}
OUT=${OUT:-runs/multi30k}
for f in train.en.gz train.de.gz val.en.gz val.de.gz test_2016_flickr.en.gz test_2016_flickr.de.gz; do
  [ -f "$DATA/$f" ] || { echo "reproduce_multi30k: error: $DATA/$f not found; set DATA=<dir with the Multi30k files>" >&2; exit 2; }
done
bash scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL=2
PY=.venv/bin/python
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1/5 preprocess: $DATA -> $OUT/data"
# One tokenizer thread: the tokenizer of the runs in docs/RESULTS.md (the model depends on it).
if [ ! -f "$OUT/data/metadata.json" ]; then
  $PY -m pipeline.preprocess --dataset=ende --input="$DATA/train" --validation_input="$DATA/val" \
    --test_input="$DATA/test_2016_flickr" --source_lang=en --target_lang=de --output_dir="$OUT/data" \
    --tokenizer_threads=1
fi

echo "== 2/5 train: configs/multi30k.cfg -> $OUT/model"
$PY -m trainer.train --flagfile=configs/multi30k.cfg --data_dir="$OUT/data" --model_dir="$OUT/model" "$@"

echo "== 3/5 tune on val: checkpoint averaging, beam size, length penalty"
$PY -m trainer.tune --model_dir="$OUT/model"
read -r beam alpha < <($PY -c "import json,sys; c=json.load(open(sys.argv[1]))['chosen']; print(c['beam_size'], c['alpha'])" "$OUT/model/tuned/tuned.json")

echo "== 4/5 translate test_2016_flickr: beam $beam, alpha $alpha"
gzip -dc "$DATA/test_2016_flickr.en.gz" > "$OUT/test_2016_flickr.en"
gzip -dc "$DATA/test_2016_flickr.de.gz" > "$OUT/test_2016_flickr.de"
$PY -m trainer.translate --model_dir="$OUT/model" --checkpoint="$OUT/model/tuned" \
  --beam_size="$beam" --alpha="$alpha" --input="$OUT/test_2016_flickr.en" \
  --output="$OUT/test_2016_flickr.hyp.de" --overwrite

echo "== 5/5 score: sacreBLEU on test_2016_flickr"
.venv/bin/sacrebleu "$OUT/test_2016_flickr.de" -i "$OUT/test_2016_flickr.hyp.de" -m bleu -w 2 \
  | tee "$OUT/test_bleu.json"
echo "wall time: $(( $(date +%s) - start )) s"
