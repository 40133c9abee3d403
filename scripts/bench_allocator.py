"""The CPU allocator: `trainer.train` on TensorFlow's BFC allocator against the C library's malloc.

    python scripts/bench_allocator.py --data_dir=/tmp/ende --append_to=docs/BENCHMARKS.md

`pipeline.tensorflow_start.start()` defaults TF_CPU_ALLOCATOR_USE_BFC to true. This runs
the real command, `python -m trainer.train`, for each preset and precision, in fresh
processes that take turns: one with the default (BFC) and one with
TF_CPU_ALLOCATOR_USE_BFC=false (malloc, TensorFlow's own default without a GPU), each into
a new model dir for `--steps` steps. Throughput is the mean of the status lines' tokens/s
after the first (which holds the tracing); each process's user and system CPU seconds and
peak resident memory come from the kernel (`os.wait4`). The table reports medians over
`--repeats` and the ratio BFC / malloc.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_report  # noqa: E402
import train_timing  # noqa: E402

from pipeline import cli, tensorflow_start  # noqa: E402

PROGRAM = "bench_allocator"
SECTION_TITLE = "## The CPU allocator"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
SIDES = ("bfc", "malloc")
_STATUS = re.compile(r"step \d+/\d+\s+loss \S+\s+tokens/s ([\d,]+)")

flags.DEFINE_string("data_dir", None, "A translation preprocessing output (with metadata.json).")
flags.DEFINE_list("presets", ["tiny", "small"], "Presets (configs/NAME.cfg).")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Precisions.")
flags.DEFINE_integer("steps", 60, "Training steps per run.")
flags.DEFINE_integer("log_every", 15, "Steps between status lines; the first is not counted.")
flags.DEFINE_integer("repeats", 2, "Runs per side, alternating.")
flags.DEFINE_string("append_to", None, "Write the report as a section of this Markdown file.")

flags.register_validator("steps", lambda v: v >= 2, "--steps must be at least 2")
flags.register_validator("log_every", lambda v: v >= 1, "--log_every must be positive")
flags.register_validator("repeats", lambda v: v >= 1, "--repeats must be positive")


def status_tokens_per_second(output: str) -> float:
    """The mean tokens/s of a run's status lines after the first; ValueError without two."""
    rates = [float(m.group(1).replace(",", "")) for m in _STATUS.finditer(output)]
    if len(rates) < 2:
        raise ValueError(f"fewer than 2 status lines in the trainer's output:\n{output[-2000:]}")
    return statistics.mean(rates[1:])


def run_trainer(side: str, *, preset: str, precision: str, data_dir: str) -> dict:
    """One `trainer.train` process on ``side``'s allocator -> its figures."""
    env = dict(os.environ)
    env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    if side == "malloc":
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "false"
    model_dir = tempfile.mkdtemp(prefix="bench-allocator-")
    argv = [
        sys.executable,
        "-m",
        "trainer.train",
        f"--flagfile={ROOT}/configs/{preset}.cfg",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        f"--precision={precision}",
        f"--train_steps={FLAGS.steps}",
        f"--log_every={FLAGS.log_every}",
        f"--eval_every={FLAGS.steps + 1}",
        f"--checkpoint_every={FLAGS.steps + 1}",
        "--eval_bleu_sentences=0",
        "--noexport",
    ]
    try:
        with tempfile.TemporaryFile() as out:
            child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(child.pid, 0)  # the child's own CPU time and memory
            out.seek(0)
            output = out.read().decode("utf-8", "replace")
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"trainer.train exited with {code}:\n{output[-2000:]}")
    return {
        "tokens_per_second": status_tokens_per_second(output),
        "user_s": usage.ru_utime,
        "system_s": usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
    }


def _med(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def format_report(rows: list[dict], *, machine: str, command: str) -> str:
    lines = [
        f"{time.strftime('%Y-%m-%d')}, {machine}. `trainer.train` in fresh processes taking "
        f"turns, {FLAGS.repeats} per side, {FLAGS.steps} steps each: the default "
        "(TF_CPU_ALLOCATOR_USE_BFC=true, set by `pipeline.tensorflow_start`) against "
        "TF_CPU_ALLOCATOR_USE_BFC=false (the C library's malloc, TensorFlow's default without "
        "a GPU). Tokens/s: the mean of the status lines after the first; CPU seconds and "
        "peak memory of the whole process from the kernel. Medians:",
        "",
        "| preset | precision | tokens/s malloc | tokens/s BFC | BFC / malloc "
        "| user + system s, malloc | user + system s, BFC | peak MB malloc | peak MB BFC |",
        "|---|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for row in rows:
        m, b = row["malloc"], row["bfc"]
        ratio = _med(b, "tokens_per_second") / _med(m, "tokens_per_second")
        lines.append(
            f"| {row['preset']} | {row['precision']} | {_med(m, 'tokens_per_second'):,.0f} "
            f"| {_med(b, 'tokens_per_second'):,.0f} | **{ratio:.2f}x** "
            f"| {_med(m, 'user_s'):.0f} + {_med(m, 'system_s'):.0f} "
            f"| {_med(b, 'user_s'):.0f} + {_med(b, 'system_s'):.0f} "
            f"| {_med(m, 'peak_rss_mb'):,.0f} | {_med(b, 'peak_rss_mb'):,.0f} |"
        )
    lines += ["", "Runs (tokens/s):", ""]
    for row in rows:
        runs = "; ".join(
            f"{side} " + ", ".join(f"{r['tokens_per_second']:,.0f}" for r in row[side])
            for side in ("malloc", "bfc")
        )
        lines.append(f"- {row['preset']} {row['precision']}: {runs}")
    lines += ["", "```", command, "```", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    cli.check_command_line(argv, "data_dir")
    tensorflow_start.start()  # reading metadata.json imports TensorFlow; its lines off stderr
    train_timing.start(FLAGS.data_dir)
    for preset in FLAGS.presets:
        if not os.path.exists(f"{ROOT}/configs/{preset}.cfg"):
            raise cli.UsageError(f"--presets: no configs/{preset}.cfg")
    data_dir = os.path.abspath(FLAGS.data_dir)
    rows = []
    for preset in FLAGS.presets:
        for precision in FLAGS.precisions:
            row = {"preset": preset, "precision": precision, "bfc": [], "malloc": []}
            for repeat in range(FLAGS.repeats):
                order = SIDES if repeat % 2 == 0 else SIDES[::-1]
                for side in order:
                    figures = run_trainer(
                        side, preset=preset, precision=precision, data_dir=data_dir
                    )
                    row[side].append(figures)
                    print(f"{preset} {precision} {side}: {figures}", flush=True)
            rows.append(row)
    machine = f"{bench_report.cpu_model()}, {os.cpu_count()} cores"
    report = format_report(rows, machine=machine, command=bench_report.command_line())
    bench_report.publish(report, SECTION_TITLE, FLAGS.append_to)


if __name__ == "__main__":
    cli.run_main(PROGRAM, main)
