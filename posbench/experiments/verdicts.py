"""Reading compare's numbers with their noise: one row per method over its seeds (the geometric mean
per length with its 95% interval), every ratio paired (the same blocks of text, the same seeds), and
verdicts that claim a difference only where its interval excludes none.

Intervals come from stats.py: a t interval over the scored blocks, with several seeds over blocks and
seeds together, always on the log scale (stats.level, stats.ratio).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from ..evaluation.stats import Interval, Windows, level, ratio

Key = tuple[str, int]  # (mode, length)
Entry = tuple[dict, dict[Key, Windows], dict | None]  # one seed: (run_report, its windows, summary.json)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _geometric_mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return math.exp(statistics.fmean(math.log(v) for v in known)) if known else None


def _result(rows: Sequence[dict], seeds: Sequence[Windows | None]) -> dict:
    """One (mode, length) over seeds: the geometric mean of perplexity (the mean of bits per byte)
    with its interval, and every seed's value."""
    first = rows[0]
    per_seed = {"ppl_seeds": [r["ppl"] for r in rows], "bpb_seeds": [r["bpb"] for r in rows]}
    if any(w is None for w in seeds):  # n/a (e.g. past a learned table): the same for every seed
        failed = next((r for r in rows if r["ppl"] is None), first)
        return failed | {"ppl": None, "bpb": None, "ppl_ci": None, "bpb_ci": None} | per_seed
    ppl, bpb = level(seeds), level(seeds, "bpb")
    return first | per_seed | {
        "ppl": _geometric_mean([r["ppl"] for r in rows]), "bpb": _mean([r["bpb"] for r in rows]),
        "ppl_ci": ppl and ppl.as_list(), "bpb_ci": bpb and bpb.as_list(),
    }


def _position_loss(reports: Sequence[dict]) -> list[dict]:
    """The loss-by-position buckets averaged over seeds (every seed has the same buckets)."""
    first = reports[0]["position_loss"]
    return [b | {"loss": statistics.fmean(r["position_loss"][k]["loss"] for r in reports)}
            for k, b in enumerate(first)]


def method_row(entries: Sequence[Entry], seeds: Sequence[int]) -> tuple[dict, dict[Key, list[Windows]]]:
    """One method (one label) over its seeds -> (its row of results.json, per (mode, length) the
    windows of every seed, for the paired comparisons)."""
    reports = [report for report, _, _ in entries]
    summaries = [summary or {} for _, _, summary in entries]

    def over_seeds(field: str) -> list[dict]:
        by_key = [{(r["mode"], r["length"]): r for r in report.get(field, [])} for report in reports]
        keys = [k for k in by_key[0] if all(k in seed for seed in by_key)]  # every seed evaluated it
        return [_result([seed[k] for seed in by_key], [w.get(k) for _, w, _ in entries]) for k in keys]

    row = {
        **reports[0], "results": over_seeds("results"), "context_use": over_seeds("context_use"), "seeds": list(seeds),
        "position_loss": _position_loss(reports) if len(reports) > 1 else reports[0]["position_loss"],
        "params": summaries[0].get("params"),
        "train_tokens_per_s": _mean([s.get("tokens_per_s") for s in summaries]),
        "val_ppl": _mean([s.get("val_ppl") for s in summaries]),
    }
    if len(entries) > 1:
        row["seed_runs"] = [r["run"] for r in reports]
    keys = {key for _, w, _ in entries for key in w}
    windows = {key: [w[key] for _, w, _ in entries] for key in keys if all(key in w for _, w, _ in entries)}
    return row, windows


def _versus(value: float, ci: Interval | None, **extra) -> dict:
    return {**extra, "ratio": ci.value if ci else value, "ci": ci and ci.as_list()}


def within_noise(v: dict | None) -> bool:
    """A ratio whose 95% interval includes 1: no difference can be claimed."""
    return bool(v and v["ci"] and v["ci"][0] <= 1 <= v["ci"][1])


def add_comparisons(rows: list[dict], windows: list[dict[Key, list[Windows]]]) -> None:
    """In place: every result gains vs_L (ppl / the same method's ppl at L) and vs_best (ppl / the
    best method's at that length), each {"ratio", "ci"}; every row its ppl_at_L, max_len_ratio
    (with max_len_ratio_ci) and verdict."""
    best: dict[Key, tuple[float, int]] = {}
    for i, row in enumerate(rows):
        for r in row["results"]:
            key = (r["mode"], r["length"])
            if r["ppl"] is not None and (key not in best or r["ppl"] < best[key][0]):
                best[key] = (r["ppl"], i)
    for row, w in zip(rows, windows, strict=True):
        at_l = {r["mode"]: r for r in row["results"] if r["length"] == row["train_len"] and r["ppl"] is not None}
        for r in row["results"]:
            key = (r["mode"], r["length"])
            if r["ppl"] is None:
                continue
            if r["mode"] in at_l:
                base = (r["mode"], row["train_len"])
                r["vs_L"] = _versus(r["ppl"] / at_l[r["mode"]]["ppl"],
                                    ratio(w[key], w[base]) if key in w and base in w else None)
            b_ppl, b = best[key]
            other = windows[b].get(key)
            r["vs_best"] = _versus(r["ppl"] / b_ppl, ratio(w[key], other) if key in w and other else None,
                                   best=rows[b]["label"])
        longest = max(row["results"], key=lambda r: r["length"])
        row["ppl_at_L"] = at_l["nonoverlapping"]["ppl"] if "nonoverlapping" in at_l else None
        row["max_len_ratio"] = (longest.get("vs_L") or {}).get("ratio")
        row["max_len_ratio_ci"] = (longest.get("vs_L") or {}).get("ci")
        row["verdict"] = verdict(row["results"], row["train_len"])
        add_context_comparisons(row, w)


def add_context_comparisons(row: dict, windows: dict[Key, list[Windows]]) -> None:
    """In place: each context length of row["context_use"] after the first gains vs_previous (its
    loss on the same targets over the loss with the previous, shorter context, paired over blocks and
    seeds), and the row its context_verdict."""
    results = sorted(row.get("context_use", []), key=lambda r: r["length"])
    for prev, r in zip(results, results[1:], strict=False):
        if r["ppl"] is None or prev["ppl"] is None:
            continue
        a, b = windows.get((r["mode"], r["length"])), windows.get((prev["mode"], prev["length"]))
        r["vs_previous"] = _versus(r["ppl"] / prev["ppl"], ratio(a, b) if a and b else None, previous=prev["length"])
    if len(results) > 1:
        row["context_verdict"] = context_verdict(results, row["train_len"])


def context_verdict(results: Sequence[dict], train_len: int) -> str:
    """The longest context that still lowers the loss of the same targets beyond noise (each context
    against the previous, shorter one), and where more context starts to hurt, if it does."""
    steps = [r for r in results if r.get("vs_previous")]
    if not steps:  # e.g. a learned table: no context past L could be scored at all
        return "cannot run past L: no context use measured" if any(r.get("error") for r in results) else \
            "not measured past L"
    gains = [r for r in steps if r["vs_previous"]["ci"] and r["vs_previous"]["ci"][1] < 1]
    hurts = [r for r in steps if r["vs_previous"]["ci"] and r["vs_previous"]["ci"][0] > 1]
    if gains:
        best = gains[-1]
        text = (f"uses context up to {best['length']} ({best['length'] / train_len:g}xL: "
                f"{best['vs_previous']['ratio']:.3f}x{_ci(best['vs_previous']['ci'], '.3f')} the loss "
                f"with {best['vs_previous']['previous']})")
    else:
        first, step = steps[0], steps[0]["vs_previous"]
        text = (f"uses no context past L beyond noise ({step['ratio']:.3f}x{_ci(step['ci'], '.3f')} "
                f"at {first['length']})")
    if hurts:
        text += f"; more context hurts from {hurts[0]['length']} ({hurts[0]['vs_previous']['ratio']:.2f}x)"
    return text


def verdict(results: Sequence[dict], train_len: int) -> str:
    """Read off the numbers, never the method's name: not evaluated past L, flat (<= 1.1x the perplexity at L at every
    length), explodes (> 2x somewhere: say from which length), or degrades in between. A rise counts
    only where its interval (vs_L's ci, when there is one) lies above 1; rises inside the noise read
    "within noise"."""
    base = next((r["ppl"] for r in results if r["length"] == train_len and r["ppl"] is not None), None)
    if base is None:
        return "no perplexity at the training length"
    longer = [r for r in results if r["length"] > train_len]
    if not longer:
        return "not evaluated past L"
    if all(r["ppl"] is None for r in longer):
        return "cannot run past L"
    points = [(r["length"], *_ratio_to_l(r, base)) for r in longer if r["ppl"] is not None]
    real = [(n, x, ci) for n, x, ci in points if ci is None or ci[0] > 1]  # rises the noise cannot explain
    rising = [p for p in real if p[1] > 1.1]
    if not rising:
        noisy = [p for p in points if p[1] > 1.1]
        if noisy:
            n, x, ci = max(noisy, key=lambda p: p[1])
            return f"within noise (up to {x:.2f}x{_ci(ci)}, the interval includes 1)"
        better = [x for _, x, ci in points if ci is None or ci[1] < 1]
        return "extrapolates" + (f" (improves to {min(better):.2f}x)" if better and min(better) < 0.97 else "")
    n, worst, ci = max(rising, key=lambda p: p[1])
    exploded = [n for n, x, _ in rising if x > 2]
    if exploded:
        return f"explodes by {exploded[0] / train_len:g}xL (up to {worst:.1f}x{_ci(ci, '.1f')})"
    return f"degrades (up to {worst:.2f}x{_ci(ci)})"


def _ratio_to_l(r: dict, base: float) -> tuple[float, list[float] | None]:
    v = r.get("vs_L")
    return (v["ratio"], v["ci"]) if v else (r["ppl"] / base, None)


def _ci(ci: list[float] | None, spec: str = ".2f") -> str:
    return "" if ci is None else f" [{ci[0]:{spec}}–{ci[1]:{spec}}]"
