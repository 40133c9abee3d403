"""metrics.jsonl bookkeeping and the loss-curve labels (trainer/reporting.py)."""

import os

from trainer import reporting


def test_loss_label_names_the_unit_and_the_smoothing():
    assert reporting.loss_label(True, 0.1) == "loss per target token, label smoothing 0.1"
    assert reporting.loss_label(False, 0.0) == "loss per review"


def test_metrics_log_tracks_best_and_plots_under_its_label(tmp_path):
    log = reporting.MetricsLog(str(tmp_path), enabled=True, loss_label="loss per review")
    for step, accuracy, best in [(10, 0.6, True), (20, 0.8, True), (30, 0.7, False)]:
        log.append(
            {"step": step, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": accuracy}
            | ({"best": True} if best else {})
        )
    assert log.best("val_accuracy", higher_is_better=True) == 0.8
    assert log.evaluations_since_best() == 1
    assert (tmp_path / reporting.CURVE_FILE).read_bytes().startswith(b"\x89PNG")

    reloaded = reporting.MetricsLog(str(tmp_path), enabled=False)
    reloaded.load(up_to_step=20)
    assert [e["step"] for e in reloaded.entries] == [10, 20]


def test_a_resumed_run_trims_the_steps_it_trains_again_from_tensorboard(tmp_path):
    first = reporting.Summaries(str(tmp_path), enabled=True)
    for step in (5, 10, 15, 20):
        first.write("train", step, {"loss": 1.0 / step})
    first.write("eval", 10, {"bleu": 1.0})
    first.write("eval", 20, {"bleu": 2.0})
    # Killed after step 20; the last checkpoint was step 10. A torn record ends the file.
    train_dir = tmp_path / "tensorboard" / "train"
    (written,) = os.listdir(train_dir)
    with open(train_dir / written, "ab") as f:
        f.write(b"\x10\x00\x00\x00")
    (train_dir / ".trim-1").write_bytes(b"half")  # the temp of a trim killed before its rename

    resumed = reporting.Summaries(str(tmp_path), enabled=True)
    resumed.trim(up_to_step=10)
    for step in (15, 20, 25):
        resumed.write("train", step, {"loss": 1.0 / step})
    resumed.write("eval", 20, {"bleu": 3.0})
    assert reporting.tensorboard_steps(train_dir) == {"loss": [5, 10, 15, 20, 25]}
    assert reporting.tensorboard_steps(tmp_path / "tensorboard" / "eval") == {"bleu": [10, 20]}
    assert sorted(n for n in os.listdir(train_dir) if "tfevents" not in n) == []


def test_a_run_off_the_chief_writes_and_trims_nothing(tmp_path):
    summaries = reporting.Summaries(str(tmp_path), enabled=False)
    summaries.trim(up_to_step=0)
    summaries.write("train", 5, {"loss": 1.0})
    assert not os.path.exists(tmp_path / "tensorboard")
