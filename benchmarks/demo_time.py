"""The README demo's wall time, each way asked, in one sitting: `posbench compare --preset quick` with
every --precision and --jobs given, one after another, each in a fresh folder and a fresh process; the
corpus is tokenised first, so each time is training and evaluation (the README's first command adds the
set-up and the tokenizer's training). Prints each wall time, its ratio to the first, and whether its
table (every perplexity) equals the first's digit for digit.

    python benchmarks/demo_time.py                                  # fp32 and bf16, the default --jobs
    python benchmarks/demo_time.py --precision fp32 --jobs 1,2      # one run at a time against two
    python benchmarks/demo_time.py --precision bf16 -- --pos none,alibi

Target (2 CPU cores with AVX512-BF16): the demo in <= 300 s after set-up. About 10 minutes for the two
defaults on 2 cores; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from posbench.data.tokens import prepare_data
from posbench.experiments.compare import CompareConfig
from posbench.experiments.presets import get_preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16, auto")
    ap.add_argument("--jobs", default="", help="comma-separated --jobs values (default: compare's own)")
    ap.add_argument("compare_args", nargs="*", help="more options for every compare, after --")
    args = ap.parse_args()
    precisions = args.precision.split(",")
    jobs = [j for j in args.jobs.split(",") if j] or [None]
    tokenise_first()
    rows = []
    with tempfile.TemporaryDirectory(prefix="posbench-demo-") as tmp:
        for k, (precision, job) in enumerate(itertools.product(precisions, jobs)):
            out = Path(tmp) / f"demo{k}"
            command = [sys.executable, "-m", "posbench", "compare", "--preset", "quick", "--precision", precision,
                       "--out", str(out), *(["--jobs", job] if job else []), *args.compare_args]
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            rows.append((precision, job or "default", time.perf_counter() - started, table(out)))
    first_seconds, first_table = rows[0][2], rows[0][3]
    print(f"{'precision':>9} {'jobs':>8} {'wall s':>7} {'speed vs first':>14}  table equals the first's")
    for precision, job, seconds, ppl in rows:
        print(f"{precision:>9} {job:>8} {seconds:7.0f} {first_seconds / seconds:13.2f}x  {ppl == first_table}")


def tokenise_first() -> None:
    """The demo's corpus and tokenizer (compare's defaults at the quick preset), built and cached before
    anything is timed."""
    _, train = get_preset("compare", "quick").configs("none", data=CompareConfig.data)
    prepare_data(train.data, train.tokenizer, train.vocab_size, train.tokenizer_seed_or_seed)


def table(out: Path) -> dict[str, list[float | None]]:
    """Every row's perplexity by length, from compare's results.json."""
    results = json.loads((out / "results.json").read_text())
    return {row["label"]: [r.get("ppl") for r in row["results"]] for row in results["runs"]}


if __name__ == "__main__":
    main()
