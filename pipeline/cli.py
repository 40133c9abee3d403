"""What every command-line entry point shares: absl parsing that ends in one clear line."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags


class UsageError(Exception):
    """A user error: bad flag, bad input. Printed as one line, exit status 2."""


def fail(program: str, message: str, status: int = 2):
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(status)


def run_main(program: str, main: Callable[[list[str]], None], *, known_only: bool = False) -> None:
    """app.run with flag errors and UsageError reduced to one line on stderr."""

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv, known_only=known_only)
        except flags.Error as e:
            fail(program, str(e).splitlines()[0])

    def guarded(argv: list[str]) -> None:
        try:
            main(argv)
        except UsageError as e:
            fail(program, str(e))

    app.run(guarded, flags_parser=parse)
