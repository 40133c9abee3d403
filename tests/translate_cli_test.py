"""The batch inference commands as users run them: trainer.translate and trainer.classify.

Subprocesses on models the trainer CLI made (see infer_test.train_models): many
files, two logical CPU devices against one, resume, --overwrite, the JSON lines of
classify, standard input and output (`-`), and the one-line usage errors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.fake_metadata import FakeMetadataServer
from tests.infer_test import LONG_LINE, MAX_LENGTH, REVIEWS, SENTENCES, train_models
from tests.tiny_models import own_stderr_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_dirs(ende_data, imdb_data, tmp_path_factory) -> tuple[str, str]:
    return train_models(ende_data, imdb_data, tmp_path_factory.mktemp("models"))


def command(program: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", f"trainer.{program}", *flags]


ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def run(program: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(program, *flags), capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT
    )


def start(program: str, *flags: str, **options) -> subprocess.Popen:
    """The command running, its three standard streams pipes (bytes)."""
    pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    options.setdefault("env", ENV)
    return subprocess.Popen(command(program, *flags), cwd=ROOT, **pipes, **options)


def assert_ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def read(path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def test_translate_many_files_on_two_devices_then_resume_and_overwrite(model_dirs, tmp_path):
    inputs = {
        "a.en": SENTENCES[:3] + [""],
        "b.en": ["Über den Fluß – café 🐍", LONG_LINE, "", SENTENCES[3]],
        "c.en": SENTENCES[4:],
    }
    for name, lines in inputs.items():
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    common = [
        f"--model_dir={model_dirs[0]}",
        f"--input={tmp_path}/in/*.en",
        f"--output={out}",
        "--beam_size=1",  # greedy: a line's output never depends on its batch
        "--batch_tokens=120",
    ]
    first = run("translate", *common, "--virtual_devices=2")
    assert_ok(first)
    assert "/device:CPU:0, /device:CPU:1" in first.stderr
    assert f"using checkpoint {model_dirs[0]}/best/ckpt-2 (best)" in first.stderr
    stdout = first.stdout.strip().splitlines()
    assert stdout[0] == f"1 line truncated to {MAX_LENGTH - 1} tokens"
    assert stdout[-1].startswith("translated 3 files, 11 lines, 9 sentences, ")
    assert "sentences/s" in stdout[-1] and "target tokens/s" in stdout[-1]
    on_two_devices = {name: read(out / name) for name in inputs}
    for name, lines in inputs.items():
        assert len(on_two_devices[name]) == len(lines)
        assert [o == "" for o in on_two_devices[name]] == [line == "" for line in lines]
    # Outputs differ from line to line (each runs to its own source's length limit), so
    # the comparisons below would catch a line that moved.
    assert len({o for outputs in on_two_devices.values() for o in outputs if o}) >= 6

    (out / "b.en").unlink()
    resumed = run("translate", *common)
    assert_ok(resumed)
    assert f"skipping {tmp_path}/in/a.en: output complete" in resumed.stderr
    assert f"skipping {tmp_path}/in/c.en: output complete" in resumed.stderr
    assert f"wrote {out}/b.en (4 lines)" in resumed.stderr
    assert "translated 1 file (2 skipped: output complete), 4 lines, 3 sentences" in (
        resumed.stdout
    )
    assert read(out / "b.en") == on_two_devices["b.en"]

    again = run("translate", *common, "--overwrite")
    assert_ok(again)
    assert "skipping" not in again.stderr
    assert again.stdout.strip().splitlines()[-1].startswith("translated 3 files, 11 lines")
    assert {name: read(out / name) for name in inputs} == on_two_devices

    chunked = run("translate", *common, "--overwrite", "--group_lines=2")
    assert_ok(chunked)
    assert f"wrote {out}/b.en (4 lines, 2 chunks)" in chunked.stderr
    assert {name: read(out / name) for name in inputs} == on_two_devices


@pytest.mark.parametrize(
    "stop, status, why",
    [
        ("SIGTERM", 42, "stopped (SIGTERM)"),
        ("SIGINT", 130, "interrupted"),
        ("spot notice", 42, "stopped (ec2 notice)"),
    ],
    ids=["SIGTERM", "Ctrl-C", "EC2 spot notice"],
)
def test_a_stopped_translation_saves_its_lines_and_the_same_command_finishes_it(
    stop, status, why, model_dirs, tmp_path
):
    source = tmp_path / "long.en"
    source.write_text("".join(f"{SENTENCES[i % 7]} {i}\n" for i in range(150)), encoding="utf-8")
    flags = [
        f"--model_dir={model_dirs[0]}",
        f"--input={source}",
        "--beam_size=1",
        "--batch_tokens=1",  # a batch per sentence: many points to stop at
        "--group_lines=30",
    ]
    out = tmp_path / "out.de"
    with FakeMetadataServer() as server:
        process = start(
            "translate",
            *flags,
            f"--output={out}",
            # As at a terminal (a background job of a non-interactive shell ignores SIGINT).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            env=dict(ENV, TP_CLOUD="ec2", EC2_METADATA_URL=server.url),
        )
        try:
            first_chunk = tmp_path / ".parts-out.de" / "part-00000"
            deadline = time.monotonic() + 120
            while not first_chunk.exists() and process.poll() is None:
                assert time.monotonic() < deadline, "no chunk saved in 120 s"
                time.sleep(0.05)
            if stop == "spot notice":
                server.interrupt_spot()
            else:
                process.send_signal(getattr(signal, stop))
            stdout, stderr = process.communicate(timeout=120)
        finally:
            process.kill()
    stderr = own_stderr_lines(stderr.decode())
    assert process.returncode == status, stderr[-5:]
    assert stderr[-1].startswith(f"{why}: the outputs written are whole and ")
    assert stderr[-1].endswith(f"exiting with {status} (run the same command to resume)")
    summary = stdout.decode().removeprefix("translated 1 file (0 written before the stop), ")
    done = int(summary.split(" lines")[0])
    assert 30 <= done < 150  # the lines done before the stop, no more
    assert not out.exists()

    resumed = run("translate", *flags, f"--output={out}")
    assert_ok(resumed)
    assert "lines reused from saved chunks)" in resumed.stdout
    assert sorted(os.listdir(tmp_path)) == ["long.en", "out.de"]  # the saved chunks gone
    if stop == "SIGTERM":  # the same bytes as a run never stopped
        whole = run("translate", *flags, f"--output={tmp_path / 'whole.de'}")
        assert_ok(whole)
        assert out.read_bytes() == (tmp_path / "whole.de").read_bytes()


def test_classify_writes_json_lines(model_dirs, tmp_path):
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join([REVIEWS[0], "", *REVIEWS[1:]]) + "\n", encoding="utf-8")
    result = run(
        "classify",
        f"--model_dir={model_dirs[1]}",
        f"--input={reviews}",
        f"--output={tmp_path}/labels.jsonl",
        "--batch_size=2",
    )
    assert_ok(result)
    assert result.stdout.strip().startswith("classified 1 file, 6 lines, 5 sentences, ")
    lines = read(tmp_path / "labels.jsonl")
    assert len(lines) == 6 and lines[1] == "{}"  # one JSON object per line, even when empty
    for line in lines[:1] + lines[2:]:
        record = json.loads(line)
        assert record["label"] in ("negative", "positive")
        assert sum(record["probabilities"]) == pytest.approx(1.0, abs=1e-6)
        assert record["probability"] == max(record["probabilities"])


def test_translate_answers_each_line_of_standard_input_as_it_comes(model_dirs, tmp_path):
    """`--input=- --output=-`: each line is answered before the next one is written, and
    the outputs are the file mode's; standard output holds nothing else."""
    lines = [SENTENCES[0], "", SENTENCES[1], SENTENCES[2]]
    (tmp_path / "in.en").write_text("\n".join(lines) + "\n", encoding="utf-8")
    flags = [f"--model_dir={model_dirs[0]}", "--beam_size=2"]
    assert_ok(run("translate", *flags, f"--input={tmp_path}/in.en", f"--output={tmp_path}/o"))
    expected = read(tmp_path / "o")

    process = start("translate", *flags, "--input=-", "--output=-")
    try:
        answers = []
        for line in lines[:2]:
            process.stdin.write(f"{line}\n".encode())
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], 120)
            assert ready, "no answer to a line while standard input stays open"
            answers.append(process.stdout.readline().decode())
        process.stdin.write("\n".join(lines[2:]).encode())  # the last line has no "\n"
        process.stdin.close()
        rest = process.stdout.read().decode()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=120) == 0, stderr[-3000:]
    finally:
        process.kill()
    assert "".join(answers) + rest == "".join(f"{line}\n" for line in expected)
    assert stderr.strip().splitlines()[-1].startswith("translated 4 lines, 3 sentences, ")


def test_classify_prints_one_file_to_standard_output_and_stops_when_it_closes(model_dirs, tmp_path):
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join([REVIEWS[0], "", *REVIEWS[1:]]) + "\n", encoding="utf-8")
    flags = [f"--model_dir={model_dirs[1]}", "--batch_size=2"]
    assert_ok(run("classify", *flags, f"--input={reviews}", f"--output={tmp_path}/o"))
    printed = run("classify", *flags, f"--input={reviews}", "--output=-")
    assert_ok(printed)
    assert printed.stdout.splitlines() == read(tmp_path / "o")
    assert printed.stderr.strip().splitlines()[-1].startswith("classified 6 lines, 5 sentences")

    # A reader that goes away (`| head -1`) ends the command quietly, as it ends `cat`.
    many = tmp_path / "many.txt"
    many.write_text((REVIEWS[0] + "\n") * 400, encoding="utf-8")
    process = start("classify", *flags, f"--input={many}", "--output=-", "--group_lines=10")
    try:
        assert json.loads(process.stdout.readline())["label"] in ("negative", "positive")
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=120) == 1
    finally:
        process.kill()
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr[-3000:]


@pytest.mark.parametrize(
    "signum, status, last_line",
    [
        (signal.SIGINT, 130, "classify: interrupted"),
        (
            signal.SIGTERM,
            143,
            "terminated (SIGTERM): every line answered was written whole; exiting with 143",
        ),
    ],
    ids=["Ctrl-C", "SIGTERM"],
)
def test_ctrl_c_or_sigterm_ends_a_stream_with_one_line(signum, status, last_line, model_dirs):
    process = start(
        "classify",
        f"--model_dir={model_dirs[1]}",
        "--input=-",
        "--output=-",
        # As at a terminal: a background job of a non-interactive shell (CI) inherits SIGINT
        # ignored, and Python then installs no KeyboardInterrupt handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        process.stdin.write(f"{REVIEWS[0]}\n".encode())
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "no answer to a line while standard input stays open"
        assert json.loads(process.stdout.readline())["label"] in ("negative", "positive")
        process.send_signal(signum)  # SIGINT: what Ctrl-C sends
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == status
    assert "Traceback" not in stderr.decode()
    assert stderr.decode().strip().splitlines()[-1] == last_line


@pytest.mark.parametrize(
    "closed, message",
    [
        (0, "--input: cannot read standard input ([Errno 9] Bad file descriptor)"),
        (1, "--output=-: cannot write standard output ([Errno 9] Bad file descriptor)"),
    ],
)
def test_a_closed_standard_stream_is_one_line(closed, message, model_dirs):
    result = subprocess.run(
        command("translate", f"--model_dir={model_dirs[0]}", "--input=-", "--output=-"),
        input=b"A dog runs.\n" if closed == 1 else None,
        stdout=None if closed == 1 else subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=ROOT,
        timeout=300,
        preexec_fn=lambda: os.close(closed),  # `<&-` / `>&-`
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == f"translate: error: {message}"


@pytest.mark.parametrize(
    "program, flags, message",
    [
        ("translate", ["--model_dir=m", "--output=o"], "--input is required"),
        (
            "translate",
            ["--beam_size=0"],
            "flag --beam_size=0: --beam_size must be a positive integer",
        ),
        (
            "classify",
            ["--batch_size=0"],
            "flag --batch_size=0: --batch_size must be a positive integer",
        ),
        (
            "classify",
            ["--model_dir=MODEL_DIR", "--input=INPUT", "--output=o"],
            "--model_dir: MODEL_DIR holds a translation model, not a classification model; "
            "use trainer.translate",
        ),
        (
            "translate",
            ["--model_dir=MODEL_DIR", "--input=-", "--output=o"],
            "--input=- (standard input) writes to standard output only: give --output=-",
        ),
        (
            "translate",
            ["--model_dir=MODEL_DIR", "--input=INPUT*", "--output=-"],
            "--output=-: --input matches 2 files and standard output takes one; "
            "give --output a directory",
        ),
        (
            "translate",
            ["--model_dir=MODEL_DIR", "--input=-", "--output=-", "--overwrite"],
            "--overwrite: nothing to overwrite with --output=- (standard output is never "
            "skipped as complete)",
        ),
        (
            "classify",
            ["--model_dir=MODEL_DIR", "--input=INPUT", "--output=-", "--progress"],
            "--progress: the progress bar is for files (their lines are counted first); with "
            "--output=- the summary at the end is on stderr",
        ),
    ],
)
def test_usage_errors_are_one_line(program, flags, message, model_dirs, tmp_path):
    (tmp_path / "input.txt").write_text("A dog runs.\n")
    (tmp_path / "input.txt.2").write_text("A cat runs.\n")
    replace = {"MODEL_DIR": model_dirs[0], "INPUT": f"{tmp_path}/input.txt"}
    for old, new in replace.items():
        flags = [f.replace(old, new) for f in flags]
        message = message.replace(old, new)
    result = run(program, *flags)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"{program}: error: {message}"
    assert not os.path.exists(os.path.join(ROOT, "o"))


def test_bench_translate_reports_four_decoders_and_keeps_other_sections(
    model_dirs, tmp_path, capsys
):
    path = os.path.join(ROOT, "scripts", "bench_translate.py")
    spec = importlib.util.spec_from_file_location("bench_translate", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (tmp_path / "test.en").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    (tmp_path / "test.de").write_text("\n".join(["Ein Satz."] * 7) + "\n", encoding="utf-8")
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\n## Training throughput\n\nkept\n")
    argv = [
        f"--model_dir={model_dirs[0]}",
        f"--source={tmp_path}/test.en",
        f"--reference={tmp_path}/test.de",
        "--limit=2",
        "--beam_size=2",
        "--max_decode_length=6",  # a short run: the textbook loop is slow by design
        f"--append_to={markdown}",
    ]
    assert bench.main(argv) == 0
    report = capsys.readouterr().out
    assert report.startswith("## Translation decoding speed\n")
    for row in (
        "| (a) | textbook loop",
        "| (b) | project decoder, cache off",
        "| (c) |",
        "| (d) |",
    ):
        assert row in report
    assert "| 2 of 7 |" in report and "extrapolated" in report
    assert "(a) = (c) on 2/2 sentences, (b) = (c) on 7/7." in report
    assert "BLEU signature: `nrefs:1|case:mixed|" in report
    assert "cached greedy (c) vs textbook (a): **" in report
    document = markdown.read_text()
    assert document == "# Benchmarks\n\n## Training throughput\n\nkept\n\n" + report
    bench.bench_report.write_section(str(markdown), bench.SECTION, report)  # a rerun replaces it
    assert markdown.read_text().count("## Translation decoding speed") == 1
    assert "## Training throughput\n\nkept\n" in markdown.read_text()

    missing = bench.main([f"--model_dir={model_dirs[0]}", f"--source={tmp_path}/none.en"])
    assert missing == 2
    assert f"{tmp_path}/none.en not found" in capsys.readouterr().err
