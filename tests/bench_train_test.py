"""scripts/bench_train.py: a two-step run of the real benchmark on the small prepared dataset.

keras-hub comes with the `dev` extra; without it these tests fail (they do not skip),
so that CI cannot pass while the benchmark is broken.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from tests.tiny_models import ROOT, run_script

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_report  # noqa: E402

ROW = re.compile(
    r"^\| tiny \| float32 \| ([\d,]+) \| ([\d,]+) \| ([\d.]+)x \|$",
    re.M,
)


def bench(*flags: str) -> subprocess.CompletedProcess:
    return run_script("bench_train.py", *flags)


def require_keras_hub() -> None:
    if importlib.util.find_spec("keras_hub") is None:
        pytest.fail("keras-hub is not installed; the benchmark needs pip install -e '.[bench]'")


@pytest.mark.slow
def test_tiny_run_writes_the_table_into_its_own_section(ende_data, tmp_path):
    require_keras_hub()
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(
        "# Benchmarks\n\n## Training throughput\n\nstale figures\n\n## Inference\n\nkept as is\n"
    )
    result = bench(
        f"--data_dir={ende_data}",
        "--presets=tiny",
        "--precisions=float32",
        "--steps=2",
        "--warmup=1",
        "--repeats=1",
        f"--append_to={doc}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    row = ROW.search(result.stdout)
    assert row, result.stdout
    ours, theirs, ratio = (float(group.replace(",", "")) for group in row.groups())
    assert ours > 0 and theirs > 0 and ratio > 0
    assert "TensorFlow 2." in result.stdout and "--steps=2" in result.stdout

    text = doc.read_text()
    assert "stale figures" not in text
    assert text.count("## Training throughput") == 1
    assert row.group(0) in text
    assert text.endswith("## Inference\n\nkept as is\n")


def tiny_float32_run(ende_data, *flags: str) -> str:
    """One run of `tiny` in float32 with ``flags``; its stdout, after checking its table row."""
    require_keras_hub()
    result = bench(
        f"--data_dir={ende_data}", "--presets=tiny", "--precisions=float32", "--repeats=1", *flags
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    row = ROW.search(result.stdout)
    assert row, result.stdout
    assert all(float(group.replace(",", "")) > 0 for group in row.groups())
    return result.stdout


@pytest.mark.slow
def test_fixed_length_run_feeds_keras_hub_one_shape_and_says_so(ende_data):
    stdout = tiny_float32_run(
        ende_data,
        "--steps=4",
        "--warmup=1",
        "--batch_tokens=512",  # the test data's examples would fill one batch of 4096
        "--keras_batches=fixed_length",
    )
    assert "## Training throughput, keras-hub on fixed-length batches" in stdout
    shape = re.search(r"in fixed-shape batches \((\d+) x (\d+) tokens", stdout)
    assert shape, stdout
    size, length = int(shape.group(1)), int(shape.group(2))
    assert size == 512 // length and length > 1


@pytest.mark.slow
def test_xla_run_trains_both_sides_on_the_bucket_padded_batches(ende_data):
    stdout = tiny_float32_run(ende_data, "--steps=2", "--xla")
    assert "## Training throughput with --xla" in stdout
    assert "every sequence padded to its length bucket's bound" in stdout


def replace_section(document: str, body: str) -> str:
    return bench_report.replace_section(document, "## Training throughput", body)


def test_section_is_created_appended_or_replaced_in_place():
    assert replace_section("", "new") == "# Benchmarks\n\n## Training throughput\n\nnew\n"
    assert replace_section("# B\n\n## Inference\n\nx\n", "new") == (
        "# B\n\n## Inference\n\nx\n\n## Training throughput\n\nnew\n"
    )
    middle = "# B\n\n## Training throughput\n\nold\nolder\n\n## Inference\n\nx\n"
    assert replace_section(middle, "new\n") == (
        "# B\n\n## Training throughput\n\nnew\n\n## Inference\n\nx\n"
    )
    # Only the exact heading is ours; a longer one belongs to another benchmark.
    other = "# B\n\n## Training throughput on TPUs\n\nx\n"
    assert replace_section(other, "new") == other + "\n## Training throughput\n\nnew\n"


def last_line(text: str) -> str:
    """The error line; TensorFlow's own start-up logging may precede it on stderr."""
    return text.strip().splitlines()[-1]


def test_usage_errors_are_one_line(tmp_path):
    require_keras_hub()
    result = bench(f"--data_dir={tmp_path}", "--presets=imdb")
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        "bench_train: error: flag --presets=['imdb']: --presets must name presets among "
        "['base', 'big', 'small', 'tiny']"
    )

    result = bench(f"--data_dir={tmp_path}")
    assert result.returncode == 2
    assert last_line(result.stderr).startswith(
        f"bench_train: error: --data_dir: {tmp_path}: no metadata.json"
    )
    assert "Traceback" not in result.stderr


def test_a_budget_too_small_for_the_longest_pair_is_a_usage_error(ende_data):
    require_keras_hub()
    result = bench(f"--data_dir={ende_data}", "--presets=tiny", "--batch_tokens=100")
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        "bench_train: error: batch_tokens=100 over 1 replicas leaves 100 tokens per replica, "
        "fewer than max_length=256: the longest pairs would not fit"
    )
    assert "Traceback" not in result.stderr


def test_too_few_examples_for_two_fixed_length_batches_is_a_usage_error(ende_data, tmp_path):
    require_keras_hub()
    import dataclasses
    import shutil

    import tensorflow as tf

    from pipeline import features

    # The embedded corpus cut to 6 training pairs: the 3 batches taken (the epoch repeated)
    # hold at most 18 examples, one fixed-length batch of 4096 // longest pair.
    small = str(tmp_path / "small")
    shutil.copytree(ende_data, small)
    metadata = features.load_metadata(small)
    records = list(
        tf.data.TFRecordDataset(
            [os.path.join(small, f) for f in metadata.splits[features.TRAIN].files],
            compression_type=features.SHARD_COMPRESSION,
        )
        .take(6)
        .as_numpy_iterator()
    )
    name = features.shard_name(features.TRAIN, 0, 1)
    for f in metadata.splits[features.TRAIN].files:
        os.remove(os.path.join(small, f))
    options = tf.io.TFRecordOptions(compression_type=features.SHARD_COMPRESSION)
    with tf.io.TFRecordWriter(os.path.join(small, name), options) as writer:
        for record in records:
            writer.write(record)
    splits = {**metadata.splits, features.TRAIN: features.SplitInfo(examples=6, files=[name])}
    with open(os.path.join(small, features.METADATA_FILE), "w") as f:
        f.write(dataclasses.replace(metadata, splits=splits).to_json())
    result = bench(
        f"--data_dir={small}",
        "--presets=tiny",
        "--precisions=float32",
        "--steps=2",
        "--keras_batches=fixed_length",
    )
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        "bench_train: error: --steps=2: its examples fill only one fixed-length batch; "
        "the timing needs two (raise --steps)"
    )
    assert "Traceback" not in result.stderr
