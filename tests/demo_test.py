"""The README's main command, scripts/demo.sh, end to end: preprocess, train, translate, score,
then one sentence through standard input.

Twenty training steps instead of the demo's 400, so it checks that every stage runs and hands
the next what it needs, not that the model learns (tests/train_test.py and the demo itself do).
"""

import os
import subprocess

from tests.tiny_models import own_stderr_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORE_HEADER = "== 4/4 score: sacreBLEU against the reference translations"
PIPE_HEADER = "== your own sentence: piped through standard input (--input=- --output=-)"


def test_demo_runs_to_its_bleu_score(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, OUT=str(out), STEPS="20")
    run = subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    after_header = lines[lines.index(SCORE_HEADER) + 1 :]
    scores = [i for i, line in enumerate(after_header) if line.startswith("BLEU|nrefs:1|")]
    assert len(scores) == 1, run.stdout[-3000:]
    # Before the score: the first three held-out sources, each followed by its translation.
    preview = after_header[: scores[0]]
    sources = (out / "held_out" / "held_out.en").read_text(encoding="utf-8").splitlines()
    hypotheses = (out / "held_out" / "held_out.hyp.de").read_text(encoding="utf-8").splitlines()
    assert len(hypotheses) == len(sources) == 200
    assert preview == [line for pair in zip(sources[:3], hypotheses[:3]) for line in pair]
    # Last, one sentence through standard input: one translation line, the summary on stderr.
    assert lines[lines.index(PIPE_HEADER) + 1 :] == lines[-1:]
    assert run.stderr.strip().splitlines()[-1].startswith("translated 1 line, 1 sentence, ")
    # None of TensorFlow's native start-up lines (pipeline/tensorflow_start.py).
    assert own_stderr_lines(run.stderr) == run.stderr.strip().splitlines(), run.stderr
