"""trainer.atomic_dirs: a directory is replaced whole, and the previous one is not lost early."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

from trainer import atomic_dirs


def _build(path, text: str) -> str:
    os.makedirs(path)
    (path / "file.txt").write_text(text)
    return str(path)


@pytest.mark.parametrize("earlier", ["absent", "empty", "complete"])
def test_replace_directory_leaves_only_the_new_directory(tmp_path, earlier):
    final = tmp_path / "out"
    if earlier == "empty":
        os.makedirs(final)
    elif earlier == "complete":
        _build(final, "old")
    tmp = _build(tmp_path / "built", "new")
    atomic_dirs.replace_directory(tmp, str(final))
    assert (final / "file.txt").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_failed_rename_keeps_the_earlier_directory_whole(tmp_path, monkeypatch):
    final = _build(tmp_path / "out", "old")
    tmp = _build(tmp_path / "built", "new")
    real_rename = tf.io.gfile.rename

    def rename(src, dst, overwrite=False):
        if src == tmp:
            raise tf.errors.UnavailableError(None, None, "disk went away")
        return real_rename(src, dst, overwrite)

    monkeypatch.setattr(tf.io.gfile, "rename", rename)
    with pytest.raises(tf.errors.UnavailableError):
        atomic_dirs.replace_directory(tmp, final)
    # The earlier directory was moved aside, complete, not deleted: nothing is lost.
    aside = [n for n in os.listdir(tmp_path) if n.startswith("out.old-")]
    assert len(aside) == 1
    assert (tmp_path / aside[0] / "file.txt").read_text() == "old"


def test_aside_paths_are_fresh_siblings():
    first, second = (atomic_dirs.aside_path("gs://bucket/m/tuned", hidden=True) for _ in range(2))
    assert first != second
    assert first.startswith("gs://bucket/m/.tuned-") and first.endswith(".tmp")
    assert atomic_dirs.aside_path("runs/export/").startswith("runs/export.tmp-")
