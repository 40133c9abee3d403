"""The subword tokenizer: train, load, encode and decode a SentencePiece model.

Pure functions over model bytes; callers read and write files (Beam FileSystems in the
job, tf.io.gfile in the trainer). Special ids come from pipeline.features, so every
model this project trains agrees with the data contract.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Iterator

import sentencepiece as spm

from pipeline import features

# Byte fallback needs 256 byte pieces plus the specials and the alphabet.
MIN_VOCAB_SIZE = 320
# SentencePiece's trainer splits its sentences among its threads by index and adds their sums
# in thread order, so a model is a function of the text and this number, not of the machine;
# a different number rounds differently and gives a different model (docs/BENCHMARKS.md).
TRAIN_THREADS = 8
MAX_TRAIN_THREADS = 1024  # SentencePiece refuses more


class TokenizerError(ValueError):
    """A tokenizer model that cannot be used with this project's data contract."""


def train(
    sentences: Iterable[str],
    *,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    num_threads: int = TRAIN_THREADS,
) -> bytes:
    """Trains a SentencePiece model on ``sentences`` and returns the serialized model.

    ``hard_vocab_limit=False`` lets small corpora produce fewer pieces than asked
    instead of failing; ``byte_fallback`` means no input character is ever UNK.
    The same sentences and ``num_threads`` always give the same model, on any machine.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise TokenizerError(f"vocab_size={vocab_size} is below the minimum {MIN_VOCAB_SIZE}")
    sentences = iter(sentences)
    first = next(sentences, None)
    if first is None:
        raise TokenizerError(
            "no usable training text: every record was malformed, empty or filtered out"
        )
    model = io.BytesIO()
    try:
        _train(
            itertools.chain([first], sentences),
            model,
            vocab_size,
            model_type,
            character_coverage,
            num_threads,
        )
    except RuntimeError as e:  # SentencePiece refuses some texts (e.g. too many characters)
        raise TokenizerError(
            f"SentencePiece cannot train on this text ({str(e).splitlines()[0]})"
        ) from None
    return model.getvalue()


def _train(
    sentences: Iterator[str],
    model: io.BytesIO,
    vocab_size: int,
    model_type: str,
    character_coverage: float,
    num_threads: int,
) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences,
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        pad_id=features.PAD_ID,
        unk_id=features.UNK_ID,
        bos_id=features.BOS_ID,
        eos_id=features.EOS_ID,
        byte_fallback=True,
        hard_vocab_limit=False,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        max_sentence_length=1 << 16,
        num_threads=num_threads,
        minloglevel=2,
    )


class Tokenizer:
    """A loaded SentencePiece model plus its SHA-256 (the consistency key)."""

    def __init__(self, model_bytes: bytes):
        self.model_bytes = model_bytes
        self.sha256 = features.sha256_bytes(model_bytes)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_bytes)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError by version
            raise TokenizerError(f"not a SentencePiece model ({e})") from None
        ids = {
            "pad": self._sp.pad_id(),
            "unk": self._sp.unk_id(),
            "bos": self._sp.bos_id(),
            "eos": self._sp.eos_id(),
        }
        if ids != features.SPECIAL_IDS:
            raise TokenizerError(
                f"special ids {ids} differ from the data contract {features.SPECIAL_IDS}"
            )

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str, *, add_eos: bool = True) -> list[int]:
        ids = self._sp.encode(text)
        return ids + [features.EOS_ID] if add_eos else ids

    def encode_batch(self, texts: list[str], *, add_eos: bool = True) -> list[list[int]]:
        # One call per text: SentencePiece's list input starts a thread pool on every call,
        # which costs ~1 ms, far more than encoding a sentence.
        return [self.encode(t, add_eos=add_eos) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Decodes up to the first EOS; PAD and BOS are skipped."""
        kept = []
        for i in ids:
            i = int(i)
            if i == features.EOS_ID:
                break
            if i not in (features.PAD_ID, features.BOS_ID):
                kept.append(i)
        return self._sp.decode(kept)

    def __getstate__(self):
        return {"model_bytes": self.model_bytes}

    def __setstate__(self, state):
        self.__init__(state["model_bytes"])
