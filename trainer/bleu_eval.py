"""BLEU on a fixed subset of the validation split, decoded by the project's own decoder."""

from __future__ import annotations

import numpy as np
import sacrebleu
import tensorflow as tf

from pipeline import features, tokenizer
from trainer import decode
from trainer.preemption import EvaluationStopped


def _validation_examples(
    data_dir: str, metadata: features.Metadata, n: int
) -> list[tuple[list[int], list[int]]]:
    files = [f"{data_dir}/{name}" for name in metadata.splits[features.VALIDATION].files]
    spec = features.feature_spec(features.TRANSLATION)
    out = []
    for record in tf.data.TFRecordDataset(files, compression_type=features.SHARD_COMPRESSION).take(
        n
    ):
        ex = tf.io.parse_single_example(record, spec)
        out.append(
            (
                tf.sparse.to_dense(ex[features.INPUTS]).numpy().tolist(),
                tf.sparse.to_dense(ex[features.TARGETS]).numpy().tolist(),
            )
        )
    return out


class BleuEvaluator:
    """Decodes the same validation sentences at every evaluation and scores them with sacreBLEU."""

    def __init__(
        self,
        *,
        data_dir: str,
        metadata: features.Metadata,
        num_sentences: int,
        batch_size: int = 64,
    ):
        with tf.io.gfile.GFile(f"{data_dir}/{metadata.tokenizer.file}", "rb") as f:
            self.tokenizer = tokenizer.Tokenizer(f.read())
        examples = _validation_examples(data_dir, metadata, num_sentences)
        # Sorted by length so batches pad little; BLEU does not care about order.
        examples.sort(key=lambda e: len(e[0]))
        self.sources = [e[0] for e in examples]
        self.references = [self.tokenizer.decode(e[1]) for e in examples]
        self.batch_size = batch_size
        self._translate = {}

    def _batches(self):
        for i in range(0, len(self.sources), self.batch_size):
            chunk = self.sources[i : i + self.batch_size]
            width = max(len(s) for s in chunk)
            yield np.array(
                [s + [features.PAD_ID] * (width - len(s)) for s in chunk], dtype=np.int32
            )

    def __call__(
        self, model, *, beam_size: int = 1, alpha: float = 0.6, stop_asked=lambda: False
    ) -> dict:
        """-> bleu, its signature and the sentence count; raises ``EvaluationStopped``
        between batches once ``stop_asked()`` says so."""
        key = (id(model), beam_size, alpha)
        if key not in self._translate:
            self._translate[key] = decode.make_translate_fn(model, beam_size=beam_size, alpha=alpha)
        translate = self._translate[key]
        hypotheses = []
        for batch in self._batches():
            if stop_asked():
                raise EvaluationStopped
            ids = translate(tf.constant(batch))
            if isinstance(ids, tuple | list):
                ids = ids[0]
            hypotheses.extend(self.tokenizer.decode(row) for row in ids.numpy())
        bleu = sacrebleu.metrics.BLEU()
        score = bleu.corpus_score(hypotheses, [self.references])
        return {
            "bleu": float(score.score),
            "bleu_signature": str(bleu.get_signature()),
            "bleu_sentences": len(hypotheses),
        }
