"""An EC2 training cluster: its requests (as data) and the boto3 calls that launch, list and end it.

A cluster is N instances tagged ``tp-cluster=NAME`` and ``tp-index=i`` in one security
group that admits only its own members, only on the worker port. Launching is
idempotent: indexes that already run are kept, missing ones (e.g. reclaimed spot
instances) are launched again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")


class ClusterError(ValueError):
    """The account or region cannot host the cluster as asked (one line)."""


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    cluster: str
    num_nodes: int
    instance_type: str
    ami: str
    instance_profile: str
    spot: bool
    worker_port: int = 2222
    subnet_id: str | None = None
    placement_group: str | None = None

    @property
    def group_name(self) -> str:
        return group_name(self.cluster)


def group_name(cluster: str) -> str:
    return f"{cluster}-workers"


def _tags(spec: ClusterSpec, index: int | None = None) -> list[dict]:
    tags = [{"Key": "tp-cluster", "Value": spec.cluster}]
    if index is None:
        return [{"Key": "Name", "Value": spec.group_name}, *tags]
    return [
        {"Key": "Name", "Value": f"{spec.cluster}-{index}"},
        *tags,
        {"Key": "tp-index", "Value": str(index)},
    ]


def security_group_request(spec: ClusterSpec, vpc_id: str) -> dict:
    return {
        "GroupName": spec.group_name,
        "Description": f"Training cluster {spec.cluster}: members only, on port {spec.worker_port}",
        "VpcId": vpc_id,
        "TagSpecifications": [{"ResourceType": "security-group", "Tags": _tags(spec)}],
    }


def ingress_request(group_id: str, port: int) -> dict:
    """The group's one inbound rule: TCP on the worker port, from members of the group itself."""
    return {
        "GroupId": group_id,
        "IpPermissions": [
            {
                "IpProtocol": "tcp",
                "FromPort": port,
                "ToPort": port,
                "UserIdGroupPairs": [{"GroupId": group_id, "Description": "cluster members"}],
            }
        ],
    }


def run_instances_request(spec: ClusterSpec, *, index: int, group_id: str, user_data: str) -> dict:
    request = {
        "ImageId": spec.ami,
        "InstanceType": spec.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "IamInstanceProfile": (
            {"Arn": spec.instance_profile}
            if spec.instance_profile.startswith("arn:")
            else {"Name": spec.instance_profile}
        ),
        "SecurityGroupIds": [group_id],
        # IMDSv2 only; hop limit 2 so a container on the instance reaches it too.
        "MetadataOptions": {
            "HttpTokens": "required",
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": 2,
        },
        # The user-data fails closed with `shutdown`: that must end the instance's billing.
        "InstanceInitiatedShutdownBehavior": "terminate",
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": _tags(spec, index)},
            {"ResourceType": "volume", "Tags": _tags(spec, index)},
        ],
        "UserData": user_data,
    }
    if spec.spot:
        request["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            },
        }
    if spec.subnet_id:
        request["SubnetId"] = spec.subnet_id
    if spec.placement_group:
        request["Placement"] = {"GroupName": spec.placement_group}
    return request


def members_filter(cluster: str) -> list[dict]:
    return [
        {"Name": "tag:tp-cluster", "Values": [cluster]},
        {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
    ]


# ---- calls --------------------------------------------------------------------------------


def members(ec2, cluster: str) -> list[dict]:
    """The cluster's live instances, by tp-index: dicts of index, id, type, market, state, ip."""
    rows = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=members_filter(cluster)):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                rows.append(
                    {
                        "index": int(tags.get("tp-index", -1)),
                        "id": instance["InstanceId"],
                        "type": instance["InstanceType"],
                        "market": instance.get("InstanceLifecycle", "on-demand"),
                        "state": instance["State"]["Name"],
                        "private_ip": instance.get("PrivateIpAddress", "-"),
                    }
                )
    return sorted(rows, key=lambda r: (r["index"], r["id"]))


def vpc_of(ec2, subnet_id: str | None) -> str:
    if subnet_id:
        subnets = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
        return subnets[0]["VpcId"]
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ClusterError("this region has no default VPC: pass --subnet_id")
    return vpcs[0]["VpcId"]


def ensure_security_group(ec2, spec: ClusterSpec) -> str:
    vpc_id = vpc_of(ec2, spec.subnet_id)
    found = ec2.describe_security_groups(
        Filters=[
            {"Name": "group-name", "Values": [spec.group_name]},
            {"Name": "vpc-id", "Values": [vpc_id]},
        ]
    )["SecurityGroups"]
    if found:
        return found[0]["GroupId"]
    group_id = ec2.create_security_group(**security_group_request(spec, vpc_id))["GroupId"]
    ec2.authorize_security_group_ingress(**ingress_request(group_id, spec.worker_port))
    return group_id


def launch(ec2, spec: ClusterSpec, user_data: Callable[[int], str]) -> list[tuple[int, str]]:
    """Launches the indexes the cluster lacks; returns (index, instance id) of the new ones."""
    group_id = ensure_security_group(ec2, spec)
    running = {
        m["index"] for m in members(ec2, spec.cluster) if m["state"] in ("pending", "running")
    }
    launched = []
    for index in range(spec.num_nodes):
        if index in running:
            continue
        request = run_instances_request(
            spec, index=index, group_id=group_id, user_data=user_data(index)
        )
        instance = ec2.run_instances(**request)["Instances"][0]
        launched.append((index, instance["InstanceId"]))
    return launched


def terminate(ec2, cluster: str, *, poll_seconds: float = 15, timeout_s: float = 900) -> list[str]:
    """Terminates every live instance of the cluster, then deletes its security group."""
    ids = [m["id"] for m in members(ec2, cluster)]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)
        ec2.get_waiter("instance_terminated").wait(
            InstanceIds=ids,
            WaiterConfig={
                "Delay": poll_seconds,
                "MaxAttempts": max(1, int(timeout_s / poll_seconds)),
            },
        )
    groups = ec2.describe_security_groups(
        Filters=[
            {"Name": "group-name", "Values": [group_name(cluster)]},
            {"Name": "tag:tp-cluster", "Values": [cluster]},
        ]
    )["SecurityGroups"]
    for group in groups:
        _delete_group(ec2, group["GroupId"], poll_seconds=poll_seconds, timeout_s=timeout_s)
    return ids


def _delete_group(ec2, group_id: str, *, poll_seconds: float, timeout_s: float) -> None:
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ec2.delete_security_group(GroupId=group_id)
            return
        except ClientError as e:
            # Network interfaces of terminated instances release the group a little later.
            if e.response["Error"]["Code"] != "DependencyViolation" or time.monotonic() > deadline:
                raise
            time.sleep(poll_seconds)
