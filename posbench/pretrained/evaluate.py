"""`posbench eval-extrapolate hf:MODEL ...`: a pretrained model scored like a run (scoring.py's length
sweep, context_use.py's diagnostic, the same intervals), on any corpus posbench reads, tokenised with
the model's own tokenizer. Its report has the layout of extrapolate.evaluate_run's, plus `model` and
`tokenizer` (what tells whether two rows share their token units).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import Progress

from ..errors import PosbenchError
from ..evaluation.extrapolate import EvalSettings, evaluate_run, score_model
from ..evaluation.scoring import check_lengths
from ..evaluation.stats import Windows
from ..experiments.verdicts import add_context_comparisons
from ..progress import make_progress
from ..runs.folder import read_config, resolve_run
from . import is_pretrained
from .architectures import trained_context
from .hub import display_name, load_config, load_model, load_tokenizer
from .tokens import held_out

if TYPE_CHECKING:  # transformers is optional: named in annotations only
    from transformers import PreTrainedTokenizerBase

DEFAULT_DATA = "pydocs"  # a pretrained model has no corpus of its own
LOGITS_BUDGET = 1 << 30  # bytes of fp32 logits per forward pass: short windows batch up to it (V = 250k: 1k tokens)
MULTIPLES = (0.5, 1, 2, 4, 8)  # default lengths: the trained context times these


def default_lengths(context: int, max_len: int | None = None) -> list[int]:
    """The trained context × 1/2, 1, 2, 4, 8; with max_len, × 1/2, 1, 2, 4, ... up to max_len, and max_len."""
    if max_len is None:
        return check_lengths([max(1, int(context * m)) for m in MULTIPLES])
    if max_len <= 0:
        raise PosbenchError(f"--max-len must be positive, got {max_len}")
    lengths, n = [max(1, context // 2)], context
    while n <= max_len:
        lengths.append(n)
        n *= 2
    return check_lengths([n for n in lengths if n <= max_len] + [max_len])


def tokenizer_id(tokenizer: PreTrainedTokenizerBase) -> str:
    """Its class, size and a digest of its vocabulary: equal ids, the same token units."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items())).encode()
    return f"{type(tokenizer).__name__} {len(tokenizer)} {hashlib.sha256(vocab).hexdigest()[:12]}"


def run_tokenizer_id(run_dir: Path) -> str:
    """A posbench run's tokenizer as tokenizer_id names one: its kind and a digest of its files."""
    files = sorted(p for p in Path(run_dir).glob("tokenizer*") if p.is_file())
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:12]
    return f"posbench {read_config(Path(run_dir)).train.tokenizer} {digest}"


def _scaling(settings: EvalSettings, lengths: list[int], context: int) -> tuple[str, float] | None:
    if settings.rope_scaling is None:
        return None
    kind, factor = settings.rope_scaling
    return kind, max(lengths) / context if factor is None else factor  # default: reach the longest length


def evaluate_model(spec: str, settings: EvalSettings = EvalSettings(), progress: Progress | None = None,
                   precision: str | None = None, max_len: int | None = None
                   ) -> tuple[dict, dict[tuple[str, int], Windows]]:
    """The report entry of `hf:MODEL` and its per-window losses by (mode, length), as
    extrapolate.evaluate_run gives a run's. Lengths: settings.lengths, else default_lengths(context,
    max_len). settings.data: the corpus (default pydocs)."""
    context = trained_context(load_config(spec))
    name, tokenizer = display_name(spec), load_tokenizer(spec)
    lengths = list(settings.lengths or default_lengths(context, max_len))
    scaling = _scaling(settings, lengths, context)
    label = name if scaling is None else f"{name}+{scaling[0]}×{scaling[1]:g}"
    model = load_model(spec, settings.device, precision, rope_scaling=scaling)
    data = settings.data or DEFAULT_DATA
    tokens, sizes, notes = held_out(tokenizer, data, settings.split, model.config.vocab_size, name)
    batch_tokens = max(1, LOGITS_BUDGET // (4 * model.config.vocab_size))
    scores, windows = score_model(model, tokens, sizes, lengths, context, settings, progress, label,
                                  batch_tokens=batch_tokens)
    weights = next(model.parameters())
    report = {
        "run": spec, "pos": model.config.pos, "label": label, "train_len": context, "split": settings.split,
        "data": data, "tokenizer": tokenizer_id(tokenizer),
        "model": {"name": name, "params": sum(p.numel() for p in model.parameters()),
                  "dtype": str(weights.dtype).removeprefix("torch."), "device": str(weights.device)},
        **scores,
        **({"notes": notes} if notes else {}),
        **({"rope_scaling": {"kind": scaling[0], "factor": scaling[1]}} if scaling else {}),
    }
    add_context_comparisons(report, {key: [w] for key, w in windows.items()})
    return report, windows


def evaluate_any(spec: str | Path | None, settings: EvalSettings, progress: Progress | None = None,
                 precision: str | None = None, max_len: int | None = None
                 ) -> tuple[dict, dict[tuple[str, int], Windows]]:
    """A run folder or an hf: model, each as its own kind is evaluated; both reports name their tokenizer."""
    if is_pretrained(spec):
        return evaluate_model(str(spec), settings, progress, precision, max_len)
    report, windows = evaluate_run(spec, settings, progress)
    return report | {"tokenizer": run_tokenizer_id(resolve_run(spec))}, windows


def pretrained_report(specs: Sequence[str | Path | None], settings: EvalSettings = EvalSettings(),
                      console: Console | None = None, show_progress: bool = True, precision: str | None = None,
                      max_len: int | None = None) -> dict:
    """extrapolation_report for a list that holds hf: models (and maybe runs): {"runs": [report, ...]}."""
    progress = make_progress(console, disable=not show_progress)
    with progress:
        reports = [evaluate_any(spec, settings, progress, precision, max_len)[0] for spec in specs]
    return {"runs": reports}
