"""setup.py as Dataflow's --setup_file: the package its workers install holds the whole project.

Dataflow builds the sdist with Beam's stager and each worker `pip install`s it; a module or a
data file missing from it fails only there, on the first element, far from the cause.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest
from apache_beam.runners.portability.stager import Stager

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "trainer", "infra")


def project_files() -> set[str]:
    """Every module of the packages and infra's data files, relative to the repository."""
    files = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            relative = path.relative_to(ROOT).as_posix()
            if "__pycache__" in relative or not path.is_file():
                continue
            if path.suffix == ".py" or package == "infra":
                files.add(relative)
    return files


def test_the_workers_package_holds_every_module_and_imports_without_the_checkout(tmp_path):
    sdist = Stager._build_setup_package(str(ROOT / "setup.py"), str(tmp_path / "dist"))
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert project_files() <= in_sdist, sorted(project_files() - in_sdist)

    # What a worker does with it (its dependencies are this environment's).
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
        + ["--no-build-isolation", "--target", str(target), sdist],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    installed = {
        path.relative_to(target).as_posix()
        for package in PACKAGES
        for path in (target / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert installed == project_files(), sorted(installed ^ project_files())
    modules = [
        "pipeline.preprocess",
        "pipeline.transforms",
        "pipeline.batch_translate",
        "pipeline.batch_classify",
        "pipeline.default_corpus",
    ]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(target)!r}), module.__file__\n"
        "print('ok')\n"
        # Installed without a checkout there is no setup.py to give Dataflow: one clear line.
        "from pipeline import beam_options, cli\n"
        "try:\n"
        "    beam_options.pipeline_options(['--runner=DataflowRunner', '--project=p',\n"
        "        '--region=r', '--temp_location=gs://b/t'])\n"
        "except cli.UsageError as e:\n"
        "    print(str(e).split(' (')[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.stdout.splitlines() == [
        "ok",
        f"--setup_file: {target / 'setup.py'} does not exist",
    ], result.stderr[-2000:]


def read_only_command() -> list[str] | None:
    """How to run a process that a read-only directory refuses, or None where none can be here."""
    if os.geteuid() != 0:
        return []
    # root writes anywhere unless it drops the capabilities that override file modes.
    if shutil.which("setpriv") is None:
        return None
    caps = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def dependencies_without_the_project(tmp_path: Path) -> Path:
    """This environment's site-packages minus its install of the project, as one directory."""
    site = Path(sysconfig.get_paths()["purelib"])
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith(("__editable__", "transformer_pipeline")):
            (deps / entry.name).symlink_to(entry)
    return deps


@pytest.mark.skipif(read_only_command() is None, reason="root without setpriv writes anywhere")
def test_the_image_layout_submits_to_dataflow_without_a_setup_file_flag(tmp_path):
    """As infra/Dockerfile does: the project installed in place (-e) in a directory root owns,
    and a job run by a user who cannot write there; no --setup_file given."""
    checkout = tmp_path / "opt" / "transformer-pipeline"
    checkout.mkdir(parents=True)
    shutil.copy(ROOT / "setup.py", checkout)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, checkout / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copytree(ROOT / "configs", checkout / "configs")
    (checkout / "data").mkdir()  # a checkout's data: not for the workers
    (checkout / "data" / "corpus.txt").write_text("ein Satz\n")
    deps = dependencies_without_the_project(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=str(deps), TF_CPP_MIN_LOG_LEVEL="3")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps"]
    subprocess.run(
        pip + ["--no-build-isolation", "--no-index", "-e", "."],
        check=True,
        timeout=300,
        cwd=checkout,
        env=env,
    )
    before = sorted(str(path) for path in checkout.rglob("*"))
    script = (
        "import os, tarfile\n"
        "from apache_beam.options.pipeline_options import SetupOptions\n"
        "from apache_beam.runners.portability.stager import Stager\n"
        "from pipeline import beam_options\n"
        "print(beam_options.__file__)\n"
        "options = beam_options.pipeline_options(['--runner=DataflowRunner', '--project=p',\n"
        "    '--region=r', '--temp_location=gs://b/t'])\n"
        "setup_file = options.view_as(SetupOptions).setup_file\n"
        "print(setup_file)\n"
        "print(beam_options.recordable_options(options)['setup_file'])\n"
        "print(' '.join(sorted(os.listdir(os.path.dirname(setup_file)))))\n"
        "sdist = Stager._build_setup_package(setup_file, os.environ['OUT'])\n"
        "with tarfile.open(sdist) as archive:\n"
        "    print('\\n'.join(name.split('/', 1)[1] for name in archive.getnames() if '/' in name))\n"
    )
    for path in [checkout, *checkout.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    out = tmp_path / "dist"
    out.mkdir()
    try:
        # -P: the project comes from the install, not from the working directory.
        result = subprocess.run(
            read_only_command() + [str(venv / "bin" / "python"), "-P", "-c", script],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env=dict(env, OUT=str(out)),
        )
    finally:
        for path in [checkout, *checkout.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert result.returncode == 0, result.stderr[-3000:]
    module, setup_file, recorded, copied, *in_sdist = result.stdout.splitlines()
    assert module == str(checkout / "pipeline" / "beam_options.py")
    # Built from a temp copy; what metadata.json records is the default, the image's setup.py.
    assert setup_file != str(checkout / "setup.py") and setup_file.endswith("/setup.py")
    assert recorded == str(checkout / "setup.py")
    assert copied.split() == sorted(["setup.py", *PACKAGES])
    assert project_files() <= set(in_sdist), sorted(project_files() - set(in_sdist))
    # The checkout is as it was, and the copy was removed when the process exited.
    assert sorted(str(path) for path in checkout.rglob("*")) == before
    assert not os.path.exists(os.path.dirname(os.path.dirname(setup_file)))
