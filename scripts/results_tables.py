"""A training run's figures as the Markdown tables docs/RESULTS.md shows.

    .venv/bin/python scripts/results_tables.py MODEL_DIR

Reads what the trainer and trainer.tune wrote into MODEL_DIR, nothing else:

* `config.json` -> whether the run is translation or classification;
* `metrics.jsonl` (one line per evaluation) -> the curve table: step, epoch, train and
  validation loss, validation token accuracy and the validation metric (BLEU or accuracy);
* `tuned/tuned.json`, if trainer.tune ran -> the weights table and the decoding table,
  each row with its validation score and its gain over the first row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

PROGRAM = "results_tables"


def curve_table(entries: list[dict], *, translation: bool) -> list[str]:
    """Markdown rows for the metrics.jsonl entries, in step order.

    Translation runs show validation token accuracy and BLEU (when the run scored
    BLEU); classification runs their validation (example) accuracy.
    """
    metric = "bleu" if translation else "val_accuracy"
    columns = "val token accuracy | val BLEU" if translation else "val accuracy"
    lines = [
        f"| step | epoch | train loss | val loss | {columns} |",
        "|---:|---:|---:|---:|---:|" + ("---:|" if translation else ""),
    ]
    best = max((e.get(metric, float("-inf")) for e in entries), default=None)
    for e in sorted(entries, key=lambda e: e["step"]):
        score = e.get(metric)
        shown = "" if score is None else _score("bleu" if translation else "accuracy", score)
        if score is not None and score == best:
            shown = f"**{shown}**"
        row = f"| {e['step']} | {e.get('epoch', '')} | {_loss(e.get('train_loss'))} | "
        row += f"{_loss(e.get('val_loss'))} | "
        if translation:
            token_accuracy = e.get("val_accuracy")
            row += "" if token_accuracy is None else f"{100 * token_accuracy:.1f}%"
            row += " | "
        lines.append(row + f"{shown} |")
    return lines


def tuned_tables(tuned: dict) -> list[str]:
    """Markdown for tuned.json: the weights compared, then the decodings compared."""
    metric = tuned["metric"]
    weights = tuned["weights"]
    lines = [f"| weights | greedy val {_name(metric)} | vs first row |", "|---|---:|---:|"]
    for row in weights:
        lines.append(
            f"| {row['weights']} | {_score(metric, row[metric])} | "
            f"{_gain(metric, row[metric] - weights[0][metric])} |"
        )
    decodings = tuned.get("decodings") or []
    if decodings:
        chosen = tuned["chosen"]["weights"]
        lines += ["", f"| decoding ({chosen}) | val {_name(metric)} | vs greedy |"]
        lines.append("|---|---:|---:|")
        for row in decodings:
            what = (
                "greedy" if row["beam_size"] == 1 else f"beam {row['beam_size']}, α {row['alpha']}"
            )
            lines.append(
                f"| {what} | {_score(metric, row[metric])} | "
                f"{_gain(metric, row[metric] - decodings[0][metric])} |"
            )
    return lines


def _name(metric: str) -> str:
    return "BLEU" if metric == "bleu" else metric


def _score(metric: str, value: float) -> str:
    return f"{value:.2f}" if metric == "bleu" else f"{100 * value:.2f}%"


def _gain(metric: str, delta: float) -> str:
    return f"{delta:+.2f}" if metric == "bleu" else f"{100 * delta:+.2f} points"


def _loss(value) -> str:
    return "" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="A model dir the trainer wrote (with metrics.jsonl).")
    args = parser.parse_args(argv)
    config_path = os.path.join(args.model_dir, "config.json")
    metrics_path = os.path.join(args.model_dir, "metrics.jsonl")
    try:
        with open(config_path) as f:
            translation = json.load(f)["model"]["task"] == "translation"
        with open(metrics_path) as f:
            entries = [json.loads(line) for line in f if line.strip()]
    except OSError as e:
        print(f"{PROGRAM}: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except (json.JSONDecodeError, KeyError, TypeError):
        print(
            f"{PROGRAM}: error: {args.model_dir}: not a model dir the trainer wrote",
            file=sys.stderr,
        )
        return 2
    if not entries:
        print(f"{PROGRAM}: error: {metrics_path} has no evaluations yet", file=sys.stderr)
        return 2
    print("\n".join(curve_table(entries, translation=translation)))
    tuned_path = os.path.join(args.model_dir, "tuned", "tuned.json")
    if os.path.exists(tuned_path):
        with open(tuned_path) as f:
            print("\n" + "\n".join(tuned_tables(json.load(f))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
