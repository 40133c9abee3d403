"""Fault injection for batch translation: kill trainer.translate mid-run, fill its disk.

    python scripts/chaos_translate.py --kills=6 --files=8 --lines=200 --seed=0 \\
        [--model_dir=DIR] [--work_dir=DIR]

An uninterrupted `python -m trainer.translate --input='in/*.en' --output=out/` is the
reference. The same command with --group_lines (each file then runs in chunks that
are saved as they finish) is then SIGKILLed K times (alternately the moment an
output's first file appears, and at a random time within the reference run's
duration, narrowed to the last pause whenever a relaunch finished before its kill)
and rerun each time without --overwrite, so it resumes, reusing the saved chunks.
After every kill, each file under its final output name has exactly its input's line
count and the reference's bytes; the last rerun completes every output, byte-identical
to the reference, and leaves no temporary file. Then it writes into a full file system
and into a read-only directory: a one-line error, and no output under its final
name that is not complete. Greedy decoding (--beam_size=1) makes the outputs
independent of how lines were batched. Without --model_dir a tiny model is trained
first (a few steps: it translates badly, but deterministically).
tests/chaos_translate_test.py runs it small.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos_common as chaos  # noqa: E402

PROGRAM = "chaos_translate"
SUITE = "translate"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=6, help="Kills before the run that finishes.")
    parser.add_argument("--files", type=int, default=8, help="Input files.")
    parser.add_argument("--lines", type=int, default=200, help="Lines per input file.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill moments.")
    parser.add_argument(
        "--group_lines",
        type=int,
        default=0,
        help="--group_lines of the killed runs (default: a quarter of --lines, 4 chunks a file).",
    )
    parser.add_argument("--model_dir", help="A trained translation model dir; default: train one.")
    parser.add_argument("--work_dir", help="Default: a new temp dir.")
    parser.add_argument(
        "--skip_disk", action="store_true", help="Skip the full and read-only disks."
    )
    parser.add_argument("--report_json", help="Also write the checks and figures here.")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.files < 1 or args.lines < 1 or args.group_lines < 0:
        parser.error("--kills, --files and --lines must be >= 1, --group_lines >= 0")
    args.group_lines = args.group_lines or max(1, args.lines // 4)
    return args


def train_model(work_dir: str) -> str:
    data_dir = chaos.prepare_translation_data(work_dir)
    model_dir = os.path.join(work_dir, "model")
    code, out = chaos.run_module(
        "trainer.train",
        [
            f"--data_dir={data_dir}",
            f"--model_dir={model_dir}",
            f"--flagfile={chaos.TINY_CFG}",
            *chaos.SHRUNK_MODEL,
            "--train_steps=10",
            "--checkpoint_every=10",
            "--eval_every=10",
            "--eval_bleu_sentences=0",
            "--batch_tokens=1024",
            "--noexport",
        ],
        log_path=os.path.join(work_dir, "train.log"),
    )
    if code:
        raise RuntimeError(f"training the model to translate with failed:\n{out[-2000:]}")
    return model_dir


def write_inputs(work_dir: str, files: int, lines: int, seed: int) -> str:
    """FILES inputs of LINES English sentences from the embedded corpus; one blank line each."""
    from pipeline import default_corpus

    pairs = default_corpus.translation_pairs(files * lines, seed=seed)
    directory = os.path.join(work_dir, "in")
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    for i in range(files):
        chunk = [english for english, _ in pairs[i * lines : (i + 1) * lines]]
        chunk[len(chunk) // 2] = ""
        with open(os.path.join(directory, f"part-{i:02d}.en"), "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in chunk)
    return directory


def translate_flags(
    model_dir: str, inputs: str, output: str, group_lines: int | None = None
) -> list[str]:
    chunks = [f"--group_lines={group_lines}"] if group_lines else []
    return [
        f"--model_dir={model_dir}",
        f"--input={inputs}/*.en",
        f"--output={output}/",
        "--beam_size=1",
        "--batch_tokens=2048",
        *chunks,
    ]


def line_count(path: str) -> int:
    with open(path, "rb") as f:
        return f.read().count(b"\n")


def final_outputs_check(output: str, inputs: str, reference: str) -> tuple[int, list[str]]:
    """(outputs under their final name, those that are short or differ from the reference)."""
    if not os.path.isdir(output):
        return 0, []
    finals = [n for n in sorted(os.listdir(output)) if not n.startswith(".")]
    wrong = []
    for name in finals:
        with open(os.path.join(output, name), "rb") as f:
            data = f.read()
        expected_lines = line_count(os.path.join(inputs, name))
        with open(os.path.join(reference, name), "rb") as f:
            if data.count(b"\n") != expected_lines or data != f.read():
                wrong.append(name)
    return len(finals), wrong


def kills(report: chaos.Report, args, work_dir: str, model_dir: str, inputs: str) -> None:
    rng = chaos.rng(args.seed)
    output = os.path.join(work_dir, "out")
    reference = os.path.join(work_dir, "reference")
    for directory in (output, reference):
        shutil.rmtree(directory, ignore_errors=True)
    start = time.monotonic()
    code, log = chaos.run_module(
        "trainer.translate",
        translate_flags(model_dir, inputs, reference),
        log_path=os.path.join(work_dir, "reference.log"),
    )
    duration = time.monotonic() - start
    if code:
        raise RuntimeError(f"the reference run failed:\n{log[-2000:]}")
    span = duration  # the random kills fall in (0.5 s, 0.9 span)
    landed = {"output write": 0, "random time": 0}
    complete_at_kill = []
    chunked = translate_flags(model_dir, inputs, output, args.group_lines)
    reused_chunks = 0
    attempts = 0
    while sum(landed.values()) < args.kills and attempts < 3 * args.kills:
        k, attempts = sum(landed.values()), attempts + 1
        kind = "output write" if k % 2 == 0 else "random time"
        log_path = os.path.join(work_dir, f"kill-{attempts}.log")
        launch = chaos.Launch("trainer.translate", chunked, log_path=log_path)
        if kind == "output write":
            # Small outputs live under their temporary name for microseconds: stop the
            # process as soon as the first output (temporary or final) of this launch shows.
            chaos.wait_for_new_entry(output, lambda n: True, launch, timeout=600)
            launch.signal(signal.SIGSTOP)
        else:
            pause = rng.uniform(0.5, 0.9 * span)
            time.sleep(pause)
        if not launch.running():
            launch.wait(10)
            shutil.rmtree(output)  # it finished every output first: start over
            if kind == "random time":
                span = min(span, pause)  # a relaunch faster than the reference run
            continue
        launch.signal(signal.SIGKILL)
        launch.wait(30)
        landed[kind] += 1
        with open(log_path, encoding="utf-8", errors="replace") as f:
            reused_chunks += _reused_chunks(f.read())
        finals, wrong = final_outputs_check(output, inputs, reference)
        complete_at_kill.append(finals)
        report.check(
            SUITE,
            f"kill {k + 1} ({kind}): outputs under their final name that are short or differ",
            f"0 of {finals}",
            f"{len(wrong)} of {finals}",
            not wrong,
        )
    code, log = chaos.run_module(
        "trainer.translate", chunked, log_path=os.path.join(work_dir, "final.log")
    )
    reused_chunks += _reused_chunks(log)
    report.check(SUITE, "final rerun: exit status", 0, code)
    skipped = re.search(r"(\d+) skipped: output complete", log)
    skipped = int(skipped.group(1)) if skipped else 0
    finals, wrong = final_outputs_check(output, inputs, reference)
    report.check(
        SUITE,
        "outputs complete and identical to the uninterrupted run",
        args.files,
        finals - len(wrong),
    )
    leftovers = [n for n in os.listdir(output) if n.startswith(".")]
    report.check(SUITE, "temporary files left", [], leftovers)
    report.figures[SUITE] = {
        "kills": sum(landed.values()),
        "kills_by_kind": landed,
        "complete_outputs_at_each_kill": complete_at_kill,
        "launches_that_finished_before_their_kill": attempts - sum(landed.values()),
        "rerun_skipped_complete_outputs": skipped,
        "saved_chunks_reused_by_reruns": reused_chunks,
        "chunks_per_file": -(-args.lines // args.group_lines),
        "reference_seconds": round(duration, 1),
        "lines": args.files * args.lines,
    }


def _reused_chunks(log: str) -> int:
    """Saved chunks a launch reused, from its "reused N of M saved chunks of ..." lines."""
    return sum(int(n) for n in re.findall(r"reused (\d+) of \d+ saved chunks", log))


def disks(report: chaos.Report, args, work_dir: str, model_dir: str, inputs: str) -> None:
    reference = os.path.join(work_dir, "reference")
    first = os.path.getsize(os.path.join(reference, sorted(os.listdir(reference))[0]))
    # Room for about one and a half outputs: the first is written whole, the second is not.
    size = max(4096, first * 3 // 2)
    mount = os.path.join(work_dir, "full")
    with chaos.full_disk(mount, size_bytes=size) as (means, preexec):
        output = os.path.join(mount, "out")
        code, log = chaos.run_module(
            "trainer.translate",
            translate_flags(model_dir, inputs, output),
            log_path=os.path.join(work_dir, "full.log"),
            preexec_fn=preexec,
        )
        line = chaos.one_line_error(log, "translate")
        finals, wrong = final_outputs_check(output, inputs, reference)
        report.check(
            SUITE,
            f"disk full ({means}): status, one-line error, bad outputs under a final name",
            "1 (as every command on a full disk), one line naming the cause, 0",
            f"{code}, {line!r}, {len(wrong)} of {finals}",
            code == 1
            and line is not None
            and any(c in line for c in ("No space", "too large", "disk full"))
            and not wrong,
        )
    mount = os.path.join(work_dir, "read-only")
    with chaos.unwritable_dir(mount) as means:
        if means is None:
            report.check(SUITE, "read-only output dir", "tested", "no means on this machine", True)
            return
        code, log = chaos.run_module(
            "trainer.translate",
            translate_flags(model_dir, inputs, os.path.join(mount, "out")),
            log_path=os.path.join(work_dir, "read-only.log"),
        )
        chaos.check_unwritable_error(
            report, SUITE, "output dir", means, program="translate", code=code, output=log
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="chaos_translate-")
    os.makedirs(work_dir, exist_ok=True)
    model_dir = args.model_dir or train_model(work_dir)
    inputs = write_inputs(work_dir, args.files, args.lines, args.seed)
    report = chaos.Report(f"chaos_translate (seed {args.seed})")
    started = time.monotonic()
    kills(report, args, work_dir, model_dir, inputs)
    if not args.skip_disk:
        disks(report, args, work_dir, model_dir, inputs)
    report.figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"work dir: {work_dir}")
    return report.finish(args.report_json)


if __name__ == "__main__":
    sys.exit(main())
