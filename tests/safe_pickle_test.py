"""Tests for pipeline/safe_pickle.py."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from pipeline import safe_pickle

PAIRS = [["Hi.", "Hallo!", "CC-BY 2.0"], ["Run!", "Lauf!", "CC-BY 2.0"], ["Bé.", "Sei ö.", "x"]]


class _ShellPayload:
    """Pickles as a call to os.system that would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("dtype", ["U", "O", "S"])
def test_loads_string_arrays_of_every_protocol(protocol, dtype):
    if dtype == "S":
        array = np.array([[cell.encode() for cell in row] for row in PAIRS])
    else:
        array = np.array(PAIRS, dtype=dtype)
    if dtype == "O":
        array[0, 0] = np.str_("Hi.")  # a NumPy scalar cell needs multiarray.scalar
    loaded = safe_pickle.load_array(pickle.dumps(array, protocol=protocol))
    assert loaded.dtype == array.dtype
    np.testing.assert_array_equal(loaded, array)


def test_loads_numpy1_module_names():
    data = pickle.dumps(np.array(PAIRS), protocol=2)
    assert b"numpy._core.multiarray" in data
    numpy1 = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    np.testing.assert_array_equal(safe_pickle.load_array(numpy1), np.array(PAIRS))


def test_loads_a_non_contiguous_array():
    array = np.asfortranarray(np.array(PAIRS))
    np.testing.assert_array_equal(safe_pickle.load_array(pickle.dumps(array, protocol=5)), array)


def test_refuses_os_system_at_top_level(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(safe_pickle.RefusedGlobalError) as raised:
        safe_pickle.load_array(pickle.dumps(_ShellPayload(marker)))
    assert raised.value.name == "posix.system"
    assert str(raised.value) == "refusing to unpickle 'posix.system'"
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_refuses_os_system_inside_an_object_array(tmp_path, protocol):
    marker = tmp_path / "pwned"
    array = np.array(PAIRS, dtype=object)
    array[1, 1] = _ShellPayload(marker)
    with pytest.raises(safe_pickle.RefusedGlobalError, match="posix.system"):
        safe_pickle.load_array(pickle.dumps(array, protocol=protocol))
    assert not marker.exists()


def test_refuses_builtins_eval():
    with pytest.raises(safe_pickle.RefusedGlobalError, match="'builtins.eval'"):
        safe_pickle.load_array(pickle.dumps(_EvalPayload()))


def test_refuses_subprocess_written_by_hand():
    data = b"csubprocess\ncheck_output\n((S'id'\ntltR."
    with pytest.raises(safe_pickle.RefusedGlobalError, match="'subprocess.check_output'"):
        safe_pickle.load_array(data)


def test_refuses_codecs_other_than_latin1():
    data = b"c_codecs\nencode\n(Vabc\nVrot13\ntR."
    with pytest.raises(safe_pickle.RefusedGlobalError, match="encoding 'rot13'"):
        safe_pickle.load_array(data)


def test_refuses_masked_arrays():
    with pytest.raises(safe_pickle.RefusedGlobalError, match="numpy.ma.core"):
        safe_pickle.load_array(pickle.dumps(np.ma.masked_array(np.array(PAIRS))))


def test_not_an_array():
    with pytest.raises(safe_pickle.InvalidPickleError, match="holds a list, not a NumPy array"):
        safe_pickle.load_array(pickle.dumps(PAIRS))


def test_garbage_bytes():
    with pytest.raises(safe_pickle.InvalidPickleError):
        safe_pickle.load_array(b"this is not a pickle")


def test_truncated_pickle():
    data = pickle.dumps(np.array(PAIRS), protocol=4)
    with pytest.raises(safe_pickle.InvalidPickleError):
        safe_pickle.load_array(data[: len(data) // 2])
