"""Beam pipeline options for the project's Beam jobs (preprocess, batch_translate, batch_classify).

A job's own flags are absl flags; everything else on its command line goes to Beam's
PipelineOptions. Unknown options are refused instead of silently dropped, and a Dataflow
run gets the options it cannot run without checked up front.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import re
import shutil
import stat
import tempfile

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)
from apache_beam.runners.runner import PipelineRunner, create_runner

from pipeline import cli


def pipeline_options(beam_args: list[str], *, program: str = "preprocess") -> PipelineOptions:
    """Beam options from the flags the job does not own; UsageError for unknown ones."""
    options = PipelineOptions(beam_args)
    # Beam would log "Discarding unparseable args"; we refuse them with one line instead.
    beam_options_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_options_log.level
    beam_options_log.setLevel(logging.ERROR)
    usage = io.StringIO()
    try:
        # argparse prints its usage and exits on a bad value (--direct_num_workers=x).
        with contextlib.redirect_stderr(usage):
            known = options.get_all_options(retain_unknown_options=False)
            unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
    except SystemExit:
        lines = usage.getvalue().strip().splitlines() or ["invalid Beam pipeline option"]
        raise cli.UsageError(lines[-1].split(": error: ", 1)[-1]) from None
    finally:
        beam_options_log.setLevel(level)
    if unknown:
        raise cli.UsageError(
            f"unknown flag --{unknown[0]} (neither a {program} flag nor a Beam pipeline option)"
        )
    if known.get("direct_running_mode") == "multi_threading":
        raise cli.UsageError(
            "--direct_running_mode=multi_threading: Beam's multi-threaded DirectRunner mode "
            "lost records without an error or exhausted memory here (docs/BENCHMARKS.md); "
            "use the default in_memory, or multi_processing with --direct_num_workers=N"
        )
    if known.get("runner"):
        try:
            create_runner(known["runner"])
        except (ValueError, ImportError) as e:
            raise cli.UsageError(f"--runner: {str(e).split('. ')[0]}") from None
    if known.get("runner") and "dataflow" in str(known["runner"]).lower():
        gcp = options.view_as(GoogleCloudOptions)
        for name in ("project", "region", "temp_location"):
            if not getattr(gcp, name):
                raise cli.UsageError(f"--{name} is required with --runner=DataflowRunner")
        if not gcp.temp_location.startswith("gs://"):
            raise cli.UsageError(
                f"--temp_location must be a gs:// path with DataflowRunner, got {gcp.temp_location}"
            )
        setup = options.view_as(SetupOptions)
        if not setup.setup_file:
            setup.setup_file = default_setup_file()
        if not os.path.isfile(setup.setup_file):
            # Beam would fail later, at staging, with a traceback.
            raise cli.UsageError(
                f"--setup_file: {setup.setup_file} does not exist (Dataflow workers install the "
                "project from its setup.py: run from a checkout or pass --setup_file=PATH)"
            )
        setup.setup_file = buildable_setup_file(setup.setup_file)
    return options


# What a copy of a read-only project holds: what setuptools reads, and the Python packages.
_BUILD_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md")
_CACHES = shutil.ignore_patterns("__pycache__")
_SETUP_FILE_COPIES: dict[str, str] = {}  # copy -> the setup file it stands in for


def buildable_setup_file(setup_file: str) -> str:
    """setup_file, or the same file in a writable copy of its project when its directory is read-only.

    Beam builds the workers' package in setup.py's directory, where setuptools writes its
    egg-info and the tree it archives; in a read-only checkout (the training image runs as uid
    1000 over files root owns) that fails at staging with a traceback. The copy lives in the
    system's temp directory until the process exits; what a job records names the file given.
    """
    project = os.path.dirname(os.path.abspath(setup_file))
    if os.access(project, os.W_OK):
        return setup_file
    copy = os.path.join(tempfile.mkdtemp(prefix="tp-setup-"), os.path.basename(project))
    atexit.register(shutil.rmtree, os.path.dirname(copy), ignore_errors=True)
    os.makedirs(copy)
    # Not the whole directory: a checkout may hold a virtual environment or data.
    for name in sorted(os.listdir(project)):
        source = os.path.join(project, name)
        if name in _BUILD_FILES or name == os.path.basename(setup_file):
            shutil.copy(source, copy)
        elif os.path.isfile(os.path.join(source, "__init__.py")):
            shutil.copytree(source, os.path.join(copy, name), ignore=_CACHES)
    for directory, _, _ in os.walk(copy):  # copied with their read-only modes
        os.chmod(directory, os.stat(directory).st_mode | stat.S_IWUSR)
    copied = os.path.join(copy, os.path.basename(setup_file))
    _SETUP_FILE_COPIES[copied] = setup_file
    return copied


# Option names whose values are credentials (Beam's --s3_secret_access_key, --s3_session_token,
# ...): what a job records about its run must never hold them.
_SECRET_OPTION = re.compile(r"secret|token|password|credential|access_key|api_key", re.IGNORECASE)


def recordable_options(options: PipelineOptions) -> dict:
    """The options set on the command line, credentials replaced by "<redacted>"."""
    recorded = {
        name: "<redacted>" if _SECRET_OPTION.search(name) else value
        for name, value in options.get_all_options(drop_default=True).items()
        if value is not None
    }
    if recorded.get("setup_file") in _SETUP_FILE_COPIES:  # the file given, not its temp copy
        recorded["setup_file"] = _SETUP_FILE_COPIES[recorded["setup_file"]]
    return recorded


def new_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A pipeline on the runner the options name; with none or the DirectRunner, Beam's FnApiRunner.

    Beam 2.77's DirectRunner tries its Prism runner first: it downloads a Go binary from GitHub
    (`urlopen` with no timeout), starts it, and falls back to the in-process FnApiRunner when
    that fails, leaving three empty directories behind in
    the system's temp directory on every run. Where GitHub is out of reach, as on the machines
    this project is tested on, every local run therefore ends on the FnApiRunner, so a local run
    goes there directly: the runner that runs is the one the tests run, on any network.
    `--runner=PrismRunner` still picks Prism.
    """
    return beam.Pipeline(runner=local_runner(options), options=options)


def local_runner(options: PipelineOptions) -> PipelineRunner | None:
    """Beam's in-process FnApiRunner where the options ask for the DirectRunner, else None."""
    from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner

    name = options.view_as(StandardOptions).runner or "DirectRunner"
    if not isinstance(name, str) or not isinstance(create_runner(name), SwitchingDirectRunner):
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    _drop_worker_start_up_noise()
    # What the DirectRunner gives the FnApiRunner: the options, for its workers.
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(provision))


class _WorkerStartUpNoise(logging.Filter):
    """Two warnings each worker process of `--direct_running_mode=multi_processing` logs as it starts.

    "Discarding unparseable args" names options Beam itself encodes under names its parser
    does not take (`--direct_runner_use_stacked_bundle`, `--pipeline_type_check`); a user's
    unknown option never gets that far (`pipeline_options` refuses it). "No
    semi_persistent_directory found" concerns types registered at run time, which the jobs do
    not use. Every other worker message passes.
    """

    NOISE = ("Discarding unparseable args", "No semi_persistent_directory found")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Worker: ") and any(n in message for n in self.NOISE))


_WORKER_START_UP_NOISE = _WorkerStartUpNoise()


def _drop_worker_start_up_noise() -> None:
    # addFilter adds a filter once, however often it is called.
    logging.getLogger("apache_beam.runners.portability.local_job_service").addFilter(
        _WORKER_START_UP_NOISE
    )


def default_setup_file() -> str:
    """The project's setup.py, which Dataflow workers install the job's code from."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")
