"""Everything about where training runs: devices, the tf.distribute strategy, TF_CONFIG.

The training loop is the same for every strategy; what differs lives here.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf


def configure_devices(*, virtual_devices: int) -> None:
    """Splits the CPU into ``virtual_devices`` logical devices (GPU-less multi-replica runs).

    Must run before TensorFlow initializes its devices, i.e. before any op executes.
    """
    if virtual_devices <= 0:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(virtual_devices)]
    )


def cluster_spec() -> dict | None:
    """The cluster TF_CONFIG names, or None when it names no cluster of more than one task."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError("TF_CONFIG is not valid JSON") from None
    cluster = config.get("cluster") or {}
    tasks = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    return config if tasks > 1 else None


def resolve_strategy_name(name: str, *, num_gpus: int, virtual_devices: int) -> str:
    """``auto``: multi_worker when TF_CONFIG names a cluster, mirrored on several devices."""
    if name != "auto":
        return name
    if cluster_spec():
        return "multi_worker"
    if len(local_devices(num_gpus=num_gpus, virtual_devices=virtual_devices)) > 1:
        return "mirrored"
    return "one_device"


def local_devices(*, num_gpus: int, virtual_devices: int) -> list[str]:
    """The devices replicas run on: up to ``num_gpus`` GPUs (-1: all), else CPU devices."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus[: num_gpus if num_gpus > 0 else None]]
    cpus = tf.config.list_logical_devices("CPU")
    return [d.name for d in cpus[: max(1, virtual_devices)]]


def check_num_gpus(num_gpus: int) -> None:
    """Refuses ``--num_gpus`` beyond the GPUs TensorFlow sees: no silent training on the CPU.

    Lists physical devices, which unlike logical ones does not start the runtime (a
    multi-worker strategy must still configure its collectives afterwards).
    """
    visible = len(tf.config.list_physical_devices("GPU"))
    if num_gpus > visible:
        raise ValueError(
            f"--num_gpus={num_gpus}, but this machine has {visible} GPU"
            f"{'' if visible == 1 else 's'} visible to TensorFlow"
        )


def create_strategy(
    name: str, *, num_gpus: int = -1, virtual_devices: int = 0
) -> tf.distribute.Strategy:
    check_num_gpus(num_gpus)
    name = resolve_strategy_name(name, num_gpus=num_gpus, virtual_devices=virtual_devices)
    if name == "multi_worker":
        # Before anything initializes the runtime: collectives are configured at startup.
        if not cluster_spec():
            raise ValueError(
                "--strategy=multi_worker needs TF_CONFIG naming a cluster of at least two tasks"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = local_devices(num_gpus=num_gpus, virtual_devices=virtual_devices)
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(devices[0])
    if name == "mirrored":
        on_gpu = "GPU" in devices[0].upper()
        cross_device_ops = None if on_gpu else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=cross_device_ops)
    raise ValueError(f"unknown strategy {name!r}")


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def task_id(strategy: tf.distribute.Strategy) -> tuple[str, int]:
    if not is_multi_worker(strategy):
        return "chief", 0
    resolver = strategy.cluster_resolver
    return resolver.task_type, resolver.task_id


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The task that writes checkpoints, summaries and exports to the model dir."""
    if not is_multi_worker(strategy):
        return True
    task_type, index = task_id(strategy)
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and index == 0)


def write_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Where this task writes checkpoints: the model dir for the chief, a scratch dir otherwise.

    Every worker must take part in a multi-worker save, but only the chief's copy is kept.
    """
    if is_chief(strategy):
        return model_dir
    task_type, index = task_id(strategy)
    return f"{model_dir}/.workers/{task_type}-{index}"


def make_tf_config(addresses: list[str], index: int, *, chief: bool = False) -> dict:
    """TF_CONFIG for task ``index`` of a cluster of ``addresses`` (host:port each).

    ``chief=True`` uses the chief+worker layout Vertex AI sets: the first address is the chief.
    """
    if not addresses:
        raise ValueError("a cluster needs at least one address")
    if not 0 <= index < len(addresses):
        raise ValueError(f"task index {index} is outside a cluster of {len(addresses)}")
    if chief:
        cluster = {"chief": addresses[:1]}
        if len(addresses) > 1:
            cluster["worker"] = addresses[1:]
        task = (
            {"type": "chief", "index": 0} if index == 0 else {"type": "worker", "index": index - 1}
        )
    else:
        cluster = {"worker": list(addresses)}
        task = {"type": "worker", "index": index}
    return {"cluster": cluster, "task": task}
