"""Small input fixtures in every format the preprocessing job reads, written by the tests."""

from __future__ import annotations

import csv
import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

from pipeline.default_corpus import translation_pairs

PAIRS = [
    ("A dog runs in the park.", "Ein Hund läuft im Park."),
    ("The girl sees a bird.", "Das Mädchen sieht einen Vogel."),
    ("Two men are  playing football.", "Zwei Männer spielen Fußball."),
    ("A woman reads a book<br />outside.", "Eine Frau liest draußen ein Buch."),
    ("The cat sleeps on the sofa.", "Die Katze schläft auf dem Sofa."),
    ("A boy jumps into the water.", "Ein Junge springt ins Wasser."),
    ("The old man walks slowly.", "Der alte Mann geht langsam."),
    ("Children play in the street.", "Kinder spielen auf der Straße."),
    ("A dog runs in the park.", "Ein Hund läuft im Park."),  # duplicate of line 1
    ("", "Leer."),  # empty side
    ("The red car is fast.", "Das rote Auto ist schnell."),
    ("A man rides a bicycle.", "Ein Mann fährt Fahrrad."),
]
VAL_PAIRS = [
    ("A dog runs in the park.", "Ein Hund rennt im Park."),
    ("The sun is shining.", "Die Sonne scheint."),
]
TEST_PAIRS = [("A bird sings.", "Ein Vogel singt.")]

REVIEWS = [
    ("A wonderful film with great acting.<br /><br />I loved it.", 1),
    ("Terrible plot and boring characters.", 0),
    ("Not bad at all, quite enjoyable.", 1),
    ("I did not enjoy this movie.", 0),
    ("Brilliant, moving and funny.", 1),
    ("A waste of time.", 0),
    ("Brilliant, moving and funny.", 1),  # duplicate
]


def write_aligned(directory: str, name: str, pairs, *, gz: bool = False, langs=("en", "de")) -> str:
    prefix = os.path.join(directory, name)
    for column, lang in enumerate(langs):
        data = "".join(p[column] + "\n" for p in pairs).encode()
        path = f"{prefix}.{lang}" + (".gz" if gz else "")
        with open(path, "wb") as f:
            f.write(gzip.compress(data) if gz else data)
    return prefix


def write_multi30k_like(data: Path, pairs: int) -> None:
    """``pairs`` pairs of the embedded corpus laid out as DATA/multi30k/train.{en,de}.gz."""
    (data / "multi30k").mkdir(parents=True)
    write_aligned(str(data / "multi30k"), "train", translation_pairs(pairs), gz=True)


def write_tsv(path: str, pairs, *, extra_lines: list[bytes] = ()) -> str:
    with open(path, "wb") as f:
        for en, de in pairs:
            f.write(f"{en}\t{de}\tCC-BY 2.0 (France) Attribution: tatoeba.org\n".encode())
        for line in extra_lines:
            f.write(line + b"\n")
    return path


def write_pickle(path: str, pairs, *, protocol: int = 4) -> str:
    array = np.array([[en, de, "attribution"] for en, de in pairs], dtype="<U64")
    with open(path, "wb") as f:
        pickle.dump(array, f, protocol=protocol)
    return path


def _review_name(i: int, label: int) -> str:
    return f"{i}_{8 if label else 2}.txt"


def write_aclimdb_dir(directory: str, reviews, *, splits=("train",)) -> str:
    root = os.path.join(directory, "aclImdb")
    for split in splits:
        for i, (review, label) in enumerate(reviews):
            sub = os.path.join(root, split, "pos" if label else "neg")
            os.makedirs(sub, exist_ok=True)
            with open(os.path.join(sub, _review_name(i, label)), "w", encoding="utf-8") as f:
                f.write(review)
    return root


def write_aclimdb_tar(path: str, reviews, *, split: str = "train") -> str:
    with tarfile.open(path, "w:gz") as tar:
        for i, (review, label) in enumerate(reviews):
            data = review.encode()
            info = tarfile.TarInfo(
                f"aclImdb/{split}/{'pos' if label else 'neg'}/{_review_name(i, label)}"
            )
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_csv(path: str, reviews, *, extra_rows: list[list[str]] = ()) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        for review, label in reviews:
            writer.writerow([review, "positive" if label else "negative"])
        for row in extra_rows:
            writer.writerow(row)
    return path


def write_tfds_dataset(version_dir: Path, feature_dict, splits: dict[str, list[dict]]) -> None:
    """Writes a prepared TFDS dataset the way `tfds build` leaves it, without any download."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    # TfDataBuilder would be shorter but needs importlib_resources, which this env lacks.
    version_dir.mkdir(parents=True)
    name = version_dir.parent.parent.name
    for split, rows in splits.items():
        shard = version_dir / f"{name}-{split}.tfrecord-00000-of-00001"
        with tf.io.TFRecordWriter(str(shard)) as writer:
            for row in rows:
                writer.write(feature_dict.serialize_example(row))
    tfds.folder_dataset.write_metadata(
        data_dir=str(version_dir),
        features=feature_dict,
        split_infos=None,
        filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
        check_data=True,
    )
