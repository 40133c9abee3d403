"""Spot/preemption notices from a fake metadata server reach the trainer, which checkpoints and exits 42.

The watcher functions are tested directly; then a real trainer subprocess on GCE
(``TP_CLOUD=gce``) and on EC2 (``TP_CLOUD=ec2``) sees the fake flip after a few steps.
"""

from __future__ import annotations

import os
import re
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
        server.schedule_maintenance("TERMINATE_ON_HOST_MAINTENANCE")
        assert preemption.gce_preempted(base=server.url) is True
        # The server insists on the header, as the real one does; the watcher sends it.
        url = f"{server.url}/computeMetadata/v1/instance/preempted"
        assert _status(url) == 403
        assert _status(url, {"Metadata-Flavor": "Google"}) == 200


def test_ec2_watcher_sees_the_spot_notice_with_imdsv2():
    with FakeMetadataServer() as server:
        assert preemption.ec2_spot_interrupted(base=server.url) is False
        server.interrupt_spot()
        assert preemption.ec2_spot_interrupted(base=server.url) is True
        assert ("PUT", "/latest/api/token") in server.requests
        # Without the session token IMDSv2 refuses (401), and the watcher says "no notice".
        assert _status(f"{server.url}/latest/meta-data/spot/instance-action") == 401


def test_watchers_say_no_when_nothing_answers():
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens
    assert preemption.gce_preempted(base=closed) is False
    assert preemption.ec2_spot_interrupted(base=closed) is False


@pytest.mark.slow
def test_trainer_checkpoints_and_exits_42_on_a_gce_or_ec2_notice(ende_data, tmp_path):
    # Both clouds at once: the trainers' start-up dominates, and it overlaps.
    clouds = {
        "gce": (
            "GCE_METADATA_HOST_URL",
            FakeMetadataServer.preempt,
            "/computeMetadata/v1/instance/preempted",
        ),
        "ec2": ("EC2_METADATA_URL", FakeMetadataServer.interrupt_spot, "/latest/api/token"),
    }
    servers = {cloud: FakeMetadataServer().__enter__() for cloud in clouds}
    processes = {}
    try:
        for cloud, (url_variable, _, _) in clouds.items():
            flags = [
                f"--data_dir={ende_data}",
                f"--model_dir={tmp_path / cloud}",
                *TINY,
                "--strategy=one_device",
                "--train_steps=2000",
                "--checkpoint_every=10000",
                "--eval_every=10000",
            ]
            processes[cloud] = start(*flags, TP_CLOUD=cloud, **{url_variable: servers[cloud].url})
        outputs = {}
        for cloud, (_, flip, _) in clouds.items():
            outputs[cloud] = wait_for_step(processes[cloud], 5)
            flip(servers[cloud])
        for cloud, process in processes.items():
            outputs[cloud] += process.communicate(timeout=180)[0]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
        for server in servers.values():
            server.__exit__(None, None, None)
    for cloud, (_, _, polled) in clouds.items():
        output = outputs[cloud]
        assert processes[cloud].returncode == 42, output[-3000:]
        assert "preempted: checkpoint saved" in output
        saved = [f for f in os.listdir(tmp_path / cloud) if re.fullmatch(r"ckpt-\d+\.index", f)]
        # One checkpoint, at or after the step the notice came: the notice's, not a periodic one.
        assert len(saved) == 1 and int(saved[0][5:-6]) >= 5, saved
        assert ("GET" if cloud == "gce" else "PUT", polled) in servers[cloud].requests
