"""Shared pytest fixtures."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulators import free_port, serving

GCS_BUCKET = "testbucket"


def _emulator_executable() -> str | None:
    beside_python = Path(sys.executable).with_name("gcp-storage-emulator")
    return str(beside_python) if beside_python.exists() else shutil.which("gcp-storage-emulator")


@pytest.fixture
def no_prism(monkeypatch, tmp_path, caplog):
    """Call it after a Beam job: asserts the job never tried Beam's Prism runner.

    Beam's DirectRunner tries Prism before its FnApiRunner, logs it, and leaves a `beam-temp*`
    directory and two `tmp*` directories in the system's temp directory (here a private one)
    each time. A job leaves nothing there.
    """
    temp = tmp_path / "system-temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    caplog.set_level(logging.INFO, logger="apache_beam.runners.direct.direct_runner")

    def check() -> None:
        assert not [r.getMessage() for r in caplog.records if "Prism" in r.getMessage()]
        assert os.listdir(temp) == []

    return check


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory) -> Iterator[str]:
    """A local GCS emulator that Beam's gs:// I/O and google-cloud-storage both use.

    Yields the name of an empty-at-start bucket. Upload with
    ``storage.Client(project="test", credentials=AnonymousCredentials())``.
    """
    executable = _emulator_executable()
    if executable is None:
        pytest.fail("gcp-storage-emulator is not installed (pip install -e '.[dev]')")
    port = free_port()
    # Beam looks up Application Default Credentials before creating its GCS client and, finding
    # none, retries with backoff for ~30 s. A token that never expires is found at once and
    # needs no network; the emulator ignores it.
    credentials = tmp_path_factory.mktemp("gcs") / "credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "test",
                "client_secret": "test",
                "refresh_token": "test",
                "token": "test",
                "expiry": "2999-01-01T00:00:00Z",
            }
        )
    )
    environment = {
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
        "GOOGLE_CLOUD_PROJECT": "test",
        "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
    }
    argv = [executable, "start", "--host", "127.0.0.1", "--port", str(port)]
    with serving("gcp-storage-emulator", argv + ["--in-memory", "--default-bucket", GCS_BUCKET],
                 port, environment):  # fmt: skip
        yield GCS_BUCKET


def _prepare(output_dir: str, *, dataset: str, input: str, **config) -> str:
    """Runs the real preprocessing job (DirectRunner) into ``output_dir``."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import preprocess, sources
    from pipeline.config import PreprocessConfig

    specs = sources.resolve_sources(
        dataset=dataset,
        input=input,
        validation_input=None,
        test_input=None,
        source_lang="en",
        target_lang="de",
        tfds_data_dir=None,
    )
    values = dict(vocab_size=500, num_shards=2, validation_fraction=0.1)
    values.update(config)
    cfg = PreprocessConfig(dataset=dataset, output_dir=output_dir, sources=tuple(specs), **values)
    preprocess.run_job(cfg, PipelineOptions([]), overwrite=False)
    return output_dir


@pytest.fixture(scope="session")
def ende_data(tmp_path_factory) -> str:
    """A small real en-de dataset (embedded-corpus sentences through the real job)."""
    from pipeline import default_corpus

    raw = tmp_path_factory.mktemp("ende_raw")
    prefix = default_corpus.write_translation_files(str(raw), n=1200)
    return _prepare(str(tmp_path_factory.mktemp("ende_data")), dataset="ende", input=prefix)


@pytest.fixture(scope="session")
def ende_data_other_tokenizer(tmp_path_factory) -> str:
    """Like ende_data, but with a tokenizer of another size (another SHA-256)."""
    from pipeline import default_corpus

    raw = tmp_path_factory.mktemp("ende_raw2")
    prefix = default_corpus.write_translation_files(str(raw), n=600, seed=3)
    return _prepare(
        str(tmp_path_factory.mktemp("ende_data2")), dataset="ende", input=prefix, vocab_size=400
    )


@pytest.fixture(scope="session")
def imdb_data(tmp_path_factory) -> str:
    from pipeline import default_corpus

    csv_path = str(tmp_path_factory.mktemp("imdb_raw") / "reviews.csv")
    default_corpus.write_review_csv(csv_path, n=600)
    return _prepare(
        str(tmp_path_factory.mktemp("imdb_data")), dataset="imdb", input=csv_path, vocab_size=400
    )
