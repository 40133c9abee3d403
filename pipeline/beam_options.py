"""Beam pipeline options for the project's Beam jobs (preprocess, batch_translate, batch_classify).

A job's own flags are absl flags; everything else on its command line goes to Beam's
PipelineOptions. Unknown options are refused instead of silently dropped, and a Dataflow
run gets the options it cannot run without checked up front.
"""

from __future__ import annotations

import logging
import os

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, SetupOptions

from pipeline import cli


def pipeline_options(beam_args: list[str], *, program: str = "preprocess") -> PipelineOptions:
    """Beam options from the flags the job does not own; UsageError for unknown ones."""
    options = PipelineOptions(beam_args)
    # Beam would log "Discarding unparseable args"; we refuse them with one line instead.
    beam_options_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_options_log.level
    beam_options_log.setLevel(logging.ERROR)
    try:
        known = options.get_all_options(retain_unknown_options=False)
        unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
    finally:
        beam_options_log.setLevel(level)
    if unknown:
        raise cli.UsageError(
            f"unknown flag --{unknown[0]} (neither a {program} flag nor a Beam pipeline option)"
        )
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
    return options


def default_setup_file() -> str:
    """The project's setup.py, which Dataflow workers install the job's code from."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")
