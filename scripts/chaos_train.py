"""Fault injection for training: kill the trainer at random moments, relaunch, check nothing is lost.

    python scripts/chaos_train.py --suites=sigkill,sigterm,cluster --kills=6 \\
        --train_steps=200 --seed=0 [--data_dir=DIR] [--work_dir=DIR] [--reference]

Suites (each in its own model dir, the tiny preset of configs/tiny.cfg with dropout off):
  sigkill  SIGKILL at K moments: during start-up, at a random step, and during the
           first checkpoint write after a random step (the script polls the model dir
           every 0.5 ms for the write's ``ckpt-N_temp`` directory and freezes the
           process with SIGSTOP to kill it there); relaunch each time. Random steps are
           drawn so that the kills spread over the whole run.
  sigterm  SIGTERM at K random steps: exit status 42 and a checkpoint at the step
           where it stopped; relaunch each time.
  cluster  a 2-worker cluster (python -m infra.local_cluster 2) where one worker is
           SIGKILLed K times (randomly the chief or the other); the cluster is relaunched.
At the end of each: the run has exactly --train_steps steps, every checkpoint left
loads and holds the step its name says, every logged learning rate is the schedule's
value at its step, each relaunch resumed at the newest complete checkpoint, the
steps a relaunch repeats have the same loss as before the kill (to the printed digit),
and metrics.jsonl and TensorBoard hold each evaluation and logged step once, in order.
--reference also trains an uninterrupted single-process run and compares every step's
loss of the sigkill and sigterm suites with it (not the cluster's: two workers see
other batches).

--small is the CI form (a smaller model; tests/chaos_train_test.py). Without
--data_dir a small en-de dataset is made from the embedded corpus first.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import re
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos_common as chaos  # noqa: E402

PROGRAM = "chaos_train"
SUITES = ("sigkill", "sigterm", "cluster")
STEP_LINE = re.compile(r"^(?:\[\d+\] )?step (\d+)/\d+\s+loss ([\d.]+)\s.*?lr (\S+)", re.M)
RESUMED = re.compile(r"resumed from (\S+) at step (\d+)")
DONE = re.compile(r"done at step (\d+)")
TEMP_DIR = re.compile(r"^ckpt-(\d+)_temp$")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suites", default=",".join(SUITES), help="Comma-separated: " + ", ".join(SUITES)
    )
    parser.add_argument("--kills", type=int, default=6, help="Kills (or SIGTERMs) per suite.")
    parser.add_argument(
        "--write_kills", type=int, default=2, help="Of --kills, how many aim at a checkpoint write."
    )
    parser.add_argument(
        "--cluster_kills", type=int, default=3, help="Worker kills of the cluster suite."
    )
    parser.add_argument("--train_steps", type=int, default=200, help="Steps of each run.")
    parser.add_argument("--checkpoint_every", type=int, default=10, help="As the trainer's flag.")
    parser.add_argument("--eval_every", type=int, default=50, help="As the trainer's flag.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill moments.")
    parser.add_argument(
        "--data_dir", help="Prepared en-de data; default: made from the embedded corpus."
    )
    parser.add_argument("--work_dir", help="Where model dirs and logs go; default: a new temp dir.")
    parser.add_argument("--small", action="store_true", help="The CI form: a smaller model.")
    parser.add_argument(
        "--reference", action="store_true", help="Compare with an uninterrupted run."
    )
    parser.add_argument("--report_json", help="Also write the checks and figures here.")
    args = parser.parse_args(argv)
    args.suites = [s for s in args.suites.split(",") if s]
    unknown = sorted(set(args.suites) - set(SUITES))
    if unknown:
        parser.error(f"--suites: unknown {unknown}; choose from {list(SUITES)}")
    if args.kills < 1 or not 0 <= args.write_kills <= args.kills or args.cluster_kills < 1:
        parser.error("--kills and --cluster_kills must be >= 1, --write_kills in [0, --kills]")
    if args.train_steps < 2 * args.checkpoint_every:
        parser.error("--train_steps must be at least twice --checkpoint_every")
    return args


def trainer_flags(args, data_dir: str, model_dir: str) -> list[str]:
    flags = [
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        f"--flagfile={chaos.TINY_CFG}",
        *chaos.NO_DROPOUT,
        f"--train_steps={args.train_steps}",
        f"--checkpoint_every={args.checkpoint_every}",
        f"--eval_every={args.eval_every}",
        "--keep_checkpoints=3",
        "--log_every=1",
        "--batch_tokens=1024",
        "--eval_bleu_sentences=0",
        "--shuffle_buffer=200",
        "--noexport",
    ]
    if args.small:
        flags += [*chaos.SHRUNK_MODEL, "--warmup_steps=30", "--learning_rate=3.0"]
    return flags


def lr_on_schedule(flags: list[str], step: int, printed: str) -> bool:
    """Whether ``printed`` is the schedule's rate at ``step`` (trainer/schedule.py), to 3 digits."""
    values = {}
    for flag in _with_flagfiles(flags):
        if flag.startswith("--") and "=" in flag:
            name, value = flag[2:].split("=", 1)
            values[name] = value
    d_model = int(values.get("d_model", 128))  # the tiny preset's
    warmup = int(values["warmup_steps"])
    scale = float(values["learning_rate"])
    lr = scale * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
    half_digit = 0.5 * 10 ** (math.floor(math.log10(lr)) - 2)
    return abs(float(printed) - lr) <= half_digit * 1.001


def _with_flagfiles(flags: list[str]) -> list[str]:
    expanded = []
    for flag in flags:
        if flag.startswith("--flagfile="):
            with open(flag.split("=", 1)[1], encoding="utf-8") as f:
                expanded += [line.strip() for line in f if line.startswith("--")]
        else:
            expanded.append(flag)
    return expanded


def mid_write_evidence(model_dir: str, *, ignore: set[str] = frozenset()) -> str | None:
    """What a kill during a checkpoint write leaves: its temp dir, or an unlisted checkpoint.

    Entries in ``ignore`` (there before the launch) do not count.
    """
    names = set(os.listdir(model_dir)) - set(ignore)
    temps = sorted(n for n in names if TEMP_DIR.match(n))
    if temps:
        return temps[0]
    listed = {os.path.basename(p) for p in chaos.listed_checkpoints(model_dir)}
    unlisted = sorted(
        n.split(".")[0]
        for n in names
        if n.startswith("ckpt-") and n.endswith(".index") and n.split(".")[0] not in listed
    )
    return f"{unlisted[0]} written, not listed" if unlisted else None


def entries(directory: str) -> set[str]:
    return set(os.listdir(directory)) if os.path.isdir(directory) else set()


class Run:
    """One training run through relaunches: the status lines each launch printed."""

    def __init__(self, name: str, model_dir: str, log_dir: str):
        self.name = name
        self.model_dir = model_dir
        self.log_dir = log_dir
        self.launches: list[dict] = []

    def log_path(self) -> str:
        return os.path.join(self.log_dir, f"{self.name}-{len(self.launches)}.log")

    def record(self, output: str, *, code: int, kind: str, resume_expected: int | None) -> dict:
        steps = [(int(s), float(loss), lr) for s, loss, lr in STEP_LINE.findall(output)]
        resumed = RESUMED.search(output)
        launch = {
            "kind": kind,
            "code": code,
            "steps": steps,
            "resumed_at": int(resumed.group(2)) if resumed else (0 if steps else None),
            "resume_expected": resume_expected,
            "done": bool(DONE.search(output)),
        }
        self.launches.append(launch)
        return launch


def newest_loadable_step(model_dir: str) -> int:
    listed = chaos.listed_checkpoints(model_dir)
    return chaos.step_of(listed[-1]) if listed else 0


def check_run(report: chaos.Report, suite: str, run: Run, flags: list[str], args, reference=None):
    """The checks every suite ends with."""
    launches = run.launches
    final = launches[-1]
    report.check(suite, "final launch exit status", 0, final["code"])
    report.check(suite, "final launch reached the last step", True, final["done"])
    listed = chaos.listed_checkpoints(run.model_dir)
    report.check(
        suite,
        "newest checkpoint",
        f"ckpt-{args.train_steps}",
        os.path.basename(listed[-1]) if listed else None,
    )
    best = chaos.listed_checkpoints(os.path.join(run.model_dir, "best"))
    bad = {os.path.basename(p): e for p in listed + best if (e := chaos.checkpoint_loads(p))}
    report.check(
        suite,
        f"checkpoints that load ({len(listed)} kept + {len(best)} best)",
        len(listed) + len(best),
        len(listed) + len(best) - len(bad),
    )
    wrong_resume = [
        (i, launch["resume_expected"], launch["resumed_at"])
        for i, launch in enumerate(launches)
        if launch["resume_expected"] is not None
        and launch["resumed_at"] is not None
        and launch["resumed_at"] != launch["resume_expected"]
    ]
    report.check(
        suite,
        "relaunches resumed at the newest complete checkpoint",
        "all",
        "all" if not wrong_resume else f"wrong: {wrong_resume}",
    )
    gaps = []
    for i, launch in enumerate(launches):
        steps = [s for s, _, _ in launch["steps"]]
        if steps and launch["resumed_at"] is not None:
            expected = list(range(launch["resumed_at"] + 1, launch["resumed_at"] + 1 + len(steps)))
            if steps != expected:
                gaps.append(i)
    report.check(suite, "launches whose steps do not continue from their resume step", 0, len(gaps))
    lr_wrong = [
        (s, lr)
        for launch in launches
        for s, _, lr in launch["steps"]
        if not lr_on_schedule(flags, s, lr)
    ]
    logged = sum(len(launch["steps"]) for launch in launches)
    report.check(suite, f"logged learning rates off the schedule (of {logged})", 0, len(lr_wrong))
    curve: dict[int, float] = {}
    repeated = differing = 0
    for launch in launches:
        for s, loss, _ in launch["steps"]:
            if s in curve:
                repeated += 1
                differing += curve[s] != loss
            curve[s] = loss
    report.check(suite, "steps in the combined loss curve", args.train_steps, len(curve))
    report.check(suite, f"repeated steps whose loss differs (of {repeated})", 0, differing)
    with open(os.path.join(run.model_dir, "metrics.jsonl"), encoding="utf-8") as f:
        eval_steps = [json.loads(line)["step"] for line in f if line.strip()]
    expected_evals = sorted(
        set(range(args.eval_every, args.train_steps + 1, args.eval_every)) | {args.train_steps}
    )
    report.check(suite, "metrics.jsonl evaluation steps", expected_evals, eval_steps)
    from trainer import reporting  # TensorFlow: only now

    logged_steps = reporting.tensorboard_steps(f"{run.model_dir}/tensorboard/train").get("loss")
    report.check(suite, "TensorBoard loss steps (each once, in order)", sorted(curve), logged_steps)
    if reference is not None:
        off = [s for s in reference if curve.get(s) != reference[s]]
        report.check(suite, "steps whose loss differs from the uninterrupted run", 0, len(off))
    report.figures[suite] = {
        "launches": len(launches),
        "kills": sum(1 for launch in launches if launch["kind"] != "final"),
        "steps_repeated": repeated,
        "bad_checkpoints": bad,
    }


# ---- the suites -------------------------------------------------------------------------


def freeze_in_checkpoint_write(
    launch: chaos.Launch, model_dir: str, rng, *, signal_all=None, attempts: int = 20
) -> str | None:
    """Stops the launch's processes (SIGSTOP) in the middle of a checkpoint write.

    Watches for the write's temp dir, stops the processes, and looks again: if the
    write has finished meanwhile they continue (SIGCONT) until the next checkpoint.
    Half the time they run on for a random 0-3 ms first, so the kill lands at
    different points of the write. Returns what shows the write unfinished, or None
    (processes running) after ``attempts`` misses. ``signal_all(signum)`` reaches the
    processes (default: the launch's process group).
    """
    signal_all = signal_all or launch.signal
    for _ in range(attempts):
        before = entries(model_dir)
        name = chaos.wait_for_new_entry(model_dir, TEMP_DIR.match, launch, timeout=300)
        if name is None:
            return None
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0.0, 0.003))
        signal_all(signal.SIGSTOP)
        evidence = mid_write_evidence(model_dir, ignore=before)
        if evidence:
            return evidence
        signal_all(signal.SIGCONT)
    return None


def random_step(rng, resumed_at: int, train_steps: int, kills_left: int) -> int:
    """A step drawn from the next 1/kills_left of the remaining run, so kills spread over it."""
    span = max(1, (train_steps - 1 - resumed_at) // kills_left)
    return min(resumed_at + rng.randint(1, span), train_steps - 1)


def kill_plan(args, rng) -> list[str]:
    kinds = ["write"] * args.write_kills
    if args.kills - args.write_kills >= 3:
        kinds.append("startup")
    kinds += ["training"] * (args.kills - len(kinds))
    rng.shuffle(kinds)
    return kinds


def suite_sigkill(report, args, data_dir, work_dir, rng, reference):
    suite = "sigkill"
    run = Run(suite, os.path.join(work_dir, suite), work_dir)
    flags = trainer_flags(args, data_dir, run.model_dir)
    landed = {"write": 0, "startup": 0, "training": 0}
    mid_write = 0
    kill_log = []
    plan = kill_plan(args, rng)
    for k, kind in enumerate(plan):
        frozen = target = None
        resume_expected = newest_loadable_step(run.model_dir)
        before = entries(run.model_dir)
        launch = chaos.Launch("trainer.train", flags, log_path=run.log_path())
        if kind == "startup":
            time.sleep(rng.uniform(0.5, 6.0))
        else:
            target = random_step(rng, resume_expected, args.train_steps, len(plan) - k)
            launch.wait_for(rf"^step {target}/", timeout=600)
            if kind == "training":
                time.sleep(rng.uniform(0.0, 0.5))
            else:  # the next checkpoint write from there
                frozen = freeze_in_checkpoint_write(launch, run.model_dir, rng)
        if not launch.running():
            code = launch.wait(10)
            run.record(launch.output(), code=code, kind=kind, resume_expected=resume_expected)
            kill_log.append(f"{kind}: ended by itself before the kill (status {code})")
            continue
        launch.signal(signal.SIGKILL)
        code = launch.wait(30)
        if kind == "write":
            evidence = frozen
        else:
            # Once a launch has logged a step it has removed earlier launches' temp dirs.
            stale = before if not STEP_LINE.search(launch.output()) else set()
            evidence = mid_write_evidence(run.model_dir, ignore=stale)
        mid_write += evidence is not None
        landed[kind] += 1
        record = run.record(launch.output(), code=code, kind=kind, resume_expected=resume_expected)
        last = record["steps"][-1][0] if record["steps"] else None
        newest = newest_loadable_step(run.model_dir)
        newest_ok = (
            newest == 0
            or chaos.checkpoint_loads(os.path.join(run.model_dir, f"ckpt-{newest}")) is None
        )
        report.check(
            suite,
            f"kill {len(kill_log) + 1} ({kind}, last step {last}): newest listed checkpoint loads",
            True,
            newest_ok,
        )
        kill_log.append(
            f"{kind}{f' (aimed at step {target})' if target else ''}: last logged step {last}, "
            f"newest checkpoint {newest}, mid-write: {evidence}"
        )
    final = chaos.Launch("trainer.train", flags, log_path=run.log_path())
    resume_expected = newest_loadable_step(run.model_dir)
    code = final.wait(900)
    run.record(final.output(), code=code, kind="final", resume_expected=resume_expected)
    report.check(
        suite,
        "kills that landed during a checkpoint write",
        f">= {min(1, args.write_kills)}",
        mid_write,
        mid_write >= min(1, args.write_kills),
    )
    check_run(report, suite, run, flags, args, reference)
    report.figures[suite].update(kills_by_kind=landed, kills_mid_write=mid_write, kill_log=kill_log)


def suite_sigterm(report, args, data_dir, work_dir, rng, reference):
    suite = "sigterm"
    run = Run(suite, os.path.join(work_dir, suite), work_dir)
    flags = trainer_flags(args, data_dir, run.model_dir)
    # No periodic checkpoints: each one must come from the SIGTERM.
    flags = [f for f in flags if not f.startswith("--checkpoint_every")]
    flags.append(f"--checkpoint_every={args.train_steps}")
    saved_right = 0
    for _ in range(args.kills):
        resume_expected = newest_loadable_step(run.model_dir)
        remaining = args.train_steps - resume_expected
        target = resume_expected + rng.randint(1, max(1, remaining // (args.kills + 1)))
        launch = chaos.Launch("trainer.train", flags, log_path=run.log_path())
        launch.wait_for(rf"^step {target}/", timeout=300)
        time.sleep(rng.uniform(0.0, 0.3))
        launch.signal(signal.SIGTERM)
        code = launch.wait(120)
        record = run.record(
            launch.output(), code=code, kind="sigterm", resume_expected=resume_expected
        )
        last = record["steps"][-1][0] if record["steps"] else 0
        newest = newest_loadable_step(run.model_dir)
        ok = (
            code == 42
            and last <= newest <= last + 1
            and chaos.checkpoint_loads(os.path.join(run.model_dir, f"ckpt-{newest}")) is None
        )
        saved_right += ok
        report.check(
            suite,
            f"SIGTERM after step {last}: exit status, checkpoint step",
            f"42, {last} or {last + 1}",
            f"{code}, {newest}",
            ok,
        )
    final = chaos.Launch("trainer.train", flags, log_path=run.log_path())
    resume_expected = newest_loadable_step(run.model_dir)
    code = final.wait(900)
    run.record(final.output(), code=code, kind="final", resume_expected=resume_expected)
    check_run(report, suite, run, flags, args, reference)
    report.figures[suite].update(sigterms_with_checkpoint=saved_right)


def signal_workers(pids: dict[int, int], signum: int) -> None:
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def suite_cluster(report, args, data_dir, work_dir, rng, reference):
    suite = "cluster"
    run = Run(suite, os.path.join(work_dir, suite), work_dir)
    flags = trainer_flags(args, data_dir, run.model_dir)
    # A multi-worker step of the shrunk model is slower than its log: fewer steps suffice.
    cluster_args = ["2", "--grace_seconds=10", "--"]
    worker_pid = re.compile(r"^\[local_cluster\] worker (\d+): pid (\d+)", re.M)
    killed = []
    mid_write = 0
    for i in range(args.cluster_kills):
        resume_expected = newest_loadable_step(run.model_dir)
        launch = chaos.Launch("infra.local_cluster", cluster_args + flags, log_path=run.log_path())
        before = entries(run.model_dir)
        evidence = None
        pids = {}
        while len(pids) < 2 and launch.running():
            pids = {int(w): int(p) for w, p in worker_pid.findall(launch.output())}
            time.sleep(0.05)
        target = random_step(rng, resume_expected, args.train_steps, args.cluster_kills - i)
        launch.wait_for(rf"^\[0\] step {target}/", timeout=600)
        if i % 2 == 1:  # every other kill aims at the chief's next checkpoint write
            evidence = freeze_in_checkpoint_write(
                launch, run.model_dir, rng, signal_all=functools.partial(signal_workers, pids)
            )
            kind = "write"
        else:
            time.sleep(rng.uniform(0.0, 0.5))
            kind = "training"
        victim = rng.randrange(2)
        with contextlib.suppress(KeyError, ProcessLookupError):  # it died by itself
            os.kill(pids[victim], signal.SIGKILL)
        signal_workers(pids, signal.SIGCONT)  # the survivor, if the write froze it
        code = launch.wait(120)
        # The survivor may finish its write after the kill: what counts is the moment of the kill.
        evidence = evidence or mid_write_evidence(run.model_dir, ignore=before)
        mid_write += evidence is not None
        record = run.record(launch.output(), code=code, kind=kind, resume_expected=resume_expected)
        last = record["steps"][-1][0] if record["steps"] else None
        killed.append(
            f"worker {victim} at step {last} ({kind}; mid-write: {evidence}); cluster status {code}"
        )
        report.check(
            suite,
            f"kill {i + 1}: worker {victim} ({kind}): cluster stops with an error",
            "non-zero",
            code,
            code != 0,
        )
    final = chaos.Launch("infra.local_cluster", cluster_args + flags, log_path=run.log_path())
    resume_expected = newest_loadable_step(run.model_dir)
    code = final.wait(900)
    run.record(final.output(), code=code, kind="final", resume_expected=resume_expected)
    # An uninterrupted single-process run is no reference here: two workers split the data.
    check_run(report, suite, run, flags, args, None)
    report.figures[suite].update(kill_log=killed, kills_mid_write=mid_write)


def reference_curve(args, data_dir, work_dir) -> dict[int, float]:
    model_dir = os.path.join(work_dir, "reference")
    flags = trainer_flags(args, data_dir, model_dir)
    code, output = chaos.run_module(
        "trainer.train", flags, log_path=os.path.join(work_dir, "reference.log"), timeout=1800
    )
    if code:
        raise RuntimeError(f"the uninterrupted reference run failed:\n{output[-2000:]}")
    return {int(s): float(loss) for s, loss, _ in STEP_LINE.findall(output)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="chaos_train-")
    os.makedirs(work_dir, exist_ok=True)
    data_dir = args.data_dir or chaos.prepare_translation_data(work_dir)
    rng = chaos.rng(args.seed)
    report = chaos.Report(f"chaos_train: {', '.join(args.suites)} (seed {args.seed})")
    reference = reference_curve(args, data_dir, work_dir) if args.reference else None
    suites = {"sigkill": suite_sigkill, "sigterm": suite_sigterm, "cluster": suite_cluster}
    started = time.monotonic()
    for name in args.suites:
        suite_start = time.monotonic()
        suites[name](report, args, data_dir, work_dir, rng, reference)
        report.figures[name]["seconds"] = round(time.monotonic() - suite_start, 1)
    report.figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"work dir (model dirs and logs): {work_dir}")
    return report.finish(args.report_json)


if __name__ == "__main__":
    sys.exit(main())
