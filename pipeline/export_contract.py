"""What an exported SavedModel (written by trainer.export) promises the code that serves it.

Signature names, the input and output keys, and ``assets.extra/metadata.json``,
the record of what was exported. Both the exporter and the batch inference jobs
import these names from here; this module imports neither TensorFlow nor Beam at
load time, so reading the contract is cheap.

    metadata = read_export_metadata(export_dir)
    metadata["task"], metadata["signature"], metadata["output_key"]
"""

from __future__ import annotations

import json

from pipeline import features

TRANSLATE = "translate"  # text [batch] tf.string -> {"translation": [batch] tf.string}
CLASSIFY = "classify"  # text [batch] tf.string -> {"probabilities": [batch, classes] float32}
INPUT_KEY = "text"
OUTPUT_KEYS = {TRANSLATE: "translation", CLASSIFY: "probabilities"}
SIGNATURE_FOR_TASK = {features.TRANSLATION: TRANSLATE, features.CLASSIFICATION: CLASSIFY}

SAVED_MODEL_FILE = "saved_model.pb"
METADATA_PATH = "assets.extra/metadata.json"


class ExportMetadataError(ValueError):
    """A directory that is not a finished export of trainer.export."""


def read_export_metadata(export_dir: str) -> dict:
    """``EXPORT_DIR/assets.extra/metadata.json`` (local or any Beam filesystem)."""
    from apache_beam.io.filesystems import FileSystems

    export_dir = export_dir.rstrip("/")
    path = f"{export_dir}/{METADATA_PATH}"
    if not FileSystems.exists(path) or not FileSystems.exists(f"{export_dir}/{SAVED_MODEL_FILE}"):
        raise ExportMetadataError(
            f"{export_dir} is not an export of trainer.export (no {SAVED_MODEL_FILE} and "
            f"{METADATA_PATH}); run python -m trainer.export first"
        )
    with FileSystems.open(path) as f:
        try:
            metadata = json.loads(f.read().decode("utf-8"))
        except ValueError as e:
            raise ExportMetadataError(f"{path}: not valid JSON ({e})") from None
    if metadata.get("task") not in SIGNATURE_FOR_TASK:
        raise ExportMetadataError(f"{path}: unknown task {metadata.get('task')!r}")
    return metadata
