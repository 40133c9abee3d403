"""The preprocessing job's inputs: from flags to specs, and from a spec to its records.

``resolve_sources`` turns the job's input flags into ``SourceSpec``s: it detects each format and
fails early, with one line naming the flag, on anything fatal. ``read_source`` streams one spec
as ``RawRecord``s, plus a ``Reject`` for each malformed record (the job's dead-letter output).
Plain generators, no Beam transforms: the job runs one spec per element. Files are opened only
through Beam's ``FileSystems``, so local paths and gs:// URIs both work.

Where each format lives (``fields`` is (source, target) in --source_lang/--target_lang order for
ende, and (review,) for imdb):

- pipeline/ende_sources.py: ende ``PREFIX`` (line-aligned ``PREFIX.<lang>[.gz]`` files),
  ``.tsv``/``.txt[.gz]`` and the pickled NumPy array ``.pkl`` (through ``safe_pickle``).
- pipeline/imdb_sources.py: imdb aclImdb directory, its ``.tar.gz``/``.tgz`` (streamed, never
  extracted) and ``.csv[.gz]``.
- pipeline/tfds_sources.py: ``tfds:NAME[/CONFIG]`` for either dataset, already prepared under
  --tfds_data_dir; nothing is downloaded.
- here: the embedded default corpus (pipeline/default_corpus.py).
- pipeline/source_records.py: the types above, the spec kinds and the reject reasons;
  pipeline/source_files.py: glob expansion, line streaming and ``count_lines``.

Records from --input have split None (validation and test are carved from them by hash later),
except aclImdb's own test part and a TFDS dataset's validation/test splits; every record from
--validation_input or --test_input has that split. Inputs other than aligned prefixes and
aclImdb directories may be globs (``data/*.tsv``).

Text must be UTF-8: each line (or CSV record, file, member, cell) is decoded strictly on its
own, so one bad line becomes an ``undecodable`` Reject instead of failing the file. A line,
review file or archive member over ``source_records.MAX_TEXT_BYTES`` (1 MiB) becomes an
``oversized`` Reject and is skipped as it streams past, never held whole; a corrupt .gz is an
InputError naming it.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline import ende_sources, features, imdb_sources, tfds_sources
from pipeline.source_records import (
    ACLIMDB_DIR,
    ACLIMDB_TAR,
    ALIGNED,
    CSV,
    EMBEDDED,
    PICKLE,
    TFDS,
    TSV,
    InputError,
    RawRecord,
    Reject,
    SourceSpec,
)

# The entry points, and the types their callers handle (defined in pipeline/source_records.py).
__all__ = [
    "InputError",
    "RawRecord",
    "Reject",
    "SourceSpec",
    "embedded_sources",
    "read_source",
    "resolve_sources",
]


def resolve_sources(
    *,
    dataset: str,
    input: str,  # shadows the builtin to mirror the --input flag
    source_lang: str,
    target_lang: str,
    validation_input: str | None = None,
    test_input: str | None = None,
    tfds_data_dir: str | None = None,
) -> list[SourceSpec]:
    """The specs to read for these flags; InputError on anything that cannot work."""
    if dataset not in features.DATASET_TASKS:
        expected = " or ".join(sorted(features.DATASET_TASKS))
        raise InputError(f"--dataset: unknown dataset {dataset!r} (expected {expected})")
    if dataset == "ende" and source_lang == target_lang:
        raise InputError(f"--target_lang: same as --source_lang ({source_lang!r})")
    if not input:
        raise InputError("--input: required")
    langs = (source_lang, target_lang)
    specs = []
    for flag, path, split in (
        ("--input", input, None),
        ("--validation_input", validation_input, features.VALIDATION),
        ("--test_input", test_input, features.TEST),
    ):
        if not path:
            continue
        if path.startswith("tfds:"):
            if split is not None:
                raise InputError(
                    f"{flag}: tfds: datasets are read from --input only, "
                    "with their own validation and test splits"
                )
            specs += tfds_sources.resolve(flag, path, dataset, langs, tfds_data_dir)
        elif dataset == "ende":
            specs += ende_sources.resolve(flag, path, split, langs)
        else:
            specs += imdb_sources.resolve(flag, path, split)
    return specs


def read_source(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    """Streams the records of one spec; InputError if it turns out unreadable as a whole."""
    readers = {
        ALIGNED: ende_sources.read_aligned,
        TSV: ende_sources.read_tsv,
        PICKLE: ende_sources.read_pickle,
        TFDS: tfds_sources.read_tfds,
        ACLIMDB_DIR: imdb_sources.read_aclimdb_dir,
        ACLIMDB_TAR: imdb_sources.read_aclimdb_tar,
        CSV: imdb_sources.read_csv,
        EMBEDDED: _read_embedded,
    }
    if spec.kind not in readers:
        raise InputError(f"{spec.path}: unknown source kind {spec.kind!r}")
    yield from readers[spec.kind](spec)


def embedded_sources(dataset: str) -> list[SourceSpec]:
    """The embedded default corpus (pipeline/default_corpus.py): no files, no downloads.

    ende brings a held-out test split (sentences unseen in training) for the demo's BLEU;
    imdb has its validation split carved by hash like any other input.
    """
    flag = (("flag", "(embedded corpus)"),)
    if dataset == "ende":
        return [
            SourceSpec(EMBEDDED, "embedded:ende/train", None, flag),
            SourceSpec(EMBEDDED, "embedded:ende/test", features.TEST, flag),
        ]
    if dataset == "imdb":
        return [SourceSpec(EMBEDDED, "embedded:imdb/train", None, flag)]
    raise InputError(f"--dataset: unknown dataset {dataset!r} (expected ende or imdb)")


def _read_embedded(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    from pipeline import default_corpus

    if spec.path == "embedded:ende/train":
        rows = [((en, de), None) for en, de in default_corpus.translation_pairs()]
    elif spec.path == "embedded:ende/test":
        rows = [((en, de), None) for en, de in default_corpus.held_out_translation_pairs()]
    elif spec.path == "embedded:imdb/train":
        rows = [((text,), label) for text, label in default_corpus.reviews()]
    else:
        raise InputError(f"{spec.path}: no such embedded corpus")
    for i, (fields, label) in enumerate(rows, start=1):
        yield RawRecord(origin=f"{spec.path}:{i}", fields=fields, label=label, split=spec.split)
