"""TensorFlow's native start-up lines kept off the commands' stderr (pipeline/tensorflow_start.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline import tensorflow_start
from tests.tiny_models import ROOT, subprocess_env

# What TensorFlow 2.21 wrote at start-up on a machine without a GPU driver.
BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
STARTUP = [
    BANNER,
    "I0000 00:00:1796683663.926948   30418 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.\n",
    "I0000 00:00:1796683663.927346   30418 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n",
    "I0000 00:00:1796683663.972479   30418 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.\n",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.\n",
    "E0000 00:00:1796683664.786234   30418 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
]
CUINIT = STARTUP[-1]
OTHERS = [
    "W1207 22:00:00.000001   30418 some_op.cc:9] a warning after the start\n",
    "E1207 22:00:00.000002   30418 coordination.cc:7] a real error\n",
    "/x/y.py:3: UserWarning: a Python warning written meanwhile\n",
    "To enable the following instructions: not after a dropped line, so kept\n",
]


def test_errors_only_by_default_and_the_cuinit_error_only_without_a_driver():
    assert tensorflow_start.kept_lines(STARTUP + OTHERS, 2) == OTHERS[1:]
    assert tensorflow_start.kept_lines(STARTUP + OTHERS, 1) == OTHERS
    # A GPU machine whose driver loads but fails: its cuInit error is shown.
    assert tensorflow_start.kept_lines([BANNER, CUINIT], 2) == [CUINIT]
    assert tensorflow_start.kept_lines(STARTUP + OTHERS, 3) == OTHERS[2:]
    assert tensorflow_start.kept_lines(STARTUP + OTHERS, 0) == STARTUP + OTHERS


def test_what_others_write_to_descriptor_2_meanwhile_is_passed_on_in_order():
    script = (
        "import os, sys\n"
        "from pipeline import tensorflow_start\n"
        "print('before', file=sys.stderr)\n"
        "with tensorflow_start._stderr_filtered():\n"
        f"    os.write(2, {''.join(STARTUP[:3]).encode()!r})\n"
        "    os.write(2, b'a C library line\\n')\n"
        "    print('a Python line', file=sys.stderr)\n"
        "print('after', file=sys.stderr)\n"
    )
    done = _python("-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "before\na C library line\na Python line\nafter\n"


@pytest.mark.parametrize(
    "program, args, message",
    [
        ("train", ["--data_dir=/nonexistent", "--model_dir=/tmp/m"], "--data_dir: "),
        ("translate", ["--model_dir=/", "--input=README.md", "--output=OUT"], "--model_dir: / has"),
        ("classify", ["--model_dir=/", "--input=README.md", "--output=OUT"], "--model_dir: / has"),
        ("export", ["--model_dir=/nonexistent", "--export_dir=/tmp/e"], "/nonexistent"),
        ("tune", ["--model_dir=/nonexistent"], "/nonexistent"),
    ],
)
def test_a_user_error_after_tensorflow_started_is_the_only_line_on_stderr(
    program, args, message, tmp_path
):
    args = [arg.replace("OUT", str(tmp_path / "out")) for arg in args]
    env = subprocess_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")  # the commands' own default
    done = _python("-m", f"trainer.{program}", *args, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith(f"{program}: error: ") and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "out").exists()


def test_without_a_descriptor_2_tensorflow_still_starts():
    script = (
        "import os, sys\n"
        "os.close(2)\n"
        "from pipeline import tensorflow_start\n"
        "tensorflow_start.start()\n"
        "print('tensorflow' in sys.modules)\n"
    )
    done = _python("-c", script)
    assert (done.returncode, done.stdout) == (0, "True\n")


@pytest.mark.parametrize("setting, expected", [(None, "pooled"), ("false", "malloc")])
def test_the_cpu_allocator_pools_memory_unless_the_environment_says_otherwise(setting, expected):
    script = (
        "from pipeline import tensorflow_start\n"
        "tensorflow_start.start()\n"
        "import tensorflow as tf\n"
        "tf.ones([512, 512])\n"
        "try:\n"  # only TensorFlow's own (BFC) allocator keeps these figures
        "    print('pooled' if tf.config.experimental.get_memory_info('CPU:0')['peak'] else 0)\n"
        "except ValueError:\n"
        "    print('malloc')\n"
    )
    env = subprocess_env()
    env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    if setting is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = setting
    done = _python("-c", script, env=env)
    assert (done.returncode, done.stdout) == (0, f"{expected}\n"), done.stderr


def _python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env or subprocess_env(),
        cwd=ROOT,
        timeout=300,
    )
