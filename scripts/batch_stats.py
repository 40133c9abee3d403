"""How the trainer batches a translation train split: one line per epoch.

    .venv/bin/python scripts/batch_stats.py DATA_DIR --batch_tokens=6144
    .venv/bin/python scripts/batch_stats.py DATA_DIR --batch_tokens=6144 --xla   # length buckets

Builds the epochs exactly as `trainer.train` does on one replica (`input_pipeline.
train_dataset` with the run's seed) and reports, per epoch: batches (optimizer steps),
pairs, target tokens, the median batch's target tokens, the batches under half of that
median (short steps: each a full optimizer update on a sliver of data), and padding
(non-PAD tokens over padded slots, both sides). Reads the data only; trains nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROGRAM = "batch_stats"


def epoch_stats(batches) -> dict:
    """Figures for one epoch's batches (dicts of numpy int arrays, PAD = 0)."""
    targets = [int((b["targets"] != 0).sum()) for b in batches]
    real = sum(int((b[k] != 0).sum()) for b in batches for k in ("inputs", "targets"))
    slots = sum(b[k].size for b in batches for k in ("inputs", "targets"))
    median = statistics.median(targets)
    return {
        "batches": len(batches),
        "pairs": sum(b["targets"].shape[0] for b in batches),
        "target_tokens": sum(targets),
        "median_target_tokens": median,
        "short_batches": sum(t < median / 2 for t in targets),
        "fill": real / max(slots, 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="a translation preprocessing output")
    parser.add_argument("--batch_tokens", type=int, default=6144)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="the run's --seed")
    parser.add_argument("--epochs", default="0,1,2", help="comma-separated epoch numbers")
    parser.add_argument("--xla", action="store_true", help="batches as under --xla: length buckets")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipeline import features
    from trainer import input_pipeline

    try:
        metadata = features.load_metadata(args.data_dir)
        epochs = [int(e) for e in args.epochs.split(",")]
    except (features.MetadataError, ValueError) as e:
        print(f"{PROGRAM}: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    if metadata.task != features.TRANSLATION:
        print(f"{PROGRAM}: error: {args.data_dir} holds {metadata.task} data", file=sys.stderr)
        return 2
    for epoch in epochs:
        dataset = input_pipeline.train_dataset(
            data_dir=args.data_dir,
            metadata=metadata,
            epoch=epoch,
            seed=args.seed,
            max_length=args.max_length,
            batch_tokens=args.batch_tokens,
            pad_to_bucket=args.xla,
        )
        s = epoch_stats(list(dataset.as_numpy_iterator()))
        print(
            f"epoch {epoch}: {s['batches']} batches, {s['pairs']} pairs, "
            f"{s['target_tokens']} target tokens, median {s['median_target_tokens']:.0f} a batch, "
            f"{s['short_batches']} under half the median, {s['fill']:.1%} of padded slots real",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
