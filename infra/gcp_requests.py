"""The exact requests the GCP launcher sends, built as data (REST bodies, command lines).

Nothing here talks to a cloud: the CLI (infra/gcp.py) prints these with --dry_run and
sends them otherwise. REST bodies use the APIs' JSON field names, so they are the bodies
of ``projects.locations.customJobs.create`` (Vertex AI), ``instances.insert`` and
``firewalls.insert`` (Compute Engine) as documented.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import urllib.parse

from infra.machines import GcpShape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP_FILE = os.path.join(ROOT, "setup.py")
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
COMPUTE = "https://compute.googleapis.com/compute/v1"
DATAFLOW = "https://dataflow.googleapis.com/v1b3"
LOGGING = "https://logging.googleapis.com/v2"
DEFAULT_VM_IMAGE_FAMILY = "common-cu124-debian-11-py310"
DEFAULT_VM_IMAGE_PROJECT = "deeplearning-platform-release"


@dataclasses.dataclass(frozen=True)
class RestCall:
    """One REST request and the gcloud command that does the same."""

    method: str
    url: str
    body: dict | None = None
    gcloud: tuple[str, ...] = ()


def vertex_endpoint(region: str) -> str:
    return f"https://{region}-aiplatform.googleapis.com/v1"


# ---- Dataflow -----------------------------------------------------------------------------


def dataflow_command(
    *,
    module: str,
    job_args: list[str],
    project: str,
    region: str,
    temp_root: str,
    machine_type: str,
    max_num_workers: int,
    job_name: str,
    service_account: str | None = None,
    network: str | None = None,
    subnetwork: str | None = None,
    public_ips: bool = True,
    python: str = sys.executable,
) -> list[str]:
    """``python -m MODULE JOB_ARGS --runner=DataflowRunner ...``: how a Beam job is submitted.

    ``--setup_file`` makes Dataflow install this project (and its requirements) on workers.
    """
    beam = [
        "--runner=DataflowRunner",
        f"--project={project}",
        f"--region={region}",
        f"--temp_location={temp_root}/tmp",
        f"--staging_location={temp_root}/staging",
        f"--setup_file={SETUP_FILE}",
        f"--machine_type={machine_type}",
        f"--max_num_workers={max_num_workers}",
        f"--job_name={job_name}",
    ]
    if service_account:
        beam.append(f"--service_account_email={service_account}")
    if network:
        beam.append(f"--network={network}")
    if subnetwork:
        beam.append(f"--subnetwork={subnetwork}")
    if not public_ips:
        beam.append("--no_use_public_ips")
    return [python, "-m", module, *job_args, *beam]


# ---- Vertex AI ----------------------------------------------------------------------------


def vertex_custom_job(
    *,
    display_name: str,
    image: str,
    shape: GcpShape,
    num_nodes: int,
    spot: bool,
    container_args: list[str],
    base_output_dir: str,
    service_account: str | None = None,
    boot_disk_gb: int = 200,
    labels: dict[str, str] | None = None,
) -> dict:
    """The CustomJob resource: pool 0 is the chief (1 replica), pool 1 the other N-1 workers.

    Vertex AI sets TF_CONFIG in the chief+worker layout; restartJobOnWorkerRestart restarts
    every replica when one is preempted, and the trainer resumes from --model_dir.
    """

    def pool(replicas: int) -> dict:
        return {
            "machineSpec": {
                "machineType": shape.machine_type,
                "acceleratorType": shape.accelerator.vertex_name,
                "acceleratorCount": shape.count,
            },
            "replicaCount": str(replicas),
            "diskSpec": {"bootDiskType": "pd-ssd", "bootDiskSizeGb": boot_disk_gb},
            "containerSpec": {
                "imageUri": image,
                "args": list(container_args),
                "env": [{"name": "TP_CLOUD", "value": "gce"}],
            },
        }

    pools = [pool(1)] + ([pool(num_nodes - 1)] if num_nodes > 1 else [])
    job_spec: dict = {
        "workerPoolSpecs": pools,
        "scheduling": {
            "strategy": "SPOT" if spot else "STANDARD",
            "restartJobOnWorkerRestart": True,
        },
        "baseOutputDirectory": {"outputUriPrefix": base_output_dir},
    }
    if service_account:
        job_spec["serviceAccount"] = service_account
    body = {"displayName": display_name, "jobSpec": job_spec}
    if labels:
        body["labels"] = dict(labels)
    return body


def vertex_create(project: str, region: str, body: dict) -> RestCall:
    parent = f"projects/{project}/locations/{region}"
    return RestCall(
        "POST",
        f"{vertex_endpoint(region)}/{parent}/customJobs",
        body,
        (
            "gcloud", "ai", "custom-jobs", "create", f"--project={project}", f"--region={region}",
            f"--display-name={body['displayName']}", "--config=job_spec.json",
        ),
    )  # fmt: skip


def vertex_job_name(project: str, region: str, job: str) -> str:
    """A job id or full resource name -> the full resource name."""
    if job.startswith("projects/"):
        return job
    return f"projects/{project}/locations/{region}/customJobs/{job}"


def vertex_status(project: str, region: str, job: str) -> RestCall:
    name = vertex_job_name(project, region, job)
    gcloud = ("gcloud", "ai", "custom-jobs", "describe", name, f"--region={region}")
    return RestCall("GET", f"{vertex_endpoint(region)}/{name}", None, gcloud)


def vertex_cancel(project: str, region: str, job: str) -> RestCall:
    name = vertex_job_name(project, region, job)
    gcloud = ("gcloud", "ai", "custom-jobs", "cancel", name, f"--region={region}")
    return RestCall("POST", f"{vertex_endpoint(region)}/{name}:cancel", {}, gcloud)


def vertex_logs(project: str, region: str, job: str) -> RestCall:
    job_id = vertex_job_name(project, region, job).rsplit("/", 1)[1]
    log_filter = f'resource.type="ml_job" AND resource.labels.job_id="{job_id}"'
    gcloud = ("gcloud", "ai", "custom-jobs", "stream-logs", vertex_job_name(project, region, job))
    return _entries_list(project, log_filter, gcloud + (f"--region={region}",))


# ---- Dataflow jobs ------------------------------------------------------------------------


def dataflow_status(project: str, region: str, job: str) -> RestCall:
    url = f"{DATAFLOW}/projects/{project}/locations/{region}/jobs/{job}"
    gcloud = ("gcloud", "dataflow", "jobs", "describe", job, f"--project={project}")
    return RestCall("GET", url, None, gcloud + (f"--region={region}",))


def dataflow_cancel(project: str, region: str, job: str) -> RestCall:
    url = f"{DATAFLOW}/projects/{project}/locations/{region}/jobs/{job}"
    gcloud = ("gcloud", "dataflow", "jobs", "cancel", job, f"--project={project}")
    body = {"requestedState": "JOB_STATE_CANCELLED"}
    return RestCall("PUT", url, body, gcloud + (f"--region={region}",))


def dataflow_logs(project: str, region: str, job: str) -> RestCall:
    log_filter = f'resource.type="dataflow_step" AND resource.labels.job_id="{job}"'
    gcloud = ("gcloud", "logging", "read", log_filter, f"--project={project}", "--order=asc")
    return _entries_list(project, log_filter, gcloud)


def _entries_list(project: str, log_filter: str, gcloud: tuple[str, ...]) -> RestCall:
    body = {
        "resourceNames": [f"projects/{project}"],
        "filter": log_filter,
        "orderBy": "timestamp asc",
        "pageSize": 1000,
    }
    return RestCall("POST", f"{LOGGING}/entries:list", body, gcloud)


# ---- Compute Engine VMs -------------------------------------------------------------------


def vm_names(cluster: str, num_nodes: int) -> list[str]:
    """Instance names; the startup script derives its peers' hostnames from the same rule."""
    return [f"{cluster}-{i}" for i in range(num_nodes)]


def network_tag(cluster: str) -> str:
    return f"{cluster}-member"


def compute_instance(
    *,
    project: str,
    zone: str,
    cluster: str,
    index: int,
    shape: GcpShape,
    spot: bool,
    termination_action: str,
    service_account: str,
    startup_script: str,
    image_family: str = DEFAULT_VM_IMAGE_FAMILY,
    image_project: str = DEFAULT_VM_IMAGE_PROJECT,
    boot_disk_gb: int = 200,
    network: str = "default",
    subnetwork: str | None = None,
    external_ip: bool = True,
) -> dict:
    """The ``instances.insert`` body of VM ``index`` of ``cluster``."""
    if spot:
        scheduling = {
            "provisioningModel": "SPOT",
            "instanceTerminationAction": termination_action,
            "onHostMaintenance": "TERMINATE",
            "automaticRestart": False,
        }
    else:  # GPU VMs cannot live-migrate: maintenance stops them, then they restart
        scheduling = {
            "provisioningModel": "STANDARD",
            "onHostMaintenance": "TERMINATE",
            "automaticRestart": True,
        }
    # gVNIC: A3 machines require it, the others run faster with it.
    interface: dict = {
        "network": f"projects/{project}/global/networks/{network}",
        "nicType": "GVNIC",
    }
    if subnetwork:
        region = zone.rsplit("-", 1)[0]
        interface["subnetwork"] = f"projects/{project}/regions/{region}/subnetworks/{subnetwork}"
    if external_ip:  # to pull the image and reach GCS without Cloud NAT / Private Google Access
        interface["accessConfigs"] = [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}]
    return {
        "name": vm_names(cluster, index + 1)[index],
        "machineType": f"zones/{zone}/machineTypes/{shape.machine_type}",
        "guestAccelerators": [
            {
                "acceleratorType": (
                    f"projects/{project}/zones/{zone}/acceleratorTypes/"
                    + shape.accelerator.compute_name
                ),
                "acceleratorCount": shape.count,
            }
        ],
        "scheduling": scheduling,
        "disks": [
            {
                "boot": True,
                "autoDelete": True,
                "initializeParams": {
                    "sourceImage": f"projects/{image_project}/global/images/family/{image_family}",
                    "diskSizeGb": str(boot_disk_gb),
                    "diskType": f"zones/{zone}/diskTypes/pd-ssd",
                },
            }
        ],
        "networkInterfaces": [interface],
        "serviceAccounts": [{"email": service_account, "scopes": [CLOUD_PLATFORM_SCOPE]}],
        "metadata": {
            "items": [
                {"key": "tp-index", "value": str(index)},
                {"key": "install-nvidia-driver", "value": "True"},
                {"key": "startup-script", "value": startup_script},
            ]
        },
        "labels": {"tp-cluster": cluster, "tp-index": str(index)},
        "tags": {"items": [network_tag(cluster)]},
    }


def compute_insert(project: str, zone: str, body: dict, *, script_file: str) -> RestCall:
    scheduling, shape = body["scheduling"], body["guestAccelerators"][0]
    items = {i["key"]: i["value"] for i in body["metadata"]["items"]}
    disk = body["disks"][0]["initializeParams"]
    family = disk["sourceImage"].split("/")
    gcloud = [
        "gcloud", "compute", "instances", "create", body["name"],
        f"--project={project}", f"--zone={zone}",
        f"--machine-type={body['machineType'].rsplit('/', 1)[1]}",
        f"--accelerator=type={shape['acceleratorType'].rsplit('/', 1)[1]},count={shape['acceleratorCount']}",
        f"--provisioning-model={scheduling['provisioningModel']}",
        f"--maintenance-policy={scheduling['onHostMaintenance']}",
    ]  # fmt: skip
    if "instanceTerminationAction" in scheduling:
        gcloud.append(f"--instance-termination-action={scheduling['instanceTerminationAction']}")
    gcloud += [
        f"--image-family={family[-1]}", f"--image-project={family[1]}",
        f"--boot-disk-size={disk['diskSizeGb']}GB", "--boot-disk-type=pd-ssd",
        f"--service-account={body['serviceAccounts'][0]['email']}", "--scopes=cloud-platform",
        f"--metadata=tp-index={items['tp-index']},install-nvidia-driver=True",
        f"--metadata-from-file=startup-script={script_file}",
        "--labels=" + ",".join(f"{k}={v}" for k, v in body["labels"].items()),
        f"--tags={','.join(body['tags']['items'])}",
    ]  # fmt: skip
    interface = body["networkInterfaces"][0]
    nic = [f"network={interface['network'].rsplit('/', 1)[1]}", "nic-type=GVNIC"]
    if "subnetwork" in interface:
        nic.append(f"subnet={interface['subnetwork'].rsplit('/', 1)[1]}")
    if "accessConfigs" not in interface:
        nic.append("no-address")
    gcloud.append(f"--network-interface={','.join(nic)}")
    url = f"{COMPUTE}/projects/{project}/zones/{zone}/instances"
    return RestCall("POST", url, body, tuple(gcloud))


def without_startup_script(call: RestCall) -> RestCall:
    """An insert call for display, its startup-script metadata (printed apart) elided."""
    body = json.loads(json.dumps(call.body))
    for item in body["metadata"]["items"]:
        if item["key"] == "startup-script":
            item["value"] = "<the startup script above>"
    return RestCall(call.method, call.url, body, call.gcloud)


def cluster_firewall(*, project: str, cluster: str, worker_port: int, network: str) -> RestCall:
    """Admits the cluster's own members, and nothing else, on the worker port."""
    tag = network_tag(cluster)
    body = {
        "name": f"{cluster}-workers",
        "network": f"projects/{project}/global/networks/{network}",
        "direction": "INGRESS",
        "priority": 1000,
        "sourceTags": [tag],
        "targetTags": [tag],
        "allowed": [{"IPProtocol": "tcp", "ports": [str(worker_port)]}],
        "description": f"TensorFlow workers of training cluster {cluster}",
    }
    gcloud = (
        "gcloud", "compute", "firewall-rules", "create", body["name"], f"--project={project}",
        f"--network={network}", "--direction=INGRESS", f"--allow=tcp:{worker_port}",
        f"--source-tags={tag}", f"--target-tags={tag}",
    )  # fmt: skip
    return RestCall("POST", f"{COMPUTE}/projects/{project}/global/firewalls", body, gcloud)


def vm_status(project: str, zone: str, cluster: str) -> RestCall:
    query = urllib.parse.urlencode({"filter": f"labels.tp-cluster={cluster}"})
    url = f"{COMPUTE}/projects/{project}/zones/{zone}/instances?{query}"
    gcloud = ("gcloud", "compute", "instances", "list", f"--project={project}", f"--zones={zone}")
    return RestCall("GET", url, None, gcloud + (f"--filter=labels.tp-cluster={cluster}",))


def vm_logs(project: str, zone: str, names: list[str]) -> list[RestCall]:
    """The serial console of each VM: where the startup script's and trainer's output goes."""
    where = (f"--project={project}", f"--zone={zone}")
    command = ("gcloud", "compute", "instances", "get-serial-port-output")
    return [
        RestCall(
            "GET",
            f"{COMPUTE}/projects/{project}/zones/{zone}/instances/{name}/serialPort",
            None,
            (*command, name, *where),
        )
        for name in names
    ]


def vm_delete(project: str, zone: str, cluster: str, names: list[str]) -> list[RestCall]:
    """Deletes the VMs (their boot disks go with them) and the cluster's firewall rule."""
    where = (f"--project={project}", f"--zone={zone}", "--quiet")
    calls = [
        RestCall(
            "DELETE",
            f"{COMPUTE}/projects/{project}/zones/{zone}/instances/{name}",
            None,
            ("gcloud", "compute", "instances", "delete", name, *where),
        )
        for name in names
    ]
    rule = f"{cluster}-workers"
    gcloud = ("gcloud", "compute", "firewall-rules", "delete", rule, f"--project={project}")
    url = f"{COMPUTE}/projects/{project}/global/firewalls/{rule}"
    calls.append(RestCall("DELETE", url, None, (*gcloud, "--quiet")))
    return calls
