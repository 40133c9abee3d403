"""What every command-line entry point shares: absl parsing that ends in one clear line."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

from absl import app, flags


class UsageError(Exception):
    """A user error: bad flag, bad input. Printed as one line, exit status ``status`` (2)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


# What the file system says when an output cannot be written (or read), as TensorFlow,
# Beam and Python word it; each error carries one of these however it was wrapped.
_STORAGE_ERRORS = {
    "No space left on device": "disk full",
    "File too large": "disk full",
    "Disk quota exceeded": "disk full",
    "Read-only file system": "not writable",
    "Permission denied": "permission denied",
}
_STORAGE_ERROR = re.compile("|".join(map(re.escape, _STORAGE_ERRORS)))
STORAGE_ERROR_STATUS = 1
INTERRUPTED_STATUS = 130  # 128 + SIGINT, as shells report a Ctrl-C


def storage_error(error: BaseException) -> str | None:
    """One line for an error of the file system (disk full, read-only); None for other errors."""
    text = str(error)
    match = _STORAGE_ERROR.search(text)
    if not match:
        return None
    line = next((line for line in text.splitlines() if match.group(0) in line), text)
    line = re.sub(r"\{\{[^}]*\}\}\s*", "", line)  # TensorFlow's graph-node prefix
    line = re.sub(r"\s*\[(Op:|while running )[^\]]*\].*$", "", line)  # op / Beam step suffix
    line = re.sub(r"^(\w+Error: )+", "", line.strip())
    return f"{_STORAGE_ERRORS[match.group(0)]}: {line}"


def plural(count: int, noun: str) -> str:
    """`1 file`, `2 files`, `1,000 files`: a count in a message, with its noun agreeing."""
    return f"{count:,} {noun}{'s' * (count != 1)}"


def check_command_line(argv: list[str], *required: str) -> None:
    """Refuses a stray positional argument, then names the first `required` flag left unset."""
    if len(argv) > 1:
        raise UsageError(f"unexpected argument {argv[1]!r}")
    for name in required:
        if not getattr(flags.FLAGS, name):
            raise UsageError(f"--{name} is required")


def fail(program: str, message: str, status: int = 2):
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(status)


def run_main(program: str, main: Callable[[list[str]], None], *, known_only: bool = False) -> None:
    """app.run with flag errors, UsageError and file-system errors reduced to one line on stderr.

    Exit status 2 for a usage error, 1 when the disk is full or an output not writable,
    130 after Ctrl-C ("PROGRAM: interrupted").
    """

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv, known_only=known_only)
        except flags.CantOpenFlagFileError as e:
            # absl's own line reads "ERROR:: Unable to open flagfile: [Errno 2] ...".
            cause = e.__context__
            if isinstance(cause, OSError) and cause.filename:
                fail(program, f"--flagfile: cannot open {cause.filename} ({cause.strerror})")
            fail(program, str(e).splitlines()[0])
        except flags.Error as e:
            fail(program, str(e).splitlines()[0])

    def guarded(argv: list[str]) -> None:
        try:
            main(argv)
        except UsageError as e:
            fail(program, str(e), e.status)
        except KeyboardInterrupt:  # Ctrl-C: what is written is whole (atomic writes)
            print(f"{program}: interrupted", file=sys.stderr)
            sys.exit(INTERRUPTED_STATUS)
        except Exception as e:
            message = storage_error(e)
            if message is None:
                raise
            fail(program, message, STORAGE_ERROR_STATUS)

    _describe_entry_module(main)
    app.run(guarded, flags_parser=parse)


def _describe_entry_module(main: Callable[[list[str]], None]) -> None:
    """Under a console script (`tp-train`) `__main__` is pip's generated wrapper, so absl's
    `--help` would show neither the command's docstring nor its flags. Lend the wrapper both
    from the module that defines `main`, as `python -m` shows them."""
    module = sys.modules.get(main.__module__)
    wrapper = sys.modules["__main__"]
    if module is None or module is wrapper:
        return
    if not wrapper.__doc__:
        wrapper.__doc__ = module.__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(module.__name__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
