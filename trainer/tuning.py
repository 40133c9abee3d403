"""Chooses, on the validation split only, the weights and the decoding a model is used with
(``tune``; the command is trainer/tune.py).

Weight candidates: the best checkpoint by validation metric (``0``) and the element-wise
average of the last K checkpoints for each other K in ``--average``. Each is scored on the
validation split (translation: sacreBLEU of greedy decoding; classification: accuracy).
For translation the winner is then decoded with every beam size x length penalty and the
best pair kept. The chosen weights are written to ``MODEL_DIR/tuned/ckpt-STEP`` and all
scores to ``MODEL_DIR/tuned/tuned.json``, so that

    python -m trainer.translate --model_dir=DIR --checkpoint=DIR/tuned --beam_size=B --alpha=A

reproduces the choice. The test split is never read.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import tensorflow as tf

from pipeline import features
from pipeline.export_contract import TOKENIZER_INFO_FILE
from trainer import atomic_dirs, bleu_eval, checkpoint_average, input_pipeline, model_dir
from trainer.infer_files import InferenceError
from trainer.model import build_inference_model

TUNED_DIR = "tuned"
TUNED_FILE = "tuned.json"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """Weights to try: the best checkpoint (average=0) or the mean of the last `average`."""

    average: int
    paths: tuple[str, ...]

    @property
    def name(self) -> str:
        return "best checkpoint" if self.average == 0 else f"average of last {self.average}"


def weight_candidates(directory: str, averages: list[int]) -> list[Candidate]:
    """The candidates among ``averages`` that ``directory``'s checkpoints can supply."""
    kept = checkpoint_average.model_checkpoints(directory)
    best = checkpoint_average.best_checkpoint(directory)
    out = []
    for k in averages:
        if k == 0 and best:
            out.append(Candidate(0, (best,)))
        elif 0 < k <= len(kept) and Candidate(k, tuple(kept[-k:])) not in out:
            out.append(Candidate(k, tuple(kept[-k:])))
    if not out:
        raise InferenceError(f"--model_dir: {directory} has no checkpoint; train the model first")
    return out


class _AccuracyEvaluator:
    """Classification accuracy over the whole validation split."""

    def __init__(self, *, data_dir: str, metadata: features.Metadata, max_length: int):
        self.dataset = input_pipeline.eval_dataset(
            data_dir=data_dir,
            metadata=metadata,
            split=features.VALIDATION,
            max_length=max_length,
            batch_size=64,
        )
        self._predict = {}

    def __call__(self, model, **_) -> dict:
        if id(model) not in self._predict:
            self._predict[id(model)] = tf.function(
                lambda x: tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)
            )
        predict = self._predict[id(model)]
        correct = total = 0
        for batch in self.dataset:
            predicted = predict(batch[features.INPUTS]).numpy()
            labels = batch[features.LABEL].numpy().astype(np.int32)
            correct += int((predicted == labels).sum())
            total += len(labels)
        return {"accuracy": correct / max(total, 1), "examples": total}


def tune(
    directory: str,
    *,
    data_dir: str | None = None,
    averages: list[int],
    beam_sizes: list[int],
    alphas: list[float],
    sentences: int = 0,
    log=print,
) -> dict:
    """Scores every candidate on validation, writes the winner to DIRECTORY/tuned; the report."""
    directory = directory.rstrip("/")
    config = model_dir.read_config(directory)
    data_dir = (data_dir or config.data_dir).rstrip("/")
    try:
        meta = features.load_metadata(data_dir)
    except features.MetadataError as e:
        raise InferenceError(f"--data_dir: {e}") from None
    with tf.io.gfile.GFile(f"{directory}/{TOKENIZER_INFO_FILE}") as f:
        model_sha = json.load(f)["sha256"]
    if meta.tokenizer.sha256 != model_sha:
        raise InferenceError(
            f"--data_dir: {data_dir} was tokenized with sha256 {meta.tokenizer.sha256[:12]}, "
            f"the model with {model_sha[:12]}; validate on the data the model was trained on"
        )
    translation = config.task == features.TRANSLATION
    if translation:
        split = meta.splits[features.VALIDATION].examples
        evaluate = bleu_eval.BleuEvaluator(
            data_dir=data_dir, metadata=meta, num_sentences=sentences or split
        )
        metric = "bleu"
    else:
        evaluate = _AccuracyEvaluator(
            data_dir=data_dir, metadata=meta, max_length=config.model.max_length
        )
        metric = "accuracy"

    model = build_inference_model(config.model)

    def timed(**decoding) -> dict:
        start = time.time()
        result = evaluate(model, **decoding)
        return {**result, "seconds": round(time.time() - start, 1)}

    weights = []
    for candidate in weight_candidates(directory, averages):
        checkpoint_average.average_checkpoints(model, list(candidate.paths))
        result = {"weights": candidate.name, "average": candidate.average, **timed()}
        log(f"{candidate.name}: {metric} {result[metric]:.4g} ({result['seconds']}s)")
        weights.append((result, candidate))
    best_result, chosen = max(weights, key=lambda rc: (rc[0][metric], -rc[1].average))
    checkpoint_average.average_checkpoints(model, list(chosen.paths))

    decodings = []
    decoding = {}
    if translation:
        grid = [(1, 0.6)] if 1 in beam_sizes else []
        grid += [(b, a) for b in beam_sizes if b > 1 for a in alphas]
        for beam_size, alpha in grid:
            if beam_size == 1:
                result = {k: best_result[k] for k in best_result if k not in ("weights", "average")}
            else:
                result = timed(beam_size=beam_size, alpha=alpha)
            result.update(beam_size=beam_size, alpha=alpha)
            log(f"beam {beam_size} alpha {alpha}: bleu {result['bleu']:.2f} ({result['seconds']}s)")
            decodings.append(result)
        best_decoding = max(decodings, key=lambda r: (r["bleu"], -r["beam_size"]))
        decoding = {"beam_size": best_decoding["beam_size"], "alpha": best_decoding["alpha"]}
        best_result = best_decoding

    step = int(chosen.paths[-1].rsplit("-", 1)[-1])
    report = {
        "metric": metric,
        "validation": {
            "data_dir": data_dir,
            "examples": best_result.get("bleu_sentences") or best_result.get("examples"),
        },
        "chosen": {
            "weights": chosen.name,
            "checkpoints": list(chosen.paths),
            **decoding,
            metric: best_result[metric],
        },
        "weights": [r for r, _ in weights],
        "decodings": decodings,
    }
    if translation:
        report["bleu_signature"] = best_result["bleu_signature"]
    _write_tuned(model, directory, step=step, report=report)
    return report


def _write_tuned(model, directory: str, *, step: int, report: dict) -> None:
    """Writes DIRECTORY/tuned whole or not at all: built aside, then renamed into place."""
    final = f"{directory}/{TUNED_DIR}"
    tmp = atomic_dirs.aside_path(final, hidden=True)
    try:
        checkpoint_average.save_model_weights(model, tmp, step=step)
        with tf.io.gfile.GFile(f"{tmp}/{TUNED_FILE}", "w") as f:
            f.write(json.dumps(report, indent=2) + "\n")
        atomic_dirs.replace_directory(tmp, final)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
