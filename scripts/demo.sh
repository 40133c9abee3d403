#!/usr/bin/env bash
# The main job end to end on the embedded default corpus (no downloads, no ../shared):
# bootstrap .venv, preprocess -> train the tiny Transformer -> translate held-out
# sentences with beam search -> score them with sacreBLEU -> pipe one sentence through
# standard input. Rerunning resumes training.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL=2
OUT=${OUT:-runs/demo}
STEPS=${STEPS:-400}
PY=.venv/bin/python

echo "== 1/4 preprocess: embedded English-German corpus -> $OUT/data"
$PY -m pipeline.preprocess --dataset=ende --output_dir="$OUT/data" --vocab_size=2000 --num_shards=4 --overwrite

echo "== 2/4 train: tiny preset, $STEPS steps on this CPU -> $OUT/model"
$PY -m trainer.train --flagfile=configs/tiny.cfg --data_dir="$OUT/data" --model_dir="$OUT/model" \
  --train_steps="$STEPS" --eval_every=200 --checkpoint_every=200

echo "== 3/4 translate: 200 held-out sentences (never seen in training), beam 4"
$PY -c "from pipeline import default_corpus; default_corpus.write_held_out_files('$OUT/held_out')"
$PY -m trainer.translate --model_dir="$OUT/model" --input="$OUT/held_out/held_out.en" \
  --output="$OUT/held_out/held_out.hyp.de" --beam_size=4 --overwrite

echo "== 4/4 score: sacreBLEU against the reference translations"
# sed reads to the end: head would close the pipe early, and pipefail would end the script on paste's SIGPIPE.
paste -d '\n' "$OUT/held_out/held_out.en" "$OUT/held_out/held_out.hyp.de" | sed -n 1,6p
.venv/bin/sacrebleu "$OUT/held_out/held_out.de" -i "$OUT/held_out/held_out.hyp.de" -m bleu -w 1 -f text

echo "== your own sentence: piped through standard input (--input=- --output=-)"
echo "The old teacher gives the hungry cat an apple." |
  $PY -m trainer.translate --model_dir="$OUT/model" --input=- --output=- --beam_size=4
