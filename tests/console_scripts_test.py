"""The installed console scripts (`tp-train`, ...) describe themselves as `python -m` does."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# "tp-train=trainer.train:run" in setup.py's console_scripts
_ENTRY = re.compile(r'"(tp-[\w-]+)=([\w.]+):run"')
_ABSL_COMMANDS = [
    (script, module)
    for script, module in _ENTRY.findall((ROOT / "setup.py").read_text())
    if not module.startswith("infra.")  # argparse commands: their --help is argparse's own
]


def test_every_absl_command_is_listed():
    assert len(_ABSL_COMMANDS) == 8, _ABSL_COMMANDS


@pytest.mark.parametrize("script,module", _ABSL_COMMANDS, ids=[s for s, _ in _ABSL_COMMANDS])
def test_help_shows_the_commands_docstring_and_flags(script, module, tmp_path):
    executable = Path(sys.executable).with_name(script)
    if not executable.exists():
        pytest.fail(f"{executable} is not installed (pip install -e '.[dev]')")
    source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
    summary = ast.get_docstring(ast.parse(source)).splitlines()[0]
    own_flags = re.findall(r'flags\.DEFINE_\w+\(\s*"(\w+)"', source)

    result = subprocess.run(
        [str(executable), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    help_text = result.stdout  # absl prints --help on stdout (and exits 1, its convention)
    assert summary in help_text
    listed = set(re.findall(r"^  --(?:\[no\])?(\w+):", help_text, re.M))
    assert listed, help_text
    assert set(own_flags) <= listed, set(own_flags) - listed
