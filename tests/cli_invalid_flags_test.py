"""Every command's flags validated: a table of invalid invocations, each ending in one line.

Each case: the command, its arguments, the exit status and a substring of the one stderr
line expected. Many invocations run in ONE subprocess per command (a driver that calls the
command's entry point with patched ``sys.argv``, resetting absl's flags in between and
capturing file descriptors 1 and 2), so the table stays cheap; the subprocesses of the
commands run in parallel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback

import pytest

from tests import tiny_models

ROOT = tiny_models.ROOT
_ABSL_MODULES = {
    "preprocess": ("pipeline.preprocess", True),
    "train": ("trainer.train", False),
    "translate": ("trainer.translate", False),
    "classify": ("trainer.classify", False),
    "export": ("trainer.export", False),
    "batch_translate": ("pipeline.batch_translate", True),
    "batch_classify": ("pipeline.batch_classify", True),
}
_LAUNCHERS = {"gcp": "infra.gcp", "aws": "infra.aws", "local_cluster": "infra.local_cluster"}

# (program, arguments, exit status, substring of the error line), one per line. {tmp} is a
# scratch dir holding in.txt (a line without a tab), a file "file", empty dirs "empty" and
# "m", and a fake export "e"; {data} a finished preprocessing output (the ende_data fixture).
# fmt: off
CASES = [
    # pipeline.preprocess
    ("preprocess", ["--output_dir={tmp}/p1"], 2, "--dataset is required"),
    ("preprocess", ["--dataset=fr", "--output_dir={tmp}/p2"], 2, "value should be one of"),
    ("preprocess", ["--dataset=ende", "--output_dir={tmp}/p3", "--num_shards=0"], 2, "--num_shards must be positive"),
    ("preprocess", ["--dataset=ende", "--output_dir={tmp}/p4", "--max_reject_fraction=1.5"], 2, "--max_reject_fraction must be in [0, 1]"),
    ("preprocess", ["--dataset=ende", "--output_dir={tmp}/file/x"], 2, "--output_dir: cannot create {tmp}/file/x"),
    ("preprocess", ["--dataset=ende", "--output_dir={tmp}/p5", "--runner=NoSuchRunner"], 2, "--runner: Unexpected pipeline runner: NoSuchRunner"),
    ("preprocess", ["--dataset=ende", "--output_dir={tmp}/p6", "--direct_num_workers=many"], 2, "argument --direct_num_workers: invalid int value: 'many'"),
    ("preprocess", ["--dataset=ende", "--output_dir={tmp}/p7", "--input={tmp}/in.txt"], 2, "no usable training text"),
    ("preprocess", ["--dataset=ende", "--output_dir={tmp}/p10", "--direct_num_workers=2", "--direct_running_mode=multi_threading"], 2, "--direct_running_mode=multi_threading: Beam's multi-threaded DirectRunner mode lost records without an error"),
    ("preprocess", ["--dataset=imdb", "--output_dir={tmp}/p8", "--input={tmp}/in.txt"], 2, "--input: unsupported input"),
    ("preprocess", ["--dataset=ende", "--output_dir={tmp}/p9", "--input=tfds:wmt14"], 2, "--tfds_data_dir: required with --input=tfds:wmt14"),
    # trainer.train
    ("train", ["--model_dir={tmp}/m"], 2, "--data_dir is required"),
    ("train", ["--data_dir={tmp}/empty", "--model_dir={tmp}/m"], 2, "--data_dir: {tmp}/empty: no metadata.json"),
    ("train", ["--data_dir={tmp}/file", "--model_dir={tmp}/m"], 2, "--data_dir: {tmp}/file: a file, not a preprocessing output directory"),
    ("train", ["--data_dir={tmp}/nowhere", "--model_dir={tmp}/m"], 2, "--data_dir: {tmp}/nowhere: no such directory"),
    ("train", ["--data_dir={data}", "--model_dir={tmp}/m", "--preset=huge"], 2, "flag --preset=huge: value should be one of"),
    ("train", ["--data_dir={data}", "--model_dir={tmp}/m", "--num_heads=3"], 2, "--d_model must be divisible by --num_heads"),
    ("train", ["--data_dir={data}", "--model_dir={tmp}/m", "--dropout=1.5"], 2, "dropout=1.5 must be in [0, 1)"),
    ("train", ["--data_dir={data}", "--model_dir={tmp}/m", "--train_steps=ten"], 2, "flag --train_steps=ten: invalid literal for int()"),
    ("train", ["--data_dir={data}", "--model_dir={tmp}/m", "--label_smoothing=1"], 2, "--label_smoothing must be in [0, 1)"),
    ("train", ["--data_dir={data}", "--model_dir={tmp}/m", "--strategy=multi_worker"], 2, "--strategy=multi_worker needs TF_CONFIG"),
    ("train", ["--data_dir={data}", "--model_dir={tmp}/m", "--num_gpus=0"], 2, "--num_gpus must be -1 (all) or a positive integer"),
    ("train", ["--data_dir={data}", "--model_dir={tmp}/m", "--num_gpus=3"], 2, "--num_gpus=3, but this machine has 0 GPUs visible to TensorFlow"),
    ("train", ["--data_dir={data}", "--model_dir={tmp}/file/m"], 2, "--model_dir: cannot create {tmp}/file/m"),
    ("train", ["--flagfile={tmp}/no.cfg"], 2, "--flagfile: cannot open {tmp}/no.cfg (No such file or directory)"),
    ("train", ["--flagfile={tmp}/empty"], 2, "--flagfile: cannot open {tmp}/empty (Is a directory)"),
    ("train", ["--data_dir={data}", "--model_dir={tmp}/m", "stray"], 2, "unexpected argument 'stray'"),
    # trainer.translate / trainer.classify
    ("translate", ["--model_dir={tmp}/m", "--output={tmp}/o"], 2, "--input is required"),
    ("translate", ["--beam_size=0"], 2, "--beam_size must be a positive integer"),
    ("translate", ["--alpha=-1"], 2, "--alpha must not be negative"),
    ("translate", ["--group_lines=0"], 2, "--group_lines must be a positive integer"),
    ("translate", ["--progress=maybe"], 2, "Non-boolean argument to boolean flag"),
    ("translate", ["--model_dir={tmp}/empty", "--input={tmp}/in.txt", "--output={tmp}/o"], 2, "--model_dir: {tmp}/empty has no config.json"),
    ("translate", ["--model_dir={tmp}/m", "--input={tmp}/empty", "--output={tmp}/o"], 2, "matches only directories"),
    ("translate", ["--model_dir={tmp}/m", "--input={tmp}/in.txt", "--output={tmp}/in.txt"], 2, "would overwrite an input file"),
    ("classify", ["--batch_size=0"], 2, "--batch_size must be a positive integer"),
    ("classify", ["--model_dir={tmp}/m", "--input={tmp}/none*", "--output={tmp}/o"], 2, "--input: no files match"),
    ("classify", ["--virtual_devices=-1"], 2, "--virtual_devices must not be negative"),
    ("classify", ["--group_lines=-5"], 2, "--group_lines must be a positive integer"),
    # trainer.export
    ("export", ["--export_dir={tmp}/e"], 2, "--model_dir is required"),
    ("export", ["--model_dir={tmp}/empty", "--export_dir={tmp}/e2"], 2, "has no config.json; it is not a trainer model dir"),
    ("export", ["--model_dir=m", "--export_dir=e", "--checkpoint=latest", "--average_last=2"], 2, "--checkpoint and --average_last exclude each other"),
    ("export", ["--model_dir=m", "--export_dir=e", "--average_last=-1"], 2, "--average_last must not be negative"),
    ("export", ["--model_dir={tmp}/m", "--export_dir={tmp}/file"], 2, "exists and is not a directory"),
    ("export", ["--model_dir={tmp}/m", "--export_dir={tmp}/file/e"], 2, "--export_dir: cannot create {tmp}/file/e"),
    # pipeline.batch_translate / pipeline.batch_classify
    ("batch_translate", ["--input={tmp}/in.txt", "--output={tmp}/o"], 2, "--export_dir is required"),
    ("batch_translate", ["--export_dir=e", "--input=i", "--output=o", "--max_batch_size=0"], 2, "--max_batch_size must be positive"),
    ("batch_translate", ["--export_dir=e", "--input=i", "--output=o", "--direct_running_mode=multi_threading"], 2, "--direct_running_mode=multi_threading: Beam's"),
    ("batch_translate", ["--export_dir=e", "--input=i", "--output=o", "--min_batch_size=9", "--max_batch_size=3"], 2, "--min_batch_size=9 exceeds --max_batch_size=3"),
    ("batch_translate", ["--export_dir={tmp}/empty", "--input={tmp}/in.txt", "--output={tmp}/o"], 2, "is not an export of trainer.export"),
    ("batch_translate", ["--export_dir={tmp}/e", "--input={tmp}/in.txt", "--output={tmp}/o", "--runner=Nope"], 2, "--runner: Unexpected pipeline runner: Nope"),
    ("batch_classify", ["--export_dir={tmp}/e", "--input={tmp}/in.txt", "--output={tmp}/o", "--bogus=1"], 2, "unknown flag --bogus"),
    ("batch_classify", ["--export_dir={tmp}/e", "--input={tmp}/in.txt", "--output={tmp}/o", "--runner=DataflowRunner", "--project=p", "--region=r", "--temp_location=/tmp"], 2, "--temp_location must be a gs:// path"),
    # infra.gcp / infra.aws / infra.local_cluster
    ("gcp", [], 2, "the following arguments are required: command"),
    ("gcp", ["launch"], 2, "argument command: invalid choice: 'launch'"),
    ("gcp", ["train", "--project=p", "--image=i", "--data_dir=/local", "--model_dir=gs://b/m", "--dry_run"], 2, "--data_dir must be a gs:// path"),
    ("gcp", ["train", "--project=p", "--image=i", "--data_dir=gs://b/d", "--model_dir=gs://b/m", "--num_nodes=two"], 2, "argument --num_nodes: invalid int value: 'two'"),
    ("gcp", ["train", "--project=p", "--image=i", "--data_dir=gs://b/d", "--model_dir=gs://b/m", "--hours=-3", "--dry_run"], 2, "argument --hours: must be positive, got -3"),
    ("gcp", ["train", "--project=p", "--image=i", "--data_dir=gs://b/d", "--model_dir=gs://b/m", "--machine_type=n1-nothing", "--dry_run"], 2, "n1-nothing"),
    ("gcp", ["train", "--project=p", "--image=i", "--data_dir=gs://b/d", "--model_dir=gs://b/m", "--price_table={tmp}/none.json", "--dry_run"], 2, "--price_table: cannot read"),
    ("gcp", ["train", "--project=p", "--data_dir=gs://b/d", "--dry_run", "--", "--model_dir=x"], 2, "--model_dir after --: give it to the launcher"),
    ("gcp", ["train", "--project=p", "--image=i", "--data_dir=gs://b/d", "--model_dir=gs://b/m", "--boot_disk_gb=-1", "--dry_run"], 2, "--boot_disk_gb must be at least 50"),
    ("gcp", ["train", "--project=p", "--image=i", "--data_dir=gs://b/d", "--model_dir=gs://b/m", "--accelerator_count=0", "--dry_run"], 2, "--accelerator_count must be at least 1, got 0"),
    ("gcp", ["status", "--kind=pod"], 2, "argument --kind: invalid choice: 'pod'"),
    ("gcp", ["vm", "--project=p", "--image=i", "--zone=z", "--cluster=Bad_Name", "--data_dir=gs://b/d", "--model_dir=gs://b/m", "--dry_run"], 2, "--cluster: 'Bad_Name' is not a valid name"),
    ("gcp", ["stage", "--bucket=b", "--data_dir={tmp}/empty", "--dry_run"], 2, "has no metadata.json"),
    ("aws", ["train", "--cluster=c1", "--num_nodes=0", "--dry_run"], 2, "--num_nodes must be at least 1"),
    ("aws", ["train", "--cluster=c1", "--ami=ami-1", "--dry_run"], 2, "is not an AMI id"),
    ("aws", ["train", "--cluster=c1", "--instance_type=p9.huge", "--dry_run"], 2, "--instance_type: unknown EC2 GPU instance type 'p9.huge'"),
    ("aws", ["status", "--dry_run", "--", "--train_steps=5"], 2, "status takes no trainer flags after --"),
    ("aws", ["terminate"], 2, "--cluster is required"),
    ("local_cluster", ["0", "--", "--data_dir=x"], 2, "N must be at least 1"),
    ("local_cluster", ["2"], 2, "give the trainer flags after --"),
    ("local_cluster", ["two", "--", "--data_dir=x"], 2, "argument num_workers: invalid int value: 'two'"),
    ("local_cluster", ["2", "--grace_seconds=-5", "--dry_run", "--", "--data_dir=x"], 2, "--grace_seconds must not be negative"),
    ("local_cluster", ["2", "--max_relaunches=-1", "--dry_run", "--", "--data_dir=x"], 2, "--max_relaunches must not be negative"),
    ("local_cluster", ["2", "--module=no.such.module", "--dry_run", "--", "--data_dir=x"], 2, "--module: no module named no.such.module"),
]
# fmt: on


def drive(program: str, cases_path: str, results_path: str) -> None:
    """Runs each invocation in ``cases_path`` through ``program``'s entry point, in this process.

    Writes [{"status": int, "stdout": str, "stderr": str}] to ``results_path``. Flags are reset
    to their defaults before each invocation, and an uncaught exception is printed as the
    interpreter would print it (with exit status 1), so what is recorded is what a user sees.
    """
    import importlib

    with open(cases_path) as f:
        invocations = json.load(f)
    if program in _LAUNCHERS:
        module = importlib.import_module(_LAUNCHERS[program])
        known_only = False
    else:
        from absl import flags

        name, known_only = _ABSL_MODULES[program]
        module = importlib.import_module(name)
        if hasattr(module, "define_flags"):
            module.define_flags()
    from pipeline import cli

    results = []
    for argv in invocations:
        captured = {}
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        files = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
        for fd in (1, 2):
            os.dup2(files[fd].fileno(), fd)
        status = 0
        try:
            sys.argv = [program, *argv]
            if program in _LAUNCHERS:
                status = module.run(argv)
            else:
                flags.FLAGS.unparse_flags()
                cli.run_main(module.PROGRAM, module.main, known_only=known_only)
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # what the interpreter would print, and its exit status
            traceback.print_exc()
            status = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd in (1, 2):
                os.dup2(saved[fd], fd)
                os.close(saved[fd])
                files[fd].seek(0)
                captured[fd] = files[fd].read().decode("utf-8", errors="replace")
                files[fd].close()
        results.append({"status": status, "stdout": captured[1], "stderr": captured[2]})
    with open(results_path, "w") as f:
        json.dump(results, f)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "in.txt").write_text("one line without a tab\n")
    (tmp / "file").write_text("a file, not a directory\n")
    (tmp / "empty").mkdir()
    (tmp / "m").mkdir()
    export = tmp / "e"
    (export / "assets.extra").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"")
    (export / "assets.extra" / "metadata.json").write_text(
        json.dumps(
            {
                "task": "classification",
                "signature": "classify",
                "input_key": "text",
                "output_key": "probabilities",
                "tokenizer_sha256": "0" * 64,
                "model_dir": str(tmp / "m"),
            }
        )
    )
    return tmp


def test_every_invalid_invocation_is_one_line_with_its_status(scratch, ende_data):
    assert len(CASES) >= 30
    values = {"tmp": str(scratch), "data": ende_data}
    by_program: dict[str, list[int]] = {}
    for index, (program, *_rest) in enumerate(CASES):
        by_program.setdefault(program, []).append(index)
    processes = {}
    for program, indices in by_program.items():
        cases_path = scratch / f"{program}.cases.json"
        cases_path.write_text(
            json.dumps([[a.format(**values) for a in CASES[i][1]] for i in indices])
        )
        results_path = scratch / f"{program}.results.json"
        processes[program] = (
            results_path,
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; from tests.cli_invalid_flags_test import "
                    "drive; drive(*sys.argv[1:])",
                    program,
                    str(cases_path),
                    str(results_path),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=tiny_models.subprocess_env(),
                cwd=ROOT,
            ),
        )
    failures = []
    for program, (results_path, process) in processes.items():
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"the {program} driver failed:\n{output[-3000:]}"
        results = json.loads(results_path.read_text())
        for index, result in zip(by_program[program], results):
            _, args, status, expected = CASES[index]
            expected = expected.format(**values)
            lines = tiny_models.own_stderr_lines(result["stderr"])
            ok = (
                result["status"] == status
                and "Traceback" not in result["stderr"]
                and len(lines) == 1
                and lines[0].startswith(f"{program}: error: ")
                and expected in lines[0]
            )
            if not ok:
                failures.append(f"{program} {args}: status {result['status']}, stderr {lines}")
    assert not failures, "\n".join(failures)
