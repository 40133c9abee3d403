"""Tests for pipeline/tfds_sources.py through pipeline/sources.py: prepared TFDS datasets of
both kinds, config and version choice, and the fatal messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.sources import RawRecord, Reject
from tests import testdata
from tests.sources_testing import error, read, records, rejects, resolve

# TFDS.


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> Path:
    import tensorflow_datasets as tfds

    data_dir = tmp_path_factory.mktemp("tfds")
    pairs = tfds.features.FeaturesDict({"de": tfds.features.Text(), "en": tfds.features.Text()})
    testdata.write_tfds_dataset(
        data_dir / "tiny_pairs" / "de-en" / "1.0.0",
        pairs,
        {
            "train": [{"de": "Hallo", "en": "Hello"}, {"de": b"\xff", "en": "Bad"}],
            "validation": [{"de": "Ja", "en": "Yes"}],
        },
    )
    reviews = tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=["neg", "pos"])}
    )
    testdata.write_tfds_dataset(
        data_dir / "imdb_reviews" / "plain_text" / "1.0.0",
        reviews,
        {
            "train": [{"text": "great", "label": 1}, {"text": "odd", "label": -1}],
            "test": [{"text": "awful", "label": 0}],
            "unsupervised": [{"text": "meh", "label": -1}],
        },
    )
    return data_dir


def test_tfds_pairs(tfds_dir):
    specs = resolve("tfds:tiny_pairs/de-en", tfds_data_dir=str(tfds_dir))
    assert [(s.kind, s.split, s.option("tfds_split")) for s in specs] == [
        ("tfds", None, "train"),
        ("tfds", "validation", "validation"),
    ]
    origin = "tfds:tiny_pairs/de-en"
    assert read(specs) == [
        RawRecord(f"{origin}:train row 1", ("Hello", "Hallo"), None, None),
        Reject(
            f"{origin}:train row 2", "undecodable", "text: not UTF-8 (invalid start byte at byte 0)"
        ),
        RawRecord(f"{origin}:validation row 1", ("Yes", "Ja"), None, "validation"),
    ]
    swapped = resolve(
        "tfds:tiny_pairs", tfds_data_dir=str(tfds_dir), source_lang="de", target_lang="en"
    )
    assert records(read(swapped))[0] == (("Hallo", "Hello"), None, None)


def test_tfds_reviews(tfds_dir):
    specs = resolve("tfds:imdb_reviews", dataset="imdb", tfds_data_dir=str(tfds_dir))
    assert [(s.split, s.option("tfds_split")) for s in specs] == [("test", "test"), (None, "train")]
    items = read(specs)
    assert records(items) == [(("awful",), 0, "test"), (("great",), 1, None)]
    assert rejects(items) == [("tfds:imdb_reviews:train row 2", "invalid_label")]


def test_tfds_errors(tfds_dir, tmp_path):
    assert error(input="tfds:tiny_pairs") == (
        "--tfds_data_dir: required with --input=tfds:tiny_pairs "
        "(the directory the dataset was prepared in; nothing is downloaded)"
    )
    assert error(input="tfds:wmt14", tfds_data_dir=str(tmp_path)) == (
        f"--input: tfds:wmt14 is not prepared in --tfds_data_dir={tmp_path} "
        f"(no {tmp_path}/wmt14/<version>/dataset_info.json)"
    )
    assert error(input="tfds:tiny_pairs", tfds_data_dir=str(tfds_dir), source_lang="fr") == (
        "--input: tfds:tiny_pairs has features ['de', 'en'], not fr"
    )
    assert error(
        input="tfds:tiny_pairs", validation_input="tfds:tiny_pairs", tfds_data_dir=str(tfds_dir)
    ) == (
        "--validation_input: tfds: datasets are read from --input only, "
        "with their own validation and test splits"
    )


def test_tfds_unloadable_directory(tfds_dir, tmp_path):
    broken = tmp_path / "tiny_pairs" / "de-en" / "1.0.0"
    shutil.copytree(tfds_dir / "tiny_pairs" / "de-en" / "1.0.0", broken)
    (broken / "dataset_info.json").write_text("{not json")
    assert error(input="tfds:tiny_pairs/de-en", tfds_data_dir=str(tmp_path)).startswith(
        f"--input: cannot load tfds:tiny_pairs/de-en from {broken}: "
    )


def test_tfds_picks_config_and_newest_version(tfds_dir, tmp_path):
    prepared = tfds_dir / "tiny_pairs" / "de-en" / "1.0.0"
    for version in ("1.9.0", "1.10.0"):
        shutil.copytree(prepared, tmp_path / "tiny_pairs" / "de-en" / version)
    (tmp_path / "tiny_pairs" / "de-en" / "incomplete.X_2.0.0").mkdir()
    [train, _] = resolve("tfds:tiny_pairs", tfds_data_dir=str(tmp_path))
    assert train.option("tfds_dir") == f"{tmp_path}/tiny_pairs/de-en/1.10.0"
    shutil.copytree(prepared, tmp_path / "tiny_pairs" / "en-de" / "1.0.0")
    assert error(input="tfds:tiny_pairs", tfds_data_dir=str(tmp_path)) == (
        f"--input: tfds:tiny_pairs has configs de-en, en-de in {tmp_path}; "
        "name one as tfds:tiny_pairs/CONFIG"
    )
