"""Checkpoints: the training state, saved so a crash never leaves a half checkpoint that loads.

tf.train.CheckpointManager writes the data files first and then atomically replaces
the ``checkpoint`` state file, so the newest listed checkpoint is always complete.
Restoring walks back from the newest when one fails to load (a corrupted file), with
a warning. The temp dir of a write that a kill interrupted is removed at the next
start. Every worker of a multi-worker run saves (the save is collective); only
the chief's copy is kept.
"""

from __future__ import annotations

import logging

import tensorflow as tf

BEST_DIR = "best"


class TrainingState:
    """The checkpointed state: model, optimizer (its iterations is the step), data position
    and dropout's random state.

    Keras keeps each dropout layer's random state in a SeedGenerator variable that
    ``Checkpoint(model=...)`` does not reach; it is listed here so that a resumed run
    draws the masks the interrupted run would have drawn. Checkpoints written before
    it was listed restore without it (a fresh random state).
    """

    def __init__(self, *, model, optimizer):
        self.model = model
        self.optimizer = optimizer
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
        self.dropout_seeds = dropout_seed_states(model)
        self.checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=optimizer,
            epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            dropout_seeds=self.dropout_seeds,
        )

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())


def dropout_seed_states(model) -> list:
    """The model's SeedGenerator state variables, in the model's (fixed) layer order."""
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


def restore_latest(checkpoint: tf.train.Checkpoint, directory: str) -> str | None:
    """Restores the newest loadable checkpoint in ``directory``; None when there is none."""
    ckpt_state = tf.train.get_checkpoint_state(directory)
    if not ckpt_state:
        return None
    candidates = list(reversed(ckpt_state.all_model_checkpoint_paths)) or [
        ckpt_state.model_checkpoint_path
    ]
    for i, path in enumerate(candidates):
        try:
            checkpoint.restore(path).expect_partial()
            if i:
                logging.warning("restored the older checkpoint %s instead", path)
            return path
        # A truncated data file surfaces as IndexError ("Read less bytes than requested").
        except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
            logging.warning(
                "checkpoint %s does not load (%s); trying the previous one",
                path,
                str(e).splitlines()[0],
            )
    raise ValueError(f"{directory}: no checkpoint there loads")


class StepCheckpointManager(tf.train.CheckpointManager):
    """Names checkpoints by training step, and restores from the chief's directory.

    TF's PreemptionCheckpointHandler calls ``save()`` without a number and
    ``restore_or_initialize()`` on the manager it is given; these overrides make a
    preemption checkpoint look like any other, and make every worker (whose own
    directory is scratch) resume from the chief's checkpoint.
    """

    def __init__(
        self, state: TrainingState, directory: str, *, max_to_keep: int, restore_from: str
    ):
        super().__init__(state.checkpoint, directory, max_to_keep=max_to_keep)
        remove_interrupted_writes(directory)
        self._state = state
        self._restore_from = restore_from
        self.restored_path: str | None = None

    def save(self, checkpoint_number=None, check_interval=True, options=None):
        if checkpoint_number is None:
            checkpoint_number = self._state.step
        return super().save(
            checkpoint_number=checkpoint_number, check_interval=check_interval, options=options
        )

    def restore_or_initialize(self):
        self.restored_path = restore_latest(self._state.checkpoint, self._restore_from)
        return self.restored_path


def remove_interrupted_writes(directory: str) -> None:
    """Deletes the ``ckpt-N_temp`` dirs of checkpoint writes a kill interrupted.

    They never look like checkpoints (no ``.index`` beside them, not listed in the
    state file), but a save at the same step would not clean them up either.
    """
    for path in tf.io.gfile.glob(f"{directory}/ckpt-*_temp"):
        logging.warning("removing %s, left by an interrupted checkpoint write", path)
        tf.io.gfile.rmtree(path)


def latest_step(model_dir: str) -> int | None:
    """The step of the newest checkpoint in ``model_dir`` (from its name), or None."""
    path = tf.train.latest_checkpoint(model_dir)
    return int(path.rsplit("-", 1)[1]) if path else None
