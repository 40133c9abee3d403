"""Fault injection for the preprocessing job: kill it mid-write, fill its disk, make it read-only.

    python scripts/chaos_preprocess.py --kills=6 --examples=4000 --seed=0 [--work_dir=DIR]

An uninterrupted run of `python -m pipeline.preprocess` on the embedded corpus is the
reference. Then the same command is SIGKILLed K times (alternately the moment a shard's
temporary file appears, and at a random time within the reference run's duration,
narrowed to the last pause whenever a relaunch finished before its kill), each
relaunch with --overwrite. After every kill: no metadata.json, and every file
under a final shard name reads to its end (gzip and record CRCs); once, a relaunch
without --overwrite must refuse in one line. The last relaunch runs to the end and
its output must be byte-identical to the reference. Then the job writes into a full
file system and into a read-only directory: exit status 1, one line on stderr, no
metadata.json. tests/chaos_preprocess_test.py runs it small (--kills=2 --examples=600).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos_common as chaos  # noqa: E402

PROGRAM = "chaos_preprocess"
SUITE = "preprocess"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=6, help="Kills before the run that finishes.")
    parser.add_argument("--examples", type=int, default=4000, help="Sentence pairs of input.")
    parser.add_argument("--num_shards", type=int, default=4, help="Training shards written.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill moments.")
    parser.add_argument("--work_dir", help="Default: a new temp dir.")
    parser.add_argument(
        "--skip_disk", action="store_true", help="Skip the full and read-only disks."
    )
    parser.add_argument("--report_json", help="Also write the checks and figures here.")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.examples < 100 or args.num_shards < 1:
        parser.error("--kills >= 1, --examples >= 100 and --num_shards >= 1 please")
    return args


def job_flags(raw_prefix: str, output_dir: str, args) -> list[str]:
    return [
        "--dataset=ende",
        f"--input={raw_prefix}",
        f"--output_dir={output_dir}",
        "--vocab_size=500",
        f"--num_shards={args.num_shards}",
        "--validation_fraction=0.1",
    ]


def torn_final_files(output_dir: str) -> list[str]:
    """Files under a final shard name that do not read to their end."""
    torn = []
    for name in sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []:
        if name.endswith(".tfrecord.gz") and not name.startswith("."):
            try:
                chaos.tfrecord_count(os.path.join(output_dir, name))
            except ValueError as e:
                torn.append(str(e))
    return torn


def differing_files(reference_dir: str, output_dir: str) -> list[str]:
    """Names present in only one of the two directories or with different bytes."""
    expected, actual = chaos.file_digests(reference_dir), chaos.file_digests(output_dir)
    return sorted(n for n in set(expected) | set(actual) if expected.get(n) != actual.get(n))


def write_corpus(work_dir: str, examples: int) -> str:
    raw = os.path.join(work_dir, "raw")
    code = subprocess.call(
        [
            chaos.PYTHON,
            "-c",
            "import sys; from pipeline import default_corpus; "
            "default_corpus.write_translation_files(sys.argv[1], n=int(sys.argv[2]))",
            raw,
            str(examples),
        ],
        env=chaos.subprocess_env(),
        cwd=chaos.ROOT,
    )
    if code:
        raise RuntimeError("writing the embedded corpus failed")
    return os.path.join(raw, "train")


def kills(report: chaos.Report, args, work_dir: str, raw: str) -> None:
    rng = chaos.rng(args.seed)
    output = os.path.join(work_dir, "out")
    reference = os.path.join(work_dir, "reference")
    start = time.monotonic()
    code, log = chaos.run_module(
        "pipeline.preprocess",
        job_flags(raw, output, args),
        log_path=os.path.join(work_dir, "reference.log"),
    )
    duration = time.monotonic() - start
    if code:
        raise RuntimeError(f"the reference run failed:\n{log[-2000:]}")
    os.rename(output, reference)
    span = duration  # the random kills fall in (0.2 s, 0.9 span)
    landed = {"shard write": 0, "random time": 0}
    mid_write = 0
    refused_once = False
    attempts = 0
    while sum(landed.values()) < args.kills and attempts < 3 * args.kills:
        k, attempts = sum(landed.values()), attempts + 1
        kind = "shard write" if k % 2 == 0 else "random time"
        flags = job_flags(raw, output, args) + ["--overwrite"]
        launch = chaos.Launch(
            "pipeline.preprocess", flags, log_path=os.path.join(work_dir, f"kill-{attempts}.log")
        )
        if kind == "shard write":
            chaos.wait_for_new_entry(
                output, lambda n: n.startswith(".tmp-") and "tfrecord" in n, launch, timeout=600
            )
        else:
            pause = rng.uniform(0.2, 0.9 * span)
            time.sleep(pause)
        if not launch.running():
            launch.wait(10)  # finished before the kill: try again
            if kind == "random time":
                # The reference run can be slower than the relaunches (a loaded machine, a
                # cold cache): this one took under `pause`, so aim the next kill inside that.
                span = min(span, pause)
            continue
        in_write = any(n.startswith(".tmp-") for n in os.listdir(output))
        launch.signal(signal.SIGKILL)
        launch.wait(30)
        if os.path.exists(os.path.join(output, "metadata.json")):
            # metadata.json is the job's last write: the kill met a job that had finished
            # (its interpreter exiting). Its output must then be the complete one; try again.
            report.check(
                SUITE,
                "a kill after the job's last write: files differing from the uninterrupted run",
                [],
                differing_files(reference, output),
            )
            if kind == "random time":
                span = min(span, pause)
            continue
        landed[kind] += 1
        mid_write += in_write
        present = sorted(os.listdir(output)) if os.path.isdir(output) else []
        report.check(
            SUITE,
            f"kill {k + 1} ({kind}, {len(present)} files there): metadata.json absent, "
            "no torn file under a final name",
            "absent, 0 torn",
            f"{'present' if 'metadata.json' in present else 'absent'}, "
            f"{len(torn_final_files(output))} torn",
        )
        if not refused_once and os.path.isdir(output) and os.listdir(output):
            refused_once = True
            code, log = chaos.run_module(
                "pipeline.preprocess",
                job_flags(raw, output, args),
                log_path=os.path.join(work_dir, "no-overwrite.log"),
            )
            line = chaos.one_line_error(log, "preprocess")
            report.check(
                SUITE,
                "rerun without --overwrite over the debris: status 2, one line",
                "2, 'pass --overwrite'",
                f"{code}, {line!r}",
                code == 2 and line is not None and "--overwrite" in line,
            )
    code, log = chaos.run_module(
        "pipeline.preprocess",
        job_flags(raw, output, args) + ["--overwrite"],
        log_path=os.path.join(work_dir, "final.log"),
    )
    report.check(SUITE, "final rerun with --overwrite: exit status", 0, code)
    reference_files = len(chaos.file_digests(reference))
    report.check(
        SUITE,
        "files of the final output (as the uninterrupted run)",
        reference_files,
        len(chaos.file_digests(output)),
    )
    report.check(
        SUITE,
        "files differing in name or bytes from the uninterrupted run",
        [],
        differing_files(reference, output),
    )
    report.figures[SUITE] = {
        "kills": sum(landed.values()),
        "launches_that_finished_before_their_kill": attempts - sum(landed.values()),
        "kills_by_kind": landed,
        "kills_with_a_temp_file_open": mid_write,
        "reference_seconds": round(duration, 1),
        "files": reference_files,
    }


def disks(report: chaos.Report, args, work_dir: str, raw: str) -> None:
    # Too small for the tokenizer model; then room for it but not for the shards.
    tokenizer_kib = os.path.getsize(os.path.join(work_dir, "reference", "spm.model")) // 1024
    for size_kib in (tokenizer_kib // 2, tokenizer_kib + 8):
        mount = os.path.join(work_dir, f"full-{size_kib}")
        with chaos.full_disk(mount, size_bytes=size_kib * 1024) as (means, preexec):
            output = os.path.join(mount, "out")
            code, log = chaos.run_module(
                "pipeline.preprocess",
                job_flags(raw, output, args),
                log_path=os.path.join(work_dir, f"full-{size_kib}.log"),
                preexec_fn=preexec,
            )
            line = chaos.one_line_error(log, "preprocess")
            present = sorted(os.listdir(output)) if os.path.isdir(output) else []
            report.check(
                SUITE,
                f"disk full ({means}): status, one-line error, metadata.json, torn files",
                "1, 'disk full: ...', absent, 0",
                f"{code}, {line!r}, {'present' if 'metadata.json' in present else 'absent'}, "
                f"{len(torn_final_files(output))}",
                code == 1
                and line is not None
                and "disk full" in line
                and "metadata.json" not in present
                and not torn_final_files(output),
            )
    mount = os.path.join(work_dir, "read-only")
    with chaos.unwritable_dir(mount) as means:
        if means is None:
            report.check(SUITE, "read-only output dir", "tested", "no means on this machine", True)
            return
        output = os.path.join(mount, "out")
        code, log = chaos.run_module(
            "pipeline.preprocess",
            job_flags(raw, output, args),
            log_path=os.path.join(work_dir, "read-only.log"),
        )
        chaos.check_unwritable_error(
            report, SUITE, "output dir", means, program="preprocess", code=code, output=log
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="chaos_preprocess-")
    os.makedirs(work_dir, exist_ok=True)
    for name in ("out", "reference"):
        shutil.rmtree(os.path.join(work_dir, name), ignore_errors=True)
    report = chaos.Report(f"chaos_preprocess (seed {args.seed})")
    raw = write_corpus(work_dir, args.examples)
    started = time.monotonic()
    kills(report, args, work_dir, raw)
    if not args.skip_disk:
        disks(report, args, work_dir, raw)
    report.figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"work dir: {work_dir}")
    return report.finish(args.report_json)


if __name__ == "__main__":
    sys.exit(main())
