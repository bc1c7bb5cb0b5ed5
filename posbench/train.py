"""The training loop: AdamW, warmup + cosine decay, gradient clipping, periodic validation,
atomic checkpoints with exact resume, and data-parallel training under torchrun."""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from rich.progress import Progress

from .common import (
    autocast,
    average_across_ranks,
    fused_optimizer,
    init_distributed,
    keep_freed_memory,
    resolve_device,
    resolve_precision,
)
from .data.tokens import BatchSource, TokenData, corpus_sampler
from .errors import Interrupted, PosbenchError
from .evaluation.scoring import bits_per_byte, perplexity, window_loss
from .model.gpt import GPT
from .positions import METHODS
from .progress import make_progress
from .runs.config import ModelConfig, RunConfig, TrainConfig
from .runs.folder import (
    claim_run_dir,
    default_run_dir,
    load_checkpoint,
    read_json,
    save_checkpoint,
    save_weights,
    truncate_metrics,
    write_json,
)
from .runs.lock import lock_run_dir


@dataclass
class TrainResult:
    run_dir: Path
    summary: dict
    resumed_from: int = 0  # step a resumed run continued from; 0 for a fresh run
    already_finished: bool = False


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
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=fused_optimizer(model))


def train(
    model_config: ModelConfig,
    cfg: TrainConfig,
    out: Path | None = None,
    overwrite: bool = False,
    console: Console | None = None,
    show_progress: bool = True,
    progress: Progress | None = None,
    batches: BatchSource | None = None,
) -> TrainResult:
    """Train (or resume) a run into `out`; returns where it went and its summary. `progress`: a live
    display to add this run's bar to (compare passes its own); None makes one. `batches`: train on
    these (e.g. a task's TaskSampler, already sliced for this rank) instead of cfg.data's corpus."""
    cfg.validate()
    device = resolve_device(cfg.device)
    cfg = replace(cfg, precision=resolve_precision(cfg.precision, device))  # "auto" recorded as what it chose
    if device.type == "cpu":
        keep_freed_memory()  # the steps reuse the memory their predecessors freed
    rank, world = init_distributed(device)
    if cfg.batch_size % world:
        raise PosbenchError(f"--batch-size {cfg.batch_size} is not divisible by {world} processes")
    if batches is None:
        model_config = replace(model_config, train_len=cfg.train_len)
    check_random_positions(model_config, cfg)  # before anything is written: an input error
    run_dir = Path(out) if out is not None else default_run_dir(model_config.pos)
    # one writer per folder: the lock first, so a second writer is refused before any work (reading and
    # tokenising the corpus takes seconds), and before claiming, which may delete
    with lock_run_dir(run_dir, enabled=rank == 0):
        if batches is None:
            data, sampler = corpus_sampler(cfg, cfg.tokenizer_seed_or_seed, cfg.batch_size // world, rank, world)
            model_config = replace(model_config, vocab_size=data.tokenizer.vocab_size)
            run_config = RunConfig(model_config, cfg, data.corpus, data.tokenizer.describe())
        else:  # a task's batches: no corpus, no tokenizer, no validation split (the caller scores the run)
            data, sampler = None, batches
            run_config = RunConfig(model_config, cfg, batches.describe(), {"kind": "task"})
        checkpoint, finished = _claim(run_dir, run_config, overwrite, rank, world)
        if finished:
            return TrainResult(run_dir, read_json(run_dir / "summary.json"), already_finished=True)
        if rank == 0:
            write_json(run_dir / "config.json", run_config.to_json())
            if data is not None:
                data.tokenizer.save(run_dir)

        loop = _Loop(run_config, data, sampler, run_dir, device, rank, world)
        if checkpoint is not None:
            loop.resume(checkpoint)
        if rank != 0:
            console, show_progress = Console(quiet=True), False
        loop.run(progress or make_progress(console or Console(), disable=not show_progress), own=progress is None)
        return TrainResult(run_dir, loop.summarize(), resumed_from=loop.resumed_from)


def check_random_positions(model_config: ModelConfig, cfg: TrainConfig) -> None:
    """Randomized positions and PoSE reach M - 1: a method with a position table must hold them. A
    learned table has train_len rows (its weights' shape), so it is refused rather than silently grown."""
    option, reach = ("--random-positions", cfg.random_positions) if cfg.pose is None else ("--pose", cfg.pose)
    limit = None if reach is None else METHODS[model_config.pos](model_config).max_positions
    if limit is not None and reach > limit:
        raise PosbenchError(f"{option} {reach} needs positions up to {reach - 1}, but '{model_config.pos}' "
                            f"encodes only {limit} (its table has --train-len rows); use a method without a table")


def _claim(run_dir: Path, run_config: RunConfig, overwrite: bool, rank: int, world: int) -> tuple[Path | None, bool]:
    """(checkpoint to resume from or None, whether the run already finished): rank 0 decides, the
    other ranks follow."""
    checkpoint = claim_run_dir(run_dir, run_config, overwrite) if rank == 0 else None
    finished = rank == 0 and checkpoint is None and (run_dir / "summary.json").is_file()
    if world > 1:
        box = [checkpoint is not None, finished]
        dist.broadcast_object_list(box)
        checkpoint, finished = (run_dir / "checkpoint.pt" if box[0] else None), box[1]
    return checkpoint, finished


class _Loop:
    """One run's training state between steps: the model, its optimizer, the sampler, step and clock."""

    def __init__(self, run_config: RunConfig, data: TokenData | None, sampler: BatchSource, run_dir: Path,
                 device: torch.device, rank: int, world: int) -> None:
        model_config, cfg = run_config.model, run_config.train
        self.cfg, self.run_config, self.data, self.sampler, self.run_dir = cfg, run_config, data, sampler, run_dir
        self.device, self.rank, self.world = device, rank, world
        torch.manual_seed(cfg.seed)
        self.raw_model = GPT(model_config).to(device)
        self.optimizer = make_optimizer(self.raw_model, cfg)
        self.step, self.elapsed, self.resumed_from = 0, 0.0, 0
        self.last_loss = float("nan")
        self.budget = None if cfg.minutes is None else cfg.minutes * 60  # seconds, under --minutes
        self.tokens_per_step = cfg.batch_size * cfg.train_len
        self.autocast = autocast(device, cfg.precision)
        self.label = f"train {model_config.pos}"
        self.metrics = None  # metrics.jsonl, open while the loop runs (rank 0 only)

    def resume(self, checkpoint: Path) -> None:
        self.step, self.elapsed = load_checkpoint(checkpoint, self.raw_model, self.optimizer, self.sampler,
                                                  self.device)
        self.resumed_from = self.step
        if self.rank == 0:
            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)

    def done(self) -> float:
        """Progress in the bar's unit: steps, or seconds under --minutes."""
        return self.step if self.budget is None else self.elapsed

    def run(self, progress: Progress, own: bool) -> None:
        """Steps until --steps (or --minutes) are done; a checkpoint every --save-every steps, at the
        end and on Ctrl-C (then Interrupted is raised)."""
        model = torch.compile(self.raw_model) if self.cfg.compile else self.raw_model
        if self.world > 1:
            model = torch.nn.parallel.DistributedDataParallel(model)
        # the bar's loss and speed ride in its description, so the task renders in any Progress
        total, unit = (self.cfg.steps, "steps") if self.budget is None else (self.budget, "s")
        task = progress.add_task(self.label, total=total, completed=self.done(), unit=unit)
        self.raw_model.train()
        self.window = (time.perf_counter(), 0)  # (start, steps) of the current tokens/s window
        self.metrics = open(self.run_dir / "metrics.jsonl", "a") if self.rank == 0 else None
        try:
            with progress if own else contextlib.nullcontext():
                while self.done() < total:
                    self.train_step(model)
                    self.after_step(progress, task)
        except KeyboardInterrupt:
            self.save()
            raise Interrupted(self.run_dir, self.step) from None
        finally:
            if self.metrics is not None:
                self.metrics.close()
        self.save()

    def train_step(self, model: torch.nn.Module) -> None:
        """One optimizer step on the next batch, at the schedule's learning rate."""
        t0 = time.perf_counter()
        fraction = self.step / self.cfg.steps if self.budget is None else self.elapsed / self.budget
        self.lr = lr_at(self.step, fraction, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        x, y = (t.to(self.device, non_blocking=True) for t in self.sampler.next_batch())
        ids = self.sampler.next_positions()  # (T,) randomized positions (Ruoss et al. 2023), or None
        with self.autocast:
            logits = model(x, positions=None if ids is None else ids.to(self.device))  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        done = self.step + 1
        self.raw_model.after_step(done, done / self.cfg.steps if self.budget is None else self.elapsed / self.budget)
        self.optimizer.zero_grad(set_to_none=True)
        self.elapsed += time.perf_counter() - t0
        if self.world > 1:
            loss, self.elapsed = average_across_ranks(loss, self.elapsed, self.world)
        self.last_loss = loss.item()
        if not math.isfinite(self.last_loss):
            raise PosbenchError(f"loss became {self.last_loss} at step {self.step + 1}; stopped without saving "
                                f"(the last good checkpoint in {self.run_dir} is untouched). Try a lower --lr.")
        self.step += 1

    def after_step(self, progress: Progress, task) -> None:
        """Log, validate and save on their schedules; move the bar."""
        cfg, step = self.cfg, self.step
        start, steps = self.window[0], self.window[1] + 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            speed = steps * self.tokens_per_step / (now - start)
            start, steps = now, 0
            self.log({"step": step, "loss": self.last_loss, "lr": self.lr, "tokens": step * self.tokens_per_step,
                      "tokens_per_s": speed, "elapsed": self.elapsed})
            progress.update(task, description=f"{self.label} · loss {self.last_loss:.3f} · {speed:,.0f} tok/s")
        self.window = (start, steps)
        if step % cfg.eval_every == 0 and self.data is not None:
            val = self.validate()
            self.log({"step": step, "val_loss": val, "val_ppl": perplexity(val)})
        if step % cfg.save_every == 0:
            self.save()
        progress.update(task, completed=self.done())

    def log(self, record: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()

    def validate(self) -> float:
        self.raw_model.eval()
        with self.autocast:
            loss = window_loss(self.raw_model, self.data.splits["valid"], self.cfg.train_len, self.cfg.eval_tokens,
                               random_positions=self.cfg.random_positions)
        self.raw_model.train()
        return loss

    def save(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.run_dir / "checkpoint.pt", self.raw_model, self.optimizer, self.sampler,
                            self.step, self.elapsed)
            save_weights(self.run_dir, self.raw_model, self.run_config)

    def summarize(self) -> dict:
        """The finished run's summary.json (written by rank 0)."""
        val = None if self.data is None else self.validate()  # a task run is scored by its caller
        fresh = self.resumed_from == 0  # a resumed run's clock mixes two processes: no speed
        summary = {
            "pos": self.raw_model.config.pos, "params": self.raw_model.num_params(), "steps": self.step,
            "tokens_seen": self.step * self.tokens_per_step, "train_loss": self.last_loss, "val_loss": val,
            "val_ppl": None if val is None else perplexity(val),
            "val_bpb": None if val is None else bits_per_byte(val, self.data.bytes_per_token["valid"]),
            "train_seconds": self.elapsed,
            "tokens_per_s": self.step * self.tokens_per_step / max(self.elapsed, 1e-9) if fresh else None,
            # what the method's state says at the end (e.g. the step where DroPE dropped RoPE)
            "method": self.raw_model.pos.describe(self.cfg.train_len),
        }
        if self.rank == 0:
            write_json(self.run_dir / "summary.json", summary)
        return summary
