"""What every benchmark script shares: machine facts and its own section of docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import platform


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


def write_section(path: str, title: str, text: str) -> None:
    """Puts ``text`` (which starts with ``title``) into the markdown file, replacing that section."""
    document = "# Benchmarks\n"
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            document = f.read()
    if title in document:
        start = document.index(title)
        end = document.find("\n## ", start + len(title))
        document = document[:start] + (document[end + 1 :] if end != -1 else "")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(document.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")
