"""The trainer end to end, as users run it: the CLI in subprocesses, on real prepared data.

Every strategy (one_device, mirrored over 2 virtual CPUs, a 2-process multi-worker
cluster on localhost) and every precision trains a few steps with falling loss;
resume continues at the saved step; SIGTERM leaves a checkpoint and exit code 42.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from infra.local_cluster import free_ports
from tests.tiny_models import MICRO_ARCHITECTURE
from trainer import reporting
from trainer.distribution import make_tf_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A very small model: these tests check mechanics, not quality.
TINY = [
    "--flagfile=" + os.path.join(ROOT, "configs", "tiny.cfg"),
    *MICRO_ARCHITECTURE,
    "--batch_tokens=1024",
    "--warmup_steps=30",
    "--learning_rate=3.0",
    "--log_every=5",
    "--eval_bleu_sentences=8",
    "--shuffle_buffer=200",
    "--noexport",  # one test below exports; the rest check training only
]
STEP_LINE = re.compile(r"^step (\d+)/\d+\s+loss ([\d.]+)", re.M)


def env(**extra):
    e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    e.pop("TF_CONFIG", None)
    e.update(extra)
    return e


def train(*flags, timeout=300, **env_extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer.train", *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(**env_extra),
        cwd=ROOT,
    )


def start(*flags, **env_extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainer.train", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(**env_extra),
        cwd=ROOT,
        # CI's background jobs start with SIGINT ignored, and a trainer keeps it so.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def read_metrics(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def losses(output: str) -> list[tuple[int, float]]:
    return [(int(s), float(v)) for s, v in STEP_LINE.findall(output)]


def assert_ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def wait_for_step(process, at_least: int, deadline_s: float = 240) -> str:
    """Reads the process's output until a status line reports step >= at_least."""
    seen = ""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        line = process.stdout.readline()
        if not line:
            break
        seen += line
        match = STEP_LINE.match(line)
        if match and int(match.group(1)) >= at_least:
            return seen
    raise AssertionError(f"no step {at_least} in time:\n{seen[-3000:]}")


def test_one_device_trains_and_writes_every_output(ende_data, tmp_path):
    model_dir = str(tmp_path / "m")
    result = train(
        f"--data_dir={ende_data}",
        f"--model_dir={model_dir}",
        *TINY,
        "--train_steps=40",
        "--eval_every=20",
        "--checkpoint_every=20",
        "--strategy=one_device",
        "--export",
    )
    assert_ok(result)
    assert "batches: pools packed to --batch_tokens" in result.stdout
    assert f"exported {model_dir}/export" in result.stdout
    assert os.path.exists(os.path.join(model_dir, "export", "saved_model.pb"))
    curve = losses(result.stdout)
    assert [s for s, _ in curve] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert curve[-1][1] < curve[0][1] * 0.9
    files = set(os.listdir(model_dir))
    assert {
        "export",
        "config.json",
        "spm.model",
        "tokenizer.json",
        "metrics.jsonl",
        "loss_curve.png",
        "tensorboard",
        "best",
    } <= files
    assert {"ckpt-20.index", "ckpt-40.index", "checkpoint"} <= files
    metrics = read_metrics(os.path.join(model_dir, "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [20, 40]
    assert all(
        0 <= m["bleu"] <= 100 and m["bleu_signature"].startswith("nrefs:1|case:mixed")
        for m in metrics
    )
    assert metrics[1]["val_loss"] < metrics[0]["val_loss"]
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    assert config["model"]["d_model"] == 32 and config["model"]["vocab_size"] > 300


def test_early_stopping_exports_the_average_of_the_checkpoints_it_kept(ende_data, tmp_path):
    """A learning rate of ~0 leaves BLEU flat: patience 1 stops at the second evaluation,
    before the 6 checkpoints asked to be averaged exist."""
    model_dir = str(tmp_path / "m")
    result = train(
        f"--data_dir={ende_data}",
        f"--model_dir={model_dir}",
        *TINY,
        "--learning_rate=1e-9",
        "--train_steps=30",
        "--eval_every=5",
        "--checkpoint_every=5",
        "--keep_checkpoints=6",
        "--early_stopping_patience=1",
        "--average_checkpoints=6",
        "--export",
    )
    assert_ok(result)
    assert "early stopping: bleu has not improved in 1 evaluations" in result.stdout
    assert "note: averaging the 2 checkpoints kept, not 6" in result.stdout
    assert "done at step 10" in result.stdout
    with open(os.path.join(model_dir, "export", "assets.extra", "metadata.json")) as f:
        averaged = json.load(f)["averaged_checkpoints"]
    assert [os.path.basename(p) for p in averaged] == ["ckpt-5", "ckpt-10"]


def test_mirrored_bf16_on_two_virtual_devices_then_resume(ende_data, tmp_path):
    model_dir = str(tmp_path / "m")
    common = [
        f"--data_dir={ende_data}",
        f"--model_dir={model_dir}",
        *TINY,
        "--strategy=mirrored",
        "--virtual_devices=2",
        "--precision=mixed_bfloat16",
        "--checkpoint_every=10",
        "--eval_every=100",
    ]
    first = train(*common, "--train_steps=20")
    assert_ok(first)
    curve = losses(first.stdout)
    assert curve[-1][1] < curve[0][1]
    second = train(*common, "--train_steps=30")
    assert_ok(second)
    assert "at step 20" in second.stdout
    resumed = losses(second.stdout)
    assert [s for s, _ in resumed] == [25, 30]
    # The loss continues from where it was instead of starting over from the untrained value.
    assert resumed[0][1] < curve[0][1]
    assert "done at step 30" in second.stdout


def test_a_resumed_run_logs_the_uninterrupted_runs_losses_with_dropout_on(ende_data, tmp_path):
    """Weights, optimizer, data position and dropout's random state all come back."""
    common = [
        f"--data_dir={ende_data}",
        *TINY,
        "--dropout=0.3",
        "--relu_dropout=0.3",
        "--attention_dropout=0.3",
        "--checkpoint_every=10",
        "--eval_every=100",
        "--eval_bleu_sentences=0",
    ]
    runs = ("straight", "stopped")
    straight = train(*common, f"--model_dir={tmp_path / 'straight'}", "--train_steps=20")
    assert_ok(straight)
    first = train(*common, f"--model_dir={tmp_path / 'stopped'}", "--train_steps=10")
    assert_ok(first)
    resumed = train(*common, f"--model_dir={tmp_path / 'stopped'}", "--train_steps=20")
    assert_ok(resumed)
    assert "at step 10" in resumed.stdout
    uninterrupted = dict(losses(straight.stdout))
    assert [uninterrupted[s] for s in (15, 20)] == [v for _, v in losses(resumed.stdout)]
    assert dict(losses(first.stdout)) == {s: uninterrupted[s] for s in (5, 10)}
    logged = {
        run: reporting.tensorboard_steps(tmp_path / run / "tensorboard" / "train") for run in runs
    }
    assert logged["stopped"] == logged["straight"] and logged["straight"]["loss"] == [5, 10, 15, 20]


def test_xla_compiled_step_trains(ende_data, tmp_path):
    # Short sequences and few steps: XLA compiles once per bucket shape.
    result = train(
        f"--data_dir={ende_data}",
        f"--model_dir={tmp_path}",
        *TINY,
        "--xla",
        "--max_length=24",
        "--train_steps=4",
        "--log_every=2",
        "--eval_every=100",
        "--eval_bleu_sentences=0",
        timeout=600,
    )
    assert_ok(result)
    assert "batches: length buckets padded to their bounds (--xla)" in result.stdout
    curve = losses(result.stdout)
    assert [s for s, _ in curve] == [2, 4] and curve[-1][1] < curve[0][1]


@pytest.mark.parametrize("precision", ["mixed_float16", "float32"])
def test_precisions_with_gradient_accumulation(precision, ende_data, tmp_path):
    result = train(
        f"--data_dir={ende_data}",
        f"--model_dir={tmp_path}",
        *TINY,
        f"--precision={precision}",
        "--grad_accum_steps=2",
        "--train_steps=15",
        "--eval_every=100",
        "--clip_norm=1.0",
    )
    assert_ok(result)
    curve = losses(result.stdout)
    assert curve[-1][1] < curve[0][1]


def test_classification_trains(imdb_data, tmp_path):
    result = train(
        f"--data_dir={imdb_data}",
        f"--model_dir={tmp_path}",
        "--flagfile=" + os.path.join(ROOT, "configs", "imdb.cfg"),
        *MICRO_ARCHITECTURE,
        "--batch_size=16",
        "--learning_rate=1.0",  # a shrunk model learns fast: not the full-size recipe's scale
        "--warmup_steps=20",
        "--train_steps=30",
        "--eval_every=15",
        "--log_every=5",
        "--max_length=128",
    )
    assert_ok(result)
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [15, 30]
    assert all(0.0 <= m["val_accuracy"] <= 1.0 for m in metrics)
    assert losses(result.stdout)[-1][1] < losses(result.stdout)[0][1]


def _cluster(n, model_dir, data_dir, *extra, chief=False):
    addresses = [f"localhost:{p}" for p in free_ports(n)]
    flags = [
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        *TINY,
        "--strategy=multi_worker",
        *extra,
    ]
    return [
        start(*flags, TF_CONFIG=json.dumps(make_tf_config(addresses, i, chief=chief)))
        for i in range(n)
    ]


def _finish(processes, timeout=300):
    outputs = []
    for p in processes:
        out, _ = p.communicate(timeout=timeout)
        outputs.append((p.returncode, out))
    return outputs


def test_multi_worker_two_processes_finish_at_the_same_step(ende_data, tmp_path):
    model_dir = str(tmp_path / "m")
    outputs = _finish(
        _cluster(
            2,
            model_dir,
            ende_data,
            "--train_steps=12",
            "--eval_every=12",
            "--checkpoint_every=6",
            chief=True,
        )
    )
    for code, out in outputs:
        assert code == 0, out[-3000:]
        assert "done at step 12" in out
    assert os.path.exists(os.path.join(model_dir, "ckpt-12.index"))
    assert not os.path.exists(os.path.join(model_dir, ".workers", "worker-0"))  # scratch removed


@pytest.mark.parametrize(
    "signum, status, said",
    [
        (signal.SIGTERM, 42, "preempted: checkpoint saved; exiting with 42"),
        (signal.SIGINT, 130, "interrupted: checkpoint saved; exiting with 130"),
    ],
    ids=["SIGTERM", "Ctrl-C"],
)
def test_sigterm_or_ctrl_c_checkpoints_and_relaunch_resumes(
    ende_data, tmp_path, signum, status, said
):
    model_dir = str(tmp_path / "m")
    flags = [
        f"--data_dir={ende_data}",
        f"--model_dir={model_dir}",
        *TINY,
        "--train_steps=400",
        "--checkpoint_every=1000",
        "--eval_every=1000",
    ]
    process = start(*flags)
    wait_for_step(process, 10)
    process.send_signal(signum)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == status, out[-3000:]
    assert said in out and "Traceback" not in out, out[-3000:]
    assert "deprecated" not in out  # TF's own total_run_calls warning is filtered out
    index = [f for f in os.listdir(model_dir) if f.startswith("ckpt-") and f.endswith(".index")]
    assert len(index) == 1
    saved_step = int(index[0][len("ckpt-") : -len(".index")])
    assert saved_step >= 10
    again = train(
        *flags[:-3],
        f"--train_steps={saved_step + 5}",
        "--checkpoint_every=1000",
        "--eval_every=1000",
    )
    assert_ok(again)
    assert f"at step {saved_step}" in again.stdout


def test_a_stop_during_evaluation_saves_that_step_and_the_relaunch_evaluates_it(
    ende_data, tmp_path
):
    """SIGTERM while step 10 is evaluated (its first evaluation traces the decoder: seconds):
    the evaluation is left, step 10 is saved unevaluated, and the relaunch evaluates it first.
    Without that, the checkpoint would come after the whole evaluation, at step 11."""
    model_dir = str(tmp_path / "m")
    flags = [
        f"--data_dir={ende_data}",
        f"--model_dir={model_dir}",
        *TINY,
        "--eval_every=10",
        "--checkpoint_every=1000",
        "--eval_beam_size=4",
    ]
    process = start(*flags, "--train_steps=400")
    wait_for_step(process, 10)  # the status line of step 10 comes just before its evaluation
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 42, out[-3000:]
    assert "eval step" not in out, out[-3000:]
    index = [f for f in os.listdir(model_dir) if f.startswith("ckpt-") and f.endswith(".index")]
    assert index == ["ckpt-10.index"], index
    again = train(*flags, "--train_steps=12")
    assert_ok(again)
    assert "at step 10" in again.stdout
    assert [e["step"] for e in read_metrics(os.path.join(model_dir, "metrics.jsonl"))] == [10, 12]


def test_sigterm_to_one_worker_stops_the_cluster_with_a_checkpoint(ende_data, tmp_path):
    model_dir = str(tmp_path / "m")
    extra = ("--train_steps=400", "--checkpoint_every=1000", "--eval_every=1000")
    processes = _cluster(2, model_dir, ende_data, *extra)
    wait_for_step(processes[0], 5)
    processes[1].send_signal(signal.SIGTERM)
    outputs = _finish(processes, timeout=180)
    assert [code for code, _ in outputs] == [42, 42], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    index = [f for f in os.listdir(model_dir) if f.startswith("ckpt-") and f.endswith(".index")]
    assert len(index) == 1
    saved_step = int(index[0][len("ckpt-") : -len(".index")])
    relaunched = _finish(
        _cluster(
            2,
            model_dir,
            ende_data,
            f"--train_steps={saved_step + 4}",
            "--checkpoint_every=1000",
            "--eval_every=1000",
        )
    )
    for code, out in relaunched:
        assert code == 0, out[-3000:]
        assert f"at step {saved_step}" in out and f"done at step {saved_step + 4}" in out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--preset=huge"], "flag --preset=huge: value should be one of"),
        (["--batch_tokens=0"], "--batch_tokens must be a positive integer"),
        (["--d_model=100", "--num_heads=8"], "--d_model must be divisible by --num_heads"),
        (["--train_steps=-5"], "--train_steps must be a positive integer"),
        (["--label_smoothing=1.5"], "--label_smoothing must be in [0, 1)"),
        (
            ["--train_steps=1000", "--checkpoint_every=250", "--average_checkpoints=5"],
            "leaves 4 checkpoint(s) to average",
        ),
        (["--precision=fp8"], "flag --precision=fp8: value should be one of"),
        (["--model_dir=/tmp/x"], "--data_dir is required"),
    ],
)
def test_bad_flags_give_one_line(flags, message):
    result = train(*flags, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_missing_metadata_is_refused(tmp_path):
    result = train(f"--data_dir={tmp_path}", f"--model_dir={tmp_path / 'm'}", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("train: error: ")
    assert "no metadata.json" in result.stderr


def test_a_train_split_with_no_example_that_fits_is_refused_not_looped(ende_data, tmp_path):
    result = train(
        f"--data_dir={ende_data}",
        f"--model_dir={tmp_path / 'm'}",
        *TINY,
        "--max_length=2",
        timeout=180,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("train: error: --data_dir: ") and "no example fits --max_length=2" in last
    )


def test_resume_with_another_tokenizer_or_architecture_is_refused(
    ende_data, ende_data_other_tokenizer, tmp_path
):
    model_dir = str(tmp_path / "m")
    assert_ok(
        train(
            f"--data_dir={ende_data}",
            f"--model_dir={model_dir}",
            *TINY,
            "--train_steps=2",
            "--eval_every=100",
        )
    )
    other = train(
        f"--data_dir={ende_data_other_tokenizer}",
        f"--model_dir={model_dir}",
        *TINY,
        "--train_steps=4",
    )
    assert other.returncode == 2
    assert "its tokenizer (sha256" in other.stderr and "use a fresh --model_dir" in other.stderr
    wider = train(
        f"--data_dir={ende_data}",
        f"--model_dir={model_dir}",
        *TINY,
        "--d_model=64",
        "--train_steps=4",
    )
    assert wider.returncode == 2
    assert "holds a model with another architecture (d_model 32 vs 64" in wider.stderr


def test_the_previous_epochs_iterator_is_destroyed_off_the_training_thread():
    import threading

    from trainer.loop import drop_in_background

    release, destroyed_on = threading.Event(), []

    class BlocksWhenDestroyed:  # as an exhausted tf.data iterator can, for tens of seconds
        def __del__(self):
            release.wait(timeout=30)
            destroyed_on.append(threading.current_thread().name)

    box = [BlocksWhenDestroyed()]
    thread = drop_in_background(box)
    del box
    # Back here while the destruction still waits: it runs on the other thread.
    assert thread.is_alive() and not destroyed_on
    release.set()
    thread.join(timeout=30)
    assert destroyed_on == ["drop-iterator"]
