"""AWS launcher: a multi-worker training cluster of EC2 GPU instances.

    python -m infra.aws train --cluster=NAME --num_nodes=2 --instance_type=p4d.24xlarge --spot \
        --ami=ami-... --instance_profile=tp-trainer --image=ECR_IMAGE \
        --data=s3://BUCKET/data/ende --model_dir=s3://BUCKET/runs/NAME [--dry_run] [-- trainer flags]
    python -m infra.aws status --cluster=NAME
    python -m infra.aws terminate --cluster=NAME [--dry_run]

Running ``train`` again for the same cluster launches only the members it lacks (after
a spot reclaim): they pull the last checkpoint synced to S3 and the cluster resumes.
Credentials: boto3's default chain on this machine, the instance profile on the
instances (IMDSv2 only); never flags, user-data or images.
"""

from __future__ import annotations

import argparse
import re
import sys

from infra import ec2_cluster, launcher, machines, startup_scripts
from infra.launcher import LauncherError, require, require_scheme

PROGRAM = "aws"


def _client(region: str):
    import boto3

    return boto3.client("ec2", region_name=region)


def _spec(args) -> ec2_cluster.ClusterSpec:
    launcher.check_cluster_name(args.cluster)
    if args.num_nodes < 1:
        raise LauncherError("--num_nodes must be at least 1")
    machines.aws_instance(args.instance_type)
    require(args.ami, "ami", " (a Deep Learning AMI id of --region)")
    if not re.fullmatch(r"ami-[0-9a-f]{8,17}", args.ami):
        raise LauncherError(f"--ami: {args.ami!r} is not an AMI id (ami-...)")
    require(args.instance_profile, "instance_profile", " (its role reads/writes the S3 paths)")
    if not 1024 <= args.worker_port <= 65535:
        raise LauncherError(f"--worker_port must be in [1024, 65535], got {args.worker_port}")
    return ec2_cluster.ClusterSpec(
        cluster=args.cluster,
        num_nodes=args.num_nodes,
        instance_type=args.instance_type,
        ami=args.ami,
        instance_profile=args.instance_profile,
        spot=args.spot,
        worker_port=args.worker_port,
        subnet_id=args.subnet_id,
        placement_group=args.placement_group,
    )


def _user_data_builder(args, extra: list[str]):
    if bool(args.image) == bool(args.package):
        raise LauncherError(
            "give exactly one of --image (docker) and --package (s3:// wheel/sdist)"
        )
    if args.package:
        require_scheme(args.package, "package", "s3://", "(the instances download it)")
    require(args.data, "data")
    if not args.data.startswith(("s3://", "gs://")):
        raise LauncherError(
            f"--data must be an s3:// or gs:// path (staged to local disk), got {args.data}"
        )
    require_scheme(
        args.model_dir,
        "model_dir",
        "s3://",
        "(TF has no s3:// filesystem: the model dir is synced there)",
    )
    if args.sync_minutes <= 0:
        raise LauncherError("--sync_minutes must be positive")
    if args.max_restarts < 0:
        raise LauncherError(f"--max_restarts must be >= 0, got {args.max_restarts}")

    def build(index: int) -> str:
        script = startup_scripts.aws_user_data(
            cluster=args.cluster,
            index=index,
            num_nodes=args.num_nodes,
            region=args.region,
            worker_port=args.worker_port,
            install="docker" if args.image else "pip",
            image=args.image or "",
            package=args.package or "",
            python=args.python,
            data_source=args.data,
            s3_model_dir=args.model_dir,
            trainer_flags=extra,
            sync_minutes=args.sync_minutes,
            work_dir=args.work_dir,
            max_restarts=args.max_restarts,
        )
        if len(script.encode()) > startup_scripts.AWS_USER_DATA_LIMIT:
            raise LauncherError(
                f"the user-data is {len(script.encode())} bytes; EC2 allows 16 KiB "
                "(fewer or shorter trainer flags, or a --flagfile)"
            )
        return script

    return build


def cmd_train(args, extra: list[str]) -> int:
    spec = _spec(args)
    user_data = _user_data_builder(args, extra)
    scripts = [user_data(i) for i in range(spec.num_nodes)]
    cost = machines.aws_cost(
        spec.instance_type,
        nodes=spec.num_nodes,
        spot=spec.spot,
        hours=args.hours,
        price_table=args.price_table,
    )
    if args.dry_run:
        vpc = "<the VPC of --subnet_id>" if spec.subnet_id else "<the default VPC>"
        group = "<GroupId of the group created above>"
        launcher.heading(
            f"region {args.region}; EC2 CreateSecurityGroup (if {spec.group_name} is not there)"
        )
        launcher.show_json(ec2_cluster.security_group_request(spec, vpc))
        launcher.heading("EC2 AuthorizeSecurityGroupIngress: the only inbound rule")
        launcher.show_json(ec2_cluster.ingress_request(group, spec.worker_port))
        for index in range(spec.num_nodes):
            request = ec2_cluster.run_instances_request(
                spec, index=index, group_id=group, user_data=f"<user-data of task {index} below>"
            )
            launcher.heading(f"EC2 RunInstances for task {index} (skipped when it already runs)")
            launcher.show_json(request)
        for index, script in enumerate(scripts):
            launcher.heading(f"---- begin user-data of task {index}")
            print(script, end="")
            launcher.heading(f"---- end user-data of task {index}")
        launcher.heading(
            f"teardown: python -m infra.aws terminate --region={args.region} --cluster={spec.cluster}"
        )
        launcher.show_cost(cost)
        return 0
    launched = ec2_cluster.launch(_client(args.region), spec, user_data)
    if not launched:
        print(f"cluster {spec.cluster}: all {spec.num_nodes} members run already; nothing launched")
    for index, instance_id in launched:
        print(f"launched task {index}: {instance_id}")
    launcher.show_cost(cost)
    return 0


def cmd_status(args, extra: list[str]) -> int:
    launcher.check_cluster_name(args.cluster)
    if args.dry_run:
        launcher.heading(f"region {args.region}; EC2 DescribeInstances")
        launcher.show_json({"Filters": ec2_cluster.members_filter(args.cluster)})
        return 0
    rows = ec2_cluster.members(_client(args.region), args.cluster)
    if not rows:
        print(f"cluster {args.cluster}: no instances in {args.region}")
        return 0
    print(f"{'task':>4}  {'instance':<20} {'type':<14} {'market':<9} {'state':<13} private ip")
    for r in rows:
        print(
            f"{r['index']:>4}  {r['id']:<20} {r['type']:<14} {r['market']:<9} {r['state']:<13} "
            f"{r['private_ip']}"
        )
    return 0


def cmd_terminate(args, extra: list[str]) -> int:
    launcher.check_cluster_name(args.cluster)
    if args.dry_run:
        launcher.heading(
            f"region {args.region}; EC2 DescribeInstances, then TerminateInstances of what it finds"
        )
        launcher.show_json({"Filters": ec2_cluster.members_filter(args.cluster)})
        launcher.heading("EC2 DeleteSecurityGroup once they are terminated")
        launcher.show_json({"GroupName": ec2_cluster.group_name(args.cluster)})
        return 0
    ids = ec2_cluster.terminate(_client(args.region), args.cluster, poll_seconds=args.poll_seconds)
    print(
        f"terminated {len(ids)} instances: {' '.join(ids) or '-'}; deleted group {ec2_cluster.group_name(args.cluster)}"
    )
    return 0


def build_parser() -> launcher.OneLineParser:
    parser = launcher.OneLineParser(
        prog=f"python -m infra.{PROGRAM}", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=launcher.OneLineParser)

    p = sub.add_parser("train", help="Launch (or complete) the cluster.")
    p.add_argument("--region", default="us-east-1", help="AWS region.")
    p.add_argument("--cluster", help="Cluster name (tag tp-cluster).")
    p.add_argument("--num_nodes", type=int, default=1, help="Instances in the cluster.")
    p.add_argument("--instance_type", default="p4d.24xlarge", help="EC2 GPU instance type.")
    p.add_argument("--spot", action="store_true", help="One-time spot instances.")
    p.add_argument(
        "--ami", help="AMI id, e.g. a Deep Learning AMI with docker and the NVIDIA driver."
    )
    p.add_argument("--instance_profile", help="IAM instance profile name or ARN.")
    p.add_argument("--subnet_id", help="Subnet (default: the default VPC's).")
    p.add_argument("--placement_group", help="Cluster placement group (lower latency).")
    p.add_argument("--worker_port", type=int, default=2222, help="TensorFlow's gRPC port.")
    p.add_argument("--image", help="Training image (infra/Dockerfile), e.g. in ECR.")
    p.add_argument("--package", help="Or: s3:// wheel/sdist of this project, pip-installed.")
    p.add_argument("--python", default="python3.11", help="Python for --package installs.")
    p.add_argument("--data", help="s3:// or gs:// preprocessing output, staged to local disk.")
    p.add_argument("--model_dir", help="s3:// path the model dir is synced to and resumed from.")
    p.add_argument("--sync_minutes", type=float, default=10, help="Period of the S3 sync.")
    p.add_argument("--work_dir", default="/var/lib/tp", help="Local disk for data and model dir.")
    p.add_argument(
        "--max_restarts",
        type=int,
        default=5,
        help="Trainer failures in a row before an instance gives up.",
    )
    launcher.add_cost_flags(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("status", help="The cluster's instances and their states.")
    p.add_argument("--region", default="us-east-1", help="AWS region.")
    p.add_argument("--cluster", help="Cluster name.")
    p.add_argument("--dry_run", action="store_true", help="Print the request only.")
    p.set_defaults(run=cmd_status)

    p = sub.add_parser("terminate", help="Terminate the instances, delete the security group.")
    p.add_argument("--region", default="us-east-1", help="AWS region.")
    p.add_argument("--cluster", help="Cluster name.")
    p.add_argument("--poll_seconds", type=float, default=15, help=argparse.SUPPRESS)
    p.add_argument("--dry_run", action="store_true", help="Print the requests only.")
    p.set_defaults(run=cmd_terminate)
    return parser


def main(argv: list[str]) -> int:
    own, extra = launcher.split_trainer_flags(argv)
    args = build_parser().parse_args(own)
    if extra and args.command != "train":
        raise LauncherError(f"{args.command} takes no trainer flags after --")
    try:
        return args.run(args, extra)
    except ec2_cluster.ClusterError as e:
        raise LauncherError(str(e)) from None
    except Exception as e:  # botocore's errors, without importing botocore up front
        module = type(e).__module__
        if module.startswith("botocore"):
            print(f"{PROGRAM}: error: {str(e).splitlines()[0]}", file=sys.stderr)
            return 1
        raise


def run(argv: list[str] | None = None) -> int:
    return launcher.run_cli(PROGRAM, main, argv)


if __name__ == "__main__":
    sys.exit(run())
