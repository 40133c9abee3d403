"""Fault injection for training's inputs and outputs: corrupt shards, corrupt checkpoints, full disk.

    python scripts/chaos_corrupt.py --rounds=4 --seed=0 [--small] [--data_dir=DIR] [--work_dir=DIR]
        [--suites=shards,checkpoints,disk --shard_damage=truncate,flip --checkpoint_damage=...]

shards       a copy of the data with one shard truncated or one byte flipped (random
             shard, random place; --rounds of each, training and validation shards).
             The trainer must stop with exit status 2 and one line naming that shard;
             with --skip_corrupt_shards it must train, naming the shard and the
             examples lost, which must equal the shard's record count.
checkpoints  a trained model dir whose newest checkpoint is damaged (data file
             truncated or deleted, index truncated, a byte flipped in either): the
             relaunch must warn, resume from the previous checkpoint and finish; with
             every checkpoint damaged it must stop with one line.
disk         the model dir on a file system that fills after a few checkpoints, and
             on a read-only one: exit status 1 and one line; every checkpoint the
             state file lists still loads, and a copy of the dir resumes from the newest.
--small is the CI form (a smaller model; tests/chaos_corrupt_test.py).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos_common as chaos  # noqa: E402

PROGRAM = "chaos_corrupt"
SUITES = ("shards", "checkpoints", "disk")
CHECKPOINT_DAMAGE = (
    "truncate data",
    "flip data byte",
    "truncate index",
    "flip index byte",
    "delete data",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suites", default=",".join(SUITES), help="Comma-separated: " + ", ".join(SUITES)
    )
    parser.add_argument("--rounds", type=int, default=4, help="Corrupted shards of each kind.")
    parser.add_argument(
        "--shard_damage", default="truncate,flip", help="Comma-separated: truncate, flip."
    )
    parser.add_argument(
        "--checkpoint_damage",
        default=",".join(CHECKPOINT_DAMAGE),
        help="Comma-separated: " + ", ".join(CHECKPOINT_DAMAGE),
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of shards, places and bytes.")
    parser.add_argument(
        "--data_dir", help="Prepared en-de data; default: made from the embedded corpus."
    )
    parser.add_argument("--work_dir", help="Default: a new temp dir.")
    parser.add_argument("--small", action="store_true", help="The CI form: a smaller model.")
    parser.add_argument("--report_json", help="Also write the checks and figures here.")
    args = parser.parse_args(argv)
    args.suites = [s for s in args.suites.split(",") if s]
    args.checkpoint_damage = [s for s in args.checkpoint_damage.split(",") if s]
    args.shard_damage = [s for s in args.shard_damage.split(",") if s]
    if (
        set(args.suites) - set(SUITES)
        or set(args.checkpoint_damage) - set(CHECKPOINT_DAMAGE)
        or set(args.shard_damage) - {"truncate", "flip"}
    ):
        parser.error("--suites or --checkpoint_damage names something unknown")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args


def trainer_flags(args, data_dir: str, model_dir: str, *extra: str) -> list[str]:
    flags = [
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        f"--flagfile={chaos.TINY_CFG}",
        "--batch_tokens=1024",
        "--eval_bleu_sentences=0",
        "--shuffle_buffer=200",
        "--log_every=5",
        "--noexport",
    ]
    if args.small:
        flags += chaos.SHRUNK_MODEL
    return flags + list(extra)


def damage(path: str, how: str, rng) -> str:
    """Truncates ``path`` at a random point or flips one random bit; says where."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if how.startswith("truncate"):
        cut = rng.randrange(1, len(data))
        with open(path, "wb") as f:
            f.write(data[:cut])
        return f"cut at byte {cut} of {len(data)}"
    at = rng.randrange(len(data))
    data[at] ^= 1 << rng.randrange(8)
    with open(path, "wb") as f:
        f.write(bytes(data))
    return f"bit flipped at byte {at} of {len(data)}"


# ---- shards -----------------------------------------------------------------------------


def suite_shards(report, args, data_dir, work_dir, rng):
    suite = "shards"
    from pipeline import features

    meta = features.load_metadata(data_dir)
    cases = []
    for how in args.shard_damage:
        for r in range(args.rounds):
            last = r == args.rounds - 1 and args.rounds > 1
            split = features.VALIDATION if last else features.TRAIN
            cases.append((how, split, rng.choice(meta.splits[split].files)))
    # Long enough to read every train shard to its end: ~40 pairs a step, 4 epochs.
    read_all = max(150, meta.splits[features.TRAIN].examples // 10)
    stopped = skipped = 0
    for i, (how, split, name) in enumerate(cases):
        copy = os.path.join(work_dir, f"data-{i}")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(data_dir, copy)
        shard = os.path.join(copy, name)
        records = chaos.tfrecord_count(shard)
        where = damage(shard, how, rng)
        steps = read_all if split == features.TRAIN else 5
        flags = trainer_flags(args, copy, os.path.join(work_dir, f"m-{i}"))
        code, out = chaos.run_module(
            "trainer.train",
            flags + [f"--train_steps={steps}", f"--eval_every={steps}"],
            log_path=os.path.join(work_dir, f"shard-{i}.log"),
        )
        line = chaos.one_line_error(out, "train")
        ok = code == 2 and line is not None and shard in line and "is corrupt" in line
        stopped += ok
        report.check(
            suite,
            f"{name} ({where}): exit status, one line naming the shard",
            "2, 'shard ... is corrupt'",
            f"{code}, {line!r}",
            ok,
        )
        code, out = chaos.run_module(
            "trainer.train",
            flags + ["--train_steps=5", "--eval_every=5", "--skip_corrupt_shards"],
            log_path=os.path.join(work_dir, f"shard-{i}-skip.log"),
        )
        if len(meta.splits[split].files) == 1:  # nothing left to train or evaluate on
            line = chaos.one_line_error(out, "train")
            ok = code == 2 and line is not None and f"every shard of split {split!r}" in line
            skipped += ok
            report.check(
                suite,
                f"{name} (the only {split} shard) with --skip_corrupt_shards: status, one line",
                "2, 'every shard of split ... is corrupt'",
                f"{code}, {line!r}",
                ok,
            )
            continue
        lost = re.search(rf"{split}: skipped 1 of \d+ shards; lost (\d+) of", out)
        named = f"skipping corrupt shard {shard}" in out
        ok = code == 0 and named and lost is not None and int(lost.group(1)) == records
        skipped += ok
        report.check(
            suite,
            f"{name} with --skip_corrupt_shards: status, shard named, examples lost",
            f"0, yes, {records}",
            f"{code}, {'yes' if named else 'no'}, {lost.group(1) if lost else None}",
            ok,
        )
    report.figures[suite] = {
        "corrupted_shards": len(cases),
        "runs_stopped_naming_the_shard": stopped,
        "skip_runs_right": skipped,
    }


# ---- checkpoints ---

SCHEDULE = ["--checkpoint_every=5", "--eval_every=100", "--keep_checkpoints=3"]


def trained_model_dir(args, data_dir: str, work_dir: str) -> str:
    """A model dir trained 15 steps, checkpoints at 5, 10 and 15 (made once per work dir)."""
    base = os.path.join(work_dir, "ckpt-base")
    if len(chaos.listed_checkpoints(base)) == 3:
        return base
    shutil.rmtree(base, ignore_errors=True)
    code, out = chaos.run_module(
        "trainer.train",
        trainer_flags(args, data_dir, base, "--train_steps=15", *SCHEDULE),
        log_path=os.path.join(work_dir, "ckpt-base.log"),
    )
    if code:
        raise RuntimeError(f"training the model dir to damage failed:\n{out[-2000:]}")
    return base


def suite_checkpoints(report, args, data_dir, work_dir, rng):
    suite = "checkpoints"
    base = trained_model_dir(args, data_dir, work_dir)
    fell_back = 0
    for i, how in enumerate(args.checkpoint_damage):
        model_dir = os.path.join(work_dir, f"ckpt-{i}")
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.copytree(base, model_dir)
        newest = chaos.listed_checkpoints(model_dir)[-1]
        target = newest + (".index" if "index" in how else ".data-00000-of-00001")
        if how == "delete data":
            os.remove(target)
            where = "deleted"
        else:
            where = damage(target, how, rng)
        code, out = chaos.run_module(
            "trainer.train",
            trainer_flags(args, data_dir, model_dir, "--train_steps=20", *SCHEDULE),
            log_path=os.path.join(work_dir, f"ckpt-{i}.log"),
        )
        previous = chaos.listed_checkpoints(base)[-2].replace(base, model_dir)
        warned = f"checkpoint {newest} does not load" in out
        resumed = f"resumed from {previous} at step" in out
        ok = code == 0 and warned and resumed and "done at step 20" in out
        fell_back += ok
        report.check(
            suite,
            f"{os.path.basename(target)} {how} ({where}): warning, resumed from, status",
            f"yes, {os.path.basename(previous)}, 0",
            f"{'yes' if warned else 'no'}, {os.path.basename(previous) if resumed else 'other'}, {code}",
            ok,
        )
    model_dir = os.path.join(work_dir, "ckpt-all")
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(base, model_dir)
    for path in chaos.listed_checkpoints(model_dir):
        damage(path + ".index", "truncate", rng)
    code, out = chaos.run_module(
        "trainer.train",
        trainer_flags(args, data_dir, model_dir, "--train_steps=20", *SCHEDULE),
        log_path=os.path.join(work_dir, "ckpt-all.log"),
    )
    line = chaos.one_line_error(out, "train")
    report.check(
        suite,
        "every checkpoint damaged: exit status, one line",
        "2, 'no checkpoint there loads'",
        f"{code}, {line!r}",
        code == 2 and line is not None and "no checkpoint there loads" in line,
    )
    report.figures[suite] = {"damaged": len(args.checkpoint_damage), "fell_back": fell_back}


# ---- disk -------------------------------------------------------------------------------


def suite_disk(report, args, data_dir, work_dir, rng):
    suite = "disk"
    base = trained_model_dir(args, data_dir, work_dir)
    newest = chaos.listed_checkpoints(base)[-1]
    checkpoint_bytes = sum(
        os.path.getsize(os.path.join(base, n))
        for n in os.listdir(base)
        if n.startswith(os.path.basename(newest) + ".")
    )
    fixed = sum(
        os.path.getsize(os.path.join(base, n))
        for n in ("spm.model", "config.json", "tokenizer.json")
    )
    size = fixed + checkpoint_bytes * 5 // 2 + 64 * 1024
    mount = os.path.join(work_dir, "full")
    schedule = ["--checkpoint_every=2", "--eval_every=100", "--keep_checkpoints=100"]
    with chaos.full_disk(mount, size_bytes=size) as (means, preexec):
        model_dir = os.path.join(mount, "m")
        code, out = chaos.run_module(
            "trainer.train",
            trainer_flags(args, data_dir, model_dir, "--train_steps=40", *schedule),
            log_path=os.path.join(work_dir, "disk-full.log"),
            preexec_fn=preexec,
        )
        line = chaos.one_line_error(out, "train")
        listed = chaos.listed_checkpoints(model_dir)
        loading = [p for p in listed if chaos.checkpoint_loads(p) is None]
        report.check(
            suite,
            f"disk full ({means}): exit status, one line",
            "1, 'disk full: ...'",
            f"{code}, {line!r}",
            code == 1 and line is not None and "disk full" in line,
        )
        report.check(
            suite,
            "listed checkpoints that load after the disk filled",
            len(listed),
            len(loading),
            bool(listed) and len(loading) == len(listed),
        )
        copy = os.path.join(work_dir, "full-copy")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(model_dir, copy)
    newest_step = int(listed[-1].rsplit("-", 1)[1]) if listed else None
    code, out = chaos.run_module(
        "trainer.train",
        trainer_flags(args, data_dir, copy, f"--train_steps={(newest_step or 0) + 2}", *schedule),
        log_path=os.path.join(work_dir, "disk-resume.log"),
    )
    report.check(
        suite,
        "a copy on a roomy disk resumes from the newest listed checkpoint",
        f"0, step {newest_step}",
        f"{code}, {'step ' + str(newest_step) if f'at step {newest_step}' in out else 'elsewhere'}",
        code == 0 and f"at step {newest_step}" in out,
    )
    mount = os.path.join(work_dir, "read-only")
    with chaos.unwritable_dir(mount) as means:
        if means is None:
            report.check(suite, "read-only model dir", "tested", "no means on this machine", True)
            return
        code, out = chaos.run_module(
            "trainer.train",
            trainer_flags(args, data_dir, os.path.join(mount, "m"), "--train_steps=4"),
            log_path=os.path.join(work_dir, "read-only.log"),
        )
        chaos.check_unwritable_error(
            report, suite, "model dir", means, program="train", code=code, output=out
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="chaos_corrupt-")
    os.makedirs(work_dir, exist_ok=True)
    data_dir = args.data_dir or chaos.prepare_translation_data(work_dir)
    rng = chaos.rng(args.seed)
    report = chaos.Report(f"chaos_corrupt: {', '.join(args.suites)} (seed {args.seed})")
    suites = {"shards": suite_shards, "checkpoints": suite_checkpoints, "disk": suite_disk}
    started = time.monotonic()
    for name in args.suites:
        suite_start = time.monotonic()
        suites[name](report, args, data_dir, work_dir, rng)
        report.figures.setdefault(name, {})["seconds"] = round(time.monotonic() - suite_start, 1)
    report.figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"work dir: {work_dir}")
    return report.finish(args.report_json)


if __name__ == "__main__":
    sys.exit(main())
