"""Preemption: notice that the machine is going away, checkpoint, exit with RELAUNCH_EXIT_CODE.

Sources of notice, all polled by one watcher: SIGTERM (every platform), GCE metadata
``instance/preempted`` and ``instance/maintenance-event``, EC2 IMDSv2
``spot/instance-action``. Multi-worker runs hand the watcher to TF's
PreemptionCheckpointHandler (the coordination service swallows SIGTERM otherwise,
and its own defaults miss spot notices); single-process runs use it directly.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.request

RELAUNCH_EXIT_CODE = 42  # "preempted after a checkpoint: relaunch the same command to resume"

GCE_METADATA = os.environ.get("GCE_METADATA_HOST_URL", "http://metadata.google.internal")
EC2_METADATA = os.environ.get("EC2_METADATA_URL", "http://169.254.169.254")


def _get(
    url: str, *, headers: dict[str, str] | None = None, timeout: float = 1.0
) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (urllib.error.URLError, OSError, ValueError):
        return 0, ""


def gce_preempted(base: str = GCE_METADATA) -> bool:
    """True when GCE says this VM is preempted or about to undergo a disruptive maintenance."""
    headers = {"Metadata-Flavor": "Google"}
    status, body = _get(f"{base}/computeMetadata/v1/instance/preempted", headers=headers)
    if status == 200 and body.strip().upper() == "TRUE":
        return True
    status, body = _get(f"{base}/computeMetadata/v1/instance/maintenance-event", headers=headers)
    return status == 200 and body.strip().upper() not in ("", "NONE")


def ec2_spot_interrupted(base: str = EC2_METADATA) -> bool:
    """True when EC2 has scheduled a spot interruption (IMDSv2: token first)."""
    request = urllib.request.Request(
        f"{base}/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
    )
    try:
        with urllib.request.urlopen(request, timeout=1.0) as response:
            token = response.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return False
    status, _ = _get(
        f"{base}/latest/meta-data/spot/instance-action", headers={"X-aws-ec2-metadata-token": token}
    )
    return status == 200


def detect_platform() -> str:
    """'gce', 'ec2' or 'none': which metadata service answers (the launchers set TP_CLOUD too)."""
    explicit = os.environ.get("TP_CLOUD")
    if explicit in ("gce", "ec2", "none"):
        return explicit
    if (
        _get(
            f"{GCE_METADATA}/computeMetadata/v1/instance/id",
            headers={"Metadata-Flavor": "Google"},
            timeout=0.3,
        )[0]
        == 200
    ):
        return "gce"
    return "none"


class PreemptionHook:
    """Runs each training step under TF's PreemptionCheckpointHandler (every strategy).

    Creating it restores the latest checkpoint (through the manager). On SIGTERM or a
    cloud notice, all workers save at the same step and the process exits with
    RELAUNCH_EXIT_CODE. grace_period=0: save at the next step, never wait for an hour.
    """

    def __init__(self, strategy, manager, *, platform: str | None = None):
        import tensorflow as tf

        self.watcher = PreemptionWatcher(platform=platform or detect_platform())
        watcher_fn = self.watcher.notice if self.watcher.platform != "none" else None

        def exit_fn():
            print(
                f"preempted: checkpoint saved; exiting with {RELAUNCH_EXIT_CODE} (relaunch to resume)",
                flush=True,
            )
            sys.exit(RELAUNCH_EXIT_CODE)

        config = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=watcher_fn, exit_fn=exit_fn, grace_period=0
        )
        resolver = getattr(strategy, "cluster_resolver", None)
        self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            resolver, manager, termination_config=config
        )

    def run(self, step_fn, *args):
        return self.handler.run(step_fn, *args)

    def close(self) -> None:
        self.watcher.stop()


class PreemptionWatcher:
    """Sets ``requested`` on SIGTERM or a cloud preemption notice (polled in a daemon thread)."""

    def __init__(self, *, platform: str = "none", poll_seconds: float = 5.0):
        self.platform = platform
        self.poll_seconds = poll_seconds
        self.requested = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def install_signal_handler(self) -> None:
        """Only for single-process runs: in multi-worker runs TF's handler owns SIGTERM."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.requested.set())

    def notice(self) -> bool:
        """One poll of the cloud; used as PreemptionCheckpointHandler's termination_watcher_fn."""
        if self.platform == "gce":
            return gce_preempted()
        if self.platform == "ec2":
            return ec2_spot_interrupted()
        return False

    def start(self) -> None:
        if self.platform == "none" or self._thread:
            return

        def poll():
            while not self._stop.wait(self.poll_seconds):
                if self.notice():
                    logging.warning("preemption notice from %s metadata", self.platform)
                    self.requested.set()
                    return

        self._thread = threading.Thread(target=poll, name="preemption-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
