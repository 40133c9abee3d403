"""Seconds from SIGTERM, sent 1 s into the evaluation of step 20, to the trainer's exit.

    python scripts/stop_during_eval.py TREE DATA_DIR MODEL_DIR

TREE: a checkout of the project (``git worktree`` of another commit to compare); DATA_DIR:
translation data from pipeline.preprocess. Prints the exit status, the seconds, whether
the evaluation finished, and the checkpoints left (docs/RELIABILITY.md).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time


def main(tree: str, data_dir: str, model_dir: str) -> None:
    shutil.rmtree(model_dir, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "trainer.train",
        "--flagfile=configs/tiny.cfg",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--train_steps=400",
        "--eval_every=20",
        "--checkpoint_every=1000",
        "--log_every=20",
        "--eval_bleu_sentences=200",
        "--eval_beam_size=4",
        "--noexport",
    ]
    process = subprocess.Popen(
        command,
        cwd=tree,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    for line in process.stdout:
        if re.match(r"step 20/", line):
            break
    time.sleep(1)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output = process.stdout.read()
    process.wait()
    seconds = time.monotonic() - sent
    saved = sorted(f[: -len(".index")] for f in os.listdir(model_dir) if f.endswith(".index"))
    finished = "eval step" in output
    print(
        f"{tree}: exit {process.returncode} {seconds:.1f} s after SIGTERM; "
        f"evaluation {'finished' if finished else 'left'}; checkpoints {saved}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    main(*sys.argv[1:])
