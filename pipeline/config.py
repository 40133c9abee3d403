"""The preprocessing job's configuration: flags become one frozen object here."""

from __future__ import annotations

import dataclasses

from pipeline import features, tokenizer
from pipeline.sources import SourceSpec

DEFAULT_MAX_TOKENS = {"ende": 256, "imdb": 4096}


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    dataset: str  # "ende" | "imdb"
    output_dir: str
    sources: tuple[SourceSpec, ...]
    lowercase: bool = False
    max_tokens: int = 256
    max_length_ratio: float = 3.0
    validation_fraction: float = 0.05
    test_fraction: float = 0.0
    vocab_size: int = 8000
    tokenizer_sample_size: int = 1_000_000
    tokenizer_threads: int = tokenizer.TRAIN_THREADS  # part of the model's recipe
    tokenizer_path: str | None = None  # reuse this model instead of training one
    num_shards: int = 8
    num_eval_shards: int = 1
    max_reject_fraction: float = 0.01

    @property
    def task(self) -> str:
        return features.DATASET_TASKS[self.dataset]

    def given_splits(self) -> set[str]:
        return {spec.split for spec in self.sources if spec.split}

    def carve_validation(self) -> bool:
        return features.VALIDATION not in self.given_splits() and self.validation_fraction > 0

    def carve_test(self) -> bool:
        return features.TEST not in self.given_splits() and self.test_fraction > 0

    def output_splits(self) -> tuple[str, ...]:
        """Splits this run writes, known before it runs (so empty ones still get shards)."""
        present = {features.TRAIN} | self.given_splits()
        if self.carve_validation():
            present.add(features.VALIDATION)
        if self.carve_test():
            present.add(features.TEST)
        return tuple(s for s in features.SPLITS if s in present)

    def shards_for(self, split: str) -> int:
        return self.num_shards if split == features.TRAIN else self.num_eval_shards
