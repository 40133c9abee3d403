"""RunInference's ModelHandler for the SavedModels trainer.export writes.

Beam's stock TensorFlow handler cannot load a SavedModel directory (and needs
tensorflow_hub to import), so this one wraps ``tf.saved_model.load``:

    handler = SavedModelHandler(export_dir, signature="translate", output_key="translation")
    lines | RunInference(KeyedModelHandler(handler))   # (key, text) -> (key, PredictionResult)

Each batch of strings goes through the named signature in one call; a prediction
is one row of its output (``bytes`` for translate, a float32 vector for classify).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from apache_beam.ml.inference import base as inference_base
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from pipeline import tensorflow_start
from pipeline.export_contract import INPUT_KEY

try:
    import resource
except ImportError:  # not on Windows
    resource = None

# Beam 2.77 imports `resource` in the same try block as its torch-based ModelManager, so
# without torch it sets `resource` to None: RunInference then reports every model's memory
# as 0 and logs "Resource module is not available for current platform" at each load. Give
# it the module it meant to import (this module is imported wherever the handler runs).
if inference_base.resource is None:
    inference_base.resource = resource


class SavedModelHandler(ModelHandler[str, PredictionResult, Any]):
    """Loads an exported SavedModel once per worker process and calls one of its signatures.

    TensorFlow is imported in ``load_model`` and ``run_inference`` only, so the process
    that builds the pipeline never loads it.
    """

    def __init__(
        self,
        export_dir: str,
        *,
        signature: str,
        output_key: str,
        min_batch_size: int = 1,
        max_batch_size: int = 64,
        large_model: bool = False,
    ):
        super().__init__(
            min_batch_size=min_batch_size, max_batch_size=max_batch_size, large_model=large_model
        )
        self._export_dir = export_dir
        self._signature = signature
        self._output_key = output_key

    def load_model(self) -> Any:
        tensorflow_start.start()
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the SentencePiece and normalize ops)

        model = tf.saved_model.load(self._export_dir)
        # The job checked metadata.json; this checks the graph itself keeps the contract.
        signature = model.signatures.get(self._signature)
        if signature is None or self._output_key not in signature.structured_outputs:
            raise ValueError(
                f"{self._export_dir}: no {self._signature!r} signature with output "
                f"{self._output_key!r} (signatures: {sorted(model.signatures)})"
            )
        return model

    def run_inference(
        self,
        batch: Sequence[str],
        model: Any,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        import tensorflow as tf

        texts = tf.constant(list(batch), dtype=tf.string)
        outputs = model.signatures[self._signature](**{INPUT_KEY: texts})[self._output_key]
        return [PredictionResult(text, row) for text, row in zip(batch, outputs.numpy())]

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        if inference_args:
            raise ValueError(f"SavedModelHandler takes no inference_args, got {inference_args}")

    def get_metrics_namespace(self) -> str:
        return "SavedModel"
