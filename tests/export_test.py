"""trainer/exporting.py, its command (trainer/export.py) and trainer/checkpoint_average.py,
on tiny trained models.

The SavedModel is loaded in a fresh interpreter that imports only TensorFlow and
tensorflow_text, its translations equal the project's own beam search and greedy
decoding on the same checkpoint, its class probabilities equal the classifier's,
the in-graph normalization equals pipeline.text.normalize, averaging two
checkpoints gives the mean of their weights, and every user error is one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the SavedModel's ops)
from tensorflow.core.protobuf import trackable_object_graph_pb2

from pipeline import export_contract, features, text, tokenizer
from tests import tiny_models
from trainer import checkpoint_average, decode, exporting
from trainer.config import TrainConfig
from trainer.model import build_model

SENTENCES = [
    "A dog runs in the park.",
    "The girl sees a bird<br />outside.",
    "Zwei Männer spielen Fußball — ﬁne!",
    "Ｆｕｌｌ　ｗｉｄｔｈ and\ttabs\nand newlines",
    "x",
]
# Each is a case where a naive TF port of pipeline.text.normalize would differ.
TRICKY = [
    "ﬁnally ﬂour",  # NFKC ligatures
    "Ｆｕｌｌｗｉｄｔｈ　ＡＢＣ　１２３",  # full-width letters, digits and space
    "Cafe\u0301 nai\u0308ve",  # combining accents compose
    "one<BR/>two<br>three<Br  />four<br/ >five",  # every spelling of the break, and one that is not
    "  tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em\u2028ls\x85nel\x1cfs\x0bvt  ",
    "Grüße aus Köln, ÄÖÜ äöü ß ẞ",
    "ΟΔΟΣ ΣΑΣ İstanbul Ǆ",  # final sigma, dotted capital I, titlecase digraph
    "",
    " \t\n ",
    "²³ ½ ™ ㎏ Ⅻ",  # compatibility forms
]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def models(base, ende_data, imdb_data) -> dict[str, str]:
    return tiny_models.train_models(base, ende_data=ende_data, imdb_data=imdb_data)


def _load_model(model_dir: str, checkpoint_path: str):
    with open(os.path.join(model_dir, "config.json")) as f:
        model = build_model(TrainConfig.from_json(f.read()).model)
    checkpoint_average.restore_model(model, checkpoint_path)
    return model


def _tokenizer(model_dir: str) -> tokenizer.Tokenizer:
    with open(os.path.join(model_dir, features.TOKENIZER_FILE), "rb") as f:
        return tokenizer.Tokenizer(f.read())


def _metadata(export_dir: str) -> dict:
    return export_contract.read_export_metadata(export_dir)


@pytest.mark.parametrize("lowercase", [False, True])
def test_tf_normalize_agrees_with_python(lowercase):
    got = exporting.tf_normalize(tf.constant(TRICKY), lowercase=lowercase).numpy()
    expected = [text.normalize(t, lowercase=lowercase) for t in TRICKY]
    assert [g.decode("utf-8") for g in got] == expected
    assert expected[0].startswith("finally") and expected[3] == "one two three four<br/ >five"
    assert expected[4] == "tabs and newlines and nbsp em ls nel fs vt"


def test_exported_translate_loads_without_the_project(models, base, tmp_path):
    export_dir = tiny_models.exported(base, models["translation"], "ende_beam4")
    inputs = ["A dog runs in the park.", "", "   ", "Grüße aus Köln ﬁ", "日本語のテキスト"]
    script = (
        "import json, sys\n"
        "import tensorflow as tf, tensorflow_text\n"
        f"model = tf.saved_model.load({export_dir!r})\n"
        f"texts = tf.constant({inputs!r})\n"
        "direct = [t.decode('utf-8') for t in model.translate(texts).numpy()]\n"
        "signature = model.signatures['translate'](text=texts)['translation']\n"
        "assert [t.decode('utf-8') for t in signature.numpy()] == direct\n"
        "assert model.translate(tf.constant([], tf.string)).shape == [0]\n"
        "project = sorted(m for m in sys.modules if m.split('.')[0] in ('pipeline', 'trainer'))\n"
        "print(json.dumps({'outputs': direct, 'project_modules': project}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["project_modules"] == []
    outputs = report["outputs"]
    assert len(outputs) == len(inputs)
    assert outputs[1] == "" and outputs[2] == ""
    # What the barely trained model writes for the others is garbage, possibly empty;
    # test_exported_translate_equals_the_project_decoder checks the content.
    loaded = tf.saved_model.load(export_dir)  # kept: its functions need it alive
    in_process = loaded.translate(tf.constant(inputs)).numpy()
    assert outputs == [t.decode("utf-8") for t in in_process]


@pytest.mark.parametrize("name, beam_size", [("ende_beam4", 4), ("ende_greedy", 1)])
def test_exported_translate_equals_the_project_decoder(models, base, name, beam_size):
    model_dir = models["translation"]
    export_dir = tiny_models.exported(base, model_dir, name, beam_size=beam_size)
    metadata = _metadata(export_dir)
    assert metadata["beam_size"] == beam_size and metadata["alpha"] == 0.6
    assert metadata["checkpoint"] == checkpoint_average.best_checkpoint(model_dir)
    model = _load_model(model_dir, metadata["checkpoint"])
    spm = _tokenizer(model_dir)
    assert metadata["tokenizer_sha256"] == spm.sha256
    # Greedy for beam_size 1, else beam search, as a tf.function (eager decoding is slow).
    translate = decode.make_translate_fn(model, beam_size=beam_size, alpha=0.6)
    loaded = tf.saved_model.load(export_dir)
    for sentence in SENTENCES:
        ids = tf.constant([spm.encode(text.normalize(sentence))])
        expected = spm.decode(translate(ids).numpy()[0])
        got = loaded.translate(tf.constant([sentence])).numpy()[0].decode("utf-8")
        assert got == expected, sentence


def test_exported_classify_equals_the_classifier(models, base):
    model_dir = models["classification"]
    export_dir = tiny_models.exported(base, model_dir, "imdb")
    metadata = _metadata(export_dir)
    assert metadata["task"] == features.CLASSIFICATION
    assert metadata["num_classes"] == 2 and metadata["class_names"] == ["negative", "positive"]
    model = _load_model(model_dir, metadata["checkpoint"])
    spm = _tokenizer(model_dir)
    long_review = "A wonderful film with great acting, I loved it. " * 40  # > max_length=128
    reviews = ["Terrible plot.<br /><br />Boring.", "Brilliant, moving and funny.", long_review]
    ids = [spm.encode(text.normalize(r)) for r in reviews]
    assert len(ids[2]) > 128
    ids[2] = ids[2][:127] + [features.EOS_ID]  # the trainer's truncation
    width = max(len(i) for i in ids)
    padded = tf.constant([i + [features.PAD_ID] * (width - len(i)) for i in ids])
    expected = tf.nn.softmax(model(padded, training=False)).numpy()
    loaded = tf.saved_model.load(export_dir)
    got = loaded.classify(tf.constant(reviews)).numpy()
    assert got.shape == (3, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    signature = loaded.signatures["classify"](text=tf.constant(reviews))["probabilities"]
    np.testing.assert_array_equal(signature.numpy(), got)


def _raw_trainable_values(path: str) -> list[np.ndarray]:
    """The trainable variables stored in a training checkpoint, read straight from its files.

    Follows the checkpoint's own object graph to the optimizer's ordered list of them.
    """
    reader = tf.train.load_checkpoint(path)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))

    def child(node_id: int, name: str) -> int:
        return next(c.node_id for c in graph.nodes[node_id].children if c.local_name == name)

    listing = graph.nodes[child(child(0, "optimizer"), "_trainable_variables")]
    ordered = sorted(listing.children, key=lambda c: int(c.local_name))
    return [reader.get_tensor(graph.nodes[c.node_id].attributes[0].checkpoint_key) for c in ordered]


def test_restore_fills_every_weight_from_the_checkpoint(models):
    model_dir = models["translation"]
    path = checkpoint_average.model_checkpoints(model_dir)[-1]
    model = _load_model(model_dir, path)
    raw = _raw_trainable_values(path)
    assert len(raw) == len(model.trainable_variables)
    # What the checkpoint does not hold is state, not weights (dropout seeds).
    assert all(not tf.as_dtype(v.dtype).is_floating for v in model.non_trainable_variables)
    for variable, value in zip(model.trainable_variables, raw):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_restoring_another_architecture_fails_clearly(models):
    with open(os.path.join(models["translation"], "config.json")) as f:
        config = TrainConfig.from_json(f.read()).model
    wider = build_model(config.replace(num_layers=2))
    path = checkpoint_average.model_checkpoints(models["translation"])[-1]
    with pytest.raises(checkpoint_average.CheckpointError, match="does not fit the model"):
        checkpoint_average.restore_model(wider, path)


def test_average_of_two_checkpoints_is_the_mean_of_their_weights(models, base):
    model_dir = models["translation"]
    paths = checkpoint_average.model_checkpoints(model_dir)
    assert [os.path.basename(p) for p in paths] == ["ckpt-5", "ckpt-10"]
    first, second = (_raw_trainable_values(p) for p in paths)
    assert any(not np.array_equal(a, b) for a, b in zip(first, second))

    averaged = _load_model(model_dir, paths[0])
    checkpoint_average.average_checkpoints(averaged, paths)
    for variable, a, b in zip(averaged.trainable_variables, first, second):
        np.testing.assert_allclose(variable.numpy(), (a + b) / 2, rtol=1e-6, atol=1e-7)

    # The export with average_last=2 holds those weights: it decodes as the averaged model does.
    export_dir = tiny_models.exported(base, model_dir, "ende_avg2", average_last=2, beam_size=1)
    metadata = _metadata(export_dir)
    assert metadata["averaged_checkpoints"] == paths
    spm = _tokenizer(model_dir)
    translate = decode.make_translate_fn(averaged, beam_size=1, alpha=0.6)
    loaded = tf.saved_model.load(export_dir)
    for sentence in SENTENCES[:3]:
        ids = tf.constant([spm.encode(text.normalize(sentence))])
        expected = spm.decode(translate(ids).numpy()[0])
        assert loaded.translate(tf.constant([sentence])).numpy()[0].decode() == expected


def test_checkpoint_choices(models, tmp_path, capsys):
    model_dir = models["classification"]

    def chosen(name, **args):
        export_dir = exporting.export_model(
            model_dir=model_dir, export_dir=str(tmp_path / name), **args
        )
        return _metadata(export_dir)["checkpoint"]

    best = checkpoint_average.best_checkpoint(model_dir)
    assert best is not None and chosen("best") == best
    assert chosen("latest", checkpoint="latest") == os.path.join(model_dir, "ckpt-10")
    explicit = os.path.join(model_dir, "ckpt-5")
    assert chosen("explicit", checkpoint=explicit) == explicit

    without_best = str(tmp_path / "no_best_model")
    shutil.copytree(model_dir, without_best, ignore=shutil.ignore_patterns("best"))
    capsys.readouterr()
    used = exporting.export_model(model_dir=without_best, export_dir=str(tmp_path / "fallback"))
    assert _metadata(used)["checkpoint"] == os.path.join(without_best, "ckpt-10")
    assert "has no best checkpoint; exporting the latest" in capsys.readouterr().out


def test_export_dir_is_replaced_atomically_and_only_when_asked(models, tmp_path):
    model_dir = models["classification"]
    export_dir = str(tmp_path / "export")
    exporting.export_model(model_dir=model_dir, export_dir=export_dir, checkpoint="latest")
    with pytest.raises(exporting.ExportError, match="is not empty; pass --overwrite"):
        exporting.export_model(model_dir=model_dir, export_dir=export_dir)
    exporting.export_model(model_dir=model_dir, export_dir=export_dir, overwrite=True)
    assert _metadata(export_dir)["checkpoint"] == checkpoint_average.best_checkpoint(model_dir)
    assert sorted(os.listdir(tmp_path)) == ["export"]  # no .tmp-* or .old-* left behind

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(exporting.ExportError, match="holds files that are not an export"):
        exporting.export_model(model_dir=model_dir, export_dir=str(foreign), overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            dict(checkpoint="/nonexistent/ckpt-99"),
            "--checkpoint: /nonexistent/ckpt-99: no such checkpoint",
        ),
        (dict(average_last=3), "--average_last=3: "),
        (dict(beam_size=0), "--beam_size=0 must be a positive integer"),
    ],
)
def test_bad_arguments_are_refused(models, tmp_path, args, message):
    with pytest.raises(exporting.ExportError) as error:
        exporting.export_model(
            model_dir=models["classification"], export_dir=str(tmp_path / "e"), **args
        )
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "e").exists()


def test_a_model_dir_without_checkpoints_is_refused(models, tmp_path):
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    for name in ("config.json", "spm.model", "tokenizer.json"):
        shutil.copy(os.path.join(models["classification"], name), untrained / name)
    with pytest.raises(exporting.ExportError, match="holds no checkpoint \\(train first\\)"):
        exporting.export_model(model_dir=str(untrained), export_dir=str(tmp_path / "e"))


def test_cli_exports_and_errors_are_one_line(models, tmp_path):
    model_dir = models["classification"]
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("x")
    cases = {
        "ok": (
            [
                f"--model_dir={model_dir}",
                f"--export_dir={tmp_path / 'cli_export'}",
                "--average_last=2",
            ],
            None,
        ),
        "no_config": (
            [f"--model_dir={tmp_path}", f"--export_dir={tmp_path / 'e1'}"],
            "has no config.json; it is not a trainer model dir",
        ),
        "occupied": (
            [f"--model_dir={model_dir}", f"--export_dir={occupied}"],
            "is not empty; pass --overwrite",
        ),
    }
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "trainer.export", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=tiny_models.subprocess_env(),
            cwd=tiny_models.ROOT,
        )
        for name, (args, _) in cases.items()
    }
    for name, process in processes.items():
        out, err = process.communicate(timeout=180)
        message = cases[name][1]
        if message is None:
            assert process.returncode == 0, err[-3000:]
            assert "exported the classification model of" in out
            continue
        assert process.returncode == 2, (name, err[-3000:])
        lines = tiny_models.own_stderr_lines(err)
        assert len(lines) == 1 and lines[0].startswith("export: error: "), (name, err[-3000:])
        assert message in lines[0], (name, lines[0])
    metadata = _metadata(str(tmp_path / "cli_export"))
    assert metadata["averaged_checkpoints"] == checkpoint_average.model_checkpoints(model_dir)
    assert not (tmp_path / "e1").exists() and os.listdir(occupied) == ["x"]
