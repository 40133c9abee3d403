"""scripts/profile_train_step.py: a one-step profile of the real trainer on the small prepared dataset."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.tiny_models import ROOT, run_script, subprocess_env


def profile(*flags: str) -> subprocess.CompletedProcess:
    return run_script("profile_train_step.py", *flags)


@pytest.mark.slow
def test_one_step_profile_lists_matmul_and_the_vocabulary_projection(ende_data):
    result = profile(f"--data_dir={ende_data}", "--steps=1", "--top=10000")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shares = {
        name: float(share)
        for name, share in re.findall(r"^\| (\w+) \| [\d.]+ \| ([\d.]+)% \|$", result.stdout, re.M)
    }
    assert "MatMul" in shares and 0 < shares["MatMul"] <= 100, result.stdout
    assert sum(shares.values()) <= 100.5
    # ops at the root scope count too: the loss kernel runs outside the model's scope
    assert "SparseSoftmaxCrossEntropyWithLogits" in shares, result.stdout
    # the tied embedding's reverse matmul (the logits) and its gradient are profiled by name
    # (--top lists every op: where it ranks in one step's op time depends on the CPU)
    assert re.search(r"^\| `[^`]*embedding[^`]*MatMul[^`]*` \|", result.stdout, re.M), result.stdout


def test_onednn_kernels_count_as_the_op_they_implement():
    names = [
        "encoder/dense/MatMul:MatMul",
        "encoder/dense/MatMul:_MklMatMul",
        "attention/MatMul:_MklNativeBatchMatMulV2",
        "loss:SparseSoftmaxCrossEntropyWithLogits",
        "scope/op:_Mklish",
    ]
    code = "import profile_train_step as p, sys; print([p.op_type(n) for n in sys.argv[1:]])"
    result = subprocess.run(
        [sys.executable, "-c", code, *names],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.join(ROOT, "scripts"),
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(
        ["MatMul", "MatMul", "BatchMatMulV2", "SparseSoftmaxCrossEntropyWithLogits", "_Mklish"]
    )


def test_translation_data_is_required(imdb_data):
    result = profile(f"--data_dir={imdb_data}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"profile_train_step: error: --data_dir: {imdb_data} holds classification data, not translation"
    )


def test_missing_data_dir_is_one_line():
    result = profile()
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == "profile_train_step: error: --data_dir is required"
    )
