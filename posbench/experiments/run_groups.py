"""Which existing runs `posbench compare RUN ...` may put side by side, and how they form rows.

Runs are seeds of one row only when their configs are equal but for the seed; runs that differ in
anything else are separate rows labelled by what differs (`alibi (steps 60)`). Runs that cannot be
compared at all — another corpus or tokenizer, so another evaluated text or other token units — are
refused with one line naming what differs, before anything is evaluated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from ..errors import PosbenchError
from ..runs.config import RunConfig
from ..runs.folder import read_config, resolve_run

# what decides the evaluated text and its token units: what a refusal names, and how to read it
TEXT_FIELDS = (("corpus", lambda c: c.train.data), ("corpus text", lambda c: c.data.get("sha256")),
               ("tokenizer", lambda c: c.train.tokenizer), ("tokenizer vocabulary", lambda c: c.train.vocab_size))
NOT_A_ROW = {"seed", "tokenizer_seed"}  # seeds of one row differ here (the tokenizer itself is compared)


def _tokenizer_digest(run_dir: Path) -> str | None:
    files = sorted(p for p in run_dir.glob("tokenizer*") if p.is_file())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest() if files else None


def check_comparable(configs: dict[Path, RunConfig]) -> None:
    """Raise PosbenchError (one line, naming the field) unless every run was evaluated on the same text
    in the same token units: same corpus, same corpus text, same tokenizer."""
    (first, a), *rest = configs.items()
    for run, b in rest:
        for name, read in TEXT_FIELDS:
            if read(a) != read(b):
                raise PosbenchError(f"cannot compare {first} with {run}: their {name} differs "
                                    f"({read(a)} vs {read(b)}), so they are not scored on the same text "
                                    "in the same units")
        if _tokenizer_digest(first) != _tokenizer_digest(run):
            seeds = (a.train.tokenizer_seed_or_seed, b.train.tokenizer_seed_or_seed)
            raise PosbenchError(f"cannot compare {first} with {run}: their tokenizer differs (trained with seeds "
                                f"{seeds[0]} vs {seeds[1]}), so they are not scored in the same units; train seeds "
                                "with `posbench compare --seeds N`, which shares one tokenizer")


def _flat(config: RunConfig) -> dict[str, object]:
    """RunConfig.identity() as one level, train fields unprefixed (they are what users set), model as
    model.<k> only where a train field has the same name."""
    ident = config.identity()
    out = {k: v for k, v in ident["train"].items() if k not in NOT_A_ROW}
    out |= {(f"model.{k}" if k in out else k): v for k, v in ident["model"].items()}
    return out


def group_runs(runs: Sequence[str | Path]) -> list[tuple[str, list[Path]]]:
    """[(row label, run folders)]: one row per config (the seeds of one experiment together, in the
    order given), labelled by its method and, where rows of one method differ, by what differs."""
    if not runs:
        return []
    dirs = [resolve_run(r) for r in runs]
    if len(set(dirs)) != len(dirs):
        raise PosbenchError("a run is named twice")
    configs = {d: read_config(d) for d in dirs}
    check_comparable(configs)
    groups: dict[str, list[Path]] = {}
    for d, config in configs.items():
        key = repr(sorted(_flat(config).items()))
        seeds = [configs[o].train.seed for o in groups.get(key, [])]
        if config.train.seed in seeds:  # the same config and seed twice: its own row
            key += str(d)
        groups.setdefault(key, []).append(d)
    rows = list(groups.values())
    return [(_label(rows, k, configs), folders) for k, folders in enumerate(rows)]


def _label(rows: list[list[Path]], k: int, configs: dict[Path, RunConfig]) -> str:
    """The method's label, with `(field value, ...)` for the fields in which this row differs from
    another row of the same method, or its folder name when nothing but the run differs."""
    base = configs[rows[k][0]].label
    same = [r for r in rows if configs[r[0]].label == base]
    if len(same) == 1:
        return base
    mine = _flat(configs[rows[k][0]])
    others = [_flat(configs[r[0]]) for r in same if r is not rows[k]]
    differs = [f for f in mine if any(o.get(f) != mine[f] for o in others)]
    differs = [f for f in differs if f.removeprefix("model.") == f or f.removeprefix("model.") not in differs]
    if not differs:
        return f"{base} ({rows[k][0].name})"
    return f"{base} ({', '.join(f'{f} {mine[f]}' for f in differs)})"
