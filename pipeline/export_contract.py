"""What an exported SavedModel (written by trainer.export) promises the code that serves it.

Signature names, the input and output keys, and ``assets.extra/metadata.json``,
the record of what was exported. Both the exporter and the batch inference jobs
import these names from here; this module imports neither TensorFlow nor Beam at
load time, so reading the contract is cheap.

    metadata = read_export_metadata(export_dir)
    metadata["task"], metadata["signature"], metadata["output_key"]
    warnings = check_provenance(export_dir, metadata)   # ExportMetadataError: refuse it

``check_provenance`` is what makes an inference job load only the user's own model: the
export must keep this contract (signature, keys) and its tokenizer SHA-256 must be the one in
its model dir's ``tokenizer.json``, the model dir being the one the export sits in
(``MODEL_DIR/export``, as the trainer writes it) or, for an export copied elsewhere, the one
it records. An export outside a model dir is loaded with a warning saying so.
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


TOKENIZER_INFO_FILE = "tokenizer.json"  # in a model dir (trainer.model_dir_setup writes it)
EXPORT_SUBDIR = "export"  # MODEL_DIR/export, where training exports


def check_provenance(export_dir: str, metadata: dict) -> list[str]:
    """Warnings about where ``export_dir`` comes from; ExportMetadataError when it must not load.

    Refused: a signature or input/output key other than this contract's, no tokenizer
    SHA-256, or one that differs from its model dir's tokenizer.json. Warned: an export that
    is not MODEL_DIR/export, and one whose model dir cannot be read to check the tokenizer.
    """
    from apache_beam.io.filesystems import FileSystems

    export_dir = export_dir.rstrip("/")
    where = f"{export_dir}/{METADATA_PATH}"
    signature = SIGNATURE_FOR_TASK[metadata["task"]]
    found = (metadata.get("signature"), metadata.get("input_key"), metadata.get("output_key"))
    if found != (signature, INPUT_KEY, OUTPUT_KEYS[signature]):
        raise ExportMetadataError(
            f"{where}: signature {found[0]!r} with keys {found[1]!r} -> {found[2]!r} is not the "
            f"{metadata['task']} contract ({signature!r}: {INPUT_KEY!r} -> "
            f"{OUTPUT_KEYS[signature]!r})"
        )
    sha = metadata.get("tokenizer_sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise ExportMetadataError(f"{where}: no tokenizer_sha256; it cannot be traced to a model")
    parent, _, name = export_dir.rpartition("/")
    own = parent if name == EXPORT_SUBDIR else ""
    warnings = []
    if own and FileSystems.exists(f"{own}/{TOKENIZER_INFO_FILE}"):
        candidates = [own]
    else:
        recorded = str(metadata.get("model_dir") or "").rstrip("/")
        outside = f"--export_dir: {export_dir} is not the export/ of a model dir"
        if recorded and FileSystems.exists(f"{recorded}/{TOKENIZER_INFO_FILE}"):
            candidates = [recorded]
            warnings.append(f"{outside}; checked it against {recorded}, the model dir it records")
        else:
            candidates = []
            warnings.append(
                f"{outside}, and its tokenizer (sha256 {sha[:12]}) cannot be checked against "
                "any model dir's tokenizer.json: make sure it is the model you mean"
            )
    for model_dir in candidates:
        with FileSystems.open(f"{model_dir}/{TOKENIZER_INFO_FILE}") as f:
            try:
                expected = json.loads(f.read().decode("utf-8"))["sha256"]
            except (ValueError, KeyError, TypeError) as e:
                raise ExportMetadataError(
                    f"{model_dir}/{TOKENIZER_INFO_FILE}: unreadable ({e})"
                ) from None
        if expected != sha:
            raise ExportMetadataError(
                f"{export_dir} was exported with tokenizer sha256 {sha[:12]} but its model dir "
                f"{model_dir} has {expected[:12]}; it is not that model's export (re-export it)"
            )
    return warnings
