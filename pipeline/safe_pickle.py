"""Loads a pickled NumPy array without letting the pickle run code.

A pickle names the callables that rebuild it, and a plain ``pickle.load`` calls whatever it
names (``os.system`` included). The unpickler here resolves only the few names NumPy's own
array pickles use, for protocols 2 to 5 and string, bytes and object arrays, written by NumPy 1
(``numpy.core``) or NumPy 2 (``numpy._core``); any other name stops the load before anything is
called, including a name hidden inside an object array's cells.

    array = load_array(data)  # raises RefusedGlobalError / InvalidPickleError
"""

from __future__ import annotations

import io
import pickle

import numpy as np
from numpy._core import multiarray, numeric


class SafePickleError(ValueError):
    """The bytes are not a pickle of a plain NumPy array."""


class RefusedGlobalError(SafePickleError):
    """The pickle names a callable or class outside the allowed set."""

    def __init__(self, name: str):
        super().__init__(f"refusing to unpickle {name!r}")
        self.name = name


class InvalidPickleError(SafePickleError):
    """The pickle is malformed or holds something other than an ndarray."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol 2 has no bytes opcode, so it stores bytes as _codecs.encode(text, "latin1").
    # Only that use is allowed: other codecs have no business in an array pickle.
    if encoding not in ("latin1", "latin-1"):
        raise RefusedGlobalError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}
for _package in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_package}.multiarray", "_reconstruct")] = multiarray._reconstruct
    _ALLOWED[(f"{_package}.multiarray", "scalar")] = multiarray.scalar
    # Protocol 5 rebuilds non-object arrays from an out-of-band-capable buffer.
    _ALLOWED[(f"{_package}.numeric", "_frombuffer")] = numeric._frombuffer


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobalError(f"{module}.{name}") from None


def load_array(data: bytes) -> np.ndarray:
    """The ndarray pickled in ``data``.

    Raises RefusedGlobalError when the pickle names anything but NumPy array reconstruction, and
    InvalidPickleError when it is malformed or its top-level object is not an ndarray.
    """
    # latin1 is NumPy's documented choice for Python 2 pickles; Python 3 pickles ignore it.
    unpickler = _ArrayUnpickler(io.BytesIO(data), encoding="latin1")
    try:
        loaded = unpickler.load()
    except RefusedGlobalError:
        raise
    except Exception as e:  # malformed bytes can fail in any of a dozen ways
        message = " ".join(str(e).split())  # some span lines; the user gets one
        raise InvalidPickleError(f"{type(e).__name__}: {message}") from None
    if not isinstance(loaded, np.ndarray):
        raise InvalidPickleError(f"holds a {type(loaded).__name__}, not a NumPy array")
    return loaded
