"""Readers for every input format the preprocessing job accepts.

``resolve_sources`` turns the job's input flags into ``SourceSpec``s: it detects each format and
fails early, with one line naming the flag, on anything fatal. ``read_source`` streams one spec
as ``RawRecord``s, plus a ``Reject`` for each malformed record (the job's dead-letter output).
Plain generators, no Beam transforms: the job runs one spec per element. Files are opened only
through Beam's ``FileSystems``, so local paths and gs:// URIs both work.

Formats (``fields`` is (source, target) in --source_lang/--target_lang order for ende, and
(review,) for imdb):

- ende ``PREFIX``: ``PREFIX.<source_lang>[.gz]`` and ``PREFIX.<target_lang>[.gz]``, line-aligned
  (the fairseq convention). Origins are ``SOURCE_FILE:LINE``.
- ende ``.tsv``/``.txt`` (optionally ``.gz``): ``english<TAB>german[<TAB>...]`` per line.
- ende ``.pkl``: a pickled NumPy array [N, >=2] with columns [english, german, ...] (the
  textbook ``english-german-both.pkl``), loaded by ``safe_pickle`` so it cannot run code.
- imdb aclImdb directory (``DIR/{train,test}/{pos,neg}/*.txt``, or its parent) or the same
  tree as a ``.tar.gz``/``.tgz``, streamed without extracting. ``unsup`` is ignored.
- imdb ``.csv`` (optionally ``.gz``) with ``review`` and ``sentiment`` columns. Origins are
  ``FILE:row N``, the header being row 1.
- ``tfds:NAME[/CONFIG]``: a dataset already prepared under --tfds_data_dir; nothing is
  downloaded. Its train split is carved later, its validation and test splits are kept.

Records from --input have split None (validation and test are carved from them by hash later),
except aclImdb's own test part and a TFDS dataset's validation/test splits; every record from
--validation_input or --test_input has that split. Inputs other than aligned prefixes and
aclImdb directories may be globs (``data/*.tsv``).

Text must be UTF-8: each line (or CSV record, file, member, cell) is decoded strictly on its
own, so one bad line becomes an ``undecodable`` Reject instead of failing the file.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterator

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import features, safe_pickle

UNDECODABLE = "undecodable"
WRONG_COLUMNS = "wrong_columns"
MISSING_LABEL = "missing_label"
INVALID_LABEL = "invalid_label"
UNREADABLE_MEMBER = "unreadable_member"
REJECT_REASONS = (UNDECODABLE, WRONG_COLUMNS, MISSING_LABEL, INVALID_LABEL, UNREADABLE_MEMBER)

ALIGNED = "aligned"
TSV = "tsv"
PICKLE = "pickle"
TFDS = "tfds"
ACLIMDB_DIR = "aclimdb_dir"
ACLIMDB_TAR = "aclimdb_tar"
CSV = "csv"
EMBEDDED = "embedded"

_TSV_SUFFIXES = (".tsv", ".txt", ".tsv.gz", ".txt.gz")
_PICKLE_SUFFIXES = (".pkl", ".pkl.gz")
_CSV_SUFFIXES = (".csv", ".csv.gz")
_TAR_SUFFIXES = (".tar.gz", ".tgz")
# TSV and pickle inputs have fixed columns: [english, german, ...].
_PAIR_COLUMNS = {"en": 0, "de": 1}
_IMDB_FORMS = "expected an aclImdb directory, its .tar.gz/.tgz, a .csv or tfds:imdb_reviews"
_SENTIMENTS = {"positive": 1, "pos": 1, "1": 1, "negative": 0, "neg": 0, "0": 0}
_REVIEW_MEMBER = re.compile(r"(?:^|/)(train|test)/(pos|neg)/[^/]+\.txt$")
_TFDS_SPLITS = {"train": None, "validation": features.VALIDATION, "test": features.TEST}
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_CHUNK = 1 << 20
# What a damaged .tar.gz raises. OSError stays out: an I/O failure should fail the bundle so the
# runner retries it, not pass for a corrupt archive.
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error)


@dataclasses.dataclass(frozen=True)
class RawRecord:
    origin: str  # "path:LINE" (1-based), "archive.tar.gz:member/name" or "path:row N"
    fields: tuple[str, ...]  # ende: (source, target); imdb: (review,)
    label: int | None  # imdb: 0 negative / 1 positive; ende: None
    split: str | None  # a given split, or None: carved by hash later


@dataclasses.dataclass(frozen=True)
class Reject:
    origin: str
    reason: str  # one of REJECT_REASONS
    detail: str  # short human text


class InputError(Exception):
    """A fatal input problem; str(e) is one line naming the flag or file and what is wrong."""


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    kind: str  # ALIGNED | TSV | PICKLE | TFDS | ACLIMDB_DIR | ACLIMDB_TAR | CSV
    path: str  # the prefix for ALIGNED, "tfds:NAME/CONFIG" for TFDS, else a file or directory
    split: str | None  # the given split, or None
    options: tuple[tuple[str, str], ...] = ()  # always includes ("flag", the flag it came from)

    def option(self, key: str) -> str:
        return dict(self.options)[key]


def resolve_sources(
    *,
    dataset: str,
    input: str,  # shadows the builtin to mirror the --input flag
    validation_input: str | None,
    test_input: str | None,
    source_lang: str,
    target_lang: str,
    tfds_data_dir: str | None,
) -> list[SourceSpec]:
    """The specs to read for these flags; InputError on anything that cannot work."""
    if dataset not in features.DATASET_TASKS:
        expected = " or ".join(sorted(features.DATASET_TASKS))
        raise InputError(f"--dataset: unknown dataset {dataset!r} (expected {expected})")
    if dataset == "ende" and source_lang == target_lang:
        raise InputError(f"--target_lang: same as --source_lang ({source_lang!r})")
    if not input:
        raise InputError("--input: required")
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
            specs += _tfds_specs(flag, path, dataset, (source_lang, target_lang), tfds_data_dir)
        elif dataset == "ende":
            specs += _ende_specs(flag, path, split, (source_lang, target_lang))
        else:
            specs += _imdb_specs(flag, path, split)
    return specs


def read_source(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    """Streams the records of one spec; InputError if it turns out unreadable as a whole."""
    readers = {
        ALIGNED: _read_aligned,
        TSV: _read_tsv,
        PICKLE: _read_pickle,
        TFDS: _read_tfds,
        ACLIMDB_DIR: _read_aclimdb_dir,
        ACLIMDB_TAR: _read_aclimdb_tar,
        CSV: _read_csv,
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


def count_lines(path: str) -> int:
    """Lines in a (possibly gzipped) text file, counted as ``read_source`` reads them."""
    count, last = 0, b"\n"
    with FileSystems.open(path) as f:
        while chunk := f.read(_CHUNK):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


# Resolving.


def _ende_specs(
    flag: str, path: str, split: str | None, langs: tuple[str, str]
) -> list[SourceSpec]:
    if not _is_glob(path):
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
    for file in _files(flag, path):
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
    source_lines, target_lines = count_lines(source_path), count_lines(target_path)
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


def _imdb_specs(flag: str, path: str, split: str | None) -> list[SourceSpec]:
    lower = path.lower()
    if not _is_glob(path) and not lower.endswith(_TAR_SUFFIXES + _CSV_SUFFIXES):
        return _aclimdb_dir_specs(flag, path, split)
    specs = []
    for file in _files(flag, path):
        lower = file.lower()
        if lower.endswith(_TAR_SUFFIXES):
            _check_archive(flag, file)
            specs.append(SourceSpec(ACLIMDB_TAR, file, split, (("flag", flag),)))
        elif lower.endswith(_CSV_SUFFIXES):
            with _csv_reader(file) as records:
                _csv_columns(flag, file, next(records, None))
            specs.append(SourceSpec(CSV, file, split, (("flag", flag),)))
        else:
            raise InputError(
                f"{flag}: unsupported input {file!r} for --dataset=imdb ({_IMDB_FORMS})"
            )
    return specs


def _aclimdb_dir_specs(flag: str, path: str, split: str | None) -> list[SourceSpec]:
    root = path.rstrip("/")
    for base in (root, f"{root}/aclImdb"):
        parts = [
            part
            for part in ("train", "test")
            if any(_matches(f"{base}/{part}/{label}/*.txt", limit=1) for label in ("pos", "neg"))
        ]
        if parts:
            return [
                SourceSpec(
                    ACLIMDB_DIR, f"{base}/{part}", _given_or_implied(split, part), (("flag", flag),)
                )
                for part in parts
            ]
    exists = FileSystems.exists(root)  # on gs:// only objects exist, not "directories"
    is_directory = _is_local_directory(root) if exists else bool(_matches(f"{root}/**", limit=1))
    if exists and not is_directory:
        raise InputError(f"{flag}: unsupported input {path!r} for --dataset=imdb ({_IMDB_FORMS})")
    if not is_directory:
        raise InputError(f"{flag}: no such file or directory {path}")
    raise InputError(
        f"{flag}: {path} has no aclImdb reviews "
        "(expected train/{pos,neg}/*.txt or test/{pos,neg}/*.txt in it or in its aclImdb/)"
    )


def _is_local_directory(path: str) -> bool:
    try:
        FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED).close()
    except IsADirectoryError:
        return True
    return False


def _given_or_implied(split: str | None, part: str) -> str | None:
    # aclImdb's own test part stays test; its train part still gives up a validation carve-out.
    if split is not None:
        return split
    return features.TEST if part == "test" else None


def _check_archive(flag: str, path: str) -> None:
    """Streams up to the first review so a wrong or corrupt archive fails before the job."""
    for member in _scan_archive(path):
        if member.corrupt:
            raise InputError(f"{flag}: {path} is not a readable .tar.gz archive ({member.problem})")
        if member.problem is None:
            return
    raise InputError(
        f"{flag}: {path} has no aclImdb reviews (expected members like */train/pos/*.txt)"
    )


def _tfds_specs(
    flag: str, path: str, dataset: str, langs: tuple[str, str], data_dir: str | None
) -> list[SourceSpec]:
    if not data_dir:
        raise InputError(
            f"--tfds_data_dir: required with {flag}={path} "
            "(the directory the dataset was prepared in; nothing is downloaded)"
        )
    version_dir = _tfds_version_dir(flag, path, data_dir.rstrip("/"))
    import tensorflow_datasets as tfds  # heavy (imports TensorFlow): only for tfds: inputs

    try:
        info = tfds.builder_from_directory(version_dir).info
    except Exception as e:  # TFDS raises many types for a bad directory
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{flag}: cannot load {path} from {version_dir}: {first_line}") from None
    wanted = langs if dataset == "ende" else ("text", "label")
    missing = [name for name in wanted if name not in info.features]
    if missing:
        raise InputError(
            f"{flag}: {path} has features {sorted(info.features)}, not {', '.join(missing)}"
        )
    options = [("flag", flag), ("tfds_dir", version_dir)]
    if dataset == "ende":
        options.append(("text_features", ",".join(langs)))
    else:
        options += [("text_features", "text"), ("label_feature", "label")]
    splits = [name for name in sorted(info.splits) if name in _TFDS_SPLITS]
    if not splits:
        raise InputError(
            f"{flag}: {path} has no train, validation or test split ({sorted(info.splits)})"
        )
    return [
        SourceSpec(TFDS, path, _TFDS_SPLITS[name], (*options, ("tfds_split", name)))
        for name in splits
    ]


def _tfds_version_dir(flag: str, path: str, data_dir: str) -> str:
    name = path.removeprefix("tfds:").strip("/")
    base = f"{data_dir}/{name}"
    versions = _tfds_versions(base)
    if not versions and "/" not in name:
        configs = sorted(
            {posixpath.basename(posixpath.dirname(v)) for v in _tfds_versions(f"{base}/*")}
        )
        if len(configs) > 1:
            raise InputError(
                f"{flag}: {path} has configs {', '.join(configs)} in {data_dir}; "
                f"name one as tfds:{name}/CONFIG"
            )
        if configs:
            versions = _tfds_versions(f"{base}/{configs[0]}")
    if not versions:
        raise InputError(
            f"{flag}: {path} is not prepared in --tfds_data_dir={data_dir} "
            f"(no {base}/<version>/dataset_info.json)"
        )
    return max(versions, key=lambda v: tuple(int(n) for n in posixpath.basename(v).split(".")))


def _tfds_versions(base_pattern: str) -> list[str]:
    dirs = [posixpath.dirname(p) for p in _matches(f"{base_pattern}/*/dataset_info.json")]
    return [d for d in dirs if _VERSION.match(posixpath.basename(d))]


def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _matches(pattern: str, limit: int | None = None) -> list[str]:
    result = FileSystems.match([pattern], limits=[limit] if limit else None)[0]
    return sorted(m.path for m in result.metadata_list)


def _files(flag: str, path: str) -> list[str]:
    if not _is_glob(path):
        if not FileSystems.exists(path):
            raise InputError(f"{flag}: no such file {path}")
        return [path]
    files = _matches(path)
    if not files:
        raise InputError(f"{flag}: no files match {path}")
    return files


# Reading.


def _lines(path: str) -> Iterator[bytes]:
    """The lines of a (possibly gzipped) file as bytes, without their newline."""
    with FileSystems.open(path) as f:
        pending: list[bytes] = []
        while chunk := f.read(_CHUNK):
            *complete, rest = chunk.split(b"\n")
            if complete:
                complete[0] = b"".join(pending) + complete[0]
                pending = []
                yield from complete
            if rest:
                pending.append(rest)
        if pending:
            yield b"".join(pending)


def _decode_line(raw: bytes, *, first: bool) -> str:
    text = raw.decode("utf-8-sig" if first else "utf-8")
    return text[:-1] if text.endswith("\r") else text


def _undecodable(origin: str, where: str, error: UnicodeDecodeError) -> Reject:
    return Reject(origin, UNDECODABLE, f"{where}: not UTF-8 ({error.reason} at byte {error.start})")


def _read_aligned(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    paths = (spec.option("source_path"), spec.option("target_path"))
    pairs = itertools.zip_longest(*(_lines(p) for p in paths))
    for number, raw_pair in enumerate(pairs, 1):
        origin = f"{paths[0]}:{number}"
        if None in raw_pair:
            ended = paths[raw_pair.index(None)]
            raise InputError(
                f"{spec.option('flag')}: {ended} ended at line {number - 1} before the other "
                "file; aligned files must have the same number of lines"
            )
        texts = []
        for path, raw in zip(paths, raw_pair):
            try:
                texts.append(_decode_line(raw, first=number == 1))
            except UnicodeDecodeError as e:
                yield _undecodable(origin, path, e)
                break
        else:
            yield RawRecord(origin, tuple(texts), None, spec.split)


def _read_tsv(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    source, target = int(spec.option("source_column")), int(spec.option("target_column"))
    for number, raw in enumerate(_lines(spec.path), 1):
        origin = f"{spec.path}:{number}"
        try:
            columns = _decode_line(raw, first=number == 1).split("\t")
        except UnicodeDecodeError as e:
            yield _undecodable(origin, spec.path, e)
            continue
        if len(columns) < 2:
            yield Reject(
                origin, WRONG_COLUMNS, f"{len(columns)} column, expected >= 2 (english<TAB>german)"
            )
            continue
        yield RawRecord(origin, (columns[source], columns[target]), None, spec.split)


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


def _read_pickle(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    array = _load_pair_array(spec.option("flag"), spec.path)
    columns = (int(spec.option("source_column")), int(spec.option("target_column")))
    for number, row in enumerate(array, 1):
        origin = f"{spec.path}:row {number}"
        texts = []
        for column in columns:
            cell = row[column]
            if isinstance(cell, str):
                texts.append(str(cell))
            elif isinstance(cell, bytes):
                try:
                    texts.append(bytes(cell).decode("utf-8"))
                except UnicodeDecodeError as e:
                    yield _undecodable(origin, f"column {column}", e)
                    break
            else:
                detail = f"column {column} is {type(cell).__name__}, expected text"
                yield Reject(origin, WRONG_COLUMNS, detail)
                break
        else:
            yield RawRecord(origin, tuple(texts), None, spec.split)


def _read_tfds(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    import tensorflow_datasets as tfds  # heavy (imports TensorFlow): only for tfds: inputs

    builder = tfds.builder_from_directory(spec.option("tfds_dir"))
    split_name = spec.option("tfds_split")
    text_features = spec.option("text_features").split(",")
    label_feature = dict(spec.options).get("label_feature")
    dataset = builder.as_dataset(split=split_name, shuffle_files=False)
    for number, example in enumerate(tfds.as_numpy(dataset), 1):
        origin = f"{spec.path}:{split_name} row {number}"
        try:
            texts = tuple(bytes(example[name]).decode("utf-8") for name in text_features)
        except UnicodeDecodeError as e:
            yield _undecodable(origin, "text", e)
            continue
        label = None
        if label_feature:
            label = int(example[label_feature])
            if label not in (0, 1):
                yield Reject(origin, INVALID_LABEL, f"label {label}, expected 0 or 1")
                continue
        yield RawRecord(origin, texts, label, spec.split)


def _read_aclimdb_dir(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    for label_name, label in (("neg", 0), ("pos", 1)):
        for path in _matches(f"{spec.path}/{label_name}/*.txt"):
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                yield _undecodable(path, path, e)
                continue
            yield RawRecord(path, (text,), label, spec.split)


@dataclasses.dataclass(frozen=True)
class _Member:
    name: str
    part: str = ""  # "train" or "test" for a review
    label: int = 0
    data: bytes = b""
    problem: str | None = None  # why it is refused; None for a review
    corrupt: bool = False  # the archive broke here; nothing after it was read


def _scan_archive(path: str) -> Iterator[_Member]:
    """The reviews and the refused members of an aclImdb .tar.gz, streamed, never extracted."""
    last = "<start>"
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        try:
            with tarfile.open(fileobj=raw, mode="r|gz") as tar:
                for member in tar:
                    last = member.name
                    found = _archive_member(tar, member)
                    if found is not None:
                        yield found
        except _ARCHIVE_ERRORS as e:
            problem = f"archive corrupt after this member, rest not read: {type(e).__name__}: {e}"
            yield _Member(last, problem=problem, corrupt=True)


def _archive_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> _Member | None:
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        return _Member(name, problem="unsafe member path (absolute or '..'), refused")
    if member.issym() or member.islnk():
        return _Member(name, problem=f"link to {member.linkname!r}, refused")
    review = _REVIEW_MEMBER.search(name)
    if review is None:
        return None
    if not member.isfile():
        return _Member(name, problem="not a regular file, refused")
    data = tar.extractfile(member).read()
    return _Member(name, part=review[1], label=int(review[2] == "pos"), data=data)


def _read_aclimdb_tar(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    reviews, corrupt = 0, False
    for member in _scan_archive(spec.path):
        origin = f"{spec.path}:{member.name}"
        if member.problem is not None:
            corrupt = corrupt or member.corrupt
            yield Reject(origin, UNREADABLE_MEMBER, member.problem)
            continue
        reviews += 1
        try:
            text = member.data.decode("utf-8")
        except UnicodeDecodeError as e:
            yield _undecodable(origin, member.name, e)
            continue
        yield RawRecord(origin, (text,), member.label, _given_or_implied(spec.split, member.part))
    if not reviews and not corrupt:
        raise InputError(f"{spec.option('flag')}: {spec.path} has no aclImdb reviews")


@contextlib.contextmanager
def _csv_reader(path: str) -> Iterator[Iterator[list[str]]]:
    # Each physical line is decoded with surrogateescape, so a bad byte survives as a lone
    # surrogate that _csv_record spots per record, while csv still joins quoted newlines.
    lines = _lines(path)
    try:
        yield csv.reader(
            _decode_surrogates(raw, first=number == 1) + "\n" for number, raw in enumerate(lines, 1)
        )
    finally:
        lines.close()  # closes the file now, not when the generator is collected


def _decode_surrogates(raw: bytes, *, first: bool) -> str:
    return raw.decode("utf-8-sig" if first else "utf-8", errors="surrogateescape")


def _csv_columns(flag: str, path: str, header: list[str] | None) -> tuple[int, int]:
    if not header:
        raise InputError(f"{flag}: {path} is empty (expected a header with review and sentiment)")
    names = [name.strip().lower() for name in header]
    for wanted in ("review", "sentiment"):
        if wanted not in names:
            found = ", ".join(header)
            raise InputError(
                f"{flag}: {path}: the header has no {wanted!r} column (found: {found})"
            )
    return names.index("review"), names.index("sentiment")


def _read_csv(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    with _csv_reader(spec.path) as records:
        header = next(records, None)
        review, sentiment = _csv_columns(spec.option("flag"), spec.path, header)
        for number in itertools.count(2):
            origin = f"{spec.path}:row {number}"
            try:
                row = next(records)
            except StopIteration:
                return
            except csv.Error as e:
                yield Reject(origin, WRONG_COLUMNS, f"malformed CSV: {e}")
                continue
            if not row:
                continue  # a blank line is no record
            yield _csv_record(origin, row, len(header), review, sentiment, spec.split)


def _csv_record(
    origin: str, row: list[str], width: int, review: int, sentiment: int, split: str | None
) -> RawRecord | Reject:
    try:
        for cell in row:
            cell.encode("utf-8")
    except UnicodeEncodeError as e:
        return Reject(
            origin, UNDECODABLE, f"not UTF-8 (byte 0x{ord(e.object[e.start]) - 0xDC00:02x})"
        )
    if len(row) != width:
        return Reject(origin, WRONG_COLUMNS, f"{len(row)} columns, expected {width}")
    value = row[sentiment].strip().lower()
    if not value:
        return Reject(origin, MISSING_LABEL, "empty sentiment")
    if value not in _SENTIMENTS:
        return Reject(
            origin, INVALID_LABEL, f"sentiment {row[sentiment]!r}, expected positive or negative"
        )
    return RawRecord(origin, (row[review],), _SENTIMENTS[value], split)
