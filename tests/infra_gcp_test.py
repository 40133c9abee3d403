"""python -m infra.gcp: the requests it builds, its --dry_run output (snapshots) and its errors.

Snapshots live in tests/golden/; regenerate them after an intended change with
``UPDATE_GOLDEN=1 .venv/bin/pytest tests/infra_gcp_test.py tests/infra_aws_test.py``
and read the diff. Nothing here talks to a cloud.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)

from infra import gcp, gcp_requests, machines, startup_scripts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")

PROJECT = ["--project=my-project"]
IMAGE = "us-central1-docker.pkg.dev/my-project/tp/trainer:0.1.0"
SA = "tp-trainer@my-project.iam.gserviceaccount.com"
# The 2 VMs x 8 GPUs spot runs of infra/README.md, verbatim.
TRAIN_2X8 = [
    "train", *PROJECT, "--region=us-central1", f"--image={IMAGE}",
    "--data_dir=gs://my-bucket/tp/data/ende", "--model_dir=gs://my-bucket/tp/runs/base-2x8",
    "--num_nodes=2", "--machine_type=a3-highgpu-8g", "--spot", "--display_name=tp-base-2x8",
    f"--service_account={SA}", "--hours=12", "--dry_run",
    "--", "--flagfile=configs/base.cfg", "--train_steps=100000",
]  # fmt: skip
VM_2X8 = [
    "vm", *PROJECT, "--zone=us-central1-a", "--cluster=tp-base", f"--image={IMAGE}",
    "--data_dir=gs://my-bucket/tp/data/ende", "--model_dir=gs://my-bucket/tp/runs/base-vm",
    "--num_nodes=2", "--machine_type=a3-highgpu-8g", "--spot", f"--service_account={SA}",
    "--hours=12", "--dry_run", "--", "--flagfile=configs/base.cfg", "--train_steps=100000",
]  # fmt: skip
PREPROCESS = [
    "preprocess", *PROJECT, "--region=us-central1", "--bucket=my-bucket", "--prefix=tp",
    "--dataset=ende", "--input=gs://my-bucket/tp/raw/train", "--output_dir=gs://my-bucket/tp/data/ende",
    "--max_num_workers=20", "--job_name=tp-preprocess-ende", f"--service_account={SA}",
    "--hours=2", "--dry_run", "--", "--vocab_size=32000", "--num_shards=64",
]  # fmt: skip
TRANSLATE = [
    "translate", *PROJECT, "--bucket=my-bucket", "--prefix=tp",
    "--export_dir=gs://my-bucket/tp/runs/base-2x8/export", "--input=gs://my-bucket/tp/in/*.en",
    "--output=gs://my-bucket/tp/out/", "--job_name=tp-translate", "--dry_run",
    "--", "--max_batch_size=128",
]  # fmt: skip


def normalize(text: str) -> str:
    return text.replace(sys.executable, "python").replace(ROOT, "<repo>")


def assert_golden(name: str, text: str) -> None:
    """Compares ``text`` with tests/golden/NAME; UPDATE_GOLDEN=1 rewrites the file instead."""
    path = os.path.join(GOLDEN, name)
    text = normalize(text)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    assert os.path.exists(path), f"no snapshot {path}: run with UPDATE_GOLDEN=1"
    with open(path) as f:
        expected = f.read()
    assert text == expected, f"{name} differs from its snapshot (UPDATE_GOLDEN=1 to accept)"


def run_gcp(argv, capsys) -> tuple[int, str, str]:
    code = gcp.run(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_after(output: str, heading: str) -> dict:
    """The JSON object printed right after the line starting with ``heading``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading)) + 1
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    return json.loads("\n".join(lines[start : end + 1]))


# ---- snapshots ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, argv",
    [
        ("gcp_train_2x8_spot.txt", TRAIN_2X8),
        ("gcp_vm_2x8_spot.txt", VM_2X8),
        ("gcp_preprocess.txt", PREPROCESS),
        ("gcp_translate.txt", TRANSLATE),
    ],
)
def test_dry_run_matches_snapshot(name, argv, capsys):
    code, out, err = run_gcp(argv, capsys)
    assert code == 0 and err == ""
    assert_golden(name, out)


def test_status_logs_cancel_dry_runs_match_snapshot(capsys):
    outputs = []
    for action in ("status", "logs", "cancel"):
        for kind, where in (
            ("vertex", ["--region=us-central1", "--job=1234567890"]),
            ("dataflow", ["--region=us-central1", "--job=2026-01-02_03_04_05-123"]),
            ("vm", ["--zone=us-central1-a", "--cluster=tp-base", "--num_nodes=2"]),
        ):
            argv = [action, f"--kind={kind}", *PROJECT, *where, "--dry_run"]
            code, out, err = run_gcp(argv, capsys)
            assert code == 0 and err == "", err
            outputs.append(f"$ python -m infra.gcp {' '.join(argv)}\n{out}")
    assert_golden("gcp_jobs.txt", "".join(outputs))


def readme_commands() -> list[list[str]]:
    """Every ``python -m infra.*`` command in infra/README.md's code blocks, as argv lists."""
    import shlex

    with open(os.path.join(ROOT, "infra", "README.md")) as f:
        text = f.read().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        if line.startswith("python -m infra."):
            commands.append(shlex.split(line.split("  #")[0]))
    return commands


@pytest.mark.parametrize("argv", [TRAIN_2X8, VM_2X8, PREPROCESS, TRANSLATE])
def test_the_readme_shows_these_exact_commands(argv):
    assert ["python", "-m", "infra.gcp", *argv] in readme_commands()


def test_every_readme_gcp_command_parses(capsys):
    commands = [c for c in readme_commands() if c[2] == "infra.gcp"]
    assert len(commands) >= 12
    for command in commands:
        argv = command[3:]
        own, _ = gcp.launcher.split_trainer_flags(argv)
        gcp.build_parser().parse_args(own)  # raises LauncherError on any unknown flag


# ---- Vertex AI ------------------------------------------------------------------------------


def test_vertex_body_is_a_valid_custom_job(capsys):
    from google.cloud import aiplatform_v1
    from google.protobuf import json_format

    _, out, _ = run_gcp(TRAIN_2X8, capsys)
    body = json_after(out, "# POST https://us-central1-aiplatform.googleapis.com/v1/")
    job = aiplatform_v1.CustomJob.pb(aiplatform_v1.CustomJob())
    json_format.ParseDict(body, job)  # raises on any field the API does not have
    assert json_format.MessageToDict(job) == body  # and nothing was dropped or retyped
    wrapped = aiplatform_v1.CustomJob.wrap(job)
    chief, workers = wrapped.job_spec.worker_pool_specs
    assert (chief.replica_count, workers.replica_count) == (1, 1)
    for pool in (chief, workers):
        assert pool.machine_spec.machine_type == "a3-highgpu-8g"
        assert pool.machine_spec.accelerator_type.name == "NVIDIA_H100_80GB"
        assert pool.machine_spec.accelerator_count == 8
        assert pool.container_spec.image_uri == IMAGE
        assert list(pool.container_spec.args) == [
            "train",
            "--data_dir=gs://my-bucket/tp/data/ende",
            "--model_dir=gs://my-bucket/tp/runs/base-2x8",
            "--flagfile=configs/base.cfg",
            "--train_steps=100000",
        ]
    scheduling = wrapped.job_spec.scheduling
    assert scheduling.strategy == aiplatform_v1.Scheduling.Strategy.SPOT
    assert scheduling.restart_job_on_worker_restart is True
    assert wrapped.job_spec.base_output_directory.output_uri_prefix.startswith("gs://")
    assert wrapped.job_spec.service_account == SA


@pytest.mark.parametrize("nodes, pools", [(1, [1]), (4, [1, 3]), (8, [1, 7])])
def test_vertex_pools_are_one_chief_and_n_minus_1_workers(nodes, pools):
    body = gcp_requests.vertex_custom_job(
        display_name="j",
        image=IMAGE,
        shape=machines.gcp_shape("g2-standard-48"),
        num_nodes=nodes,
        spot=False,
        container_args=["train"],
        base_output_dir="gs://b/o",
    )
    specs = body["jobSpec"]["workerPoolSpecs"]
    assert [int(p["replicaCount"]) for p in specs] == pools
    assert body["jobSpec"]["scheduling"]["strategy"] == "STANDARD"
    assert specs[0]["machineSpec"] == {
        "machineType": "g2-standard-48",
        "acceleratorType": "NVIDIA_L4",
        "acceleratorCount": 4,
    }


# ---- Dataflow -------------------------------------------------------------------------------


def _command(out: str) -> list[str]:
    import shlex

    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(sys.executable))
    text = []
    for line in lines[start:]:
        text.append(line.rstrip("\\"))
        if not line.endswith("\\"):
            break
    return shlex.split(" ".join(text))


def test_preprocess_command_is_a_dataflow_submission_beam_accepts(capsys):
    from pipeline import preprocess

    _, out, _ = run_gcp(PREPROCESS, capsys)
    argv = _command(out)
    assert argv[:3] == [sys.executable, "-m", "pipeline.preprocess"]
    job_flags = ["--dataset=ende", "--output_dir=gs://my-bucket/tp/data/ende"]
    job_flags += ["--input=gs://my-bucket/tp/raw/train", "--vocab_size=32000", "--num_shards=64"]
    assert argv[3:8] == job_flags
    beam_args = argv[8:]
    options = preprocess.pipeline_options(beam_args)  # refuses unknown options, checks Dataflow's
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region, cloud.job_name) == (
        "my-project",
        "us-central1",
        "tp-preprocess-ende",
    )
    assert cloud.temp_location == "gs://my-bucket/tp/dataflow/tmp"
    assert cloud.staging_location == "gs://my-bucket/tp/dataflow/staging"
    assert cloud.service_account_email == SA
    workers = options.view_as(WorkerOptions)
    assert (workers.machine_type, workers.max_num_workers) == ("n1-standard-4", 20)
    setup_file = options.view_as(SetupOptions).setup_file
    assert setup_file == os.path.join(ROOT, "setup.py") and os.path.exists(setup_file)


def test_translate_command_runs_the_batch_translation_module(capsys):
    _, out, _ = run_gcp(TRANSLATE, capsys)
    argv = _command(out)
    assert argv[2] == "pipeline.batch_translate"
    assert "--export_dir=gs://my-bucket/tp/runs/base-2x8/export" in argv
    assert "--max_batch_size=128" in argv and "--runner=DataflowRunner" in argv
    known = PipelineOptions(argv[7:]).get_all_options(retain_unknown_options=True)
    assert known["job_name"] == "tp-translate" and known["max_num_workers"] == 10


# ---- Compute Engine VMs ---------------------------------------------------------------------


def test_vm_bodies_are_spot_gpu_instances_running_the_startup_script(capsys):
    _, out, _ = run_gcp(VM_2X8, capsys)
    script = startup_scripts.gce_startup_script(
        cluster="tp-base",
        num_nodes=2,
        project="my-project",
        zone="us-central1-a",
        worker_port=2222,
        image=IMAGE,
        data_dir="gs://my-bucket/tp/data/ende",
        model_dir="gs://my-bucket/tp/runs/base-vm",
        trainer_flags=["--flagfile=configs/base.cfg", "--train_steps=100000"],
    )
    assert f"# ---- begin tp-base-startup.sh\n{script}# ---- end tp-base-startup.sh\n" in out
    for index in range(2):
        heading = f"# VM tp-base-{index}"
        body = json_after(out[out.index(heading) :], "# POST https://compute.googleapis.com/")
        assert body["name"] == f"tp-base-{index}"
        assert body["scheduling"] == {
            "provisioningModel": "SPOT",
            "instanceTerminationAction": "STOP",
            "onHostMaintenance": "TERMINATE",
            "automaticRestart": False,
        }
        assert body["guestAccelerators"][0]["acceleratorCount"] == 8
        assert body["guestAccelerators"][0]["acceleratorType"].endswith("/nvidia-h100-80gb")
        assert body["serviceAccounts"] == [
            {"email": SA, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
        ]
        items = {i["key"]: i["value"] for i in body["metadata"]["items"]}
        assert items["tp-index"] == str(index) and items["install-nvidia-driver"] == "True"
        image = body["disks"][0]["initializeParams"]["sourceImage"]
        assert image.startswith("projects/deeplearning-platform-release/global/images/family/")
        assert body["labels"] == {"tp-cluster": "tp-base", "tp-index": str(index)}
    firewall = json_after(
        out, "# POST https://compute.googleapis.com/compute/v1/projects/my-project/global/firewalls"
    )
    assert firewall["sourceTags"] == firewall["targetTags"] == ["tp-base-member"]
    assert firewall["allowed"] == [{"IPProtocol": "tcp", "ports": ["2222"]}]
    assert "--provisioning-model=SPOT" in out and "--instance-termination-action=STOP" in out
    assert "gcloud compute instances delete tp-base-1" in out  # the teardown is printed too


def test_vm_save_script_writes_the_script_the_gcloud_commands_read(tmp_path, capsys):
    path = str(tmp_path / "startup.sh")
    code, out, _ = run_gcp([*VM_2X8[:-3], f"--save_script={path}", *VM_2X8[-3:]], capsys)
    assert code == 0
    with open(path) as f:
        script = f.read()
    assert script.startswith("#!/usr/bin/env bash") and script in out
    assert f"--metadata-from-file=startup-script={path}" in out


def test_on_demand_vm_restarts_after_maintenance():
    body = gcp_requests.compute_instance(
        project="p",
        zone="us-central1-a",
        cluster="c",
        index=0,
        shape=machines.gcp_shape("n1-standard-8", "nvidia-tesla-t4", 2),
        spot=False,
        termination_action="STOP",
        service_account=SA,
        startup_script="#!/bin/bash\n",
        external_ip=False,
        subnetwork="s",
    )
    assert body["scheduling"] == {
        "provisioningModel": "STANDARD",
        "onHostMaintenance": "TERMINATE",
        "automaticRestart": True,
    }
    interface = body["networkInterfaces"][0]
    assert "accessConfigs" not in interface
    assert interface["subnetwork"] == "projects/p/regions/us-central1/subnetworks/s"
    call = gcp_requests.compute_insert("p", "us-central1-a", body, script_file="s.sh")
    assert "--accelerator=type=nvidia-tesla-t4,count=2" in call.gcloud
    assert "--network-interface=network=default,nic-type=GVNIC,subnet=s,no-address" in call.gcloud


# ---- errors: one line, exit 2 ---------------------------------------------------------------


def _replace(argv, **changes):
    out = []
    for arg in argv:
        name = arg.split("=", 1)[0].lstrip("-")
        if name in changes:
            if changes[name] is not None:
                out.append(f"--{name}={changes[name]}")
        else:
            out.append(arg)
    return out


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            _replace(TRAIN_2X8, machine_type="x9-gpu-8g"),
            "--machine_type: unknown GCP GPU machine type 'x9-gpu-8g'; supported: a2-highgpu-8g,",
        ),
        (
            [*TRAIN_2X8[:4], "--accelerator_count=4", *TRAIN_2X8[4:]],
            "--accelerator_count: a3-highgpu-8g has 8 x nvidia-h100-80gb built in; got 4",
        ),
        (
            _replace(TRAIN_2X8, machine_type="n1-standard-16")[:4]
            + ["--accelerator_type=nvidia-tesla-t4", "--accelerator_count=3"]
            + _replace(TRAIN_2X8, machine_type="n1-standard-16")[4:],
            "--accelerator_count: n1-standard-16 takes 1, 2, 4 x nvidia-tesla-t4, not 3",
        ),
        (
            _replace(TRAIN_2X8, machine_type="n1-standard-16")[:4]
            + ["--accelerator_type=NVIDIA_TESLA_V100", "--accelerator_count=1"]
            + _replace(TRAIN_2X8, machine_type="n1-standard-16")[4:],
            "--accelerator_count: 1 x nvidia-tesla-v100 allows at most 12 vCPUs; n1-standard-16 has 16",
        ),
        (
            _replace(TRAIN_2X8, machine_type="n1-standard-8"),
            "--accelerator_type is required with n1-standard-8: one of nvidia-tesla-t4, nvidia-tesla-v100",
        ),
        (_replace(TRAIN_2X8, project=None), "--project is required"),
        (
            _replace(TRAIN_2X8, model_dir="/tmp/model"),
            "--model_dir must be a gs:// path for Vertex AI (workers cannot see local disk), got /tmp/model",
        ),
        (
            [*TRAIN_2X8, "--data_dir=/tmp/x"],
            "--data_dir after --: give it to the launcher (before --), which sets it per cloud",
        ),
        (
            _replace(PREPROCESS, bucket=None),
            "--bucket is required (Dataflow stages files and writes temp files there)",
        ),
        (
            _replace(PREPROCESS, input="/data/train"),
            "--input must be gs:// or tfds:NAME for Dataflow, got /data/train (upload it first: python -m infra.gcp stage)",
        ),
        (
            _replace(PREPROCESS, job_name="Bad_Name"),
            "--job_name: 'Bad_Name' must be lowercase letters, digits and '-', starting with a letter",
        ),
        (_replace(VM_2X8, service_account=None), "--service_account is required (a dedicated one"),
        (_replace(VM_2X8, cluster="Tp_Base"), "--cluster: 'Tp_Base' is not a valid name"),
        (_replace(VM_2X8, zone=None), "--zone is required"),
        (["status", "--kind=vertex", *PROJECT, "--dry_run"], "--job is required"),
        (
            ["cancel", "--kind=vm", *PROJECT, "--zone=z", "--cluster=c", "--dry_run"],
            "--num_nodes is required with --dry_run (the VMs are not listed)",
        ),
        (["logs", "--kind=k8s"], "argument --kind: invalid choice: 'k8s'"),
        (["deploy"], "argument command: invalid choice: 'deploy'"),
        (
            [*TRAIN_2X8[:4], "--price_table=/nonexistent.json", *TRAIN_2X8[4:]],
            "--price_table: cannot read /nonexistent.json (No such file or directory)",
        ),
    ],
)
def test_bad_input_gives_one_clear_line(argv, message, capsys):
    code, out, err = run_gcp(argv, capsys)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gcp: error: {message}"), err


def test_the_module_entry_point_gives_one_line_and_status_2():
    result = subprocess.run(
        [sys.executable, "-m", "infra.gcp", "train", "--project=p", "--image=i",
         "--data_dir=gs://b/d", "--model_dir=/local", "--dry_run"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "gcp: error: --model_dir must be a gs:// path for Vertex AI "
        "(workers cannot see local disk), got /local\n"
    )
