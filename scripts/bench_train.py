"""Training throughput: the project's trainer against keras-hub layers trained with `model.fit`.

    python scripts/bench_train.py --data_dir=/tmp/ende --append_to=docs/BENCHMARKS.md

For each preset and precision, both sides train the same architecture on the same batches
of a preprocessing output's train split, in the same process:

* ours: `trainer.loop.Trainer` (one_device strategy) running its own `tf.function` step
  on batches drawn the way its loop draws them, with the loop's per-step host sync;
* keras-hub: `TransformerEncoder`/`TransformerDecoder` blocks, a tied `ReversibleEmbedding`
  and `SinePositionEncoding`, compiled with Adam and a sparse cross-entropy that ignores
  PAD, trained with `model.fit` (what a Keras user would write).

Batches are the trainer's own token-budget batches of pairs of similar length (`--batch_tokens`):
the first `--steps + 1` of the train split, held in memory so that reading shards costs
neither side anything. Each model first takes `--warmup` untimed steps over them
(tracing; under XLA every shape compiles, so warmup then covers all of them); then the
two sides take turns, `--repeats` times, each timing one pass from the end of its first
step to the end of its last. With `--keras_batches=fixed_length` keras-hub gets the same
examples as a Keras user's fixed-shape input instead (every sequence padded to the longest,
`--batch_tokens // length` examples a batch): that ratio includes what batching by length
saves, the other is the step alone. Throughput counts non-PAD target tokens; the table reports
the median over repeats and the ratio ours / keras-hub. With a GPU it also reports
model FLOPs utilization (MFU) against `--peak_tflops`.
Needs keras-hub (in the dev extra, which scripts/bootstrap.sh installs).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_report  # noqa: E402
import train_timing  # noqa: E402
from train_timing import (  # noqa: E402
    TRANSLATION_PRESETS,
    fixed_batches,
    fixed_length_batches,
    make_trainer,
    time_trainer,
)

from pipeline import cli, features  # noqa: E402
from trainer.config import PRECISIONS  # noqa: E402

PROGRAM = "bench_train"
SECTION_TITLE = "## Training throughput"
FLAGS = flags.FLAGS

flags.DEFINE_string("data_dir", None, "A translation preprocessing output (with metadata.json).")
flags.DEFINE_list("presets", ["tiny", "small"], f"Model presets, among {TRANSLATION_PRESETS}.")
flags.DEFINE_list(
    "precisions", ["float32", "mixed_bfloat16"], f"Precisions, among {list(PRECISIONS)}."
)
flags.DEFINE_integer("steps", 30, "Timed training steps per run.")
flags.DEFINE_integer(
    "warmup",
    5,
    "Untimed steps per model first (tracing); raised to --steps + 1 under XLA, which "
    "compiles each batch shape once.",
)
flags.DEFINE_bool(
    "xla",
    False,
    "Ours with the trainer's --xla (XLA-compiled step, batches padded to bucket lengths).",
)
flags.DEFINE_integer("batch_tokens", 4096, "Token budget per batch, padding included.")
flags.DEFINE_enum(
    "keras_batches",
    "same",
    ["same", "fixed_length"],
    "What model.fit trains on: the same length-sorted batches as ours, or the same examples "
    "as a Keras user's fixed-shape input (every sequence padded to the longest, batch size = "
    "--batch_tokens // that length).",
)
flags.DEFINE_integer("repeats", 2, "Timed runs per side, alternating ours and keras-hub.")
flags.DEFINE_float(
    "peak_tflops", 989.0, "Accelerator peak TFLOP/s for MFU (989: H100/H200 dense bf16)."
)
flags.DEFINE_string(
    "append_to", None, f"Markdown file whose '{SECTION_TITLE}' section is written or replaced."
)

flags.register_validator("steps", lambda v: v >= 1, "--steps must be at least 1")
flags.register_validator("warmup", lambda v: v >= 1, "--warmup must be at least 1 (tracing)")
flags.register_validator("batch_tokens", lambda v: v > 0, "--batch_tokens must be positive")
flags.register_validator("repeats", lambda v: v >= 1, "--repeats must be at least 1")
flags.register_validator("peak_tflops", lambda v: v > 0, "--peak_tflops must be positive")
flags.register_validator(
    "presets",
    lambda v: bool(v) and all(p in TRANSLATION_PRESETS for p in v),
    f"--presets must name presets among {TRANSLATION_PRESETS}",
)
flags.register_validator(
    "precisions",
    lambda v: bool(v) and all(p in PRECISIONS for p in v),
    f"--precisions must name precisions among {list(PRECISIONS)}",
)


@dataclasses.dataclass(frozen=True)
class Result:
    """One (preset, precision): target tokens/s of every timed run of each side."""

    preset: str
    precision: str
    ours: list[float]
    keras_hub: list[float]
    ours_params: int
    keras_hub_params: int
    flops_per_token: float
    # keras-hub's one padded length with --keras_batches=fixed_length, else None
    keras_fixed_length: int | None = None

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.keras_hub)


# ---- the keras-hub side --------------------------------------------------------------------------


def _keras_pairs(dataset):
    """`{"inputs", "targets"}` -> `((inputs, targets_in), targets)` for `model.fit`."""
    import tensorflow as tf

    def split(batch):
        targets = batch[features.TARGETS]
        bos = tf.fill([tf.shape(targets)[0], 1], features.BOS_ID)
        return (batch[features.INPUTS], tf.concat([bos, targets[:, :-1]], axis=1)), targets

    # A plain function of tensors: AutoGraph has nothing to convert (and would warn).
    return dataset.map(tf.autograph.experimental.do_not_convert(split))


def keras_hub_model(model_config, *, warmup_steps: int):
    """The same encoder-decoder from keras-hub layers, compiled as a Keras user would.

    Same sizes, post-LN, tied float32 embedding/output matrix scaled by sqrt(d_model),
    sinusoidal positions, dropout, Adam with the paper's schedule. Differences that are
    keras-hub's: its `dropout` also applies to attention probabilities, and the loss has
    no label smoothing (Keras' sparse cross-entropy has none).
    """
    import keras
    import keras_hub

    from trainer.schedule import WarmupInverseSqrt

    c = model_config
    embedding = keras_hub.layers.ReversibleEmbedding(
        c.vocab_size,
        c.d_model,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=c.d_model**-0.5),
        reverse_dtype="float32",
        name="embedding",
    )
    positions = keras_hub.layers.SinePositionEncoding()
    block = dict(
        intermediate_dim=c.d_ff,
        num_heads=c.num_heads,
        dropout=c.dropout,
        layer_norm_epsilon=1e-6,
        normalize_first=c.norm_first,
    )

    def embed(ids):
        x = embedding(ids) * c.d_model**0.5
        return keras.layers.Dropout(c.dropout)(x + positions(x))

    source = keras.Input(shape=(None,), dtype="int32", name="inputs")
    targets_in = keras.Input(shape=(None,), dtype="int32", name="targets_in")
    source_mask = keras.ops.not_equal(source, features.PAD_ID)
    target_mask = keras.ops.not_equal(targets_in, features.PAD_ID)
    memory = embed(source)
    for _ in range(c.num_layers):
        memory = keras_hub.layers.TransformerEncoder(**block)(memory, padding_mask=source_mask)
    x = embed(targets_in)
    for _ in range(c.num_layers):
        x = keras_hub.layers.TransformerDecoder(**block)(
            x,
            memory,
            decoder_padding_mask=target_mask,
            encoder_padding_mask=source_mask,
        )
    logits = embedding(x, reverse=True)
    model = keras.Model((source, targets_in), logits)
    model.compile(
        optimizer=keras.optimizers.Adam(
            WarmupInverseSqrt(d_model=c.d_model, warmup_steps=warmup_steps),
            beta_1=0.9,
            beta_2=0.98,
            epsilon=1e-9,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=features.PAD_ID
        ),
    )
    return model


def time_fit(model, dataset, steps: int) -> float:
    """Seconds from the end of the first batch to the end of the last, in `model.fit`."""
    import keras

    ends: list[float] = []

    class BatchEnds(keras.callbacks.Callback):
        # Defining on_train_batch_end makes Keras hand over the logs as Python numbers: a
        # host sync per step, as in the trainer's loop.
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=steps,
        shuffle=False,
        verbose=0,
        callbacks=[BatchEnds()],
    )
    if len(ends) != steps:
        raise RuntimeError(f"model.fit ran {len(ends)} of {steps} steps")
    return ends[-1] - ends[0]


# ---- one configuration -------------------------------------------------------------------------


def flops_per_target_token(*, params: int, num_layers: int, d_model: int, length: float) -> float:
    """Training FLOPs per target token: 6 x parameters + 12 x layers x d_model x length.

    Layers are the encoder's plus the decoder's; `length` is the mean padded target length.
    """
    return 6.0 * params + 12.0 * (2 * num_layers) * d_model * length


def measure(
    *,
    data_dir: str,
    metadata,
    preset: str,
    precision: str,
    batch_tokens: int,
    steps: int,
    warmup: int,
    repeats: int,
    xla: bool = False,
    keras_fixed_length: bool = False,
) -> Result:
    """Builds both models under `precision` and times them in turns; restores float32.

    Both sides see the same `steps + 1` batches: `warmup` untimed steps cycle through
    them first (so every shape is traced before the timing when `warmup > steps`), then
    each timed run goes through them once. With `xla` both train on length-bucketed
    batches padded to their bucket's length (the trainer's `--xla` input: the packed pools of
    the default input need shapes XLA would compile anew). With `keras_fixed_length` keras-hub trains on the same examples
    re-batched by `fixed_length_batches` (more, smaller batches; its first one untimed).
    """
    import keras

    try:
        with tempfile.TemporaryDirectory(prefix="bench_train_") as model_dir:
            trainer = make_trainer(
                data_dir=data_dir,
                metadata=metadata,
                model_dir=model_dir,
                preset=preset,
                precision=precision,
                batch_tokens=batch_tokens,
                xla=xla,
            )
            model_config = trainer.config.model
            baseline = keras_hub_model(model_config, warmup_steps=trainer.config.warmup_steps)
            batches = dict(
                data_dir=data_dir,
                metadata=metadata,
                batch_tokens=batch_tokens,
                max_length=model_config.max_length,
                count=steps + 1,
            )
            ours_batches, tokens = fixed_batches(**batches, pad_to_bucket=xla)
            keras_batches, keras_tokens, fixed_length = ours_batches, tokens, None
            if keras_fixed_length:
                keras_batches, keras_tokens, fixed_length = fixed_length_batches(
                    keras_batches, batch_tokens
                )
                if sum(keras_tokens) != sum(tokens):
                    raise RuntimeError("fixed-length batches hold different examples")
                if len(keras_tokens) < 2:
                    raise ValueError(
                        f"--steps={steps}: its examples fill only one fixed-length batch; "
                        "the timing needs two (raise --steps)"
                    )
            keras_batches = _keras_pairs(keras_batches)
            timed_tokens, keras_timed_tokens = sum(tokens[1:]), sum(keras_tokens[1:])
            time_trainer(trainer, ours_batches.repeat().take(warmup))
            time_fit(baseline, keras_batches.repeat().take(warmup), warmup)
            ours, theirs = [], []
            for _ in range(repeats):
                ours.append(timed_tokens / time_trainer(trainer, ours_batches))
                seconds = time_fit(baseline, keras_batches, len(keras_tokens))
                theirs.append(keras_timed_tokens / seconds)
            lengths = [int(b[features.TARGETS].shape[1]) for b in ours_batches.skip(1)]
            params = trainer.model.count_params()
            return Result(
                preset=preset,
                precision=precision,
                ours=ours,
                keras_hub=theirs,
                ours_params=params,
                keras_hub_params=baseline.count_params(),
                keras_fixed_length=fixed_length,
                flops_per_token=flops_per_target_token(
                    params=params,
                    num_layers=model_config.num_layers,
                    d_model=model_config.d_model,
                    length=statistics.mean(lengths),
                ),
            )
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
        keras.backend.clear_session()


# ---- the report --------------------------------------------------------------------------------


def machine_facts() -> list[str]:
    import keras
    import keras_hub
    import tensorflow as tf

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    facts = [
        f"CPU: {cpu}, {os.cpu_count()} cores",
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, keras-hub {keras_hub.__version__}",
    ]
    for gpu in tf.config.list_physical_devices("GPU"):
        name = tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        facts.append(f"GPU: {name}")
    return facts


def format_report(
    results: list[Result],
    *,
    command: str,
    facts: list[str],
    data_dir: str,
    steps: int,
    repeats: int,
    batch_tokens: int,
    xla: bool,
    peak_tflops: float | None,
) -> str:
    """The markdown body of the section: table, method, command, machine."""
    header = "| preset | precision | ours tokens/s | keras-hub fit tokens/s | ratio |"
    rule = "|---|---|---:|---:|---:|"
    if peak_tflops:
        header += " ours MFU |"
        rule += "---:|"
    rows = []
    for r in results:
        ours = statistics.median(r.ours)
        row = (
            f"| {r.preset} | {r.precision} | {ours:,.0f} | "
            f"{statistics.median(r.keras_hub):,.0f} | {r.ratio:.2f}x |"
        )
        if peak_tflops:
            row += f" {ours * r.flops_per_token / (peak_tflops * 1e12):.1%} |"
        rows.append(row)
    params = ", ".join(
        f"{r.preset} {r.ours_params:,} vs {r.keras_hub_params:,}"
        for r in results
        if r.precision == results[0].precision
    )
    fixed = sorted({r.keras_fixed_length for r in results if r.keras_fixed_length})
    shapes = " or ".join(f"{batch_tokens // n} x {n}" for n in fixed)
    lines = [
        header,
        rule,
        *rows,
        "",
        f"Target tokens/s (non-PAD), median of {repeats} alternating runs of {steps} steps "
        f"per side, after untimed warmup steps. "
        + (
            f"Both sides train the same examples from `{data_dir}`, held in memory: ours in "
            f"length-sorted batches of {batch_tokens} tokens (padding included), keras-hub "
            f"in fixed-shape batches ({shapes} tokens: every sequence padded to the longest "
            "among them), as the Keras translation examples feed `model.fit`; each side's "
            "first batch is untimed"
            if fixed
            else f"Both sides train the same length-sorted batches of {batch_tokens} tokens "
            f"(padding included) from `{data_dir}`, held in memory"
            + (
                ", every sequence padded to its length bucket's bound (the trainer's `--xla` input)"
                if xla
                else ""
            )
        )
        + ". Ours: `trainer.loop.Trainer` step, one_device strategy"
        + (", `--xla`" if xla else "")
        + ". keras-hub: "
        "`TransformerEncoder`/`TransformerDecoder`, tied `ReversibleEmbedding`, "
        "`SinePositionEncoding`, Adam, `SparseCategoricalCrossentropy(ignore_class=0)`, "
        f"`model.fit`. Parameters (ours vs keras-hub): {params}.",
    ]
    if peak_tflops:
        lines.append(
            f"MFU = tokens/s x (6 x parameters + 12 x layers x d_model x mean target length) "
            f"/ {peak_tflops:g} TFLOP/s."
        )
    lines += ["", "```", command, "```", "", *(f"- {fact}" for fact in facts)]
    return "\n".join(lines) + "\n"


# ---- entry point -------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    cli.check_command_line(argv, "data_dir")
    metadata = train_timing.start(FLAGS.data_dir)
    try:
        import keras_hub  # noqa: F401
    except ImportError:
        raise cli.UsageError(
            "keras-hub is not installed; install the dev extra: pip install -e '.[dev]' -c constraints.txt"
        ) from None
    import tensorflow as tf

    data_dir = FLAGS.data_dir.rstrip("/")
    gpu = bool(tf.config.list_physical_devices("GPU"))
    warmup = FLAGS.warmup
    if FLAGS.xla or gpu:  # model.fit compiles with XLA on a GPU too
        # Compilation per batch shape must happen before the timing: warm up on every batch.
        warmup = max(warmup, FLAGS.steps + 1)
    results = []
    for preset in FLAGS.presets:
        for precision in FLAGS.precisions:
            try:
                result = measure(
                    data_dir=data_dir,
                    metadata=metadata,
                    preset=preset,
                    precision=precision,
                    batch_tokens=FLAGS.batch_tokens,
                    steps=FLAGS.steps,
                    warmup=warmup,
                    repeats=FLAGS.repeats,
                    xla=FLAGS.xla,
                    keras_fixed_length=FLAGS.keras_batches == "fixed_length",
                )
            except ValueError as e:  # the trainer's config and input checks
                raise cli.UsageError(str(e).splitlines()[0]) from None
            print(
                f"{preset} {precision}: ours {[round(v) for v in result.ours]} tokens/s, "
                f"keras-hub {[round(v) for v in result.keras_hub]} tokens/s",
                flush=True,
            )
            results.append(result)
    report = format_report(
        results,
        command=bench_report.command_line(),
        facts=machine_facts(),
        data_dir=data_dir,
        steps=FLAGS.steps,
        repeats=FLAGS.repeats,
        batch_tokens=FLAGS.batch_tokens,
        xla=FLAGS.xla,
        peak_tflops=FLAGS.peak_tflops if gpu else None,
    )
    title = SECTION_TITLE + (" with --xla" if FLAGS.xla else "")
    if FLAGS.keras_batches == "fixed_length":
        title += ", keras-hub on fixed-length batches"
    print(f"\n{title}\n\n{report}", end="")
    if FLAGS.append_to:
        bench_report.write_section(FLAGS.append_to, title, report)
        print(f"wrote the '{title}' section of {FLAGS.append_to}")


if __name__ == "__main__":
    cli.run_main(PROGRAM, main)
