"""Readers for the English–German pair formats of ``--dataset=ende`` (tfds: aside).

- ``PREFIX``: ``PREFIX.<source_lang>[.gz]`` and ``PREFIX.<target_lang>[.gz]``, line-aligned
  (the fairseq convention). Origins are ``SOURCE_FILE:LINE``.
- ``.tsv``/``.txt`` (optionally ``.gz``): ``english<TAB>german[<TAB>...]`` per line.
- ``.pkl``: a pickled NumPy array [N, >=2] with columns [english, german, ...] (the textbook
  ``english-german-both.pkl``), loaded by ``safe_pickle`` so it cannot run code. Origins are
  ``FILE:row N``.

``resolve`` turns one flag's path into specs, failing early on anything fatal; ``read_aligned``,
``read_tsv`` and ``read_pickle`` stream one spec each. Records come out as (source, target) in
--source_lang/--target_lang order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipeline import safe_pickle, source_files
from pipeline.source_files import OversizedLine
from pipeline.source_records import (
    ALIGNED,
    PICKLE,
    TSV,
    UNDECODABLE,
    WRONG_COLUMNS,
    InputError,
    RawRecord,
    Reject,
    SourceSpec,
    oversized_reject,
    undecodable_reject,
)

_TSV_SUFFIXES = (".tsv", ".txt", ".tsv.gz", ".txt.gz")
_PICKLE_SUFFIXES = (".pkl", ".pkl.gz")
# TSV and pickle inputs have fixed columns: [english, german, ...].
_PAIR_COLUMNS = {"en": 0, "de": 1}


def resolve(flag: str, path: str, split: str | None, langs: tuple[str, str]) -> list[SourceSpec]:
    """The specs for ``flag``'s ``path`` (a prefix, a file or a glob); InputError if unusable."""
    if not source_files.is_glob(path):
        aligned = _aligned_spec(flag, path, split, langs)
        if aligned is not None:
            return [aligned]
        if not FileSystems.exists(path):
            if path.lower().endswith(_TSV_SUFFIXES + _PICKLE_SUFFIXES):
                raise InputError(f"{flag}: no such file {path}")
            source, target = langs
            raise InputError(
                f"{flag}: no files match {path}.{source}[.gz] and {path}.{target}[.gz]"
            )
    columns = _pair_columns(langs)
    specs = []
    for file in source_files.input_files(flag, path):
        lower = file.lower()
        if lower.endswith(_TSV_SUFFIXES):
            kind = TSV
        elif lower.endswith(_PICKLE_SUFFIXES):
            kind = PICKLE
            _load_pair_array(flag, file)  # fail before the job starts, not in a worker
        else:
            raise InputError(
                f"{flag}: unsupported input {file!r} for --dataset=ende (expected a PREFIX of "
                "PREFIX.<lang>[.gz] files, .tsv/.txt[.gz], .pkl or tfds:NAME)"
            )
        specs.append(SourceSpec(kind, file, split, (("flag", flag), *columns)))
    return specs


def read_aligned(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    paths = (spec.option("source_path"), spec.option("target_path"))
    pairs = itertools.zip_longest(*(source_files.lines(p) for p in paths))
    for number, raw_pair in enumerate(pairs, 1):
        origin = f"{paths[0]}:{number}"
        if None in raw_pair:
            ended = paths[raw_pair.index(None)]
            raise InputError(
                f"{spec.option('flag')}: {ended} ended at line {number - 1} before the other "
                "file; aligned files must have the same number of lines"
            )
        oversized = [raw.size for raw in raw_pair if isinstance(raw, OversizedLine)]
        if oversized:
            yield oversized_reject(origin, max(oversized))
            continue
        texts = []
        for path, raw in zip(paths, raw_pair):
            try:
                texts.append(source_files.decode_line(raw, first=number == 1))
            except UnicodeDecodeError as e:
                yield undecodable_reject(origin, path, e)
                break
        else:
            yield RawRecord(origin, tuple(texts), None, spec.split)


def read_tsv(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    source, target = int(spec.option("source_column")), int(spec.option("target_column"))
    for number, raw in enumerate(source_files.lines(spec.path), 1):
        origin = f"{spec.path}:{number}"
        if isinstance(raw, OversizedLine):
            yield oversized_reject(origin, raw.size)
            continue
        try:
            columns = source_files.decode_line(raw, first=number == 1).split("\t")
        except UnicodeDecodeError as e:
            yield undecodable_reject(origin, spec.path, e)
            continue
        if len(columns) < 2:
            yield Reject(
                origin, WRONG_COLUMNS, f"{len(columns)} column, expected >= 2 (english<TAB>german)"
            )
            continue
        yield RawRecord(origin, (columns[source], columns[target]), None, spec.split)


def read_pickle(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    array = _load_pair_array(spec.option("flag"), spec.path)
    columns = (int(spec.option("source_column")), int(spec.option("target_column")))
    for number, row in enumerate(array, 1):
        origin = f"{spec.path}:row {number}"
        texts = []
        for column in columns:
            cell = row[column]
            if isinstance(cell, str):
                try:
                    cell.encode("utf-8")
                except UnicodeEncodeError as e:  # a lone surrogate in a NumPy string
                    detail = f"column {column}: not valid Unicode ({e.reason} at {e.start})"
                    yield Reject(origin, UNDECODABLE, detail)
                    break
                texts.append(str(cell))
            elif isinstance(cell, bytes):
                try:
                    texts.append(bytes(cell).decode("utf-8"))
                except UnicodeDecodeError as e:
                    yield undecodable_reject(origin, f"column {column}", e)
                    break
            else:
                detail = f"column {column} is {type(cell).__name__}, expected text"
                yield Reject(origin, WRONG_COLUMNS, detail)
                break
        else:
            yield RawRecord(origin, tuple(texts), None, spec.split)


def _aligned_spec(
    flag: str, prefix: str, split: str | None, langs: tuple[str, str]
) -> SourceSpec | None:
    found = {lang: _plain_or_gz(flag, f"{prefix}.{lang}") for lang in langs}
    if not any(found.values()):
        return None
    for lang, path in found.items():
        if path is None:
            other = next(p for p in found.values() if p)
            raise InputError(f"{flag}: found {other} but no {prefix}.{lang}[.gz]")
    source_path, target_path = found.values()
    source_lines = source_files.count_lines(source_path)
    target_lines = source_files.count_lines(target_path)
    if source_lines != target_lines:
        raise InputError(
            f"{flag}: {source_path} has {source_lines} lines but {target_path} has "
            f"{target_lines}; aligned files must have the same number of lines"
        )
    options = (("flag", flag), ("source_path", source_path), ("target_path", target_path))
    return SourceSpec(ALIGNED, prefix, split, options)


def _plain_or_gz(flag: str, path: str) -> str | None:
    plain, gz = FileSystems.exists(path), FileSystems.exists(path + ".gz")
    if plain and gz:
        raise InputError(f"{flag}: both {path} and {path}.gz exist; remove one")
    return path if plain else path + ".gz" if gz else None


def _pair_columns(langs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    source, target = langs
    if {source, target} != set(_PAIR_COLUMNS):
        raise InputError(
            f"--source_lang/--target_lang: {source}-{target}, but TSV and pickle inputs hold "
            "English and German columns (use en and de)"
        )
    return (
        ("source_column", str(_PAIR_COLUMNS[source])),
        ("target_column", str(_PAIR_COLUMNS[target])),
    )


def _load_pair_array(flag: str, path: str) -> np.ndarray:
    with FileSystems.open(path) as f:
        data = f.read()
    try:
        array = safe_pickle.load_array(data)
    except safe_pickle.RefusedGlobalError as e:
        raise InputError(
            f"{flag}: {path}: refusing to unpickle {e.name!r} (only NumPy arrays are allowed)"
        ) from None
    except safe_pickle.InvalidPickleError as e:
        raise InputError(f"{flag}: {path}: not a pickled NumPy array ({e})") from None
    if array.ndim != 2 or array.shape[1] < 2:
        raise InputError(
            f"{flag}: {path}: array of shape {array.shape}, expected (N, >=2) "
            "with columns [english, german, ...]"
        )
    if array.dtype.kind not in "USO":
        raise InputError(f"{flag}: {path}: array of {array.dtype}, expected strings")
    return array
