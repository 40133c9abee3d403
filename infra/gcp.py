"""GCP launcher: Dataflow jobs, Vertex AI training, GPU VM clusters, status/logs/cancel, GCS.

    python -m infra.gcp preprocess --project=P --bucket=B --dataset=ende --input=gs://... \
        --output_dir=gs://... [--dry_run] [-- extra preprocess flags]
    python -m infra.gcp train --project=P --image=IMAGE --data_dir=gs://... --model_dir=gs://... \
        --num_nodes=2 --machine_type=a3-highgpu-8g --spot [--dry_run] [-- trainer flags]
    python -m infra.gcp vm --project=P --zone=Z --cluster=NAME --service_account=SA ... [--dry_run]
    python -m infra.gcp translate --project=P --bucket=B --export_dir=gs://... --input=gs://... \
        --output=gs://... [--dry_run]
    python -m infra.gcp status|logs|cancel --kind=vertex|dataflow|vm ... [--dry_run]
    python -m infra.gcp stage --bucket=B [--prefix=P] --data_dir=LOCAL [--configs_dir=configs]
    python -m infra.gcp fetch --model_dir=gs://... --dest=LOCAL

--dry_run prints the exact requests, commands and generated scripts and a cost estimate
and touches nothing. Credentials are Application Default Credentials (never flags).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from infra import gcp_client, gcp_training, gcs_staging, launcher, machines
from infra import gcp_requests as requests_
from infra.launcher import LauncherError, require, require_scheme

PROGRAM = "gcp"
DATAFLOW_MACHINE = "n1-standard-4"


# ---- Dataflow: preprocess and translate ---------------------------------------------------


def _add_dataflow_flags(parser) -> None:
    parser.add_argument("--project", help="GCP project id.")
    parser.add_argument("--region", default="us-central1", help="Dataflow region.")
    parser.add_argument("--bucket", help="Bucket for Dataflow's temp and staging files.")
    parser.add_argument("--prefix", default="transformer-pipeline", help="Path in --bucket.")
    parser.add_argument("--machine_type", default=DATAFLOW_MACHINE, help="Worker machine type.")
    parser.add_argument("--max_num_workers", type=int, default=10, help="Autoscaling limit.")
    parser.add_argument("--job_name", help="Dataflow job name (default: tp-KIND-TIMESTAMP).")
    parser.add_argument("--service_account", help="Worker service account e-mail.")
    parser.add_argument("--network", help="VPC network of the workers.")
    parser.add_argument("--subnetwork", help="Subnetwork of the workers (regions/R/subnetworks/S).")
    parser.add_argument(
        "--no_public_ips",
        action="store_true",
        help="Workers without external IPs (needs Private Google Access).",
    )
    launcher.add_cost_flags(parser)


def _dataflow(args, *, module: str, job_args: list[str], kind: str) -> int:
    require(args.project, "project")
    require(args.bucket, "bucket", " (Dataflow stages files and writes temp files there)")
    if args.max_num_workers < 1:
        raise LauncherError("--max_num_workers must be at least 1")
    job_name = args.job_name or f"tp-{kind}-{launcher.timestamp()}"
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", job_name):
        raise LauncherError(
            f"--job_name: {job_name!r} must be lowercase letters, digits and '-', "
            "starting with a letter"
        )
    cost = machines.dataflow_cost(
        args.machine_type,
        max_workers=args.max_num_workers,
        hours=args.hours,
        price_table=args.price_table,
    )
    prefix = args.prefix.strip("/")
    command = requests_.dataflow_command(
        module=module,
        job_args=job_args,
        project=args.project,
        region=args.region,
        temp_root=f"gs://{args.bucket}/{prefix}/dataflow"
        if prefix
        else f"gs://{args.bucket}/dataflow",
        machine_type=args.machine_type,
        max_num_workers=args.max_num_workers,
        job_name=job_name,
        service_account=args.service_account,
        network=args.network,
        subnetwork=args.subnetwork,
        public_ips=not args.no_public_ips,
    )
    launcher.heading(f"Dataflow job {job_name}: submitted by running")
    launcher.show_command(command)
    launcher.show_cost(cost)
    launcher.heading(
        f"status: python -m infra.gcp status --kind=dataflow --project={args.project} "
        f"--region={args.region} --job=JOB_ID"
    )
    if args.dry_run:
        return 0
    return subprocess.call(command, cwd=requests_.ROOT)


def _gs(value: str | None, flag: str) -> None:
    require_scheme(value, flag, "gs://", "(Dataflow workers cannot read or write local paths)")


def cmd_preprocess(args, extra: list[str]) -> int:
    require(args.dataset, "dataset")
    _gs(args.output_dir, "output_dir")
    if args.input and not args.input.startswith(("gs://", "tfds:")):
        raise LauncherError(
            f"--input must be gs:// or tfds:NAME for Dataflow, got {args.input} "
            "(upload it first: python -m infra.gcp stage)"
        )
    job_args = [f"--dataset={args.dataset}", f"--output_dir={args.output_dir}"]
    if args.input:
        job_args.append(f"--input={args.input}")
    return _dataflow(
        args, module="pipeline.preprocess", job_args=job_args + extra, kind="preprocess"
    )


def cmd_translate(args, extra: list[str]) -> int:
    for flag in ("export_dir", "input", "output"):
        _gs(getattr(args, flag), flag)
    job_args = [
        f"--export_dir={args.export_dir}",
        f"--input={args.input}",
        f"--output={args.output}",
    ]
    return _dataflow(
        args, module="pipeline.batch_translate", job_args=job_args + extra, kind="translate"
    )


# ---- status, logs, cancel -----------------------------------------------------------------


def _job_calls(args, action: str, *, session=None) -> list[requests_.RestCall]:
    require(args.project, "project")
    if args.kind == "vm":
        launcher.check_cluster_name(args.cluster)
        require(args.zone, "zone")
        if action == "status":
            return [requests_.vm_status(args.project, args.zone, args.cluster)]
        if args.num_nodes is not None:
            if args.num_nodes < 1:
                raise LauncherError("--num_nodes must be at least 1")
            names = requests_.vm_names(args.cluster, args.num_nodes)
        elif session is None:
            raise LauncherError("--num_nodes is required with --dry_run (the VMs are not listed)")
        else:  # whatever runs with the cluster's label: a forgotten VM keeps billing
            listing = gcp_client.send(
                session, requests_.vm_status(args.project, args.zone, args.cluster)
            )
            names = [item["name"] for item in listing.get("items", [])]
        if action == "logs":
            return requests_.vm_logs(args.project, args.zone, names)
        return requests_.vm_delete(args.project, args.zone, args.cluster, names)
    require(args.job, "job")
    builders = {
        ("vertex", "status"): requests_.vertex_status,
        ("vertex", "logs"): requests_.vertex_logs,
        ("vertex", "cancel"): requests_.vertex_cancel,
        ("dataflow", "status"): requests_.dataflow_status,
        ("dataflow", "logs"): requests_.dataflow_logs,
        ("dataflow", "cancel"): requests_.dataflow_cancel,
    }
    return [builders[args.kind, action](args.project, args.region, args.job)]


def cmd_job(args, extra: list[str], *, action: str) -> int:
    if extra:
        raise LauncherError(f"{action} takes no trainer flags after --")
    if args.dry_run:
        for call in _job_calls(args, action):
            gcp_client.show_call(call)
        return 0
    session = gcp_client.authorized_session()
    for call in _job_calls(args, action, session=session):
        gcp_client.show_result(action, gcp_client.send(session, call))
    return 0


# ---- stage and fetch ----------------------------------------------------------------------


def cmd_stage(args, extra: list[str]) -> int:
    require(args.bucket, "bucket")
    gcs_staging.stage(
        bucket=args.bucket,
        prefix=args.prefix,
        data_dir=args.data_dir,
        configs_dir=args.configs_dir,
        project=args.project,
        dry_run=args.dry_run,
    )
    return 0


def cmd_fetch(args, extra: list[str]) -> int:
    require(args.model_dir, "model_dir")
    require(args.dest, "dest")
    gcs_staging.fetch(
        model_dir=args.model_dir, dest=args.dest, project=args.project, dry_run=args.dry_run
    )
    return 0


# ---- the command line ---------------------------------------------------------------------


def build_parser() -> launcher.OneLineParser:
    parser = launcher.OneLineParser(
        prog=f"python -m infra.{PROGRAM}", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=launcher.OneLineParser)

    p = sub.add_parser("preprocess", help="The preprocessing job on Dataflow.")
    _add_dataflow_flags(p)
    p.add_argument("--dataset", help="ende or imdb.")
    p.add_argument("--input", help="gs:// input (or tfds:NAME); default: the embedded corpus.")
    p.add_argument("--output_dir", help="gs:// output directory.")
    p.set_defaults(run=cmd_preprocess)

    p = sub.add_parser("translate", help="Batch translation on Dataflow.")
    _add_dataflow_flags(p)
    p.add_argument("--export_dir", help="gs:// SavedModel from trainer.export.")
    p.add_argument("--input", help="gs:// text file(s), one sentence per line (a glob).")
    p.add_argument("--output", help="gs:// output file or directory.")
    p.set_defaults(run=cmd_translate)

    p = sub.add_parser("train", help="A Vertex AI CustomJob.")
    gcp_training.add_train_flags(p)
    p.set_defaults(run=gcp_training.cmd_train)

    p = sub.add_parser("vm", help="A cluster of Compute Engine GPU VMs.")
    gcp_training.add_vm_flags(p)
    p.set_defaults(run=gcp_training.cmd_vm)

    for action, text in (
        ("status", "A job's or VM cluster's state."),
        ("logs", "A job's logs or the VMs' serial consoles."),
        ("cancel", "Cancel a job, or delete a VM cluster."),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument(
            "--kind", choices=("vertex", "dataflow", "vm"), required=True, help="What runs."
        )
        p.add_argument("--project", help="GCP project id.")
        p.add_argument("--region", default="us-central1", help="Region of the job.")
        p.add_argument("--job", help="Vertex AI job id or name, or Dataflow job id.")
        p.add_argument("--zone", help="Zone of the VMs (--kind=vm).")
        p.add_argument("--cluster", help="VM cluster name (--kind=vm).")
        p.add_argument(
            "--num_nodes",
            type=int,
            help="VMs CLUSTER-0.. (--kind=vm; default: every VM with the cluster's label).",
        )
        p.add_argument("--dry_run", action="store_true", help="Print the requests only.")
        p.set_defaults(run=lambda a, e, action=action: cmd_job(a, e, action=action))

    p = sub.add_parser("stage", help="Upload configs/ and a prepared data dir to GCS.")
    p.add_argument("--project", help="GCP project id (default: from ADC).")
    p.add_argument("--bucket", help="Destination bucket.")
    p.add_argument("--prefix", default="transformer-pipeline", help="Path in the bucket.")
    p.add_argument("--data_dir", help="Local preprocessing output (with metadata.json).")
    p.add_argument(
        "--configs_dir",
        default=os.path.join(requests_.ROOT, "configs"),
        help="Local flag files ('' for none).",
    )
    p.add_argument("--dry_run", action="store_true", help="List the uploads only.")
    p.set_defaults(run=cmd_stage)

    p = sub.add_parser("fetch", help="Download a trained model dir's results.")
    p.add_argument("--project", help="GCP project id (default: from ADC).")
    p.add_argument("--model_dir", help="gs:// model dir.")
    p.add_argument("--dest", help="Local destination directory.")
    p.add_argument("--dry_run", action="store_true", help="List what would be fetched only.")
    p.set_defaults(run=cmd_fetch)
    return parser


def main(argv: list[str]) -> int:
    own, extra = launcher.split_trainer_flags(argv)
    args = build_parser().parse_args(own)
    try:
        return args.run(args, extra)
    except gcs_staging.StagingError as e:
        raise LauncherError(str(e)) from None


def run(argv: list[str] | None = None) -> int:
    return launcher.run_cli(PROGRAM, main, argv)


if __name__ == "__main__":
    sys.exit(run())
