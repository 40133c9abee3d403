"""Checkpoint selection and averaging: which weights an exported model gets.

    paths = model_checkpoints(model_dir)             # oldest first
    average_checkpoints(model, paths[-5:])           # the paper's "average of the last 5"

Averaging restores each checkpoint into the one model in turn and accumulates its
trainable variables in float64, so memory stays at one model plus one
accumulator however many checkpoints are averaged. Only the model's own variables
are read; optimizer slots and the data position in the checkpoint are ignored.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from trainer import checkpoints


class CheckpointError(ValueError):
    """No usable checkpoint where one was asked for (a one-line, user-facing message)."""


def model_checkpoints(directory: str) -> list[str]:
    """Checkpoint paths (prefixes) listed in ``directory``'s state file, oldest first."""
    state = tf.train.get_checkpoint_state(directory)
    if not state:
        return []
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    return [p for p in paths if tf.io.gfile.exists(p + ".index")]


def best_checkpoint(model_dir: str) -> str | None:
    """The checkpoint kept as best by validation metric (``MODEL_DIR/best``), or None."""
    return tf.train.latest_checkpoint(f"{model_dir.rstrip('/')}/{checkpoints.BEST_DIR}")


class _TrainableVariables(tf.Module):
    """Stands in for the training optimizer, which lists every trainable variable in order."""

    def __init__(self, variables):
        super().__init__()
        self._trainable_variables = list(variables)


def restore_model(model: keras.Model, path: str) -> None:
    """Loads training checkpoint ``path``'s weights into ``model``; CheckpointError if they misfit.

    Keras 3 leaves the layers a model keeps in Python lists (the encoder and decoder
    blocks) out of the model's ``tf.train.Checkpoint`` object graph, so
    ``Checkpoint(model=model)`` alone restores only the embedding. The optimizer's
    ``_trainable_variables`` list reaches every trainable variable, so restoring
    through it too fills them all; the assertion fails if any found no value.
    """
    if not tf.io.gfile.exists(path + ".index"):
        raise CheckpointError(f"{path}: no such checkpoint ({path}.index does not exist)")
    holder = _TrainableVariables(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=holder)
    try:
        checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise CheckpointError(
            f"{path}: does not fit the model in config.json ({str(e).splitlines()[0][:200]})"
        ) from None


def average_checkpoints(model: keras.Model, paths: list[str]) -> None:
    """Sets ``model``'s trainable variables to their element-wise mean over ``paths``.

    The model's other variables (dropout seed states) keep the values of the last checkpoint.
    """
    if not paths:
        raise ValueError("average_checkpoints needs at least one checkpoint")
    variables = model.trainable_variables
    sums = [np.zeros(v.shape, np.float64) for v in variables]
    for path in paths:
        restore_model(model, path)
        for total, variable in zip(sums, variables):
            total += np.asarray(variable.numpy(), np.float64)
    for total, variable in zip(sums, variables):
        variable.assign((total / len(paths)).astype(tf.as_dtype(variable.dtype).as_numpy_dtype))


def save_model_weights(model: keras.Model, directory: str, *, step: int) -> str:
    """Writes ``model``'s weights as ``DIRECTORY/ckpt-STEP`` that `restore_model` reads back.

    The checkpoint has the layout of a training checkpoint without the optimizer slots,
    and a state file with a path relative to ``directory``, so the directory can be
    renamed (or copied to gs://) and ``--checkpoint=DIRECTORY`` still finds it.
    """
    holder = _TrainableVariables(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=holder)
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=1)
    return manager.save(checkpoint_number=step)
