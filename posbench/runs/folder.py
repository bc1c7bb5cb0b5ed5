"""The run folder: config.json, model.safetensors, the tokenizer, metrics.jsonl, checkpoint.pt,
summary.json (present once training finished). Every file is written atomically.

Everything that reads or writes one lives here: claiming a folder for a run, checkpoints for exact
resume, the weights, loading a run back, and the held-out tokens a run is evaluated on."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .. import __version__
from ..common import RUNS_ROOT, check_split
from .config import FORMAT, RunConfig
from ..data.corpora import load_corpus
from ..errors import PosbenchError
from ..fileio import atomic_write
from .lock import LOCK_NAME
from ..model.gpt import GPT
from ..data.tokenizer import Tokenizer
from ..data.tokens import prepare_data



def write_json(path: Path, value: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2) + "\n"))


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PosbenchError(f"cannot read {path}: {e}") from None


def read_config(run_dir: Path) -> RunConfig:
    """The run's config.json, read as this version names things (RunConfig.from_json)."""
    return RunConfig.from_json(read_json(run_dir / "config.json"))


def save_weights(run_dir: Path, model: GPT, config: RunConfig) -> None:
    """model.safetensors, loadable with plain safetensors.torch.load_file; the config rides along
    in its metadata so the weights file alone says what it is."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"posbench_config": json.dumps(config.to_json())}
    # serialised in memory, written by Python: a full disk is then an OSError atomic_write can name
    # (safetensors' own file writer reports it opaquely, or not at all)
    atomic_write(run_dir / "model.safetensors", safetensors_bytes(state, metadata=metadata))


def check_run_dir(path: Path) -> RunConfig:
    """The config of the run at `path`, or a clear error saying why it is not a usable run."""
    if not path.exists():
        raise PosbenchError(f"run folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise PosbenchError(f"{path} is not a posbench run (no config.json)")
    config = read_config(path)
    if config.format > FORMAT:
        raise PosbenchError(
            f"{path} was written by posbench {config.posbench_version}, newer than this "
            f"posbench {__version__}; upgrade posbench to read it"
        )
    return config


def load_run(path: str | Path | None = None, device: str = "cpu") -> tuple[GPT, Tokenizer | None, RunConfig]:
    """(model in eval mode, tokenizer, config) of a run folder; None means the newest under runs/.
    A task run (`posbench tasks`) has no tokenizer (None): its ids are the task's vocabulary."""
    path = resolve_run(path)
    config = check_run_dir(path)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise PosbenchError(f"{path} has no model.safetensors yet (training has not saved weights)")
    try:
        state = load_file(str(weights), device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise PosbenchError(f"{weights} is truncated or corrupt ({e}); retrain or restore it") from None
    model = GPT(config.model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise PosbenchError(f"{weights} does not match its config (missing {missing}, unexpected {unexpected})")
    tokenizer = None if config.is_task_run else Tokenizer.load(path)
    return model.to(device).eval(), tokenizer, config


def newest_run(root: Path = RUNS_ROOT) -> Path:
    runs = [p.parent for p in root.glob("*/config.json")] if root.is_dir() else []
    if not runs:
        raise PosbenchError(f"no runs under {root}/; train one first: posbench train --pos alibi")
    return max(runs, key=lambda p: (p / "config.json").stat().st_mtime)


def resolve_run(path: str | Path | None) -> Path:
    return newest_run() if path is None else Path(path)


def default_run_dir(pos: str) -> Path:
    return RUNS_ROOT / f"{pos}-{time.strftime('%Y%m%d-%H%M%S')}"


# ----------------------------------------------------------------------------- training's side


def run_files(run_dir: Path) -> list[Path]:
    """What is in the folder, less the lock file (which is not part of a run)."""
    return [p for p in run_dir.iterdir() if p.name != LOCK_NAME] if run_dir.is_dir() else []


def claim_run_dir(run_dir: Path, config: RunConfig, overwrite: bool) -> Path | None:
    """Check `run_dir` may take this run (call it holding the folder's lock). Returns the checkpoint
    to resume from, if any."""
    for tmp in run_dir.glob(".*.tmp"):  # a killed writer's half-written file; the lock says it is gone
        tmp.unlink(missing_ok=True)
    if not (run_dir / "config.json").is_file():
        if run_files(run_dir) and not overwrite:
            raise PosbenchError(f"{run_dir} exists and is not a posbench run; pick another --out or pass --overwrite")
        return None
    old = read_json(run_dir / "config.json")
    same = "model" in old and RunConfig.from_json(old).identity() == config.identity()
    if not same or overwrite:
        if not overwrite:
            raise PosbenchError(
                f"{run_dir} holds a run with a different config; pass --overwrite to replace it, "
                "or choose another --out"
            )
        for path in run_files(run_dir):  # the lock file stays: this process holds it
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        return None
    if (run_dir / "summary.json").is_file():
        return None  # finished: nothing to do
    checkpoint = run_dir / "checkpoint.pt"
    return checkpoint if checkpoint.is_file() else None


def save_checkpoint(path: Path, model: GPT, optimizer, sampler, step: int, elapsed: float) -> None:
    """Everything exact resume needs: weights, optimizer moments, the sampler's and torch's RNG."""
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "sampler": sampler.state_dict(),
        "step": step, "elapsed": elapsed, "torch_rng": torch.get_rng_state(),
    }
    atomic_write(path, lambda tmp: _torch_save(state, tmp))


def _torch_save(state: dict, tmp: Path) -> None:
    # through a Python file: torch's own path writer turns a full disk into an opaque RuntimeError
    with open(tmp, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: Path, model: GPT, optimizer, sampler, device) -> tuple[int, float]:
    """Restore what save_checkpoint wrote; returns (step, elapsed seconds)."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # a torn or foreign file: say which, do not guess
        raise PosbenchError(f"cannot resume: {path} is unreadable ({e})") from None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    torch.set_rng_state(state["torch_rng"].cpu())
    return state["step"], state["elapsed"]


def loss_curve(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """(tokens seen, loss) points from metrics.jsonl: "train" (the logged training loss) and "val".
    A line that does not parse (a run still writing it) is skipped; no file, no points."""
    train = read_config(run_dir).train
    per_step = train.batch_size * train.train_len
    curve: dict[str, list[tuple[int, float]]] = {"train": [], "val": []}
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        for name, key in (("train", "loss"), ("val", "val_loss")):
            if key in record:
                curve[name].append((record["step"] * per_step, record[key]))
    return curve


def truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint, so a resumed run's metrics read as one run."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
    atomic_write(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))


# ----------------------------------------------------------------------------- held-out text


def held_out_tokens(run_dir: Path, config: RunConfig, tokenizer: Tokenizer, split: str,
                    data: str | None = None) -> tuple[np.ndarray, list[str]]:
    """(token ids, notes) of the held-out split a run is evaluated and probed on: its own corpus (the
    cached tokenisation, checked against the run's corpus hash and tokenizer), or `data`, another
    corpus tokenised with the run's tokenizer. A note says when the text is not the run's own."""
    check_split(split)
    if data is not None:
        return tokenizer.encode(load_corpus(data).splits[split]), []
    train = config.train
    prepared = prepare_data(train.data, train.tokenizer, train.vocab_size, train.tokenizer_seed_or_seed)
    notes = []
    if prepared.corpus.get("sha256") != config.data.get("sha256"):
        notes.append(f"the corpus '{train.data}' is not the text this run was trained on (another Python "
                     "version, or the file changed): its held-out split differs from the run's")
    if prepared.tokenizer.model_proto != tokenizer.model_proto or prepared.tokenizer.vocab_size != tokenizer.vocab_size:
        # the cache's tokenizer is not the run's (e.g. another sentencepiece): tokenise with the run's own
        return tokenizer.encode(load_corpus(train.data).splits[split]), notes
    return prepared.splits[split], notes
