"""Starting TensorFlow for the commands: its native start-up lines kept off stderr, and
its CPU memory pooled.

TensorFlow 2.21 writes some lines to stderr before its C++ logging is set up, so
TF_CPP_MIN_LOG_LEVEL does not hide them. Each of its two native libraries writes
"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
and INFO lines ("oneDNN custom operations are on ...", "Could not find cuda drivers on
your machine, GPU will not be used."). On a machine without a GPU driver, the first look
for devices then logs the ERROR "failed call to cuInit". A command's stderr is for its own
lines (a user error is one line).

So the commands start TensorFlow through `start()`. It imports TensorFlow and lists the
devices while stderr (descriptor 2) goes to a temporary file, then passes on every line
captured except these:
- the banner;
- the native lines below TF_CPP_MIN_LOG_LEVEL (which `start()` defaults to 2, errors
  only, for the whole run), with the CPU-feature line's continuation;
- the cuInit error, when "Could not find cuda drivers" came first. A GPU machine whose
  driver fails still shows it.
With TF_CPP_MIN_LOG_LEVEL=0 every line is passed on.

`start()` also defaults TF_CPU_ALLOCATOR_USE_BFC to true. Without it, TensorFlow's CPU
allocator on a machine without a GPU is the C library's malloc, which gives large freed
blocks back to the kernel (those over its mmap threshold, and the free top of its heaps).
A training step frees and allocates tensors of megabytes (a batch's logits: tokens x
vocabulary x 4 bytes) every step, so each step faulted in and zeroed fresh pages again:
training processes spent half as much time in the kernel as in user space, or more.
TensorFlow's BFC allocator keeps what it took and reuses it: faster on such a CPU, for a
higher peak memory (docs/BENCHMARKS.md, "The CPU allocator").
TF_CPU_ALLOCATOR_USE_BFC=false in the environment keeps malloc.

This module imports nothing heavy, so the commands can parse their flags before
TensorFlow starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# I1207 12:00:00.123456   1234 file.cc:12] message   (absl's prefix; "I0000 00:00:..." before init)
_NATIVE = re.compile(r"([IWEF])\d{4} [\d:.]+\s+\d+ [^\]]+\] (.*)")
_LEVELS = {"I": 0, "W": 1, "E": 2, "F": 3}
_CPU_FEATURES_TAIL = "To enable the following instructions:"
_NO_DRIVER = "Could not find cuda drivers on your machine"
_CUINIT_FAILED = "failed call to cuInit"


def start() -> None:
    """Imports TensorFlow and lists its physical devices, keeping the start-up lines above
    off stderr; does nothing once TensorFlow is imported. TF_CPP_MIN_LOG_LEVEL defaults to
    2 (errors only) and TF_CPU_ALLOCATOR_USE_BFC to true. Listing the physical devices
    initializes no device, so logical devices can still be configured after it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    if "tensorflow" in sys.modules:
        return
    with _stderr_filtered():
        import tensorflow as tf

        tf.config.list_physical_devices()


def kept_lines(lines: list[str], min_log_level: int) -> list[str]:
    """The ``lines`` captured while TensorFlow started that stderr should still get."""
    if min_log_level <= 0:
        return lines
    kept: list[str] = []
    no_driver = False
    dropped_last = False
    for line in lines:
        text = line.rstrip("\n")
        native = _NATIVE.match(text)
        if text == _BANNER:
            drop = True
        elif native:
            level, message = _LEVELS[native.group(1)], native.group(2)
            no_driver = no_driver or message.startswith(_NO_DRIVER)
            drop = level < min_log_level or (no_driver and message.startswith(_CUINIT_FAILED))
        else:  # the second line of the CPU-feature INFO line, or a line of someone else's
            drop = dropped_last and text.startswith(_CPU_FEATURES_TAIL)
        if not drop:
            kept.append(line)
        dropped_last = drop
    return kept


def _min_log_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


@contextlib.contextmanager
def _stderr_filtered() -> Iterator[None]:
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (`2>&-`): nothing to keep the lines off
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = kept_lines(lines, _min_log_level())
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
