"""What every benchmark script shares: machine facts and its own section of docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import shlex
import sys


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    import tensorflow as tf

    return f"{cpu_model()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}"


def command_line(argv: list[str] | None = None) -> str:
    """The command that reran this benchmark: `python scripts/NAME.py FLAGS...`."""
    argv = sys.argv if argv is None else argv
    return "python " + shlex.join([os.path.relpath(argv[0]), *argv[1:]])


def replace_section(document: str, title: str, body: str) -> str:
    """``document`` with the ``title`` section (up to the next ``## `` heading) set to ``body``.

    Only a line that is exactly ``title`` starts the section (``## Training throughput``
    is not ``## Training throughput (--xla)``). The section keeps its place; a new one is
    appended; every other section is kept as it was.
    """
    section = f"{title}\n\n{body.strip()}\n"
    lines = document.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == title), None)
    if start is None:
        base = document.rstrip()
        return f"{base}\n\n{section}" if base else f"# Benchmarks\n\n{section}"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    after = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + after if after else "")


def publish(text: str, title: str, append_to: str | None) -> None:
    """Prints a benchmark's section and, given ``append_to``, writes it into that file."""
    print(text)
    if append_to:
        write_section(append_to, title, text)


def write_section(path: str, title: str, text: str) -> None:
    """Writes ``text`` (which may start with its ``title`` line) as that section of ``path``."""
    body = text.strip()
    if body.startswith(title + "\n") or body == title:
        body = body[len(title) :]
    document = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            document = f.read()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(replace_section(document, title, body))
    os.replace(tmp, path)
