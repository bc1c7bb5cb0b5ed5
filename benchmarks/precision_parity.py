"""Does bf16 training move the science? Two `posbench compare` folders of the same methods and seeds,
one trained in fp32 and one with `--precision bf16`: per method and length, bf16's perplexity over
fp32's, paired block by block and seed by seed (stats.ratio: the same windows of the same text), and
each folder's verdict. A ratio whose interval holds 1 is within noise.

    .venv/bin/python benchmarks/precision_parity.py compare-fp32 compare-bf16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from posbench.evaluation.extrapolate import EvalSettings, evaluate_run
from posbench.evaluation.stats import ratio


def runs_by_label(folder: Path) -> tuple[dict[str, list[str]], dict[str, str], EvalSettings]:
    """label -> run folders (one per seed), label -> verdict, and how compare scored them (its lengths
    and predictions per length), from results.json."""
    results = json.loads((folder / "results.json").read_text())
    rows = [row for row in results["runs"] if "rope_scaling" not in row]
    scored = [r for row in rows for r in row["results"] if r.get("tokens")]
    settings = EvalSettings(lengths=sorted({r["length"] for r in scored}), max_tokens=max(r["tokens"] for r in scored),
                            context_use=False)
    return ({row["label"]: row.get("seed_runs", [row["run"]]) for row in rows},
            {row["label"]: row["verdict"] for row in rows}, settings)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fp32", type=Path)
    ap.add_argument("bf16", type=Path)
    args = ap.parse_args()
    (runs_a, verdicts_a, settings), (runs_b, verdicts_b, _) = runs_by_label(args.fp32), runs_by_label(args.bf16)
    print(f"{'method':<20} {'length':>6} {'fp32 ppl':>9} {'bf16 ppl':>9}  bf16/fp32 [95%]")
    moved = 0
    for label in [k for k in runs_a if k in runs_b]:
        evaluated = {name: [evaluate_run(run, settings) for run in runs[label]]
                     for name, runs in (("fp32", runs_a), ("bf16", runs_b))}
        for length in [r["length"] for r in evaluated["fp32"][0][0]["results"]]:
            key = ("nonoverlapping", length)
            if key not in evaluated["fp32"][0][1]:
                continue  # not scored at this length (a learned table ends at L)
            a = [windows[key] for _, windows in evaluated["fp32"]]
            b = [windows[key] for _, windows in evaluated["bf16"]]
            ci = ratio(b, a)
            outside = ci is not None and ci.excludes(1)
            moved += outside
            shown = "n/a" if ci is None else f"{ci.value:.3f} [{ci.low:.3f}–{ci.high:.3f}]{' *' if outside else ''}"
            ppl = [sum(w.ppl for w in ws) / len(ws) for ws in (a, b)]
            print(f"{label:<20} {length:>6} {ppl[0]:>9.2f} {ppl[1]:>9.2f}  {shown}")
        print(f"{'':<20} verdict fp32: {verdicts_a[label]}\n{'':<20} verdict bf16: {verdicts_b[label]}")
    print(f"ratios outside their interval's reach of 1 (*): {moved}")


if __name__ == "__main__":
    main()
