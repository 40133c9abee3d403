"""What a SIGTERM in the middle of a batch translation costs: the work lost and the time to exit.

    python scripts/stop_during_translate.py TREE MODEL_DIR INPUT WORK_DIR [SECONDS]

TREE: a checkout of the project (``git worktree`` of another commit to compare);
MODEL_DIR: a translation model dir; INPUT: a text file. trainer.translate runs over INPUT
(beam 4, the default --group_lines), gets SIGTERM SECONDS (default 10) after it starts,
and is then run again to the end. Prints the exit status, the seconds from the signal to
the exit, the output lines saved at the stop, the rerun's seconds and a hash of the output
(docs/RELIABILITY.md).
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time


def main(tree: str, model_dir: str, source: str, work_dir: str, seconds: str = "10") -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
    os.makedirs(work_dir)
    output = os.path.join(work_dir, "out.txt")
    command = [
        sys.executable,
        "-m",
        "trainer.translate",
        f"--model_dir={model_dir}",
        f"--input={source}",
        f"--output={output}",
        "--beam_size=4",
    ]
    env = dict(os.environ, PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="2")
    run = dict(cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    process = subprocess.Popen(command, **run)
    time.sleep(float(seconds))
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.communicate()
    stopped = time.monotonic() - sent
    parts = os.path.join(work_dir, ".parts-out.txt")
    saved = 0
    for name in sorted(os.listdir(parts)) if os.path.isdir(parts) else []:
        with open(os.path.join(parts, name), encoding="utf-8") as f:
            if name.startswith("partial-"):
                saved += len(json.load(f)["outputs"])
            elif name.startswith("part-"):
                saved += sum(1 for _ in f)
    started = time.monotonic()
    rerun = subprocess.run(command, check=False, **run)
    rerun_seconds = time.monotonic() - started
    with open(output, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    print(
        f"{tree}: SIGTERM at {seconds} s: exit {process.returncode} {stopped:.2f} s after it, "
        f"{saved} lines saved; rerun exit {rerun.returncode} in {rerun_seconds:.1f} s; "
        f"output sha256 {digest}"
    )


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__.strip().splitlines()[2].strip())
    main(*sys.argv[1:])
