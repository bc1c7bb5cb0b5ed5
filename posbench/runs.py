"""The run folder: config.json, model.safetensors, the tokenizer, metrics.jsonl, checkpoint.pt,
summary.json (present once training finished). Every file is written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .data import Tokenizer
from .errors import PosbenchError
from .fileio import atomic_write
from .model import GPT, ModelConfig

RUNS_ROOT = Path("runs")
FORMAT = 1  # bump when the run folder layout changes incompatibly


def write_json(path: Path, value: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2) + "\n"))


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PosbenchError(f"cannot read {path}: {e}") from None


def run_config(model: ModelConfig, train: dict, data: dict, tokenizer: dict) -> dict:
    """Everything needed to rebuild and describe a run, as written to config.json."""
    return {"format": FORMAT, "posbench_version": __version__, "model": model.to_dict(), "train": train,
            "data": data, "tokenizer": tokenizer}


def method_label(model: dict) -> str:
    """The method as tables show it, from config.json's "model": "alibi", "alibi+ln" for a run with
    --embed-norm, and a +tag per other setting off its default (ModelConfig.label); a config written
    before a setting existed is read with that setting's legacy value, so old runs say what they are."""
    return ModelConfig.from_dict(model).label()


def save_weights(run_dir: Path, model: GPT, config: dict) -> None:
    """model.safetensors, loadable with plain safetensors.torch.load_file; the config rides along
    in its metadata so the weights file alone says what it is."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"posbench_config": json.dumps(config)}
    atomic_write(run_dir / "model.safetensors", lambda tmp: save_file(state, str(tmp), metadata=metadata))


def check_run_dir(path: Path) -> dict:
    """The config of the run at `path`, or a clear error saying why it is not a usable run."""
    if not path.exists():
        raise PosbenchError(f"run folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise PosbenchError(f"{path} is not a posbench run (no config.json)")
    config = read_json(path / "config.json")
    if config.get("format", 0) > FORMAT:
        raise PosbenchError(
            f"{path} was written by posbench {config.get('posbench_version', '?')}, newer than this "
            f"posbench {__version__}; upgrade posbench to read it"
        )
    return config


def load_run(path: str | Path | None = None, device: str = "cpu") -> tuple[GPT, Tokenizer, dict]:
    """(model in eval mode, tokenizer, config) of a run folder; None means the newest under runs/."""
    path = resolve_run(path)
    config = check_run_dir(path)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise PosbenchError(f"{path} has no model.safetensors yet (training has not saved weights)")
    try:
        state = load_file(str(weights), device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise PosbenchError(f"{weights} is truncated or corrupt ({e}); retrain or restore it") from None
    model = GPT(ModelConfig.from_dict(config["model"]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise PosbenchError(f"{weights} does not match its config (missing {missing}, unexpected {unexpected})")
    return model.to(device).eval(), Tokenizer.load(path), config


def newest_run(root: Path = RUNS_ROOT) -> Path:
    runs = [p.parent for p in root.glob("*/config.json")] if root.is_dir() else []
    if not runs:
        raise PosbenchError(f"no runs under {root}/; train one first: posbench train --pos alibi")
    return max(runs, key=lambda p: (p / "config.json").stat().st_mtime)


def resolve_run(path: str | Path | None) -> Path:
    return newest_run() if path is None else Path(path)


def default_run_dir(pos: str) -> Path:
    import time

    return RUNS_ROOT / f"{pos}-{time.strftime('%Y%m%d-%H%M%S')}"
