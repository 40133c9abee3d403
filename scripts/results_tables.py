"""A training run's figures as the Markdown tables docs/RESULTS.md shows.

    .venv/bin/python scripts/results_tables.py MODEL_DIR
    .venv/bin/python scripts/results_tables.py MODEL_DIR OTHER_DIR ...   # a comparison

Reads what the trainer and trainer.tune wrote into MODEL_DIR, nothing else:

* `config.json` -> whether the run is translation or classification;
* `metrics.jsonl` (one line per evaluation) -> the curve table: step, epoch, train and
  validation loss, validation token accuracy and the validation metric (BLEU or accuracy);
* `tuned/tuned.json`, if trainer.tune ran -> the weights table and the decoding table,
  each row with its validation score and its gain over the first row.

With several model dirs (runs of one task that differ in some flags) it prints one
comparison table instead: a column per run, headed by the config fields in which the
runs differ, a row per evaluated step with each run's validation metric, and a last
row with each run's best and its gain over the first run's best.
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
    scored = f"greedy val {_name(metric)}" if metric == "bleu" else f"val {_name(metric)}"
    lines = [f"| weights | {scored} | vs first row |", "|---|---:|---:|"]
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


def comparison_table(runs: list[tuple[dict, list[dict]]]) -> list[str]:
    """Markdown comparing runs (config, metrics entries) of one task, step by step."""
    translation = runs[0][0]["model"]["task"] == "translation"
    metric, kind = ("bleu", "bleu") if translation else ("val_accuracy", "accuracy")
    flat = [_flatten(config) for config, _ in runs]
    differing = sorted(
        k
        for k in set().union(*flat)
        if k not in ("model_dir", "data_dir") and len({repr(f.get(k)) for f in flat}) > 1
    )
    heads = [", ".join(f"{k} {f.get(k)}" for k in differing) or "(same config)" for f in flat]
    lines = [
        f"| step | {' | '.join(heads)} |",
        "|---:|" + "---:|" * len(runs),
    ]
    by_step = [{e["step"]: e.get(metric) for e in entries} for _, entries in runs]
    for step in sorted(set().union(*by_step)):
        cells = ["" if s.get(step) is None else _score(kind, s[step]) for s in by_step]
        lines.append(f"| {step} | {' | '.join(cells)} |")
    bests = [max((v for v in s.values() if v is not None), default=None) for s in by_step]
    cells = []
    for best in bests:
        if best is None:
            cells.append("")
            continue
        gain = "" if bests[0] is None else f" ({_gain(kind, best - bests[0])})"
        cells.append(f"**{_score(kind, best)}**{gain}")
    lines.append(f"| best | {' | '.join(cells)} |")
    return lines


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _name(metric: str) -> str:
    return "BLEU" if metric == "bleu" else metric


def _score(metric: str, value: float) -> str:
    return f"{value:.2f}" if metric == "bleu" else f"{100 * value:.2f}%"


def _gain(metric: str, delta: float) -> str:
    return f"{delta:+.2f}" if metric == "bleu" else f"{100 * delta:+.2f} points"


def _loss(value) -> str:
    return "" if value is None else f"{value:.3f}"


def load_run(model_dir: str) -> tuple[dict, list[dict]]:
    """(config.json, metrics.jsonl entries) of a model dir; RunError when they do not read."""
    config_path = os.path.join(model_dir, "config.json")
    metrics_path = os.path.join(model_dir, "metrics.jsonl")
    try:
        with open(config_path) as f:
            config = json.load(f)
        _ = config["model"]["task"]  # a model dir's config names its task
        with open(metrics_path) as f:
            entries = [json.loads(line) for line in f if line.strip()]
    except OSError as e:
        raise RunError(f"{e.filename}: {e.strerror}") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise RunError(f"{model_dir}: not a model dir the trainer wrote") from None
    if not entries:
        raise RunError(f"{metrics_path} has no evaluations yet")
    return config, entries


class RunError(ValueError):
    """A model dir that cannot be read (one line for the user)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0])
    parser.add_argument(
        "model_dirs", nargs="+", metavar="MODEL_DIR", help="Model dirs the trainer wrote."
    )
    args = parser.parse_args(argv)
    try:
        runs = [load_run(d) for d in args.model_dirs]
    except RunError as e:
        print(f"{PROGRAM}: error: {e}", file=sys.stderr)
        return 2
    tasks = {config["model"]["task"] for config, _ in runs}
    if len(tasks) > 1:
        print(
            f"{PROGRAM}: error: the runs are of different tasks: {sorted(tasks)}", file=sys.stderr
        )
        return 2
    if len(runs) > 1:
        print("\n".join(comparison_table(runs)))
        return 0
    config, entries = runs[0]
    print("\n".join(curve_table(entries, translation=config["model"]["task"] == "translation")))
    tuned_path = os.path.join(args.model_dirs[0], "tuned", "tuned.json")
    if os.path.exists(tuned_path):
        with open(tuned_path) as f:
            print("\n" + "\n".join(tuned_tables(json.load(f))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
