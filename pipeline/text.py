"""Text normalization shared by preprocessing, training-time evaluation and inference.

One function, so the text a model sees at serving time is normalized exactly as its
training data was (the exported SavedModel re-implements it in TF ops and a test
checks the two agree).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def normalize(text: str, *, lowercase: bool = False) -> str:
    """NFKC, HTML line breaks to spaces, whitespace collapsed and stripped, optional lowercase.

    Whitespace is what ``str.split()`` splits on, the same characters as the regular
    expression ``\\s`` (tests/text_test.py checks every assigned code point); splitting and joining
    is about three times as fast as the regular expression, and a job normalizes every field.
    """
    text = unicodedata.normalize("NFKC", text)
    if "<" in text:
        text = _HTML_BREAK.sub(" ", text)
    text = " ".join(text.split())
    return text.lower() if lowercase else text


def content_hash(*fields: str) -> str:
    """Stable hex digest of normalized fields (independent of Python's hash seed)."""
    digest = hashlib.sha256()
    for field in fields:
        digest.update(field.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def hash_fraction(digest: str) -> float:
    """Maps a hex digest to [0, 1) uniformly; the split assignment's coin."""
    return int(digest[:15], 16) / float(16**15)
