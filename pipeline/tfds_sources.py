"""The ``tfds:NAME[/CONFIG]`` input of both datasets: a TFDS dataset already prepared under
--tfds_data_dir. Nothing is downloaded.

``resolve`` finds the newest prepared version (and the config, when there is one), checks the
features the dataset needs (ende: the two language codes; imdb: ``text`` and ``label``) and
returns a spec per split: train (split None, carved later), validation and test (kept).
``read_tfds`` streams one split. TensorFlow Datasets is imported only here, inside the
functions, so other inputs never pay for importing TensorFlow.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator

from pipeline import features, source_files
from pipeline.source_records import (
    INVALID_LABEL,
    TFDS,
    InputError,
    RawRecord,
    Reject,
    SourceSpec,
    undecodable_reject,
)

_TFDS_SPLITS = {"train": None, "validation": features.VALIDATION, "test": features.TEST}
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def resolve(
    flag: str, path: str, dataset: str, langs: tuple[str, str], data_dir: str | None
) -> list[SourceSpec]:
    """The specs for ``flag``'s ``tfds:`` ``path``, one per split; InputError if unusable."""
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


def read_tfds(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
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
            yield undecodable_reject(origin, "text", e)
            continue
        label = None
        if label_feature:
            label = int(example[label_feature])
            if label not in (0, 1):
                yield Reject(origin, INVALID_LABEL, f"label {label}, expected 0 or 1")
                continue
        yield RawRecord(origin, texts, label, spec.split)


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
    dirs = [posixpath.dirname(p) for p in source_files.match(f"{base_pattern}/*/dataset_info.json")]
    return [d for d in dirs if _VERSION.match(posixpath.basename(d))]
