"""Spot/preemption notices from a fake metadata server reach the trainer, which checkpoints and exits 42.

The watcher functions are tested directly; then a real trainer subprocess on GCE
(``TP_CLOUD=gce``) and on EC2 (``TP_CLOUD=ec2``) sees the fake flip after a few steps, and
one on GCE still checkpoints on SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import urllib.error
import urllib.request

import pytest

from tests.fake_metadata import FakeMetadataServer
from tests.train_test import TINY, start, wait_for_step
from trainer import preemption


def _status(url: str, headers: dict | None = None, method: str = "GET") -> int:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_gce_watcher_sees_preemption_and_maintenance():
    with FakeMetadataServer() as server:
        assert preemption.gce_preempted(base=server.url) is False
        server.preempt()
        assert preemption.gce_preempted(base=server.url) is True
    with FakeMetadataServer() as server:
        server.schedule_maintenance("MIGRATE_ON_HOST_MAINTENANCE")  # live: the VM stays up
        assert preemption.gce_preempted(base=server.url) is False
        server.schedule_maintenance("TERMINATE_ON_HOST_MAINTENANCE")
        assert preemption.gce_preempted(base=server.url) is True
        # The server insists on the header, as the real one does; the watcher sends it.
        url = f"{server.url}/computeMetadata/v1/instance/preempted"
        assert _status(url) == 403
        assert _status(url, {"Metadata-Flavor": "Google"}) == 200


def test_ec2_watcher_sees_the_spot_notice_with_imdsv2():
    with FakeMetadataServer() as server:
        token = ("PUT", "/latest/api/token")
        notice = ("GET", "/latest/meta-data/spot/instance-action")
        assert preemption.ec2_spot_interrupted(base=server.url) is False
        assert preemption.ec2_spot_interrupted(base=server.url) is False
        assert server.requests == [token, notice, notice]  # one session token, reused
        server.interrupt_spot()
        assert preemption.ec2_spot_interrupted(base=server.url) is True
        server.expire_tokens()  # refused: one new token, and the poll again
        del server.requests[:]
        assert preemption.ec2_spot_interrupted(base=server.url) is True
        assert server.requests == [notice, token, notice]
        # Without the session token IMDSv2 refuses (401), and the watcher says "no notice".
        assert _status(f"{server.url}/latest/meta-data/spot/instance-action") == 401


def test_watchers_say_no_when_nothing_answers():
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens
    assert preemption.gce_preempted(base=closed) is False
    assert preemption.ec2_spot_interrupted(base=closed) is False


def _sigterm(process, server):
    process.send_signal(signal.SIGTERM)


@pytest.mark.slow
def test_trainer_checkpoints_and_exits_42_on_a_gce_or_ec2_notice_or_sigterm(ende_data, tmp_path):
    # Three trainers at once: their start-up dominates, and it overlaps. The third runs on
    # "GCE" whose metadata never flips, and gets SIGTERM: a signal counts on a cloud too.
    cases = {
        "gce": (
            "gce",
            "GCE_METADATA_HOST_URL",
            lambda process, server: server.preempt(),
            ("GET", "/computeMetadata/v1/instance/preempted"),
        ),
        "ec2": (
            "ec2",
            "EC2_METADATA_URL",
            lambda process, server: server.interrupt_spot(),
            ("PUT", "/latest/api/token"),
        ),
        "gce-sigterm": (
            "gce",
            "GCE_METADATA_HOST_URL",
            _sigterm,
            ("GET", "/computeMetadata/v1/instance/preempted"),
        ),
    }
    servers = {name: FakeMetadataServer().__enter__() for name in cases}
    processes = {}
    try:
        for name, (cloud, url_variable, _, _) in cases.items():
            flags = [
                f"--data_dir={ende_data}",
                f"--model_dir={tmp_path / name}",
                *TINY,
                "--strategy=one_device",
                "--train_steps=2000",
                "--checkpoint_every=10000",
                "--eval_every=10000",
            ]
            processes[name] = start(*flags, TP_CLOUD=cloud, **{url_variable: servers[name].url})
        outputs = {}
        for name, (_, _, act, _) in cases.items():
            outputs[name] = wait_for_step(processes[name], 5)
            act(processes[name], servers[name])
        for name, process in processes.items():
            outputs[name] += process.communicate(timeout=180)[0]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
        for server in servers.values():
            server.__exit__(None, None, None)
    for name, (_, _, _, polled) in cases.items():
        output = outputs[name]
        assert processes[name].returncode == 42, f"{name}: {output[-3000:]}"
        assert "preempted: checkpoint saved" in output
        saved = [f for f in os.listdir(tmp_path / name) if re.fullmatch(r"ckpt-\d+\.index", f)]
        # One checkpoint, at or after the step the notice came: the notice's, not a periodic one.
        assert len(saved) == 1 and int(saved[0][5:-6]) >= 5, (name, saved)
        assert polled in servers[name].requests, name


def test_watcher_counts_sigterm_and_a_first_ctrl_c_and_leaves_an_ignored_sigint_alone():
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        watcher = preemption.PreemptionWatcher()
        assert watcher() is False
        watcher.install_signal_handlers()
        assert signal.getsignal(signal.SIGINT) == watcher.on_signal
        assert signal.getsignal(signal.SIGTERM) == watcher.on_signal
        signal.raise_signal(signal.SIGINT)
        assert watcher() is True and watcher.reason == "SIGINT"
        # A second Ctrl-C stops at once.
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        assert watcher.reason == "SIGINT"  # the first reason stands
        watcher.restore_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) == previous[signal.SIGTERM]

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # e.g. a background job of a script
        quiet = preemption.PreemptionWatcher()
        quiet.install_signal_handlers()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        signal.raise_signal(signal.SIGTERM)
        assert quiet.reason == "SIGTERM"
        quiet.restore_signal_handlers()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
