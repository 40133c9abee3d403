"""The training loop: ``train_and_evaluate(config)``, the same for every strategy.

One ``tf.function`` step runs under ``strategy.run``: each replica computes the
gradient of its summed loss divided by the GLOBAL token (or example) count, the
optimizer sums gradients across replicas, so any split of a batch gives the same
update. Gradient accumulation consumes several batches per step inside the same
function. The data position (epoch, batch in epoch) is checkpointed with the model,
so a resumed run continues the data order instead of replaying it.
"""

from __future__ import annotations

import sys
import threading
import time

import keras
import tensorflow as tf

from pipeline import features
from pipeline.export_contract import EXPORT_SUBDIR
from trainer import (
    bleu_eval,
    checkpoints,
    distribution,
    input_pipeline,
    losses,
    preemption,
    reporting,
    shard_checks,
)
from trainer.config import TrainConfig
from trainer.model import build_model, shift_right
from trainer.model_dir_setup import ModelDirError, prepare_model_dir
from trainer.schedule import WarmupInverseSqrt


def set_precision(precision: str) -> None:
    keras.mixed_precision.set_dtype_policy(precision)


class Trainer:
    """Owns the strategy, the model, the optimizer and the state for one run."""

    def __init__(self, config: TrainConfig, metadata: features.Metadata | None = None):
        """``metadata``: ``config.data_dir``'s, when the caller has read it already."""
        self.config = config
        self.strategy = distribution.create_strategy(
            config.strategy, num_gpus=config.num_gpus, virtual_devices=config.virtual_devices
        )
        self.chief = distribution.is_chief(self.strategy)
        self.meta = metadata or features.load_metadata(config.data_dir)
        if self.meta.task != config.task:
            raise ModelDirError(
                f"--data_dir holds {self.meta.task} data but the model is for {config.task}"
            )
        if config.skip_corrupt_shards:
            self.meta, notes = shard_checks.without_corrupt_shards(
                config.data_dir, self.meta, self.data_splits()
            )
            for note in notes:
                print(f"warning: {note}", flush=True)
        prepare_model_dir(config, self.meta, chief=self.chief)
        set_precision(config.precision)
        # Same global seed on every (re)start: tf.data's seeded shuffles depend on it too.
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = build_model(config.model)
            self.schedule = WarmupInverseSqrt(
                d_model=config.model.d_model,
                warmup_steps=config.warmup_steps,
                scale=config.learning_rate,
            )
            optimizer = keras.optimizers.Adam(
                learning_rate=self.schedule,
                beta_1=config.adam_beta1,
                beta_2=config.adam_beta2,
                epsilon=config.adam_epsilon,
                global_clipnorm=config.clip_norm or None,
            )
            if config.precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.model.trainable_variables)
            self.optimizer = optimizer
            self.state = checkpoints.TrainingState(model=self.model, optimizer=optimizer)
        self.write_dir = distribution.write_dir(config.model_dir, self.strategy)
        self.manager = checkpoints.StepCheckpointManager(
            self.state,
            self.write_dir,
            max_to_keep=config.keep_checkpoints,
            restore_from=config.model_dir,
        )
        self.best_manager = checkpoints.StepCheckpointManager(
            self.state,
            f"{self.write_dir}/{checkpoints.BEST_DIR}",
            max_to_keep=1,
            restore_from=config.model_dir,
        )
        self.metrics = reporting.MetricsLog(
            config.model_dir,
            enabled=self.chief,
            loss_label=reporting.loss_label(
                config.task == features.TRANSLATION, config.label_smoothing
            ),
        )
        self.summaries = reporting.Summaries(config.model_dir, enabled=self.chief)
        self._train_step = self._make_train_step()
        self._eval_step = self._make_eval_step()
        self._bleu = None
        # Whether a stop was asked for: evaluation checks it between batches (set by train()).
        self._stop_asked = lambda: False

    def data_splits(self) -> tuple[str, ...]:
        """The splits training reads: train, and validation when there is one."""
        return tuple(s for s in (features.TRAIN, features.VALIDATION) if s in self.meta.splits)

    # ---- the step ---------------------------------------------------------------------------

    def _weights(self, batch) -> tf.Tensor:
        """What a batch's loss is normalized by: target tokens, or examples."""
        if self.config.task == features.TRANSLATION:
            return tf.reduce_sum(tf.cast(batch[features.TARGETS] != features.PAD_ID, tf.float32))
        return tf.cast(tf.shape(batch[features.LABEL])[0], tf.float32)

    def _loss_sums(self, batch, *, training: bool):
        """-> (loss_sum, correct_sum, weight) for one per-replica batch."""
        cfg = self.config
        if cfg.task == features.TRANSLATION:
            targets = batch[features.TARGETS]
            model_inputs = (batch[features.INPUTS], shift_right(targets))
            if cfg.xla:  # XLA needs static shapes: every position gets logits
                logits = self.model(model_inputs, training=training)
            else:  # logits for the real tokens only; PAD would be masked out of the loss anyway
                real = targets != features.PAD_ID
                logits = self.model(model_inputs, training=training, logits_mask=real)
                targets = tf.boolean_mask(targets, real)
            loss_sum, weight = losses.masked_cross_entropy(
                targets, logits, label_smoothing=cfg.label_smoothing
            )
            correct, _ = losses.masked_accuracy(targets, logits)
        else:
            labels = batch[features.LABEL]
            logits = self.model(batch[features.INPUTS], training=training)
            loss_sum, weight = losses.classification_cross_entropy(
                labels, logits, label_smoothing=cfg.label_smoothing
            )
            correct, _ = losses.classification_accuracy(labels, logits)
        return loss_sum, correct, weight

    def _make_train_step(self):
        model, optimizer = self.model, self.optimizer

        variables = model.trainable_variables

        def gradients(batch, global_weight):
            """Forward and backward pass for one per-replica batch (XLA-compiled with --xla)."""
            with tf.GradientTape() as tape:
                loss_sum, correct, _ = self._loss_sums(batch, training=True)
                scaled = optimizer.scale_loss(loss_sum / global_weight)
            grads = [tf.convert_to_tensor(g) for g in tape.gradient(scaled, variables)]
            return grads, loss_sum, correct

        if self.config.xla:
            # Only the math is compiled: the optimizer's cross-replica merge cannot be.
            gradients = tf.function(gradients, jit_compile=True, reduce_retracing=True)

        def replica_step(batches):
            ctx = tf.distribute.get_replica_context()
            local_weight = tf.add_n([self._weights(b) for b in batches])
            global_weight = tf.maximum(
                ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_weight), 1.0
            )
            grads, loss_total, correct_total = gradients(batches[0], global_weight)
            for batch in batches[1:]:  # gradient accumulation
                batch_grads, loss_sum, correct = gradients(batch, global_weight)
                grads = [a + b for a, b in zip(grads, batch_grads)]
                loss_total += loss_sum
                correct_total += correct
            optimizer.apply_gradients(zip(grads, variables))
            return loss_total, correct_total, local_weight

        @tf.function(reduce_retracing=True)
        def train_step(batches):
            per_replica = self.strategy.run(replica_step, args=(batches,))
            return [
                self.strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None) for t in per_replica
            ]

        return train_step

    def _make_eval_step(self):
        @tf.function(reduce_retracing=True)
        def eval_step(batch):
            per_replica = self.strategy.run(
                lambda b: self._loss_sums(b, training=False), args=(batch,)
            )
            return [
                self.strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None) for t in per_replica
            ]

        return eval_step

    # ---- data -------------------------------------------------------------------------------

    def _dataset_kwargs(self) -> dict:
        cfg = self.config
        common = dict(data_dir=cfg.data_dir, metadata=self.meta, max_length=cfg.model.max_length)
        if cfg.task == features.TRANSLATION:
            return {**common, "batch_tokens": cfg.batch_tokens}
        return {**common, "batch_size": cfg.batch_size}

    def _epoch_iterator(self, epoch: int, skip: int):
        cfg = self.config
        kwargs = self._dataset_kwargs()

        def fn(ctx):
            return input_pipeline.train_dataset(
                **kwargs,
                epoch=epoch,
                skip_batches=skip,
                seed=cfg.seed,
                input_context=ctx,
                shuffle_buffer=cfg.shuffle_buffer,
                pad_to_bucket=cfg.xla,
            )

        return iter(self.strategy.distribute_datasets_from_function(fn))

    def _next_batches(self, iterator):
        """grad_accum_steps batches, or None at the end of the epoch (all workers agree)."""
        batches = []
        for _ in range(self.config.grad_accum_steps):
            optional = iterator.get_next_as_optional()
            if not optional.has_value():
                return None
            batches.append(optional.get_value())
        return tuple(batches)

    # ---- evaluation -------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """Validation loss and accuracy over the whole split; BLEU on a fixed subset."""
        kwargs = self._dataset_kwargs()
        dataset = self.strategy.distribute_datasets_from_function(
            lambda ctx: input_pipeline.eval_dataset(
                **kwargs, split=features.VALIDATION, input_context=ctx
            )
        )
        loss = correct = weight = 0.0
        iterator = iter(dataset)
        while True:
            if self._stop_asked():
                raise preemption.EvaluationStopped
            optional = iterator.get_next_as_optional()
            if not optional.has_value():
                break
            batch_loss, c, w = self._eval_step(optional.get_value())
            loss, correct, weight = loss + float(batch_loss), correct + float(c), weight + float(w)
        result = {"val_loss": loss / max(weight, 1.0), "val_accuracy": correct / max(weight, 1.0)}
        if self.config.task == features.TRANSLATION and self.config.eval_bleu_sentences:
            if self._bleu is None:
                self._bleu = bleu_eval.BleuEvaluator(
                    data_dir=self.config.data_dir,
                    metadata=self.meta,
                    num_sentences=self.config.eval_bleu_sentences,
                )
            result.update(
                self._bleu(
                    self.model,
                    beam_size=self.config.eval_beam_size,
                    stop_asked=self._stop_asked,
                )
            )
        return result

    def quality_metric(self) -> tuple[str, bool]:
        if self.config.task == features.TRANSLATION:
            return ("bleu", True) if self.config.eval_bleu_sentences else ("val_loss", False)
        return "val_accuracy", True

    def barrier(self) -> None:
        """All workers meet here before exiting, so none sees a peer vanish mid-collective."""
        if distribution.is_multi_worker(self.strategy):
            ones = self.strategy.run(
                tf.function(
                    lambda: tf.distribute.get_replica_context().all_reduce(
                        tf.distribute.ReduceOp.SUM, tf.constant(1.0)
                    )
                )
            )
            self.strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)

    def is_eval_step(self, step: int) -> bool:
        return step % self.config.eval_every == 0 or step == self.config.train_steps

    def is_checkpoint_step(self, step: int) -> bool:
        return step % self.config.checkpoint_every == 0 or step == self.config.train_steps

    def _evaluate_and_record(
        self,
        step: int,
        epoch: int,
        last_train_loss: float | None,
        best: float | None,
        evals_without_gain: int,
    ) -> tuple[float | None, int]:
        """Evaluates, logs the entry, saves the best checkpoint; -> (best, evals_without_gain)."""
        metric_name, higher = self.quality_metric()
        result = self.evaluate()
        entry = {"step": step, "epoch": epoch, **result}
        if last_train_loss is not None:
            entry["train_loss"] = last_train_loss
        if self.chief:
            print(
                "eval "
                + "  ".join(
                    f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items()
                ),
                flush=True,
            )
        self.summaries.write(
            "eval", step, {k: v for k, v in result.items() if isinstance(v, float)}
        )
        value = result.get(metric_name)
        if value is not None and (best is None or (value > best if higher else value < best)):
            best, evals_without_gain = value, 0
            self.best_manager.save(checkpoint_number=step)
            entry["best"] = True
        else:
            evals_without_gain += 1
        self.metrics.append(entry)
        return best, evals_without_gain

    # ---- the loop ---------------------------------------------------------------------------

    def train(self) -> dict:
        releases: list[threading.Thread] = []  # previous epochs' iterators being destroyed
        hook = preemption.PreemptionHook(self.strategy, self.manager)  # restores the latest one
        if not distribution.is_multi_worker(self.strategy):
            # One process can leave an evaluation halfway; workers of a cluster must all finish it.
            self._stop_asked = hook.watcher.stop_asked
        try:
            return self._train(hook, releases)
        finally:
            self._stop_asked = lambda: False
            hook.close()
            # A preemption exit too: no thread may still be inside TensorFlow as the process ends.
            for thread in releases:
                thread.join()

    def _no_batch_error(self) -> ValueError:
        cfg = self.config
        budget = (
            f" within --batch_tokens={cfg.batch_tokens}" if cfg.task == features.TRANSLATION else ""
        )
        return ValueError(
            f"--data_dir: the train split of {cfg.data_dir} yields no batch: "
            f"no example fits --max_length={cfg.model.max_length}{budget}"
        )

    def _report_status(self, step: int, window: dict, run_start: float, start_step: int) -> float:
        """Prints the status line and writes its TensorBoard scalars; -> the window's loss."""
        cfg = self.config
        elapsed = time.time() - window["start"]
        window_weight = float(window["weight"])
        loss = float(window["loss"]) / max(window_weight, 1.0)
        rate = window_weight / max(elapsed, 1e-9)
        lr = float(self.schedule(step - 1))
        eta = (time.time() - run_start) / max(step - start_step, 1) * (cfg.train_steps - step)
        unit = "tokens/s" if cfg.task == features.TRANSLATION else "examples/s"
        line = reporting.status_line(
            step=step, total=cfg.train_steps, loss=loss, tokens_per_sec=rate, lr=lr, eta=eta
        )
        if self.chief:
            print(line.replace("tokens/s", unit), flush=True)
        self.summaries.write(
            "train", step, {"loss": loss, "learning_rate": lr, unit.replace("/", "_per_"): rate}
        )
        return loss

    def _train(self, hook: preemption.PreemptionHook, releases: list[threading.Thread]) -> dict:
        cfg = self.config
        step = self.state.step
        if self.manager.restored_path:
            print(f"resumed from {self.manager.restored_path} at step {step}", flush=True)
        self.metrics.load(up_to_step=step)
        self.summaries.trim(up_to_step=step)
        metric_name, higher = self.quality_metric()
        best = self.metrics.best(metric_name, higher_is_better=higher)
        evals_without_gain = self.metrics.evaluations_since_best()
        if step and self.is_eval_step(step) and not self.metrics.has_step(step):
            # Stopped between this step's checkpoint and its evaluation: evaluate it now.
            try:
                best, evals_without_gain = self._evaluate_and_record(
                    step, int(self.state.epoch.numpy()), None, best, evals_without_gain
                )
            except preemption.EvaluationStopped:
                hook.exit()
        window = new_status_window()
        run_start, start_step = time.time(), step
        last_train_loss = None
        stop = False

        while step < cfg.train_steps and not stop:
            epoch = int(self.state.epoch.numpy())
            # Each step takes grad_accum_steps batches per LOCAL replica from this worker's pipeline.
            local_replicas = len(self.strategy.extended.worker_devices)
            iterator = self._epoch_iterator(
                epoch, int(self.state.batch_in_epoch.numpy()) * local_replicas
            )
            epoch_start = int(self.state.batch_in_epoch.numpy()) == 0
            while step < cfg.train_steps:
                batches = self._next_batches(iterator)
                if batches is None:
                    if epoch_start:  # an epoch with no batch at all would repeat forever
                        raise self._no_batch_error()
                    self.state.epoch.assign_add(1)
                    self.state.batch_in_epoch.assign(0)
                    box, iterator = [iterator], None
                    releases[:] = [thread for thread in releases if thread.is_alive()]
                    releases.append(drop_in_background(box))
                    del box
                    break
                epoch_start = False
                loss_sum, _, weight = hook.run(self._train_step, batches)
                self.state.batch_in_epoch.assign_add(cfg.grad_accum_steps)
                step = self.state.step
                # Tensors, not floats: no host sync per step (it would stall an accelerator).
                window["loss"] += loss_sum
                window["weight"] += weight
                if step % cfg.log_every == 0 or step == cfg.train_steps:
                    last_train_loss = self._report_status(step, window, run_start, start_step)
                    window = new_status_window()
                if self.is_checkpoint_step(step):
                    self.manager.save(checkpoint_number=step)
                if self.is_eval_step(step):
                    eval_start = time.time()
                    try:
                        best, evals_without_gain = self._evaluate_and_record(
                            step, epoch, last_train_loss, best, evals_without_gain
                        )
                    except preemption.EvaluationStopped:
                        # This step, saved unevaluated: the relaunch evaluates it first.
                        if not self.is_checkpoint_step(step):
                            self.manager.save(checkpoint_number=step)
                        hook.exit()
                    window["start"] += time.time() - eval_start  # not training throughput
                    if (
                        cfg.early_stopping_patience
                        and evals_without_gain >= cfg.early_stopping_patience
                    ):
                        print(
                            f"early stopping: {metric_name} has not improved in {evals_without_gain} evaluations",
                            flush=True,
                        )
                        if not self.is_checkpoint_step(step):
                            self.manager.save(checkpoint_number=step)
                        stop = True
                        break
        if not self.chief and tf.io.gfile.exists(self.write_dir):
            tf.io.gfile.rmtree(self.write_dir)
        return {"step": step, "best": best, "metric": metric_name}


def new_status_window() -> dict:
    """The sums behind one status line: loss and its weight since ``start``."""
    return {"loss": 0.0, "weight": 0.0, "start": time.time()}


def drop_in_background(box: list) -> threading.Thread:
    """Empties ``box`` on a new thread, so that whatever only it held is destroyed there.

    Destroying an exhausted tf.data iterator (the previous epoch's) can block for tens of
    seconds: 0.01, 44 and 4 s at three epoch ends of Multi30k on the Xeon. On a thread the
    steps go on meanwhile. The caller must hold no other reference to the contents.
    """
    thread = threading.Thread(target=box.clear, name="drop-iterator", daemon=True)
    thread.start()
    return thread


def train_and_evaluate(config: TrainConfig, metadata: features.Metadata | None = None) -> dict:
    """Trains (or resumes) the run in ``config.model_dir``, then exports the model.

    ``metadata`` is ``config.data_dir``'s (read here when None). Returns the final step,
    the best metric and the export dir (None without --export).
    """
    trainer = Trainer(config, metadata)
    try:
        result = trainer.train()
    except tf.errors.DataLossError:
        named = shard_checks.corrupt_shard_error(
            config.data_dir, trainer.meta, trainer.data_splits()
        )
        if named is None:
            raise
        raise named from None
    finally:
        set_precision("float32")
    result["export_dir"] = None
    if config.export and trainer.chief:
        from trainer import checkpoint_average, exporting

        average = config.average_checkpoints
        kept = len(checkpoint_average.model_checkpoints(config.model_dir))
        if 0 < kept < average:  # early stopping ended the run before K were written
            print(f"note: averaging the {kept} checkpoints kept, not {average}", flush=True)
            average = kept
        result["export_dir"] = exporting.export_model(
            model_dir=config.model_dir,
            export_dir=f"{config.model_dir}/{EXPORT_SUBDIR}",
            checkpoint="best",
            average_last=average,
            overwrite=True,
        )
        print(f"exported {result['export_dir']}", flush=True)
    trainer.barrier()
    return result


if __name__ == "__main__":
    sys.exit("run python -m trainer.train")
