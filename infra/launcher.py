"""What every launcher CLI shares: one-line errors, trainer flags after ``--``, printed requests.

Launchers use argparse subcommands (``python -m infra.gcp train ...``); their user errors,
argparse's included, end as one line ``PROGRAM: error: MESSAGE`` with exit status 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from collections.abc import Callable, Sequence

from infra import machines

# Trainer flags the launchers set themselves from their own (cloud-specific) flags.
LAUNCHER_OWNED_TRAINER_FLAGS = ("data_dir", "model_dir")
CLUSTER_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")


class LauncherError(Exception):
    """A user error: printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors become LauncherError (argparse prints usage plus a line)."""

    def error(self, message: str):
        raise LauncherError(message)


def split_trainer_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Splits at the first ``--``: (launcher arguments, trainer flags passed through)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    trainer = argv[at + 1 :]
    for flag in trainer:
        name = flag.lstrip("-").split("=", 1)[0]
        if flag.startswith("-") and name in LAUNCHER_OWNED_TRAINER_FLAGS:
            raise LauncherError(
                f"--{name} after --: give it to the launcher (before --), which sets it per cloud"
            )
    return argv[:at], trainer


def timestamp() -> str:
    """UTC now as YYYYmmdd-HHMMSS, for job names."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")


def require(value, flag: str, why: str = "") -> None:
    if value in (None, ""):
        raise LauncherError(f"--{flag} is required{why}")


def require_scheme(value: str | None, flag: str, scheme: str, why: str) -> None:
    require(value, flag)
    if not value.startswith(scheme):
        article = "an" if scheme.startswith("s3") else "a"
        raise LauncherError(f"--{flag} must be {article} {scheme} path {why}, got {value}")


def check_cluster_name(name: str | None) -> None:
    require(name, "cluster")
    if not CLUSTER_NAME.match(name):
        raise LauncherError(
            f"--cluster: {name!r} is not a valid name (lowercase letters, digits and '-', "
            "starting with a letter, at most 40 characters)"
        )


def positive_float(text: str) -> float:
    """argparse type: a number above 0 (argparse's message names the flag)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_cost_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="Print the exact requests, commands and scripts and the cost estimate; touch nothing.",
    )
    parser.add_argument(
        "--hours",
        type=positive_float,
        default=1.0,
        help="Expected run time, for the total cost estimate.",
    )
    parser.add_argument(
        "--price_table",
        default=machines.DEFAULT_PRICE_TABLE,
        help="Price table JSON (default: the dated infra/prices.json).",
    )


def heading(text: str) -> None:
    print(f"# {text}")


def show_json(value) -> None:
    print(json.dumps(value, indent=2))


def show_command(argv: Sequence[str]) -> None:
    """A command as one copy-pasteable shell line (long ones continued with backslashes)."""
    import shlex

    words = [shlex.quote(str(a)) for a in argv]
    lines, current = [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > 96 and word.startswith("-"):
            lines.append(current)
            current = "    " + word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    print(" \\\n".join(lines))


def show_cost(estimate: machines.CostEstimate) -> None:
    for line in estimate.lines():
        print(f"# {line}")


def run_cli(program: str, main: Callable[[list[str]], int], argv: Sequence[str] | None) -> int:
    """Runs ``main``; user errors become one line on stderr and exit status 2."""
    try:
        return main(list(sys.argv[1:] if argv is None else argv))
    except (LauncherError, machines.MachineError) as e:
        print(f"{program}: error: {e}", file=sys.stderr)
        return 2
    except machines.PriceTableError as e:
        print(f"{program}: error: --price_table: {e}", file=sys.stderr)
        return 2
