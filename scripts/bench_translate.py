"""Translation decoding speed and quality: the textbook loop against the project's decoder.

    python scripts/bench_translate.py --model_dir=runs/small [--limit=50] \\
        [--append_to=docs/BENCHMARKS.md]

Translates the Multi30k test2016 sources (../shared/data/multi30k/test_2016_flickr.en.gz
beside the repo; --source/--reference read other files) with one trained model dir,
four ways, in one process and on one device:

(a) the loop a Keras tutorial reader writes: greedy, one sentence at a time, calling
    the whole model (encoder and decoder) on the growing prefix at every step, eagerly;
(b) the project's decoder with the cache off (`decode.greedy_decode_uncached`), in the
    same token-budget batches as (c);
(c) the project's cached greedy decoder, batched as trainer.translate batches;
(d) the same with beam search (--beam_size, default 4).

(b), (c) and (d) run `trainer.infer.translate_lines`, the code path of trainer.translate,
after an untimed warm-up (tracing; one graph serves every batch shape). (a) is slow:
--limit N times it on the first N sentences only and extrapolates its rates (the table
says so). All four use the same per-sentence length limit and never emit PAD or BOS,
so (a), (b) and (c) should agree token for token (up to floating-point near-ties); the
report counts the sentences where they do. sacreBLEU (with its signature) scores (c)
and (d) against the raw reference text. Prints a markdown section; --append_to writes
it into a markdown file, replacing an earlier run's section.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import os
import platform
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_report  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MULTI30K = os.path.join(REPO, "..", "shared", "data", "multi30k")
DEFAULT_SOURCE = os.path.join(MULTI30K, "test_2016_flickr.en.gz")
DEFAULT_REFERENCE = os.path.join(MULTI30K, "test_2016_flickr.de.gz")
SECTION = "## Translation decoding speed"
PROGRAM = "bench_translate"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True, help="A trained translation model dir.")
    parser.add_argument("--checkpoint", default="best", help="best, latest or a path.")
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="Source sentences (.gz or text).")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="Aligned references.")
    parser.add_argument(
        "--limit", type=int, default=0, help="Time (a) on the first N sentences only; 0 = all."
    )
    parser.add_argument("--batch_tokens", type=int, default=4096, help="As trainer.translate.")
    parser.add_argument("--beam_size", type=int, default=4, help="Beam width of (d).")
    parser.add_argument("--alpha", type=float, default=0.6, help="Length penalty of (d).")
    parser.add_argument(
        "--max_decode_length",
        type=int,
        help="Output length limit for all four; default: source length + 50, up to max_length.",
    )
    parser.add_argument("--append_to", help="Markdown file to write this section into.")
    args = parser.parse_args(argv)
    if args.limit < 0 or args.batch_tokens < 1 or args.beam_size < 1 or args.alpha < 0:
        parser.error("--limit must be >= 0, --batch_tokens and --beam_size >= 1, --alpha >= 0")
    if args.max_decode_length is not None and args.max_decode_length < 1:
        parser.error("--max_decode_length must be >= 1")
    return args


def read_lines(path: str) -> list[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f]


def textbook_greedy(model, source_ids: list[int], *, limit: int) -> list[int]:
    """The tutorial loop: whole model over source and prefix each step, argmax, stop at EOS.

    PAD and BOS are never chosen, as in the project's decoder, so outputs can be compared.
    """
    import numpy as np
    import tensorflow as tf

    from pipeline import features

    source = tf.constant([source_ids], tf.int32)
    prefix = [features.BOS_ID]
    for _ in range(limit):
        logits = model((source, tf.constant([prefix], tf.int32)), training=False)
        scores = logits[0, -1].numpy()
        scores[[features.PAD_ID, features.BOS_ID]] = -np.inf
        prefix.append(int(np.argmax(scores)))
        if prefix[-1] == features.EOS_ID:
            break
    return prefix[1:]


def run_textbook(
    loaded, lines: list[str], *, max_decode_length: int | None
) -> tuple[list[str], int, float]:
    """(translations, target tokens, seconds) of loop (a) over ``lines``."""
    from pipeline import features, text
    from trainer import decode

    model = loaded.replicas[0].model
    # Keras warns that the first step's attention over one key is a softmax over one value.
    warnings.filterwarnings("ignore", message="You are using a softmax over axis -1")
    outputs, tokens = [], 0
    started = time.perf_counter()
    for line in lines:
        normalized = text.normalize(line, lowercase=loaded.lowercase)
        if not normalized:
            outputs.append("")
            continue
        ids = loaded.tokenizer.encode(normalized)
        if len(ids) > loaded.max_length:
            ids = ids[: loaded.max_length - 1] + [features.EOS_ID]
        limit = max_decode_length or decode.default_max_decode_length(
            len(ids), model_max_length=loaded.max_length
        )
        output = textbook_greedy(model, ids, limit=limit)
        tokens += len(output)
        outputs.append(loaded.tokenizer.decode(output))
    return outputs, tokens, time.perf_counter() - started


def measure(args: argparse.Namespace) -> dict:
    """Runs the four decoders; everything the report needs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import sacrebleu
    import tensorflow as tf

    from pipeline import features
    from trainer import distribution, infer

    sources, references = read_lines(args.source), read_lines(args.reference)
    if len(sources) != len(references):
        raise SystemExit(
            f"{PROGRAM}: error: {args.source} has {len(sources)} lines but {args.reference} "
            f"has {len(references)}"
        )
    device = distribution.local_devices(num_gpus=1, virtual_devices=0)[0]
    loaded = infer.load_model_dir(
        args.model_dir, task=features.TRANSLATION, checkpoint=args.checkpoint, devices=[device]
    )
    print(loaded.describe(), file=sys.stderr)

    common = dict(batch_tokens=args.batch_tokens, max_decode_length=args.max_decode_length)
    runs = {
        "uncached": dict(beam_size=1, cache=False, **common),
        "greedy": dict(beam_size=1, **common),
        "beam": dict(beam_size=args.beam_size, alpha=args.alpha, **common),
    }
    results = {}
    for name, options in runs.items():
        infer.translate_lines(loaded, sources[:8], **options)  # tracing, not timed
        outputs, summary = infer.translate_lines(loaded, sources, **options)
        results[name] = dict(
            outputs=outputs,
            sentences=summary.sentences,
            tokens=summary.target_tokens,
            seconds=summary.seconds,
        )
        print(f"{name}: {summary.describe()}", file=sys.stderr)

    textbook_lines = sources[: args.limit] if args.limit else sources
    run_textbook(loaded, sources[:1], max_decode_length=args.max_decode_length)  # warm-up
    outputs, tokens, seconds = run_textbook(
        loaded, textbook_lines, max_decode_length=args.max_decode_length
    )
    results["textbook"] = dict(
        outputs=outputs,
        sentences=sum(1 for o, s in zip(outputs, textbook_lines) if s.strip()),
        tokens=tokens,
        seconds=seconds,
    )

    bleu = {}
    for name in ("greedy", "beam"):
        metric = sacrebleu.metrics.BLEU()
        score = metric.corpus_score(results[name]["outputs"], [references])
        bleu[name] = (score.score, str(metric.get_signature()))
    greedy = results["greedy"]["outputs"]
    return dict(
        results=results,
        bleu=bleu,
        total=len(sources),
        textbook_timed=len(textbook_lines),
        same_textbook=sum(a == b for a, b in zip(results["textbook"]["outputs"], greedy)),
        same_uncached=sum(a == b for a, b in zip(results["uncached"]["outputs"], greedy)),
        setup=(
            f"{loaded.describe()}; TensorFlow {tf.__version__}, {platform.machine()} with "
            f"{os.cpu_count()} CPUs; --batch_tokens={args.batch_tokens}"
            + (f", --max_decode_length={args.max_decode_length}" if args.max_decode_length else "")
            + f"; source {args.source}"
        ),
    )


def report(args: argparse.Namespace, m: dict, command: str) -> str:
    """The markdown section for measurements ``m``."""
    r = m["results"]

    def rates(name: str) -> tuple[float, float]:
        seconds = max(r[name]["seconds"], 1e-9)
        return r[name]["sentences"] / seconds, r[name]["tokens"] / seconds

    extrapolated = m["textbook_timed"] < m["total"]
    timed_a = f"{m['textbook_timed']} of {m['total']}" if extrapolated else f"{m['total']}"
    rows = [
        ("(a)", "textbook loop: greedy, one sentence at a time, whole model per step", "textbook"),
        ("(b)", "project decoder, cache off: greedy, batched", "uncached"),
        ("(c)", "project decoder, cached greedy, batched", "greedy"),
        ("(d)", f"project decoder, cached beam {args.beam_size} (α {args.alpha}), batched", "beam"),
    ]
    lines = [
        SECTION,
        "",
        f"{datetime.date.today().isoformat()}, `scripts/bench_translate.py`: {m['setup']}.",
        "",
        "| | decoder | sentences timed | seconds | sentences/s | target tokens/s | BLEU |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, what, name in rows:
        sentences_per_s, tokens_per_s = rates(name)
        timed = timed_a if name == "textbook" else str(m["total"])
        bleu = f"{m['bleu'][name][0]:.2f}" if name in m["bleu"] else ""
        lines.append(
            f"| {label} | {what} | {timed} | {r[name]['seconds']:.2f} | "
            f"{sentences_per_s:,.2f} | {tokens_per_s:,.1f} | {bleu} |"
        )
    greedy_rate = rates("greedy")[0]
    beam_time = r["beam"]["seconds"] / max(r["greedy"]["seconds"], 1e-9)
    lines += [
        "",
        f"- cached greedy (c) vs textbook (a): **{greedy_rate / rates('textbook')[0]:,.1f}x** "
        f"sentences/s; vs cache off (b): **{greedy_rate / rates('uncached')[0]:,.1f}x**.",
        f"- beam {args.beam_size} (d) takes {beam_time:.2f}x the time of greedy (c).",
        f"- identical output: (a) = (c) on {m['same_textbook']}/{m['textbook_timed']} "
        f"sentences, (b) = (c) on {m['same_uncached']}/{m['total']}.",
        f"- BLEU signature: `{m['bleu']['greedy'][1]}`.",
    ]
    if extrapolated:
        lines.append(
            f"- (a) was timed on the first {m['textbook_timed']} sentences only (--limit); "
            "its rates are extrapolated from them."
        )
    lines += ["", "```", command, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for path in (args.source, args.reference):
        if not os.path.exists(path):
            print(
                f"{PROGRAM}: error: {path} not found (the Multi30k test set is needed, or pass "
                "--source and --reference)",
                file=sys.stderr,
            )
            return 2
    if not os.path.exists(os.path.join(args.model_dir, "config.json")):
        print(
            f"{PROGRAM}: error: --model_dir: {args.model_dir} has no config.json", file=sys.stderr
        )
        return 2
    command = bench_report.command_line([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    section = report(args, measure(args), command)
    print(section, end="")
    if args.append_to:
        bench_report.write_section(args.append_to, SECTION, section)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, REPO)  # run as a script from a checkout without installing
    sys.exit(main())
