"""metrics.jsonl bookkeeping and the loss-curve labels (trainer/reporting.py)."""

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
