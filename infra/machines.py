"""The GPU machines the launchers support: their GPUs (hardware facts) and their cost.

Prices live apart, in the dated table ``infra/prices.json`` (list prices as of its
``as_of`` date; refresh them), overridable with ``--price_table=FILE``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

DEFAULT_PRICE_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prices.json")


class MachineError(ValueError):
    """A machine/accelerator choice the cloud cannot provide; the message names the flag."""


class PriceTableError(ValueError):
    """The price table file is unreadable or malformed."""


@dataclasses.dataclass(frozen=True)
class Accelerator:
    compute_name: str  # Compute Engine's name (guestAccelerators, gcloud --accelerator)
    vertex_name: str  # Vertex AI's AcceleratorType enum name


GCP_ACCELERATORS = {
    a.compute_name: a
    for a in (
        Accelerator("nvidia-tesla-a100", "NVIDIA_TESLA_A100"),
        Accelerator("nvidia-a100-80gb", "NVIDIA_A100_80GB"),
        Accelerator("nvidia-h100-80gb", "NVIDIA_H100_80GB"),
        Accelerator("nvidia-l4", "NVIDIA_L4"),
        Accelerator("nvidia-tesla-t4", "NVIDIA_TESLA_T4"),
        Accelerator("nvidia-tesla-v100", "NVIDIA_TESLA_V100"),
    )
}

# Accelerator-optimized machine types come with their GPUs: (accelerator, count).
GCP_BUNDLED = {
    "a2-highgpu-8g": ("nvidia-tesla-a100", 8),
    "a2-ultragpu-8g": ("nvidia-a100-80gb", 8),
    "a3-highgpu-8g": ("nvidia-h100-80gb", 8),
    **{
        f"g2-standard-{vcpus}": ("nvidia-l4", gpus)
        for vcpus, gpus in ((4, 1), (8, 1), (12, 1), (16, 1), (24, 2), (32, 1), (48, 4), (96, 8))
    },
}
# N1 machines take attached GPUs; per GPU count, the most vCPUs the machine may have.
GCP_N1_ATTACHABLE = {
    "nvidia-tesla-t4": {1: 48, 2: 48, 4: 96},
    "nvidia-tesla-v100": {1: 12, 2: 24, 4: 48, 8: 96},
}
GCP_N1_MACHINES = tuple(f"n1-standard-{n}" for n in (4, 8, 16, 32, 64, 96))

# EC2 instance types: (GPU, count). The GPUs come with the instance type.
AWS_INSTANCES = {
    "p4d.24xlarge": ("A100 40GB", 8),
    "p5.48xlarge": ("H100 80GB", 8),
    **{
        f"{family}.{size}": (gpu, count)
        for family, gpu in (("g5", "A10G 24GB"), ("g6", "L4 24GB"))
        for size, count in (
            ("xlarge", 1),
            ("2xlarge", 1),
            ("4xlarge", 1),
            ("8xlarge", 1),
            ("16xlarge", 1),
            ("12xlarge", 4),
            ("24xlarge", 4),
            ("48xlarge", 8),
        )
    },
}

# Dataflow workers (CPU): memory per vCPU of the families we price.
DATAFLOW_MEMORY_PER_VCPU = {
    "n1-standard": 3.75,
    "n1-highmem": 6.5,
    "n2-standard": 4.0,
    "n2-highmem": 8.0,
    "e2-standard": 4.0,
}


@dataclasses.dataclass(frozen=True)
class GcpShape:
    """A GCP machine type with the GPUs it runs with."""

    machine_type: str
    accelerator: Accelerator
    count: int

    @property
    def bundled(self) -> bool:
        return self.machine_type in GCP_BUNDLED


def gcp_shape(
    machine_type: str, accelerator_type: str | None = None, accelerator_count: int | None = None
) -> GcpShape:
    """Validates a machine/GPU choice: the one place that knows which GPUs fit which machine."""
    supported = sorted(GCP_BUNDLED) + list(GCP_N1_MACHINES)
    if machine_type not in supported:
        raise MachineError(
            f"--machine_type: unknown GCP GPU machine type {machine_type!r}; "
            f"supported: {', '.join(supported)}"
        )
    accelerator = _gcp_accelerator(accelerator_type) if accelerator_type else None
    if machine_type in GCP_BUNDLED:
        name, count = GCP_BUNDLED[machine_type]
        if accelerator and accelerator.compute_name != name:
            raise MachineError(
                f"--accelerator_type: {machine_type} comes with {name}, not {accelerator.compute_name}"
            )
        if accelerator_count not in (None, count):
            raise MachineError(
                f"--accelerator_count: {machine_type} has {count} x {name} built in; "
                f"got {accelerator_count}"
            )
        return GcpShape(machine_type, GCP_ACCELERATORS[name], count)
    if accelerator is None:
        raise MachineError(
            f"--accelerator_type is required with {machine_type}: one of {', '.join(GCP_N1_ATTACHABLE)}"
        )
    limits = GCP_N1_ATTACHABLE.get(accelerator.compute_name)
    if limits is None:
        raise MachineError(
            f"--accelerator_type: {accelerator.compute_name} cannot be attached to N1 machines; "
            f"one of {', '.join(GCP_N1_ATTACHABLE)}"
        )
    count = accelerator_count or 1
    if count not in limits:
        allowed = ", ".join(map(str, limits))
        raise MachineError(
            f"--accelerator_count: {machine_type} takes {allowed} x {accelerator.compute_name}, "
            f"not {count}"
        )
    vcpus = int(machine_type.rsplit("-", 1)[1])
    if vcpus > limits[count]:
        raise MachineError(
            f"--accelerator_count: {count} x {accelerator.compute_name} allows at most "
            f"{limits[count]} vCPUs; {machine_type} has {vcpus}"
        )
    return GcpShape(machine_type, accelerator, count)


def _gcp_accelerator(name: str) -> Accelerator:
    for accelerator in GCP_ACCELERATORS.values():
        if name.lower() == accelerator.compute_name or name.upper() == accelerator.vertex_name:
            return accelerator
    raise MachineError(
        f"--accelerator_type: unknown GPU {name!r}; one of {', '.join(GCP_ACCELERATORS)}"
    )


def aws_instance(instance_type: str) -> tuple[str, int]:
    """(GPU, count) of a supported EC2 instance type."""
    if instance_type not in AWS_INSTANCES:
        raise MachineError(
            f"--instance_type: unknown EC2 GPU instance type {instance_type!r}; "
            f"supported: {', '.join(sorted(AWS_INSTANCES))}"
        )
    return AWS_INSTANCES[instance_type]


def dataflow_worker(machine_type: str) -> tuple[int, float]:
    """(vCPUs, memory GB) of a Dataflow worker machine type."""
    match = re.fullmatch(r"([a-z0-9]+-[a-z]+)-(\d+)", machine_type)
    if not match or match.group(1) not in DATAFLOW_MEMORY_PER_VCPU:
        raise MachineError(
            f"--machine_type: unsupported Dataflow worker type {machine_type!r}; "
            f"use one of the families {', '.join(DATAFLOW_MEMORY_PER_VCPU)} (e.g. n1-standard-4)"
        )
    vcpus = int(match.group(2))
    return vcpus, vcpus * DATAFLOW_MEMORY_PER_VCPU[match.group(1)]


# ---- cost ---------------------------------------------------------------------------------


def load_price_table(path: str = DEFAULT_PRICE_TABLE) -> dict:
    try:
        with open(path) as f:
            table = json.load(f)
    except OSError as e:
        raise PriceTableError(f"cannot read {path} ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise PriceTableError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(table, dict) or "as_of" not in table:
        raise PriceTableError(f"{path} has no 'as_of' date: prices must say when they were true")
    return table


@dataclasses.dataclass(frozen=True)
class CostEstimate:
    """What a run costs at list prices; ``hourly`` is None when the table lacks a price."""

    description: str
    nodes: int
    hourly_per_node: float | None
    hours: float
    as_of: str
    source: str
    missing: str = ""

    @property
    def hourly(self) -> float | None:
        return None if self.hourly_per_node is None else self.hourly_per_node * self.nodes

    def lines(self) -> list[str]:
        where = "infra/prices.json" if self.source == DEFAULT_PRICE_TABLE else self.source
        if self.hourly is None:
            return [f"estimated cost: unknown ({self.missing} in {where})"]
        return [
            f"estimated cost: {self.nodes} x {self.description}: ${self.hourly_per_node:,.2f}/h each, "
            f"${self.hourly:,.2f}/h in all, ${self.hourly * self.hours:,.2f} for {self.hours:g} h",
            f"(list prices as of {self.as_of} from {where}; refresh them before budgeting)",
        ]


def _price(table: dict, cloud: str, kind: str, name: str, spot: bool) -> float | None:
    entry = table.get(cloud, {}).get(kind, {}).get(name)
    if not isinstance(entry, dict):
        return None
    value = entry.get("spot" if spot else "on_demand")
    return float(value) if isinstance(value, (int, float)) else None


def gcp_cost(
    shape: GcpShape, *, nodes: int, spot: bool, hours: float, price_table: str
) -> CostEstimate:
    table = load_price_table(price_table)
    market = "spot" if spot else "on-demand"
    description = (
        f"{shape.machine_type} ({shape.count} x {shape.accelerator.compute_name}) {market}"
    )
    machine = _price(table, "gcp", "machines", shape.machine_type, spot)
    hourly, missing = machine, f"no {market} price for {shape.machine_type}"
    if machine is not None and not shape.bundled:
        gpu = _price(table, "gcp", "accelerators", shape.accelerator.compute_name, spot)
        hourly = None if gpu is None else machine + gpu * shape.count
        missing = f"no {market} price for {shape.accelerator.compute_name}"
    return CostEstimate(
        description,
        nodes,
        hourly,
        hours,
        table["as_of"],
        price_table,
        "" if hourly is not None else missing,
    )


def aws_cost(
    instance_type: str, *, nodes: int, spot: bool, hours: float, price_table: str
) -> CostEstimate:
    table = load_price_table(price_table)
    gpu, count = aws_instance(instance_type)
    market = "spot" if spot else "on-demand"
    hourly = _price(table, "aws", "machines", instance_type, spot)
    return CostEstimate(
        f"{instance_type} ({count} x {gpu}) {market}",
        nodes,
        hourly,
        hours,
        table["as_of"],
        price_table,
        "" if hourly is not None else f"no {market} price for {instance_type}",
    )


def dataflow_cost(
    machine_type: str, *, max_workers: int, hours: float, price_table: str
) -> CostEstimate:
    """An upper bound: every one of ``max_workers`` busy the whole time (batch vCPU + memory)."""
    table = load_price_table(price_table)
    vcpus, memory = dataflow_worker(machine_type)
    rates = table.get("gcp", {}).get("dataflow", {})
    hourly = None
    if isinstance(rates.get("vcpu"), (int, float)) and isinstance(
        rates.get("memory_gb"), (int, float)
    ):
        hourly = vcpus * rates["vcpu"] + memory * rates["memory_gb"]
    return CostEstimate(
        f"Dataflow {machine_type} worker (at most)",
        max_workers,
        hourly,
        hours,
        table["as_of"],
        price_table,
        "" if hourly is not None else "no Dataflow vcpu/memory_gb rates",
    )
