"""GPU training on GCP: a Vertex AI CustomJob (`train`) or a cluster of Compute Engine VMs (`vm`).

Both run the training image's `train` command with the launcher's --data_dir and
--model_dir and the trainer flags given after ``--``; both print every request, the
gcloud equivalents and a cost estimate, and send nothing with --dry_run. The command
line itself is infra/gcp.py.
"""

from __future__ import annotations

from infra import gcp_client, launcher, machines, startup_scripts
from infra import gcp_requests as requests_
from infra.launcher import LauncherError, require, require_scheme

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


def add_train_flags(parser) -> None:
    """The `train` subcommand's flags."""
    parser.add_argument("--project", help="GCP project id.")
    parser.add_argument("--region", default="us-central1", help="Vertex AI region.")
    _add_gpu_flags(parser, default_machine="a2-highgpu-8g")
    parser.add_argument("--display_name", help="Job display name (default: tp-train-TIMESTAMP).")
    parser.add_argument("--service_account", help="Service account the job runs as.")
    parser.add_argument(
        "--base_output_dir", help="Vertex AI's output dir (default: MODEL_DIR/vertex)."
    )


def add_vm_flags(parser) -> None:
    """The `vm` subcommand's flags."""
    parser.add_argument("--project", help="GCP project id.")
    parser.add_argument("--zone", help="Zone of every VM, e.g. us-central1-a.")
    parser.add_argument("--cluster", help="Cluster name; VMs are CLUSTER-0 .. CLUSTER-(N-1).")
    _add_gpu_flags(parser, default_machine="a2-highgpu-8g")
    parser.add_argument("--service_account", help="Service account e-mail of the VMs (required).")
    parser.add_argument(
        "--termination_action",
        choices=("STOP", "DELETE"),
        default="STOP",
        help="What a spot reclaim does to a VM; STOP keeps it for a restart.",
    )
    parser.add_argument(
        "--vm_image_family",
        default=requests_.DEFAULT_VM_IMAGE_FAMILY,
        help="Deep Learning VM image family.",
    )
    parser.add_argument(
        "--vm_image_project", default=requests_.DEFAULT_VM_IMAGE_PROJECT, help="Its project."
    )
    parser.add_argument("--worker_port", type=int, default=2222, help="TensorFlow's gRPC port.")
    parser.add_argument("--network", default="default", help="VPC network.")
    parser.add_argument("--subnetwork", help="Subnetwork name (in the zone's region).")
    parser.add_argument(
        "--no_external_ip", action="store_true", help="No external IPs (needs Cloud NAT)."
    )
    parser.add_argument(
        "--max_restarts",
        type=int,
        default=5,
        help="Trainer failures in a row before a VM gives up.",
    )
    parser.add_argument("--save_script", help="Also write the startup script to this local file.")


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
        display_name=args.display_name or f"tp-train-{launcher.timestamp()}",
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
    gcp_client.show_call(call)
    launcher.heading("job_spec.json for the gcloud command = the jobSpec object above")
    launcher.show_cost(cost)
    launcher.heading("(Compute Engine rates: Vertex AI training bills its own, higher, rates)")
    if args.dry_run:
        return 0
    created = gcp_client.create_custom_job(args.project, args.region, body)
    print(f"created {created}")
    return 0


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
    gcp_client.show_call(firewall)
    for call in inserts:
        launcher.heading(
            f"VM {call.body['name']} (the startup-script metadata is the script above)"
        )
        gcp_client.show_call(requests_.without_startup_script(call))
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
