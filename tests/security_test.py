"""Security checks: no credentials in the repo, logs or models; only the user's own model loads;
malicious pickles and unsafe archive members refused; huge inputs stream in bounded memory.

The credential test runs a whole tiny demo (preprocess the embedded corpus -> train a few
steps -> export -> translate -> batch_translate) with fake keys planted in the environment
and on the command line, then scans everything it wrote and printed.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import secrets
import shutil
import string
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest

from pipeline import export_contract, safe_pickle, source_records
from tests import fuzz_inputs, tiny_models

ROOT = tiny_models.ROOT

# Credential shapes: (name, pattern). Values that say they are fake are not credentials.
CREDENTIAL_PATTERNS = [
    ("AWS access key id", rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    (
        "AWS secret access key",
        rb"(?i)secret_?access_?key[\"'\s:=]+[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])",
    ),
    ("private key", rb"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
    ("GCP service account key", rb"\"private_key\"\s*:\s*\"-----BEGIN"),
    ("GitHub token", rb"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{60,})\b"),
    ("Google API key", rb"\bAIza[0-9A-Za-z_\-]{35}\b"),
    ("Slack token", rb"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    (
        "assigned secret",
        rb"(?i)\b(?:password|passwd|secret|api_?key|auth_?token)\b[\"']?\s*[:=]\s*"
        rb"[\"'][^\"'\s]{12,}[\"']",
    ),
]
_FAKE = re.compile(rb"(?i)fake|example|dummy|placeholder|redacted|test|x{6}")
# Credential-shaped samples are assembled at run time, so this file, which the scan of
# the tracked files reads too, holds none of them literally.
_DASHES = "-" * 5
_BEGIN_KEY = _DASHES + "BEGIN PRIVATE KEY" + _DASHES


def find_credentials(data: bytes) -> list[tuple[str, str]]:
    """(kind, match) for every credential-shaped string in ``data`` that does not say it is fake."""
    found = []
    for name, pattern in CREDENTIAL_PATTERNS:
        for match in re.finditer(pattern, data):
            if not _FAKE.search(match.group(0)):
                found.append((name, match.group(0)[:80].decode("latin-1")))
    return found


def test_the_scanner_finds_each_credential_shape():
    key_id = "AKIA" + "Q" * 12 + "7ZZZ"
    samples = [
        key_id.encode(),
        b'aws_secret_access_key = "' + b"a1B2" * 10 + b'"',
        (_DASHES + "BEGIN RSA PRIVATE KEY" + _DASHES).encode(),
        b'{"type": "service_account", "private_key": "' + _BEGIN_KEY.encode() + b'\\nMII"}',
        b"token ghp_" + b"a" * 36,
        b"AIza" + b"b" * 35,
        b"xo" + b"xb-1234567890-abc",
        b"pass" + b'word = "hunter2hunter2"',
    ]
    for sample in samples:
        assert find_credentials(b"x " + sample + b" y"), sample
    assert find_credentials(b'password = "fake-password-1234"') == []


def test_tracked_files_hold_no_credentials():
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    assert len(files) > 50
    found = {}
    for name in filter(None, files):
        path = os.path.join(ROOT, name.decode())
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, "rb") as f:
                hits = find_credentials(f.read())
            if hits:
                found[name.decode()] = hits
    assert not found, found


# ----------------------------------------------------------------------------- the demo run


def _planted() -> dict[str, str]:
    """Fresh fake credentials of real shapes (random, so nothing else can contain them)."""
    upper = string.ascii_uppercase + string.digits
    mixed = string.ascii_letters + string.digits
    pick = lambda alphabet, n: "".join(secrets.choice(alphabet) for _ in range(n))  # noqa: E731
    return {
        "AWS_ACCESS_KEY_ID": "AKIA" + pick(upper, 16),
        "AWS_SECRET_ACCESS_KEY": pick(mixed + "/+", 40),
        "GITHUB_TOKEN": "ghp_" + pick(mixed, 36),
        "HF_TOKEN": "hf_" + pick(mixed, 34),
        "S3_OPTION_SECRET": pick(mixed, 40),
        "SERVICE_ACCOUNT_KEY": pick(mixed, 64),
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A whole tiny demo run with fake credentials planted; -> (run dir, logs, planted)."""
    run = tmp_path_factory.mktemp("demo")
    planted = _planted()
    service_account = run.parent / f"{run.name}-sa.json"  # outside the scanned run dir
    service_account.write_text(
        json.dumps(
            {
                "type": "service_account",
                "private_key_id": planted["SERVICE_ACCOUNT_KEY"][:40],
                "private_key": _BEGIN_KEY
                + "\n"
                + planted["SERVICE_ACCOUNT_KEY"]
                + "\n-----END PRIVATE KEY-----\n",
            }
        )
    )
    env = dict(
        tiny_models.subprocess_env(),
        **{k: v for k, v in planted.items() if k.isupper() and not k.startswith("S3_")},
        GOOGLE_APPLICATION_CREDENTIALS=str(service_account),
    )
    (run / "held_out.en").write_text("A dog runs.\nTwo men play.\n\n")
    py = sys.executable
    steps = [
        [py, "-m", "pipeline.preprocess", "--dataset=ende", f"--output_dir={run}/data"]
        + ["--vocab_size=320", "--num_shards=1", "--runner=DirectRunner"]
        + [f"--s3_secret_access_key={planted['S3_OPTION_SECRET']}", "--s3_region_name=x"],
        [py, "-m", "trainer.train", f"--data_dir={run}/data", f"--model_dir={run}/model"]
        + ["--flagfile=configs/tiny.cfg", "--train_steps=4", "--checkpoint_every=4"]
        + ["--eval_every=4", "--eval_bleu_sentences=2", "--log_every=2", "--max_length=64"]
        + tiny_models.MICRO_ARCHITECTURE
        + ["--batch_tokens=1024", "--shuffle_buffer=100"],
    ]
    parallel = [
        [py, "-m", "trainer.translate", f"--model_dir={run}/model", f"--input={run}/held_out.en"]
        + [f"--output={run}/held_out.hyp.de", "--beam_size=2"],
        [py, "-m", "pipeline.batch_translate", f"--export_dir={run}/model/export"]
        + [f"--input={run}/held_out.en", f"--output={run}/batch.hyp.de"],
    ]
    logs = []
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
        logs.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    processes = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for argv in parallel
    ]
    for process in processes:
        out, err = process.communicate(timeout=600)
        logs.append(out + err)
        assert process.returncode == 0, out[-2000:] + err[-3000:]
    (run / "logs.txt").write_text("\n".join(logs))
    return run, logs, planted


def test_demo_run_leaks_no_credentials(demo):
    run, logs, planted = demo
    assert (run / "model" / "export" / "saved_model.pb").exists()
    assert (run / "held_out.hyp.de").read_text().count("\n") == 3
    assert (run / "batch.hyp.de").read_text().count("\n") == 3
    values = [v.encode() for v in planted.values()]
    leaks = {}
    scanned = 0
    for directory, _, names in os.walk(run):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                data = f.read()
            scanned += 1
            hits = [v.decode()[:8] for v in values if v in data] + find_credentials(data)
            if hits:
                leaks[os.path.relpath(path, run)] = hits
    assert scanned > 20  # shards, tokenizer, metadata, checkpoints, events, SavedModel, outputs
    assert not leaks, leaks
    metadata = json.loads((run / "data" / "metadata.json").read_text())
    assert metadata["options"]["s3_secret_access_key"] == "<redacted>"
    assert metadata["options"]["s3_region_name"] == "x"
    config = json.loads((run / "model" / "config.json").read_text())
    assert not any(v.decode() in json.dumps(config) for v in values)


# ----------------------------------------------------------------------------- model provenance


def _copy_export(demo_run, destination) -> str:
    shutil.copytree(demo_run / "model" / "export", destination)
    return str(destination)


def _edit_metadata(export_dir: str, **changes) -> dict:
    path = os.path.join(export_dir, export_contract.METADATA_PATH)
    with open(path) as f:
        metadata = json.load(f)
    metadata.update(changes)
    with open(path, "w") as f:
        json.dump(metadata, f)
    return metadata


def test_an_export_in_its_model_dir_loads_without_warning(demo):
    run, _, _ = demo
    export_dir = str(run / "model" / "export")
    metadata = export_contract.read_export_metadata(export_dir)
    assert export_contract.check_provenance(export_dir, metadata) == []
    assert "warning" not in "\n".join(demo[1][-1:])  # batch_translate said nothing more


def test_an_export_elsewhere_is_checked_against_its_recorded_model_dir(demo, tmp_path):
    run, _, _ = demo
    export_dir = _copy_export(run, tmp_path / "copied")
    metadata = export_contract.read_export_metadata(export_dir)
    [warning] = export_contract.check_provenance(export_dir, metadata)
    assert warning == (
        f"--export_dir: {export_dir} is not the export/ of a model dir; checked it against "
        f"{run}/model, the model dir it records"
    )
    metadata = _edit_metadata(export_dir, model_dir=str(tmp_path / "gone"))
    [warning] = export_contract.check_provenance(export_dir, metadata)
    assert "cannot be checked against any model dir's tokenizer.json" in warning


def test_exports_that_are_not_the_models_are_refused(demo, tmp_path):
    run, _, _ = demo
    cases = {
        "other tokenizer": ({"tokenizer_sha256": "f" * 64}, "was exported with tokenizer sha256"),
        "no tokenizer hash": ({"tokenizer_sha256": None}, "no tokenizer_sha256"),
        "other output key": ({"output_key": "logits"}, "is not the translation contract"),
        "other signature": ({"signature": "serving_default"}, "is not the translation contract"),
    }
    for name, (changes, message) in cases.items():
        model_dir = tmp_path / name.replace(" ", "_")
        model_dir.mkdir()
        shutil.copy(run / "model" / "tokenizer.json", model_dir)
        export_dir = _copy_export(run, model_dir / "export")
        metadata = _edit_metadata(export_dir, **changes)
        with pytest.raises(export_contract.ExportMetadataError, match=re.escape(message)):
            export_contract.check_provenance(export_dir, metadata)


def test_batch_translate_refuses_or_warns_in_one_line(demo, tmp_path):
    run, _, _ = demo
    (tmp_path / "in.txt").write_text("A dog runs.\n")
    tampered = tmp_path / "m" / "export"
    tampered.parent.mkdir()
    shutil.copy(run / "model" / "tokenizer.json", tampered.parent)
    _copy_export(run, tampered)
    _edit_metadata(str(tampered), tokenizer_sha256="0" * 64)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.batch_translate", f"--export_dir={tampered}"]
        + [f"--input={tmp_path}/in.txt", f"--output={tmp_path}/out.txt"],
        capture_output=True,
        text=True,
        env=tiny_models.subprocess_env(),
        cwd=ROOT,
        timeout=300,
    )
    lines = tiny_models.own_stderr_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"batch_translate: error: --export_dir: {tampered} was exported")
    assert not (tmp_path / "out.txt").exists()


def test_a_checkpoint_of_another_model_is_refused_and_an_outside_one_flagged(demo, tmp_path):
    from trainer import model_dir as model_dir_lib
    from trainer.infer_files import InferenceError

    run, _, _ = demo
    model = str(run / "model")
    sha = json.loads((run / "model" / "tokenizer.json").read_text())["sha256"]
    inside = model_dir_lib._checked_origin(model, f"{model}/best/ckpt-4", "best", sha)
    assert inside == "best"
    other = tmp_path / "other"
    (other / "best").mkdir(parents=True)
    (other / "tokenizer.json").write_text(json.dumps({"sha256": "e" * 64}))
    with pytest.raises(InferenceError, match="trained with another tokenizer"):
        model_dir_lib._checked_origin(model, f"{other}/best/ckpt-9", "given", sha)
    loose = model_dir_lib._checked_origin(model, f"{tmp_path}/ckpt-9", "given", sha)
    assert "warning: outside --model_dir and in no model dir" in loose


# ----------------------------------------------------------------------------- pickles, archives


class _Payload:
    def __init__(self, call, argument):
        self.call, self.argument = call, argument

    def __reduce__(self):
        return (self.call, (self.argument,))


@pytest.mark.parametrize("protocol", range(6))
def test_code_execution_pickles_are_refused_at_every_protocol(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payloads = {
        "system": _Payload(os.system, f"touch {marker}"),
        "eval": _Payload(eval, f"open({str(marker)!r}, 'w')"),
        "exec": _Payload(exec, f"open({str(marker)!r}, 'w')"),
        "call": _Payload(subprocess.call, ["touch", str(marker)]),
    }
    for name, payload in payloads.items():
        nested = np.array([["Hi.", "Hallo."], ["Run.", None]], dtype=object)
        nested[1, 1] = payload
        deeper = np.array([[nested, "x"]], dtype=object)
        for obj in (payload, nested, deeper, [payload]):
            # Protocols 0-2 use Python 2 names (__builtin__, commands); os.system is posix.system.
            refused = (
                rf"refusing to unpickle '(posix|__builtin__|builtins|subprocess|commands)\.{name}'"
            )
            with pytest.raises(safe_pickle.RefusedGlobalError, match=refused):
                safe_pickle.load_array(pickle.dumps(obj, protocol=protocol))
    assert not marker.exists()


def test_preprocess_refuses_a_malicious_pickle_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    array = np.array([["Hi.", "Hallo."], ["Run.", "Lauf."]], dtype=object)
    array[1, 0] = _Payload(os.system, f"touch {marker}")
    (tmp_path / "pairs.pkl").write_bytes(pickle.dumps(array, protocol=2))
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.preprocess", "--dataset=ende"]
        + [f"--input={tmp_path}/pairs.pkl", f"--output_dir={tmp_path}/out"],
        capture_output=True,
        text=True,
        env=tiny_models.subprocess_env(),
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"preprocess: error: --input: {tmp_path}/pairs.pkl: refusing to unpickle 'posix.system' "
        "(only NumPy arrays are allowed)"
    )
    assert not marker.exists()
    assert not (tmp_path / "out" / "metadata.json").exists()


def test_unsafe_archive_members_are_refused_and_counted(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, kind in [
            ("aclImdb/train/pos/0_9.txt", "file"),
            ("../../escape/train/pos/1_9.txt", "file"),
            ("/etc/cron.d/train/neg/2_1.txt", "file"),
            ("aclImdb/train/neg/../../../../tmp/x.txt", "file"),
            ("aclImdb/train/neg/3_1.txt", "symlink"),
            ("aclImdb/test/pos/4_8.txt", "hardlink"),
        ]:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = 5
                tar.addfile(info, io.BytesIO(b"Good."))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = "/etc/passwd"
                tar.addfile(info)
    before = sorted(os.listdir(tmp_path))
    outcome = fuzz_inputs.check_archive_bytes(buffer.getvalue())
    assert outcome.records == 1
    assert dict(outcome.rejects) == {source_records.UNREADABLE_MEMBER: 5}
    assert sorted(os.listdir(tmp_path)) == before


# ----------------------------------------------------------------------------- huge inputs

# Peak RSS from /proc: getrusage's ru_maxrss is carried across fork and exec on Linux, so a
# child of a big process (pytest with TensorFlow loaded) would start at its parent's peak and
# hide the reading. Writing 5 to clear_refs resets this process's peak (VmHWM) to its RSS now.
_MEASURE = textwrap.dedent(
    """
    import gzip, json, sys
    from pipeline import source_records, sources
    kind, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if len(sys.argv) > 4:  # the limit to read with (the full-size script shows a huge one too)
        source_records.MAX_TEXT_BYTES = int(sys.argv[4])
    def peak_kib():
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith("VmHWM:")).split()[1])
    block = b"x" * (1 << 20)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        if kind == "one_line":
            f.write(b"a\\tb\\n")
            for _ in range(size >> 20):
                f.write(block)
            f.write(b"\\tc\\nd\\te\\n")
        else:  # many ordinary lines
            line = b"A dog runs in the park.\\tEin Hund rennt im Park.\\n"
            for _ in range(size // len(line)):
                f.write(line)
    spec = sources.SourceSpec(sources.TSV, path, None, (("flag", "--input"),
                              ("source_column", "0"), ("target_column", "1")))
    del block
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = peak_kib()
    records, rejects = 0, {}
    for item in sources.read_source(spec):
        if isinstance(item, sources.Reject):
            rejects[item.reason] = rejects.get(item.reason, 0) + 1
        else:
            records += 1
    print(json.dumps({"records": records, "rejects": rejects, "before_kib": before,
                      "peak_kib": peak_kib()}))
    """
)


def measure_reading(kind: str, path: str, size: int, *, limit: int | None = None) -> dict:
    """Writes a huge TSV in a fresh process, reads it with the reader; -> counts and peak RSS
    (KiB) before and after reading. ``limit`` overrides source_records.MAX_TEXT_BYTES."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, kind, path, str(size)]
        + ([] if limit is None else [str(limit)]),
        capture_output=True,
        text=True,
        env=tiny_models.subprocess_env(),
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["huge.tsv", "huge.tsv.gz"])
def test_a_50_mb_line_is_rejected_without_being_held(tmp_path, name):
    size = 50 << 20
    result = measure_reading("one_line", str(tmp_path / name), size)
    assert result["records"] == 2 and result["rejects"] == {source_records.OVERSIZED: 1}
    growth_mib = (result["peak_kib"] - result["before_kib"]) / 1024
    assert growth_mib < 16, result  # the line is 50 MiB; reading holds a few 1 MiB chunks


def test_a_big_file_streams(tmp_path):
    size = 40 << 20
    result = measure_reading("many_lines", str(tmp_path / "big.tsv"), size)
    line = len(b"A dog runs in the park.\tEin Hund rennt im Park.\n")
    assert result["records"] == size // line and not result["rejects"]
    assert (result["peak_kib"] - result["before_kib"]) / 1024 < 16, result
