"""Directories that appear whole or not at all (local paths and gs://).

    tmp = aside_path(final)          # build everything in tmp
    ...
    replace_directory(tmp, final)    # then one rename puts it in place

A reader of ``final`` sees the previous complete directory or the new complete one,
never a half-built one: an earlier directory is renamed aside before the new one is
renamed in, and only then deleted.
"""

from __future__ import annotations

import os
import uuid

import tensorflow as tf


def aside_path(final: str, *, hidden: bool = False) -> str:
    """A fresh sibling path of ``final`` to build in (``.name-XXXXXXXX.tmp`` when ``hidden``)."""
    parent, name = os.path.split(final.rstrip("/"))
    tag = uuid.uuid4().hex[:8]
    leaf = f".{name}-{tag}.tmp" if hidden else f"{name}.tmp-{tag}"
    return f"{parent}/{leaf}" if parent else leaf


def replace_directory(tmp_dir: str, final: str) -> None:
    """Renames ``tmp_dir`` to ``final``, moving an earlier ``final`` aside first."""
    old_dir = None
    if tf.io.gfile.exists(final):
        if tf.io.gfile.listdir(final):
            old_dir = f"{final}.old-{uuid.uuid4().hex[:8]}"
            tf.io.gfile.rename(final, old_dir)
        else:
            tf.io.gfile.rmtree(final)
    tf.io.gfile.rename(tmp_dir, final)
    if old_dir is not None:
        tf.io.gfile.rmtree(old_dir)
