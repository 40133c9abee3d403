"""trainer.tune: weights and decoding chosen on validation, written where translate finds them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pipeline import features
from tests import tiny_models
from trainer import checkpoint_average, model_dir, tuning
from trainer.model import build_model


@pytest.fixture(scope="module")
def models(tmp_path_factory, ende_data, imdb_data) -> dict[str, str]:
    base = tmp_path_factory.getbasetemp()
    return tiny_models.train_models(base, ende_data=ende_data, imdb_data=imdb_data)


def results_tables(*directories: str) -> list[str]:
    """scripts/results_tables.py's output lines for ``directories``, run as a user runs it."""
    script = os.path.join(tiny_models.ROOT, "scripts", "results_tables.py")
    result = subprocess.run(
        [sys.executable, script, *directories], capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def copy_of(directory: str, tmp_path) -> str:
    target = str(tmp_path / "model")
    shutil.copytree(directory, target)
    # The state file names checkpoints by absolute path; point it at the copy.
    state = os.path.join(target, "checkpoint")
    with open(state) as f:
        text = f.read()
    with open(state, "w") as f:
        f.write(text.replace(directory, target))
    return target


def averaged_weights(config, paths: list[str]) -> list[np.ndarray]:
    model = build_model(config.model)
    checkpoint_average.average_checkpoints(model, paths)
    return [v.numpy() for v in model.trainable_variables]


def test_translation_picks_the_best_scored_weights_and_decoding(models, tmp_path):
    directory = copy_of(models["translation"], tmp_path)
    lines = []
    report = tuning.tune(
        directory,
        averages=[0, 1, 2],
        beam_sizes=[1, 2],
        alphas=[0.6, 1.0],
        sentences=20,
        log=lines.append,
    )
    assert [w["weights"] for w in report["weights"]] == [
        "best checkpoint",
        "average of last 1",
        "average of last 2",
    ]
    assert [(d["beam_size"], d["alpha"]) for d in report["decodings"]] == [
        (1, 0.6),
        (2, 0.6),
        (2, 1.0),
    ]
    best_decoding = max(d["bleu"] for d in report["decodings"])
    assert report["chosen"]["bleu"] == best_decoding
    assert report["validation"]["examples"] == 20
    assert report["bleu_signature"].startswith("nrefs:1|")
    assert len(lines) == 6

    tuned_dir = os.path.join(directory, tuning.TUNED_DIR)
    with open(os.path.join(tuned_dir, tuning.TUNED_FILE)) as f:
        assert json.load(f) == json.loads(json.dumps(report))
    # The written checkpoint holds exactly the chosen weights, and translate's loader reads it.
    loaded = model_dir.load_model_dir(
        directory, task=features.TRANSLATION, checkpoint=tuned_dir, devices=["/cpu:0"]
    )
    expected = averaged_weights(loaded.config, report["chosen"]["checkpoints"])
    got = [v.numpy() for v in loaded.replicas[0].model.trainable_variables]
    assert all(np.allclose(a, b) for a, b in zip(expected, got))
    assert not [n for n in os.listdir(directory) if n.endswith(".tmp")]

    # docs/RESULTS.md's tables come from this model dir: the curve, then the tuned choices.
    tables = results_tables(directory)
    with open(os.path.join(directory, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f]
    assert tables[0].endswith("| val token accuracy | val BLEU |")
    assert [int(row.split("|")[1]) for row in tables[2 : 2 + len(steps)]] == sorted(steps)
    assert "| weights | greedy val BLEU | vs first row |" in tables
    assert "| average of last 2 |" in "\n".join(tables)
    assert f"| greedy | {report['decodings'][0]['bleu']:.2f} | +0.00 |" in tables


def test_classification_scores_accuracy_on_the_whole_validation_split(models, imdb_data, tmp_path):
    directory = copy_of(models["classification"], tmp_path)
    report = tuning.tune(directory, averages=[0, 2], beam_sizes=[1], alphas=[0.6], log=lambda _: 0)
    meta = features.load_metadata(imdb_data)
    assert report["metric"] == "accuracy"
    assert report["validation"]["examples"] == meta.splits[features.VALIDATION].examples
    assert report["chosen"]["accuracy"] == max(w["accuracy"] for w in report["weights"])
    assert all(0.0 <= w["accuracy"] <= 1.0 for w in report["weights"])
    assert report["decodings"] == []
    tables = results_tables(directory)
    assert tables[0] == "| step | epoch | train loss | val loss | val accuracy |"
    assert "| weights | val accuracy | vs first row |" in tables
    assert tables[-1].startswith("| average of last 2 | ")
    assert tables[-1].endswith(" points |")


def test_refuses_validation_data_of_another_tokenizer(models, ende_data_other_tokenizer, tmp_path):
    directory = copy_of(models["translation"], tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.tune",
            f"--model_dir={directory}",
            f"--data_dir={ende_data_other_tokenizer}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=tiny_models.subprocess_env(),
        cwd=tiny_models.ROOT,
    )
    assert result.returncode == 2
    lines = tiny_models.own_stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("tune: error: --data_dir: "), result.stderr
    assert "validate on the data the model was trained on" in lines[0]
    assert not os.path.exists(os.path.join(directory, tuning.TUNED_DIR))


def test_results_tables_compares_runs_that_differ_in_a_flag(models, tmp_path):
    """Two runs of one model dir's config, one with another learning rate and fake scores."""
    with open(os.path.join(models["classification"], "config.json")) as f:
        base = json.load(f)
    original = base["learning_rate"]
    runs = []
    other = original * 2
    for name, rate, accuracies in (("a", original, [0.8, 0.85]), ("b", other, [0.82, 0.87])):
        run = tmp_path / name
        run.mkdir()
        config = dict(base, model_dir=str(run), learning_rate=rate)
        (run / "config.json").write_text(json.dumps(config))
        lines = [
            json.dumps({"step": 10 * (i + 1), "val_accuracy": a}) for i, a in enumerate(accuracies)
        ]
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        runs.append(str(run))
    assert results_tables(*runs) == [
        f"| step | learning_rate {original} | learning_rate {other} |",
        "|---:|---:|---:|",
        "| 10 | 80.00% | 82.00% |",
        "| 20 | 85.00% | 87.00% |",
        "| best | **85.00%** (+0.00 points) | **87.00%** (+2.00 points) |",
    ]
