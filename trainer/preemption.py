"""Preemption: notice that the machine is going away, checkpoint, exit with RELAUNCH_EXIT_CODE.

Sources of notice, all seen by one watcher: SIGTERM (every platform), GCE metadata
``instance/preempted`` and ``instance/maintenance-event``, EC2 IMDSv2
``spot/instance-action``. Ctrl-C (SIGINT) takes the same path and exits with
INTERRUPTED_STATUS instead. Every strategy hands the watcher to TF's
PreemptionCheckpointHandler (the coordination service swallows SIGTERM otherwise, and the
handler's defaults miss spot notices). Batch translation and classification of files
(trainer/inference_flags.py) ask the same watcher between batches, polling the cloud in
a thread of its own.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

from pipeline.cli import INTERRUPTED_STATUS

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
    """True when GCE says this VM is preempted or about to be stopped for host maintenance.

    A live migration (``MIGRATE_ON_HOST_MAINTENANCE``) keeps the VM and its processes
    running: it is no reason to stop.
    """
    headers = {"Metadata-Flavor": "Google"}
    status, body = _get(f"{base}/computeMetadata/v1/instance/preempted", headers=headers)
    if status == 200 and body.strip().upper() == "TRUE":
        return True
    status, body = _get(f"{base}/computeMetadata/v1/instance/maintenance-event", headers=headers)
    return status == 200 and body.strip().upper().startswith("TERMINATE")


EC2_TOKEN_SECONDS = 21600  # the longest session IMDSv2 grants (6 hours)
_ec2_tokens: dict[str, tuple[str, float]] = {}  # base -> (token, monotonic time to renew at)


def ec2_spot_interrupted(base: str = EC2_METADATA) -> bool:
    """True when EC2 has scheduled a spot interruption (IMDSv2: a session token first).

    The token is reused until shortly before it expires, so a poll a second costs one
    request; one that is refused (401) is replaced once.
    """
    url = f"{base}/latest/meta-data/spot/instance-action"
    for renew in (False, True):
        token = _ec2_token(base, renew=renew)
        if token is None:
            return False
        status, _ = _get(url, headers={"X-aws-ec2-metadata-token": token})
        if status != 401:
            return status == 200
    return False


def _ec2_token(base: str, *, renew: bool) -> str | None:
    cached = _ec2_tokens.get(base)
    if cached is not None and not renew and time.monotonic() < cached[1]:
        return cached[0]
    request = urllib.request.Request(
        f"{base}/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": str(EC2_TOKEN_SECONDS)},
    )
    try:
        with urllib.request.urlopen(request, timeout=1.0) as response:
            token = response.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None
    _ec2_tokens[base] = (token, time.monotonic() + EC2_TOKEN_SECONDS - 60)
    return token


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


class EvaluationStopped(Exception):
    """A stop (preemption, Ctrl-C) was asked for in the middle of an evaluation: the
    validation loss loop and the BLEU decode raise it between batches."""


class PreemptionHook:
    """Runs each training step under TF's PreemptionCheckpointHandler (every strategy).

    Creating it restores the latest checkpoint (through the manager). On SIGTERM, a cloud
    notice or Ctrl-C, all workers save at the same step and the process exits:
    RELAUNCH_EXIT_CODE after a preemption, INTERRUPTED_STATUS after Ctrl-C (nothing to
    relaunch). grace_period=0: save at the next step, never wait for an hour.
    """

    def __init__(self, strategy, manager, *, platform: str | None = None):
        import tensorflow as tf

        self.watcher = PreemptionWatcher(platform=platform or detect_platform())
        # With a watcher function TF installs no SIGTERM handler of its own: the watcher's
        # handlers count the signals, and TF polls it (about once a second).
        config = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=self.watcher, exit_fn=self.exit, grace_period=0
        )
        resolver = getattr(strategy, "cluster_resolver", None)
        if not any(isinstance(f, _OwnDeprecationFilter) for f in tf.get_logger().filters):
            tf.get_logger().addFilter(_OwnDeprecationFilter())
        self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            resolver, manager, termination_config=config
        )
        self.watcher.install_signal_handlers()

    def run(self, step_fn, *args):
        return self.handler.run(step_fn, *args)

    def exit(self) -> None:
        """After the checkpoint: 130 after Ctrl-C, else RELAUNCH_EXIT_CODE."""
        status = self.watcher.exit_status()
        if status == INTERRUPTED_STATUS:
            print(
                f"interrupted: checkpoint saved; exiting with {status} "
                "(run the same command to resume)",
                flush=True,
            )
        else:
            print(
                f"preempted: checkpoint saved; exiting with {status} (relaunch to resume)",
                flush=True,
            )
        sys.exit(status)

    def close(self) -> None:
        self.watcher.restore_signal_handlers()


class _OwnDeprecationFilter(logging.Filter):
    """Drops the warning TF 2.21 logs when its handler saves: the handler reads its own
    deprecated ``total_run_calls``, which asks nothing of the user at the moment a spot
    VM goes away."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "PreemptionCheckpointHandler.total_run_calls" not in record.getMessage()


class PreemptionWatcher:
    """Says whether training must checkpoint and stop, and why (``reason``).

    Called as PreemptionCheckpointHandler's termination_watcher_fn. The reasons: SIGTERM
    (every platform), SIGINT (Ctrl-C) and the cloud's notice (polled at each call on GCE
    and EC2).
    """

    def __init__(
        self,
        *,
        platform: str = "none",
        interrupt_note: str = "saving a checkpoint, then exiting",
    ):
        self.platform = platform
        self.reason: str | None = None
        self._interrupt_note = (
            f"interrupted: {interrupt_note} (Ctrl-C again to stop at once)\n".encode()
        )
        self._previous: dict[int, object] = {}
        self._polling = threading.Event()

    def __call__(self) -> bool:
        if self.reason is None and self.notice():
            logging.warning("preemption notice from %s metadata", self.platform)
            self.reason = f"{self.platform} notice"
        return self.stop_asked()

    def exit_status(self) -> int:
        """What a command stopped by this watcher exits with: INTERRUPTED_STATUS after
        Ctrl-C (nothing to relaunch), else RELAUNCH_EXIT_CODE."""
        return INTERRUPTED_STATUS if self.reason == "SIGINT" else RELAUNCH_EXIT_CODE

    def stop_asked(self) -> bool:
        """Whether a signal or notice has come (no poll: TF's thread polls the cloud)."""
        return self.reason is not None

    def notice(self) -> bool:
        """One poll of the cloud's metadata service."""
        if self.platform == "gce":
            return gce_preempted()
        if self.platform == "ec2":
            return ec2_spot_interrupted()
        return False

    def start_polling(self, interval: float = 1.0) -> None:
        """Polls the cloud's notice every ``interval`` seconds in a daemon thread (none
        without a cloud), so that ``stop_asked()`` stays free for a loop to call often;
        ``restore_signal_handlers()`` ends it. TF's handler polls for training instead."""
        if self.platform not in ("gce", "ec2") or self._polling.is_set():
            return
        self._polling.set()

        def poll() -> None:
            while self._polling.is_set() and not self():
                time.sleep(interval)

        threading.Thread(target=poll, name="preemption-notice", daemon=True).start()

    def install_signal_handlers(self) -> None:
        """Counts SIGTERM, and SIGINT unless it is ignored or handled by someone else.

        Signals reach Python's main thread only. A multi-worker process needs the handler:
        TF's coordination service swallows an unhandled SIGTERM.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self.on_signal)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self.on_signal)

    def on_signal(self, signum: int, frame=None) -> None:
        name = signal.Signals(signum).name
        if self.reason is None:
            self.reason = name
        if signum == signal.SIGINT:
            # A second Ctrl-C raises KeyboardInterrupt: stop at once, without the checkpoint.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.write(2, self._interrupt_note)

    def restore_signal_handlers(self) -> None:
        self._polling.clear()
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
