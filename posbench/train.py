"""The training loop: AdamW, warmup + cosine decay, gradient clipping, periodic validation,
atomic checkpoints with exact resume, and data-parallel training under torchrun."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from rich.progress import Progress

from .data import BatchSampler, prepare_data
from .errors import PosbenchError
from .evaluate import bits_per_byte, perplexity, window_loss
from .model import GPT, ModelConfig
from .progress import make_progress
from .runs import atomic_write, default_run_dir, read_json, run_config, save_weights, write_json


@dataclass
class TrainConfig:
    data: str = "pydocs"
    tokenizer: str = "bpe"
    vocab_size: int = 4096
    seq_len: int = 128
    batch_size: int = 16  # global: split across ranks under torchrun
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    steps: int = 600
    minutes: float | None = None  # train for a wall-clock budget instead of a step count
    eval_every: int = 200
    eval_tokens: int = 16384
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    save_every: int = 200

    def validate(self) -> None:
        for name in ("seq_len", "batch_size", "steps", "vocab_size", "eval_every", "save_every", "log_every"):
            if getattr(self, name) <= 0:
                raise PosbenchError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise PosbenchError(f"--lr must be positive, got {self.lr}")
        if self.minutes is not None and self.minutes <= 0:
            raise PosbenchError(f"--minutes must be positive, got {self.minutes}")
        if self.tokenizer not in ("bpe", "bytes"):
            raise PosbenchError(f"--tokenizer must be 'bpe' or 'bytes', got '{self.tokenizer}'")


# settings that do not change what a run computes: a run may be resumed with others
NOT_IDENTITY = {"device", "compile", "save_every", "log_every"}


def identity(config: dict) -> dict:
    train = {k: v for k, v in config["train"].items() if k not in NOT_IDENTITY}
    # through from_dict: a config.json written before a setting existed reads as its legacy variant
    return {"model": ModelConfig.from_dict(config["model"]).to_dict(), "train": train, "data": config["data"]}


class Interrupted(Exception):
    """Ctrl-C during training; a checkpoint was saved at `step` in `run_dir`."""

    def __init__(self, run_dir: Path, step: int) -> None:
        super().__init__(f"interrupted at step {step}")
        self.run_dir, self.step = run_dir, step


@dataclass
class TrainResult:
    run_dir: Path
    summary: dict
    resumed_from: int = 0  # step a resumed run continued from; 0 for a fresh run
    already_finished: bool = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PosbenchError("--device cuda was asked for, but this torch sees no CUDA device (use --device cpu)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise PosbenchError(f"--device must be auto, cpu or cuda, got '{name}'")
    return torch.device(name)


def lr_at(step: int, progress: float, cfg: TrainConfig) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to min_lr_ratio * lr at progress 1."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(model: GPT, cfg: TrainConfig) -> torch.optim.AdamW:
    # decay matrices and embeddings; not norms, biases or scalar scales
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); sets up torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), world


def train(
    model_config: ModelConfig,
    cfg: TrainConfig,
    out: Path | None = None,
    overwrite: bool = False,
    console: Console | None = None,
    show_progress: bool = True,
    progress: Progress | None = None,
) -> TrainResult:
    """Train (or resume) a run into `out`; returns where it went and its summary."""
    cfg.validate()
    device = resolve_device(cfg.device)
    rank, world = init_distributed(device)
    if cfg.batch_size % world:
        raise PosbenchError(f"--batch-size {cfg.batch_size} is not divisible by {world} processes")
    console = console or Console()
    if rank != 0:
        console, show_progress = Console(quiet=True), False

    with _rank0_first(rank, world):  # rank 0 tokenises; the others then hit its cache
        data = prepare_data(cfg.data, cfg.tokenizer, cfg.vocab_size, cfg.seed)
    model_config = replace(model_config, vocab_size=data.tokenizer.vocab_size, max_len=cfg.seq_len)
    # checked before anything is written: a corpus too short for one window is an input error
    sampler = BatchSampler(data.splits["train"], cfg.seq_len, cfg.batch_size // world, cfg.seed, rank, world)
    if len(data.splits["valid"]) < cfg.seq_len + 1:
        raise PosbenchError(
            f"the valid split has {len(data.splits['valid'])} tokens, fewer than one window of "
            f"--seq-len {cfg.seq_len} + 1; use a longer corpus or a shorter --seq-len"
        )
    config = run_config(model_config, asdict(cfg), data.corpus, data.tokenizer.describe())
    run_dir = Path(out) if out is not None else default_run_dir(model_config.pos)
    checkpoint = _claim_run_dir(run_dir, config, overwrite) if rank == 0 else None
    finished = rank == 0 and checkpoint is None and (run_dir / "summary.json").is_file()
    if world > 1:  # rank 0 decided; the others follow
        box = [checkpoint is not None, finished]
        dist.broadcast_object_list(box)
        checkpoint, finished = (run_dir / "checkpoint.pt" if box[0] else None), box[1]
    if finished:
        return TrainResult(run_dir, read_json(run_dir / "summary.json"), already_finished=True)
    if rank == 0:
        write_json(run_dir / "config.json", config)
        data.tokenizer.save(run_dir)

    torch.manual_seed(cfg.seed)
    raw_model = GPT(model_config).to(device)
    optimizer = make_optimizer(raw_model, cfg)
    step, elapsed = 0, 0.0
    if checkpoint is not None:
        step, elapsed = _load_checkpoint(checkpoint, raw_model, optimizer, sampler, device)
        _truncate_metrics(run_dir / "metrics.jsonl", step)
    resumed_from = step
    model = raw_model
    if cfg.compile:
        model = torch.compile(model)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    tokens_per_step = cfg.batch_size * cfg.seq_len
    budget = None if cfg.minutes is None else cfg.minutes * 60
    metrics = open(run_dir / "metrics.jsonl", "a") if rank == 0 else None

    def save() -> None:
        if rank == 0:
            _save_checkpoint(run_dir / "checkpoint.pt", raw_model, optimizer, sampler, step, elapsed)
            save_weights(run_dir, raw_model, config)

    def log(record: dict) -> None:
        if metrics is not None:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()

    def validate() -> float:
        raw_model.eval()
        with autocast:
            loss = window_loss(raw_model, data.splits["valid"], cfg.seq_len, cfg.eval_tokens)
        raw_model.train()
        return loss

    # the bar counts steps, or seconds under --minutes; loss and speed ride in the description so
    # the task renders in any Progress (compare passes its own, with an overall bar above)
    own_progress = progress is None
    progress = progress or make_progress(console, disable=not show_progress)
    total = cfg.steps if budget is None else budget
    label = f"train {model_config.pos}"
    task = progress.add_task(label, total=total, completed=step if budget is None else elapsed)
    raw_model.train()
    last_loss, window_start, window_steps = float("nan"), time.perf_counter(), 0
    try:
        with progress if own_progress else contextlib.nullcontext():
            while (step < cfg.steps) if budget is None else (elapsed < budget):
                t0 = time.perf_counter()
                fraction = step / cfg.steps if budget is None else elapsed / budget
                lr = lr_at(step, fraction, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = (t.to(device, non_blocking=True) for t in sampler.next_batch())
                with autocast:
                    logits = model(x)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
                loss.backward()
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
                optimizer.step()
                raw_model.pos.after_step()  # e.g. KERPLE's in-place clamp of r1, r2
                optimizer.zero_grad(set_to_none=True)
                elapsed += time.perf_counter() - t0
                if world > 1:
                    loss, elapsed = _average_across_ranks(loss, elapsed, world)
                last_loss = loss.item()
                if not math.isfinite(last_loss):
                    raise PosbenchError(
                        f"loss became {last_loss} at step {step + 1}; stopped without saving "
                        f"(the last good checkpoint in {run_dir} is untouched). Try a lower --lr."
                    )
                step += 1
                window_steps += 1
                if step % cfg.log_every == 0 or step == cfg.steps:
                    now = time.perf_counter()
                    speed = window_steps * tokens_per_step / (now - window_start)
                    window_start, window_steps = now, 0
                    log({"step": step, "loss": last_loss, "lr": lr, "tokens": step * tokens_per_step,
                         "tokens_per_s": speed, "elapsed": elapsed})
                    progress.update(task, description=f"{label} · loss {last_loss:.3f} · {speed:,.0f} tok/s")
                if step % cfg.eval_every == 0:
                    val = validate()
                    log({"step": step, "val_loss": val, "val_ppl": perplexity(val)})
                if step % cfg.save_every == 0:
                    save()
                progress.update(task, completed=step if budget is None else elapsed)
    except KeyboardInterrupt:
        save()
        raise Interrupted(run_dir, step) from None
    finally:
        if metrics is not None:
            metrics.close()

    save()
    val = validate()
    summary = {
        "pos": model_config.pos, "params": raw_model.num_params(), "steps": step,
        "tokens_seen": step * tokens_per_step, "train_loss": last_loss, "val_loss": val,
        "val_ppl": perplexity(val), "val_bpb": bits_per_byte(val, data.bytes_per_token["valid"]),
        "train_seconds": elapsed, "tokens_per_s": (step - resumed_from) * tokens_per_step / max(elapsed, 1e-9)
        if resumed_from == 0 else None,
    }
    if rank == 0:
        write_json(run_dir / "summary.json", summary)
    return TrainResult(run_dir, summary, resumed_from=resumed_from)


def _average_across_ranks(loss: torch.Tensor, elapsed: float, world: int) -> tuple[torch.Tensor, float]:
    """The global batch's loss, and one clock for all ranks, in a single all-reduce (gloo has no AVG).

    Each rank times its own steps; under --minutes a rank that kept its own clock would pick another
    learning rate and stop at another step than the rest, and the others would wait for it forever.
    """
    both = loss.new_tensor([loss.item(), elapsed], dtype=torch.float64)  # float64: the clock runs for hours
    dist.all_reduce(both)
    both /= world
    return both[0], both[1].item()


@contextlib.contextmanager
def _rank0_first(rank: int, world: int):
    if world > 1 and rank != 0:
        dist.barrier()
    yield
    if world > 1 and rank == 0:
        dist.barrier()


def _claim_run_dir(run_dir: Path, config: dict, overwrite: bool) -> Path | None:
    """Check `run_dir` may take this run. Returns the checkpoint to resume from, if any."""
    if not (run_dir / "config.json").is_file():
        if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
            raise PosbenchError(f"{run_dir} exists and is not a posbench run; pick another --out or pass --overwrite")
        return None
    old = read_json(run_dir / "config.json")
    same = "model" in old and identity(old) == identity(config)
    if not same or overwrite:
        if not overwrite:
            raise PosbenchError(
                f"{run_dir} holds a run with a different config; pass --overwrite to replace it, "
                "or choose another --out"
            )
        shutil.rmtree(run_dir)
        return None
    if (run_dir / "summary.json").is_file():
        return None  # finished: nothing to do
    checkpoint = run_dir / "checkpoint.pt"
    return checkpoint if checkpoint.is_file() else None


def _save_checkpoint(path: Path, model: GPT, optimizer, sampler: BatchSampler, step: int, elapsed: float) -> None:
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "sampler": sampler.state_dict(),
        "step": step, "elapsed": elapsed, "torch_rng": torch.get_rng_state(),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_checkpoint(path: Path, model: GPT, optimizer, sampler: BatchSampler, device) -> tuple[int, float]:
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # a torn or foreign file: say which, do not guess
        raise PosbenchError(f"cannot resume: {path} is unreadable ({e})") from None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    torch.set_rng_state(state["torch_rng"].cpu())
    return state["step"], state["elapsed"]


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint, so a resumed run's metrics read as one run."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
    atomic_write(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))


