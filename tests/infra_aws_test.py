"""python -m infra.aws against a real moto_server: real boto3 calls, read back with boto3.

Also the --dry_run snapshots (tests/golden/aws_*.txt; UPDATE_GOLDEN=1 rewrites them) and
the one-line errors.
"""

from __future__ import annotations

import base64
import os
import shutil
import sys

import boto3
import pytest
from botocore.validate import validate_parameters

from infra import aws, ec2_cluster, startup_scripts
from tests.emulators import free_port, serving
from tests.infra_gcp_test import assert_golden, readme_commands

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/tp-trainer:0.1.0"
# The 2 instances x 8 GPUs spot run of infra/README.md, verbatim but for the AMI.
TRAIN_2X8 = [
    "train", "--region=us-east-1", "--cluster=tp-base", "--num_nodes=2",
    "--instance_type=p4d.24xlarge", "--spot", "--ami=ami-0123456789abcdef0",
    "--instance_profile=tp-trainer", f"--image={IMAGE}", "--data=s3://my-bucket/tp/data/ende",
    "--model_dir=s3://my-bucket/tp/runs/base-aws", "--hours=12",
    "--", "--flagfile=configs/base.cfg", "--train_steps=100000",
]  # fmt: skip


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """A moto_server subprocess; boto3 reaches it through AWS_ENDPOINT_URL, with fake keys."""
    executable = os.path.join(os.path.dirname(sys.executable), "moto_server")
    executable = executable if os.path.exists(executable) else shutil.which("moto_server")
    port = free_port()
    environment = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path_factory.mktemp("aws") / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path_factory.mktemp("aws") / "none"),
    }
    with serving(
        "moto_server", [executable, "-H", "127.0.0.1", "-p", str(port)], port, environment
    ):
        iam = boto3.client("iam")
        iam.create_role(RoleName="tp-trainer", AssumeRolePolicyDocument="{}")
        iam.create_instance_profile(InstanceProfileName="tp-trainer")
        iam.add_role_to_instance_profile(InstanceProfileName="tp-trainer", RoleName="tp-trainer")
        yield boto3.client("ec2", region_name="us-east-1")


def run_aws(argv, capsys) -> tuple[int, str, str]:
    code = aws.run(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def live(ec2, cluster: str) -> list[dict]:
    pages = ec2.describe_instances(Filters=ec2_cluster.members_filter(cluster))["Reservations"]
    return [i for r in pages for i in r["Instances"]]


def tags(instance) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance["Tags"]}


def user_data(ec2, instance_id: str) -> str:
    value = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(value["UserData"]["Value"]).decode()


def test_dry_run_matches_snapshot(capsys):
    code, out, err = run_aws([*TRAIN_2X8[:12], "--dry_run", *TRAIN_2X8[12:]], capsys)
    assert code == 0 and err == ""
    assert_golden("aws_train_2x8_spot.txt", out)
    code, out, err = run_aws(["terminate", "--cluster=tp-base", "--dry_run"], capsys)
    assert code == 0
    assert_golden("aws_terminate.txt", out)
    code, out, err = run_aws(["status", "--cluster=tp-base", "--dry_run"], capsys)
    assert code == 0 and '"tag:tp-cluster"' in out and "DescribeInstances" in out


def test_the_readme_shows_this_exact_command():
    dry_run = [*TRAIN_2X8[:12], "--dry_run", *TRAIN_2X8[12:]]
    commands = readme_commands()
    assert ["python", "-m", "infra.aws", *dry_run] in commands
    for command in (c for c in commands if c[2] == "infra.aws"):
        own, _ = aws.launcher.split_trainer_flags(command[3:])
        aws.build_parser().parse_args(own)


def test_run_instances_request_is_valid_for_the_ec2_api():
    spec = ec2_cluster.ClusterSpec(
        cluster="c",
        num_nodes=2,
        instance_type="g6.12xlarge",
        ami="ami-0123456789abcdef0",
        instance_profile="arn:aws:iam::123456789012:instance-profile/tp",
        spot=True,
        subnet_id="subnet-0123",
        placement_group="pg",
    )
    model = boto3.session.Session(region_name="us-east-1").client("ec2").meta.service_model
    request = ec2_cluster.run_instances_request(spec, index=1, group_id="sg-1", user_data="#!")
    validate_parameters(request, model.operation_model("RunInstances").input_shape)
    for name, value in (
        ("CreateSecurityGroup", ec2_cluster.security_group_request(spec, "vpc-1")),
        ("AuthorizeSecurityGroupIngress", ec2_cluster.ingress_request("sg-1", 2222)),
    ):
        validate_parameters(value, model.operation_model(name).input_shape)
    assert request["IamInstanceProfile"] == {"Arn": spec.instance_profile}
    assert request["Placement"] == {"GroupName": "pg"} and request["SubnetId"] == "subnet-0123"


def test_train_launches_a_spot_cluster_as_specified(moto, capsys):
    ami = moto.describe_images()["Images"][0]["ImageId"]
    argv = [a if not a.startswith("--ami=") else f"--ami={ami}" for a in TRAIN_2X8]
    code, out, err = run_aws(argv, capsys)
    assert code == 0, err
    assert "launched task 0: i-" in out and "launched task 1: i-" in out
    instances = sorted(live(moto, "tp-base"), key=lambda i: tags(i)["tp-index"])
    assert len(instances) == 2
    group = moto.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["tp-base-workers"]}]
    )["SecurityGroups"]
    assert len(group) == 1
    group_id = group[0]["GroupId"]
    # Ingress: exactly one rule, the worker port, from the group's own members; no CIDR at all.
    (rule,) = group[0]["IpPermissions"]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 2222, 2222)
    assert [p["GroupId"] for p in rule["UserIdGroupPairs"]] == [group_id]
    assert rule["IpRanges"] == [] and rule["Ipv6Ranges"] == [] and rule["PrefixListIds"] == []
    for index, instance in enumerate(instances):
        assert instance["InstanceType"] == "p4d.24xlarge"
        assert instance["ImageId"] == ami
        assert instance["InstanceLifecycle"] == "spot"
        assert tags(instance) == {
            "Name": f"tp-base-{index}",
            "tp-cluster": "tp-base",
            "tp-index": str(index),
        }
        assert instance["IamInstanceProfile"]["Arn"].endswith(":instance-profile/tp-trainer")
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
        assert instance["MetadataOptions"]["HttpEndpoint"] == "enabled"
        assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group_id]
        behavior = moto.describe_instance_attribute(
            InstanceId=instance["InstanceId"], Attribute="instanceInitiatedShutdownBehavior"
        )
        assert behavior["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
        script = user_data(moto, instance["InstanceId"])
        assert script == startup_scripts.aws_user_data(
            cluster="tp-base",
            index=index,
            num_nodes=2,
            region="us-east-1",
            worker_port=2222,
            install="docker",
            image=IMAGE,
            data_source="s3://my-bucket/tp/data/ende",
            s3_model_dir="s3://my-bucket/tp/runs/base-aws",
            trainer_flags=["--flagfile=configs/base.cfg", "--train_steps=100000"],
        )
        assert "\nset -euo pipefail\n" in script
        assert f"\nreadonly TP_INDEX={index}\n" in script
        assert 'TF_CONFIG=$(tf_config_json "$TP_INDEX"' in script and "tf_config_json() {" in script
        assert "trap on_exit EXIT" in script and "sync_up ||" in script  # the sync on exit
        assert "sync_loop &" in script  # and the periodic one
        assert "aws s3 sync" in script and "shutdown -h now" in script
    code, out, _ = run_aws(["status", "--cluster=tp-base"], capsys)
    assert code == 0
    rows = out.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["0", "1"]
    assert all("p4d.24xlarge" in r and "spot" in r and "running" in r for r in rows)


def test_train_again_replaces_only_the_reclaimed_member(moto, capsys):
    ami = moto.describe_images()["Images"][0]["ImageId"]
    argv = [
        "train", "--cluster=tp-relaunch", "--num_nodes=3", "--instance_type=g6.12xlarge", f"--ami={ami}",
        "--instance_profile=tp-trainer", "--package=s3://b/dist/tp-0.1.0.tar.gz", "--data=gs://b/data",
        "--model_dir=s3://b/run",
    ]  # fmt: skip
    assert run_aws(argv, capsys)[0] == 0
    first = {tags(i)["tp-index"]: i["InstanceId"] for i in live(moto, "tp-relaunch")}
    assert set(first) == {"0", "1", "2"}
    assert all(i.get("InstanceLifecycle") is None for i in live(moto, "tp-relaunch"))  # on-demand
    moto.terminate_instances(InstanceIds=[first["1"]])  # as a spot reclaim would

    code, out, _ = run_aws(argv, capsys)
    assert (
        code == 0 and "launched task 1: i-" in out and "task 0" not in out and "task 2" not in out
    )
    second = {
        tags(i)["tp-index"]: i["InstanceId"]
        for i in live(moto, "tp-relaunch")
        if i["State"]["Name"] != "terminated"
    }
    assert second["0"] == first["0"] and second["2"] == first["2"] and second["1"] != first["1"]
    assert "TP_INSTALL=pip" in user_data(moto, second["1"])

    code, out, _ = run_aws(argv, capsys)
    assert "all 3 members run already; nothing launched" in out

    code, out, _ = run_aws(["terminate", "--cluster=tp-relaunch", "--poll_seconds=0.2"], capsys)
    assert code == 0 and out.startswith("terminated 3 instances:")
    assert live(moto, "tp-relaunch") == []
    groups = moto.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["tp-relaunch-workers"]}]
    )["SecurityGroups"]
    assert groups == []
    assert "no instances" in run_aws(["status", "--cluster=tp-relaunch"], capsys)[1]


def _with(argv, **changes):
    out = [a for a in argv if a.split("=", 1)[0].lstrip("-") not in changes]
    at = out.index("--")
    extra = [f"--{k}={v}" for k, v in changes.items() if v is not None]
    return out[:at] + extra + out[at:]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            _with(TRAIN_2X8, instance_type="p3.2xlarge"),
            "--instance_type: unknown EC2 GPU instance type 'p3.2xlarge'; supported: g5.12xlarge,",
        ),
        (
            _with(TRAIN_2X8, instance_profile=None),
            "--instance_profile is required (its role reads/writes the S3 paths)",
        ),
        (_with(TRAIN_2X8, ami="ubuntu"), "--ami: 'ubuntu' is not an AMI id (ami-...)"),
        (
            _with(TRAIN_2X8, model_dir="gs://b/run"),
            "--model_dir must be an s3:// path (TF has no s3:// filesystem: the model dir is synced there), got gs://b/run",
        ),
        (
            _with(TRAIN_2X8, package="s3://b/p.whl"),
            "give exactly one of --image (docker) and --package",
        ),
        (
            _with(TRAIN_2X8, data="/local/data"),
            "--data must be an s3:// or gs:// path (staged to local disk), got /local/data",
        ),
        (_with(TRAIN_2X8, cluster=None), "--cluster is required"),
        (_with(TRAIN_2X8, num_nodes=0), "--num_nodes must be at least 1"),
        ([*TRAIN_2X8, "--model_dir=/x"], "--model_dir after --: give it to the launcher"),
        (["status"], "--cluster is required"),
        (["reboot"], "argument command: invalid choice: 'reboot'"),
    ],
)
def test_bad_input_gives_one_clear_line(argv, message, capsys):
    code, out, err = run_aws(argv, capsys)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aws: error: {message}"), err


def test_cloud_errors_are_one_line_too(moto, capsys):
    ami = moto.describe_images()["Images"][0]["ImageId"]
    argv = _with(TRAIN_2X8, ami=ami, cluster="tp-err", subnet_id="subnet-0000000000000dead")
    code, out, err = run_aws(argv, capsys)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(
        "aws: error: An error occurred (InvalidSubnetID.NotFound)"
    )
    assert live(moto, "tp-err") == []
