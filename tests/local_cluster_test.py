"""scripts/local_cluster.sh: N trainer processes on localhost as one multi-worker cluster.

Orchestration (prefixes, exit statuses, signal forwarding, relaunch) is tested with a
tiny fake worker module; the real 2-worker training, a SIGKILLed worker and the resumed
relaunch with the real trainer on the tiny preset.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time

import pytest

from infra import local_cluster
from tests.train_test import TINY
from trainer.distribution import make_tf_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "local_cluster.sh")
PID_LINE = re.compile(r"^\[local_cluster\] worker (\d+): pid (\d+)", re.M)

# A stand-in trainer: prints its TF_CONFIG task, then behaves as FAKE_PLAN says for its index
# ("42@0,0@1": exit 42 on the first launch, 0 on the second; "sleep": wait for a signal;
# "deaf": ignore SIGTERM).
FAKE_WORKER = """
import json, os, signal, sys, time
task = json.loads(os.environ["TF_CONFIG"])["task"]
print("task", task["type"], task["index"], "flags", " ".join(sys.argv[1:]), flush=True)
# One count per task: the chief layout has a chief 0 and a worker 0.
state = os.path.join(os.environ["FAKE_DIR"], f"launches-{task['type']}-{task['index']}")
launch = int(open(state).read()) if os.path.exists(state) else 0
open(state, "w").write(str(launch + 1))
plan = os.environ["FAKE_PLAN"].split(";")[task["index"]]
if plan == "sleep":
    def stop(signum, frame):
        print("got", signal.Signals(signum).name, flush=True)
        sys.exit(42)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("waiting", flush=True)
    # Short sleeps: a signal landing between the last bytecode and the start of one long
    # sleep would wait for that sleep to end before its handler runs.
    for _ in range(600):
        time.sleep(0.1)
    sys.exit(0)
if plan == "deaf":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)
    sys.exit(0)
codes = dict(reversed(item.split("@")) for item in plan.split(","))
sys.exit(int(codes.get(str(launch), 0)))
"""


def cluster(*args, cwd=ROOT, **env_extra) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env_extra)
    env.pop("TF_CONFIG", None)
    return subprocess.Popen(
        ["bash", SCRIPT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )


@pytest.fixture
def fake(tmp_path):
    (tmp_path / "fake_worker.py").write_text(FAKE_WORKER)

    def run(n, plan, *options, **kwargs):
        return cluster(
            str(n),
            "--module=fake_worker",
            *options,
            "--",
            "--model_dir=/m",
            PYTHONPATH=str(tmp_path),
            FAKE_DIR=str(tmp_path),
            FAKE_PLAN=plan,
            **kwargs,
        )

    return run


def test_tf_config_is_the_trainers_for_every_size_and_layout():
    for n in range(1, 9):
        addresses = [f"localhost:{2000 + i}" for i in range(n)]
        for i in range(n):
            for chief in (False, True):
                got = local_cluster.tf_config(addresses, i, chief=chief)
                assert got == make_tf_config(addresses, i, chief=chief), (n, i, chief)


def test_dry_run_prints_each_workers_tf_config_and_command():
    process = cluster("2", "--dry_run", "--", "--data_dir=/d", "--model_dir=/m")
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    lines = out.splitlines()
    assert len(lines) == 2
    for index, line in enumerate(lines):
        words = shlex.split(line)
        config = json.loads(words[0].removeprefix("TF_CONFIG="))
        assert config["task"] == {"type": "worker", "index": index}
        assert len(config["cluster"]["worker"]) == 2
        assert words[2:] == [
            "-m",
            "trainer.train",
            "--data_dir=/d",
            "--model_dir=/m",
            "--strategy=multi_worker",
        ]


def test_every_line_is_prefixed_and_each_worker_gets_its_task(fake):
    process = fake(3, "0@0;0@0;0@0")
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    for i in range(3):
        assert f"[{i}] task worker {i} flags --model_dir=/m --strategy=multi_worker\n" in out, out
    assert out.rstrip().endswith("[local_cluster] exit status 0")


def test_chief_layout_like_vertex(fake):
    process = fake(2, "0@0;0@0", "--chief")
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    assert "[0] task chief 0 " in out and "[1] task worker 0 " in out, out


def test_a_failing_worker_stops_the_others_and_gives_its_status(fake):
    start = time.monotonic()
    process = fake(2, "sleep;3@0", "--grace_seconds=10")
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 3, out
    assert "[local_cluster] worker 1 exited with 3: stopping the others" in out, out
    assert "[0] got SIGTERM" in out, out
    assert time.monotonic() - start < 40  # not the sleeping worker's 60 s


def test_a_worker_deaf_to_sigterm_is_named_and_killed_after_the_grace(fake):
    process = fake(2, "deaf;3@0", "--grace_seconds=1")
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 3, out
    assert "[local_cluster] worker(s) 0 still running after 1s: killing them\n" in out, out


def test_preemption_relaunches_the_whole_cluster_when_asked(fake, tmp_path):
    process = fake(2, "42@0,0@1;42@0,0@1", "--relaunch_on_preemption")
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    assert "relaunching the cluster (1 of at most 10)" in out, out
    assert (tmp_path / "launches-worker-0").read_text() == "2"
    assert (tmp_path / "launches-worker-1").read_text() == "2"


def test_without_relaunch_a_preemption_exits_42(fake):
    process = fake(2, "42@0;42@0")
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 42, out
    assert "relaunching" not in out, out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_are_forwarded_and_never_relaunch(fake, signum):
    process = fake(2, "sleep;sleep", "--relaunch_on_preemption")
    seen = ""
    while seen.count("waiting") < 2:
        line = process.stdout.readline()
        assert line, seen
        seen += line
    process.send_signal(signum)
    out, _ = process.communicate(timeout=60)
    out = seen + out
    assert process.returncode == 42, out
    name = signal.Signals(signum).name
    assert f"[0] got {name}" in out and f"[1] got {name}" in out, out
    assert "relaunching" not in out, out


@pytest.mark.parametrize(
    "args, message",
    [
        (["0", "--", "--x=1"], "N must be at least 1"),
        (["2"], "give the trainer flags after --, e.g. -- --data_dir=DIR"),
        (["two", "--", "--x=1"], "argument num_workers: invalid int value: 'two'"),
    ],
)
def test_bad_input_gives_one_line(args, message):
    process = cluster(*args)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"local_cluster: error: {message}", out


def _read_until(process, pattern: str, seen: str = "", deadline_s: float = 240) -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        line = process.stdout.readline()
        if not line:
            break
        seen += line
        if re.search(pattern, line):
            return seen
    raise AssertionError(f"no {pattern!r} in time:\n{seen[-3000:]}")


@pytest.mark.slow
def test_two_real_workers_train_survive_a_kill_and_resume(ende_data, tmp_path):
    model_dir = tmp_path / "m"
    flags = [f"--data_dir={ende_data}", f"--model_dir={model_dir}", *TINY]
    flags += ["--checkpoint_every=3", "--eval_every=1000", "--eval_bleu_sentences=0"]
    process = cluster("2", "--grace_seconds=5", "--", *flags, "--train_steps=400")
    try:
        seen = _read_until(process, r"^\[0\] step 5/400")  # after the checkpoint of step 3
        pids = dict(PID_LINE.findall(seen))
        os.kill(int(pids["1"]), signal.SIGKILL)
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    out = seen + out
    assert process.returncode == 128 + signal.SIGKILL, out[-3000:]
    assert "[local_cluster] worker 1 exited with 137: stopping the others" in out
    # The newest complete checkpoint is the one the state file names (a save may have been cut).
    state = (model_dir / "checkpoint").read_text()
    saved = int(re.search(r'^model_checkpoint_path: ".*ckpt-(\d+)"$', state, re.M).group(1))
    assert saved >= 3

    again = cluster("2", "--", *flags, f"--train_steps={saved + 2}")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out[-3000:]
    for index in (0, 1):  # both restore the same checkpoint and stop at the same step
        assert re.search(rf"^\[{index}\] resumed from .*ckpt-{saved} at step {saved}$", out, re.M)
        assert f"[{index}] done at step {saved + 2};" in out
    assert os.path.exists(model_dir / f"ckpt-{saved + 2}.index")


def test_the_wrapper_uses_the_repository_python(tmp_path):
    # Run from elsewhere: the script finds the repository's code and interpreter itself.
    process = cluster("1", "--module=infra.launcher", "--", "--x", cwd=str(tmp_path))
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out  # the module ran (and did nothing) from another cwd
    assert "No module named" not in out and "[local_cluster] worker 0: pid" in out
