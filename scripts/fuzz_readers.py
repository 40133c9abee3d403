"""Full-size bad-input run: the fuzz properties of tests/fuzz_readers_test.py with many more
examples, plus peak memory while reading huge inputs; prints the figures as Markdown.

    .venv/bin/python scripts/fuzz_readers.py [--examples=2000] [--huge_mib=50] [--big_mib=200]

Each property asserts, for every generated input, that the reader raised nothing but the
project's one-line user error and that its records and Rejects reconcile with an independent
count of the input (see tests/fuzz_inputs.py); a failure stops the run with hypothesis's
minimal failing example. Figures: examples tried per reader, inputs refused as a whole,
records, Rejects by reason, and peak RSS growth while streaming huge inputs.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests import fuzz_inputs as fz  # noqa: E402
from tests import security_test  # noqa: E402

# (property, what it feeds) in report order.
PROPERTIES = [
    ("test_tsv", "TSV (.tsv, .tsv.gz): random and mutated bytes"),
    ("test_corrupt_gzip_is_one_line", "TSV .gz: random bytes, mutated gzip streams"),
    ("test_aligned", "aligned PREFIX.en/.de (plain, .gz)"),
    ("test_pickle", "pickle: random bytes, mutated array pickles (protocols 0-5)"),
    ("test_csv", "IMDB CSV (plain, .gz): random and mutated bytes"),
    ("test_csv_rows_reconcile_exactly", "IMDB CSV: random rows via csv.writer"),
    ("test_aclimdb_directory", "aclImdb directory: random review files"),
    ("test_archive_bytes", "aclImdb .tar.gz: random bytes, mutated archives"),
    ("test_archive_members_traversal_and_links_are_counted", "aclImdb .tar.gz: random members"),
    ("test_inference_readers_agree", "translate/classify inputs (infer_files + Beam reader)"),
    ("test_inference_readers_refuse_corrupt_gzip_in_one_line", "inference inputs: damaged .gz"),
]
CHECKS = [name for name in dir(fz) if name.startswith("check_")]


class Tally:
    def __init__(self):
        self.current = None
        self.depth = 0
        self.examples = collections.Counter()
        self.refused = collections.Counter()
        self.records = collections.Counter()
        self.rejects = collections.defaultdict(collections.Counter)

    def wrap(self, check):
        @functools.wraps(check)
        def recorded(*args, **kwargs):
            self.depth += 1
            try:
                outcome = check(*args, **kwargs)
            finally:
                self.depth -= 1
            if self.depth == 0:  # count the outermost check only (check_csv_rows -> check_csv)
                self.examples[self.current] += 1
                self.refused[self.current] += outcome.fatal is not None
                self.records[self.current] += outcome.records
                self.rejects[self.current].update(outcome.rejects)
            return outcome

        return recorded


def run_properties(examples: int) -> tuple[Tally, dict[str, float]]:
    tally = Tally()
    for name in CHECKS:
        setattr(fz, name, tally.wrap(getattr(fz, name)))
    os.environ["FUZZ_EXAMPLES"] = str(examples)  # read when the test module is imported
    from tests import fuzz_readers_test as properties

    seconds = {}
    for name, _ in PROPERTIES:
        tally.current = name
        start = time.perf_counter()
        getattr(properties, name)()
        seconds[name] = time.perf_counter() - start
        print(f"{name}: {tally.examples[name]} examples, {seconds[name]:.0f} s", file=sys.stderr)
    return tally, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="Examples per property.")
    parser.add_argument("--huge_mib", type=int, default=50, help="The single huge line, MiB.")
    parser.add_argument("--big_mib", type=int, default=200, help="The big file of short lines.")
    args = parser.parse_args()

    tally, seconds = run_properties(args.examples)
    print(f"## Fuzzed readers ({args.examples} examples asked per property)\n")
    print(
        "| reader and input | examples | refused whole (one line) | records | rejects by reason |"
    )
    print("|---|---|---|---|---|")
    for name, what in PROPERTIES:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(tally.rejects[name].items()) if n)
        print(
            f"| {what} | {tally.examples[name]} | {tally.refused[name]} | "
            f"{tally.records[name]} | {reasons or '-'} |"
        )
    total = sum(tally.examples.values())
    print(
        f"\n{total} inputs in {sum(seconds.values()):.0f} s; every one reconciled "
        "(records + Rejects = units in the input) or was refused in one line; no traceback.\n"
    )
    print("## Huge inputs (peak RSS of the reading process: VmHWM, reset just before reading)\n")
    print("| input | records | rejects | peak RSS before reading | after | growth |")
    print("|---|---|---|---|---|---|")
    huge, big = args.huge_mib, args.big_mib
    with tempfile.TemporaryDirectory() as d:
        for label, kind, name, mib, limit in (
            (f"one {huge} MiB line in a TSV", "one_line", "huge.tsv", huge, None),
            ("the same, gzipped", "one_line", "huge.tsv.gz", huge, None),
            (f"{big} MiB TSV of 49-byte lines", "many_lines", "big.tsv", big, None),
            (f"one {huge} MiB line, no line limit (as before)", "one_line", "x.tsv", huge, 1 << 40),
        ):
            path = os.path.join(d, name)
            result = security_test.measure_reading(kind, path, mib << 20, limit=limit)
            before, after = result["before_kib"] / 1024, result["peak_kib"] / 1024
            print(
                f"| {label} | {result['records']:,} | {result['rejects'] or '-'} | "
                f"{before:.0f} MiB | {after:.0f} MiB | {after - before:.0f} MiB |"
            )
            os.remove(path)


if __name__ == "__main__":
    main()
