"""What batch inference runs on each replica: translation or classification of id batches.

A task holds one traced tf.function per replica (cached on the `LoadedModel`, so a second
run with the same settings does not trace again), plans its batches (`infer_batches`), and
turns one row of a batch's result into an output line. trainer/infer.py drives it over
files or a stream.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from pipeline import features, predictions
from trainer import decode
from trainer.infer_batches import plan_batches
from trainer.infer_files import InferenceError
from trainer.model_dir import LoadedModel

# Batches of any size and width share one traced graph: tracing a decoder takes seconds.
_IDS_SPEC = tf.TensorSpec([None, None], tf.int32)

# Characters that end a line for str.splitlines() and common readers; never inside an output line.
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


class Task:
    """What runs on the replicas: one tf.function per replica, all with the `_IDS_SPEC` input."""

    task: str
    empty_output = predictions.EMPTY_TRANSLATION
    functions: list
    settings: dict = {}  # what the outputs depend on besides the model (saved chunks' manifest)

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded

    def trace(self) -> None:
        """Traces every replica's function, one at a time, on its device, before threads call them."""
        for replica, function in zip(self.loaded.replicas, self.functions):
            with tf.device(replica.device):
                function.get_concrete_function()

    def run(self, replica: int, batch: np.ndarray) -> np.ndarray:
        return self.functions[replica](tf.constant(batch)).numpy()


class Translation(Task):
    """Source ids -> translated text, with the project's greedy or beam decoder."""

    task = features.TRANSLATION

    def __init__(
        self, loaded: LoadedModel, *, beam_size, alpha, batch_tokens, max_decode_length, cache
    ):
        if not cache and beam_size != 1:
            raise ValueError("the decoder without a key/value cache is greedy only (beam_size=1)")
        if max_decode_length is not None and not 1 <= max_decode_length <= loaded.max_length:
            raise InferenceError(
                f"--max_decode_length={max_decode_length} must be in [1, {loaded.max_length}] "
                "(the model's max_length)"
            )
        super().__init__(loaded)
        self.beam_size = beam_size
        self.batch_tokens = batch_tokens
        self.max_decode_length = max_decode_length
        self.settings = {
            "beam_size": beam_size,
            "alpha": alpha,
            "max_decode_length": max_decode_length,
        }

        def make(model):
            if cache:
                translate = decode.make_translate_fn(
                    model, beam_size=beam_size, alpha=alpha, max_decode_length=max_decode_length
                )
            else:

                def translate(ids):
                    return decode.greedy_decode_uncached(
                        model, ids, max_decode_length=max_decode_length
                    )

            return tf.function(translate, input_signature=[_IDS_SPEC])

        self.functions = [
            _cached(
                loaded,
                ("translate", i, beam_size, alpha, max_decode_length, cache),
                lambda model=r.model: make(model),
            )
            for i, r in enumerate(loaded.replicas)
        ]

    def plan(self, lengths: Sequence[int]) -> list[list[int]]:
        return plan_batches(lengths, batch_tokens=self.batch_tokens, beam_size=self.beam_size)

    def finish(self, source: Sequence[int], output: np.ndarray) -> tuple[str, int]:
        """(output line, target tokens) for one row of ``run``'s result."""
        if self.max_decode_length is None:
            # The default limit follows the batch's widest source; the row's own limit
            # gives what decoding the line alone gives (exactly so for greedy).
            own_limit = decode.default_max_decode_length(
                len(source), model_max_length=self.loaded.max_length
            )
            output = output[:own_limit]
        tokens = int(np.count_nonzero(output != features.PAD_ID))
        return _LINE_BREAKS.sub(" ", self.loaded.tokenizer.decode(output)).strip(), tokens


class Classification(Task):
    """Source ids -> one JSON line with the label and the class probabilities."""

    task = features.CLASSIFICATION
    empty_output = predictions.EMPTY_CLASSIFICATION

    def __init__(self, loaded: LoadedModel, *, batch_size: int):
        super().__init__(loaded)
        self.batch_size = batch_size
        self.functions = [
            _cached(loaded, ("classify", i), lambda model=r.model: _make_classify_fn(model))
            for i, r in enumerate(loaded.replicas)
        ]

    def plan(self, lengths: Sequence[int]) -> list[list[int]]:
        return plan_batches(lengths, batch_size=self.batch_size)

    def finish(self, source: Sequence[int], probabilities: np.ndarray) -> tuple[str, int]:
        return predictions.format_classification(probabilities), 0


def _make_classify_fn(model) -> Callable[[tf.Tensor], tf.Tensor]:
    """A tf.function: ids `[b, l]` -> class probabilities `[b, num_classes]` float32."""
    return tf.function(
        lambda ids: tf.nn.softmax(model(ids, training=False), axis=-1),
        input_signature=[_IDS_SPEC],
    )


def _cached(loaded: LoadedModel, key: tuple, make: Callable[[], Any]) -> Any:
    if key not in loaded.functions:
        loaded.functions[key] = make()
    return loaded.functions[key]
