"""A multi-worker training cluster on this machine: N trainer processes with TF_CONFIG.

    python -m infra.local_cluster N [--relaunch_on_preemption] [--chief] -- TRAINER FLAGS
    scripts/local_cluster.sh 2 -- --data_dir=DIR --model_dir=DIR --flagfile=configs/tiny.cfg

The same multi-worker path the clouds run (``--strategy=multi_worker``, TF_CONFIG on
free localhost ports). Each output line is prefixed with its worker's index. SIGINT and
SIGTERM are forwarded to every worker (they checkpoint and exit, 42 after SIGTERM and 130
after SIGINT; a second signal kills them). When a worker exits non-zero the others are
stopped and the command exits with that worker's status (42: preempted after a checkpoint;
128+N: killed by signal N). With --relaunch_on_preemption a 42 relaunches the whole cluster, which
resumes from the checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from infra import launcher

PROGRAM = "local_cluster"
RELAUNCH_EXIT_CODE = 42  # trainer.preemption.RELAUNCH_EXIT_CODE, without importing TensorFlow


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(addresses: Sequence[str], index: int, *, chief: bool = False) -> dict:
    """TF_CONFIG of task ``index``: the JSON of trainer.distribution.make_tf_config.

    Built here because that module imports TensorFlow, seconds this launcher need not
    spend; tests/local_cluster_test.py checks the two agree for every cluster size.
    """
    addresses = list(addresses)
    if chief:
        cluster = {"chief": addresses[:1]}
        if len(addresses) > 1:
            cluster["worker"] = addresses[1:]
        task = (
            {"type": "chief", "index": 0} if index == 0 else {"type": "worker", "index": index - 1}
        )
    else:
        cluster = {"worker": addresses}
        task = {"type": "worker", "index": index}
    return {"cluster": cluster, "task": task}


def exit_status(returncode: int) -> int:
    """A child's return code as a shell exit status (killed by signal N -> 128+N)."""
    return 128 - returncode if returncode < 0 else returncode


class LocalCluster:
    """One launch of N worker processes; ``run()`` returns the cluster's exit status."""

    def __init__(
        self,
        num_workers: int,
        trainer_flags: Sequence[str],
        *,
        module: str = "trainer.train",
        chief: bool = False,
        python: str = sys.executable,
        out: TextIO = sys.stdout,
        settle_seconds: float = 5.0,
        grace_seconds: float = 30.0,
    ):
        self.num_workers = num_workers
        self.trainer_flags = list(trainer_flags)
        self.module = module
        self.chief = chief
        self.python = python
        self.out = out
        self.settle_seconds = settle_seconds
        self.grace_seconds = grace_seconds
        self.processes: list[subprocess.Popen] = []
        self.stop_requested = False
        self._lock = threading.Lock()

    def command(self) -> list[str]:
        flags = list(self.trainer_flags)
        if self.num_workers > 1 and not any(f.startswith("--strategy") for f in flags):
            flags.append("--strategy=multi_worker")
        return [self.python, "-m", self.module, *flags]

    def say(self, line: str) -> None:
        with self._lock:
            self.out.write(line if line.endswith("\n") else line + "\n")
            self.out.flush()

    def _pump(self, index: int, stream) -> None:
        for line in iter(stream.readline, ""):
            self.say(f"[{index}] {line}")
        stream.close()

    def start(self) -> list[threading.Thread]:
        addresses = [f"localhost:{port}" for port in free_ports(self.num_workers)]
        pumps = []
        for index in range(self.num_workers):
            env = dict(os.environ)
            env["TF_CONFIG"] = json.dumps(tf_config(addresses, index, chief=self.chief))
            process = subprocess.Popen(
                self.command(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                start_new_session=True,  # signals reach workers only through us, exactly once
            )
            self.processes.append(process)
            self.say(f"[{PROGRAM}] worker {index}: pid {process.pid}, {addresses[index]}")
            pump = threading.Thread(target=self._pump, args=(index, process.stdout), daemon=True)
            pump.start()
            pumps.append(pump)
        return pumps

    def signal_all(self, signum: int) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # it has just exited
                    process.send_signal(signum)

    def forward(self, signum: int, frame=None) -> None:
        """Signal handler: the first signal is forwarded, a second one kills the workers."""
        if self.stop_requested:
            self.say(f"[{PROGRAM}] second signal: killing the workers")
            self.signal_all(signal.SIGKILL)
            return
        self.stop_requested = True
        self.say(f"[{PROGRAM}] forwarding {signal.Signals(signum).name} to the workers")
        self.signal_all(signum)

    def run(self) -> int:
        pumps = self.start()
        failure: int | None = None
        while any(p.poll() is None for p in self.processes):
            failed = [p for p in self.processes if p.poll() not in (None, 0)]
            if failed and failure is None:
                failure = exit_status(failed[0].returncode)
                index = self.processes.index(failed[0])
                self.say(f"[{PROGRAM}] worker {index} exited with {failure}: stopping the others")
                self._stop_others()
            time.sleep(0.1)
        for pump in pumps:
            pump.join(timeout=5)
        if failure is None:
            codes = [exit_status(p.returncode) for p in self.processes]
            failure = next((c for c in codes if c), 0)
        return failure

    def _stop_others(self) -> None:
        # Peers of a preempted worker save and exit by themselves: give them a moment first.
        self._wait_all(self.settle_seconds)
        if not self.stop_requested:  # else they have had the user's signal already
            self.signal_all(signal.SIGTERM)
        if not self._wait_all(self.grace_seconds):
            running = [str(i) for i, p in enumerate(self.processes) if p.poll() is None]
            self.say(
                f"[{PROGRAM}] worker(s) {', '.join(running)} still running after "
                f"{self.grace_seconds:g}s: killing them"
            )
            self.signal_all(signal.SIGKILL)

    def _wait_all(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if all(p.poll() is not None for p in self.processes):
                return True
            time.sleep(0.1)
        return all(p.poll() is not None for p in self.processes)


def run_cluster(
    num_workers: int,
    trainer_flags: Sequence[str],
    *,
    relaunch_on_preemption: bool = False,
    max_relaunches: int = 10,
    **cluster_options,
) -> int:
    """Runs the cluster, relaunching it after a preemption (exit 42) when asked to."""
    relaunches = 0
    while True:
        cluster = LocalCluster(num_workers, trainer_flags, **cluster_options)
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, cluster.forward)
        try:
            status = cluster.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if (
            status != RELAUNCH_EXIT_CODE
            or not relaunch_on_preemption
            or cluster.stop_requested
            or relaunches >= max_relaunches
        ):
            cluster.say(f"[{PROGRAM}] exit status {status}")
            return status
        relaunches += 1
        cluster.say(
            f"[{PROGRAM}] preempted after a checkpoint: relaunching the cluster "
            f"({relaunches} of at most {max_relaunches})"
        )


def build_parser() -> launcher.OneLineParser:
    parser = launcher.OneLineParser(
        prog=f"python -m infra.{PROGRAM}", description=__doc__.split("\n")[0]
    )
    parser.add_argument("num_workers", type=int, help="Worker processes (N).")
    parser.add_argument(
        "--relaunch_on_preemption",
        action="store_true",
        help="Relaunch the whole cluster when it exits with 42 (it resumes from the checkpoint).",
    )
    parser.add_argument(
        "--max_relaunches", type=int, default=10, help="At most this many relaunches."
    )
    parser.add_argument(
        "--chief", action="store_true", help="Chief+worker TF_CONFIG layout (as Vertex AI)."
    )
    parser.add_argument(
        "--module", default="trainer.train", help="Python module every worker runs."
    )
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="Print each worker's TF_CONFIG and command line; start nothing.",
    )
    parser.add_argument(
        "--grace_seconds",
        type=float,
        default=30.0,
        help="After stopping the others with SIGTERM, kill them after this long.",
    )
    return parser


def main(argv: list[str]) -> int:
    own, flags = _split(argv)
    args = build_parser().parse_args(own)
    if args.num_workers < 1:
        raise launcher.LauncherError("N must be at least 1")
    for name in ("grace_seconds", "max_relaunches"):
        if getattr(args, name) < 0:
            raise launcher.LauncherError(f"--{name} must not be negative")
    if not _module_exists(args.module):
        raise launcher.LauncherError(f"--module: no module named {args.module}")
    if not flags:
        raise launcher.LauncherError("give the trainer flags after --, e.g. -- --data_dir=DIR")
    if args.dry_run:
        cluster = LocalCluster(args.num_workers, flags, module=args.module, chief=args.chief)
        addresses = [f"localhost:{port}" for port in free_ports(args.num_workers)]
        for index in range(args.num_workers):
            config = json.dumps(tf_config(addresses, index, chief=args.chief))
            print(f"TF_CONFIG={shlex.quote(config)} {shlex.join(cluster.command())}")
        return 0
    return run_cluster(
        args.num_workers,
        flags,
        relaunch_on_preemption=args.relaunch_on_preemption,
        max_relaunches=args.max_relaunches,
        chief=args.chief,
        module=args.module,
        grace_seconds=args.grace_seconds,
    )


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    # Unlike the cloud launchers, every trainer flag (--data_dir too) goes after --.
    if "--" not in argv:
        return list(argv), []
    at = argv.index("--")
    return list(argv[:at]), list(argv[at + 1 :])


def run(argv: list[str] | None = None) -> int:
    return launcher.run_cli(PROGRAM, main, argv)


if __name__ == "__main__":
    sys.exit(run())
