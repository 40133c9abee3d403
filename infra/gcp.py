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

import datetime
import os
import re
import subprocess
import sys

from infra import gcp_client, gcs_staging, launcher, machines, startup_scripts
from infra import gcp_requests as requests_
from infra.launcher import LauncherError, require, require_scheme

PROGRAM = "gcp"
DATAFLOW_MACHINE = "n1-standard-4"


def _timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")


def _show_call(call: requests_.RestCall) -> None:
    launcher.heading(f"{call.method} {call.url}")
    if call.body is not None:
        launcher.show_json(call.body)
    if call.gcloud:
        launcher.heading("gcloud equivalent:")
        launcher.show_command(call.gcloud)


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
    job_name = args.job_name or f"tp-{kind}-{_timestamp()}"
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


# ---- Vertex AI ----------------------------------------------------------------------------

# The CUDA training image is about 10 GB unpacked; a smaller disk fails only at pull time.
MIN_BOOT_DISK_GB = 50


def _add_gpu_flags(parser, *, default_machine: str) -> None:
    parser.add_argument("--num_nodes", type=int, default=1, help="Machines in the cluster.")
    parser.add_argument("--machine_type", default=default_machine, help="GPU machine type.")
    parser.add_argument(
        "--accelerator_type", help="GPU type (default: the one the machine type comes with)."
    )
    parser.add_argument("--accelerator_count", type=int, help="GPUs per machine.")
    parser.add_argument("--spot", action="store_true", help="Spot (preemptible) capacity.")
    parser.add_argument(
        "--image", help="Training image (infra/Dockerfile), e.g. REGION-docker.pkg.dev/P/R/tp:TAG."
    )
    parser.add_argument("--data_dir", help="gs:// preprocessing output (with metadata.json).")
    parser.add_argument("--model_dir", help="gs:// model dir: checkpoints, metrics, config.")
    parser.add_argument("--boot_disk_gb", type=int, default=200, help="Boot disk size.")
    launcher.add_cost_flags(parser)


def _gpu_common(args, where: str) -> tuple[machines.GcpShape, machines.CostEstimate]:
    require(args.project, "project")
    require(args.image, "image")
    if args.num_nodes < 1:
        raise LauncherError("--num_nodes must be at least 1")
    if args.boot_disk_gb < MIN_BOOT_DISK_GB:
        raise LauncherError(
            f"--boot_disk_gb must be at least {MIN_BOOT_DISK_GB} (the training image alone "
            f"needs that), got {args.boot_disk_gb}"
        )
    if args.accelerator_count is not None and args.accelerator_count < 1:
        raise LauncherError(f"--accelerator_count must be at least 1, got {args.accelerator_count}")
    for flag in ("data_dir", "model_dir"):
        require_scheme(
            getattr(args, flag), flag, "gs://", f"for {where} (workers cannot see local disk)"
        )
    shape = machines.gcp_shape(args.machine_type, args.accelerator_type, args.accelerator_count)
    cost = machines.gcp_cost(
        shape, nodes=args.num_nodes, spot=args.spot, hours=args.hours, price_table=args.price_table
    )
    return shape, cost


def trainer_container_args(args, extra: list[str]) -> list[str]:
    return ["train", f"--data_dir={args.data_dir}", f"--model_dir={args.model_dir}", *extra]


def cmd_train(args, extra: list[str]) -> int:
    shape, cost = _gpu_common(args, "Vertex AI")
    base_output = args.base_output_dir or f"{args.model_dir.rstrip('/')}/vertex"
    require_scheme(base_output, "base_output_dir", "gs://", "for Vertex AI")
    body = requests_.vertex_custom_job(
        display_name=args.display_name or f"tp-train-{_timestamp()}",
        image=args.image,
        shape=shape,
        num_nodes=args.num_nodes,
        spot=args.spot,
        container_args=trainer_container_args(args, extra),
        base_output_dir=base_output,
        service_account=args.service_account,
        boot_disk_gb=args.boot_disk_gb,
        labels={"tp-task": "train"},
    )
    call = requests_.vertex_create(args.project, args.region, body)
    launcher.heading(
        f"Vertex AI CustomJob: {args.num_nodes} x {shape.machine_type} "
        f"({shape.count} x {shape.accelerator.vertex_name}), {'spot' if args.spot else 'on-demand'}"
    )
    _show_call(call)
    launcher.heading("job_spec.json for the gcloud command = the jobSpec object above")
    launcher.show_cost(cost)
    launcher.heading("(Compute Engine rates: Vertex AI training bills its own, higher, rates)")
    if args.dry_run:
        return 0
    created = gcp_client.create_custom_job(args.project, args.region, body)
    print(f"created {created}")
    return 0


# ---- Compute Engine VMs -------------------------------------------------------------------


def cmd_vm(args, extra: list[str]) -> int:
    shape, cost = _gpu_common(args, "GCE VMs")
    launcher.check_cluster_name(args.cluster)
    require(args.zone, "zone")
    require(
        args.service_account,
        "service_account",
        " (a dedicated one with bucket-level roles; see infra/README.md)",
    )
    script = startup_scripts.gce_startup_script(
        cluster=args.cluster,
        num_nodes=args.num_nodes,
        project=args.project,
        zone=args.zone,
        worker_port=args.worker_port,
        image=args.image,
        data_dir=args.data_dir,
        model_dir=args.model_dir,
        trainer_flags=extra,
        max_restarts=args.max_restarts,
    )
    script_file = args.save_script or f"{args.cluster}-startup.sh"
    firewall = requests_.cluster_firewall(
        project=args.project,
        cluster=args.cluster,
        worker_port=args.worker_port,
        network=args.network,
    )
    inserts = [
        requests_.compute_insert(
            args.project,
            args.zone,
            requests_.compute_instance(
                project=args.project,
                zone=args.zone,
                cluster=args.cluster,
                index=i,
                shape=shape,
                spot=args.spot,
                termination_action=args.termination_action,
                service_account=args.service_account,
                startup_script=script,
                image_family=args.vm_image_family,
                image_project=args.vm_image_project,
                boot_disk_gb=args.boot_disk_gb,
                network=args.network,
                subnetwork=args.subnetwork,
                external_ip=not args.no_external_ip,
            ),
            script_file=script_file,
        )
        for i in range(args.num_nodes)
    ]
    if args.save_script:
        with open(args.save_script, "w") as f:
            f.write(script)
    launcher.heading(
        f"startup script of every VM (its task index: metadata tp-index); the gcloud commands "
        f"read it from {script_file}: write it there with --save_script={script_file}"
    )
    launcher.heading(f"---- begin {script_file}")
    print(script, end="")
    launcher.heading(f"---- end {script_file}")
    launcher.heading("firewall rule: the cluster's members reach each other on the worker port")
    _show_call(firewall)
    for call in inserts:
        launcher.heading(
            f"VM {call.body['name']} (the startup-script metadata is the script above)"
        )
        _show_call(requests_.without_startup_script(call))
    launcher.heading("teardown:")
    names = requests_.vm_names(args.cluster, args.num_nodes)
    for call in requests_.vm_delete(args.project, args.zone, args.cluster, names):
        launcher.show_command(call.gcloud)
    launcher.show_cost(cost)
    if args.dry_run:
        return 0
    session = gcp_client.authorized_session()
    gcp_client.send(session, firewall, allow_conflict=True)
    for call in inserts:
        gcp_client.send(session, call)
    return 0


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
            _show_call(call)
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
    p.add_argument("--project", help="GCP project id.")
    p.add_argument("--region", default="us-central1", help="Vertex AI region.")
    _add_gpu_flags(p, default_machine="a2-highgpu-8g")
    p.add_argument("--display_name", help="Job display name (default: tp-train-TIMESTAMP).")
    p.add_argument("--service_account", help="Service account the job runs as.")
    p.add_argument("--base_output_dir", help="Vertex AI's output dir (default: MODEL_DIR/vertex).")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("vm", help="A cluster of Compute Engine GPU VMs.")
    p.add_argument("--project", help="GCP project id.")
    p.add_argument("--zone", help="Zone of every VM, e.g. us-central1-a.")
    p.add_argument("--cluster", help="Cluster name; VMs are CLUSTER-0 .. CLUSTER-(N-1).")
    _add_gpu_flags(p, default_machine="a2-highgpu-8g")
    p.add_argument("--service_account", help="Service account e-mail of the VMs (required).")
    p.add_argument(
        "--termination_action",
        choices=("STOP", "DELETE"),
        default="STOP",
        help="What a spot reclaim does to a VM; STOP keeps it for a restart.",
    )
    p.add_argument(
        "--vm_image_family",
        default=requests_.DEFAULT_VM_IMAGE_FAMILY,
        help="Deep Learning VM image family.",
    )
    p.add_argument(
        "--vm_image_project", default=requests_.DEFAULT_VM_IMAGE_PROJECT, help="Its project."
    )
    p.add_argument("--worker_port", type=int, default=2222, help="TensorFlow's gRPC port.")
    p.add_argument("--network", default="default", help="VPC network.")
    p.add_argument("--subnetwork", help="Subnetwork name (in the zone's region).")
    p.add_argument(
        "--no_external_ip", action="store_true", help="No external IPs (needs Cloud NAT)."
    )
    p.add_argument(
        "--max_restarts",
        type=int,
        default=5,
        help="Trainer failures in a row before a VM gives up.",
    )
    p.add_argument("--save_script", help="Also write the startup script to this local file.")
    p.set_defaults(run=cmd_vm)

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
