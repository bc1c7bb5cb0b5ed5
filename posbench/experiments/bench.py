"""`posbench bench`: Table 1 of the ALiBi paper for this machine — training and evaluation speed and
peak memory per position method, each also relative to `none`, all measured in one run."""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..common import PRECISIONS, autocast, fused_optimizer, keep_freed_memory, resolve_precision
from ..errors import PosbenchError
from ..model.gpt import GPT
from ..runs.config import ModelConfig

# Dense bf16 peak of the SXM parts, TFLOP/s (NVIDIA datasheets, without sparsity): what MFU is
# measured against. A GPU not named here gets no MFU column.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0}


def training_flops_per_token(model: GPT) -> float:
    """Model FLOPs of one training token (PaLM, Chowdhery et al. 2022, App. B): 6 per weight a token
    multiplies (forward 2, backward 4: the blocks and the output head, not the embedding lookups)
    plus attention's scores and weighted sum, 12 * layers * d * L."""
    c = model.config
    weights = sum(p.numel() for p in model.blocks.parameters() if p.dim() == 2) + c.vocab_size * c.d_model
    return 6 * weights + 12 * c.n_layer * c.d_model * c.train_len


def bf16_peak_tflops(device: torch.device) -> float | None:
    """The datasheet bf16 peak of a known CUDA GPU (first match in BF16_PEAK_TFLOPS), else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def train_rate(model: torch.nn.Module, batch: int, train_len: int, vocab: int, steps: int, warmup: int = 2,
               precision: str = "fp32") -> float:
    """Training tokens/s: forward + cross-entropy + backward + AdamW, after `warmup` steps, under the
    precision training uses (common.autocast: bf16 on CUDA, `precision` on the CPU)."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused_optimizer(model))
    x = torch.randint(0, vocab, (batch, train_len + 1), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        with autocast(device, precision):
            logits = model(x[:, :-1])
        F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return batch * train_len * steps / (time.perf_counter() - start)


@torch.inference_mode()
def eval_rate(model: torch.nn.Module, batch: int, train_len: int, vocab: int, steps: int, warmup: int = 2,
              precision: str = "fp32") -> float:
    """Evaluation tokens/s: forward passes only (under the same precision as train_rate)."""
    device = next(model.parameters()).device
    x = torch.randint(0, vocab, (batch, train_len), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        with autocast(device, precision):
            model(x)
    _sync(device)
    return batch * train_len * steps / (time.perf_counter() - start)


def peak_memory(pos: str, model: dict, train_len: int, batch: int, device: str, threads: int,
                compile: bool = False, precision: str = "fp32") -> float:
    """Peak memory (MB) of one training step and one evaluation step. On CUDA: the allocator's peak
    for this method. On the CPU, which keeps no such count: how far the steps raise the process's
    peak resident size above where it stood once the model was built (torch's own ~300 MB would
    otherwise swamp the differences), so bench() runs each method in a fresh process there."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    config = ModelConfig(pos=pos, train_len=train_len, **model)
    net = _build(config, dev, compile)
    # a warm-up step first: its set-up is not the method's (CPU: thread pools, kernel caches, ~80 MB,
    # one window is enough; CUDA: compiling, if asked to, at the measured shape)
    warmup_batch = batch if dev.type == "cuda" else 1
    train_rate(net, warmup_batch, train_len, config.vocab_size, steps=1, warmup=0, precision=precision)
    eval_rate(net.eval(), warmup_batch, train_len, config.vocab_size, steps=1, warmup=0, precision=precision)
    net.train()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        before = _reset_peak_rss_mb()
    train_rate(net, batch, train_len, config.vocab_size, steps=1, warmup=0, precision=precision)
    eval_rate(net.eval(), batch, train_len, config.vocab_size, steps=1, warmup=0, precision=precision)
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    return _peak_rss_mb() - before


def _reset_peak_rss_mb() -> float:
    """Make the current resident size the process's peak, where Linux lets us, and return it (MB).

    ru_maxrss cannot serve alone: Linux carries it across exec, so a child spawned by a big parent
    (pytest, a long compare) starts with the parent's peak and a step below it would count as 0."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to VmRSS (Linux >= 4.0)
    except OSError:
        return _peak_rss_mb()  # macOS and friends: the best available is the peak so far
    return _proc_status_mb("VmRSS")


def _peak_rss_mb() -> float:
    if Path("/proc/self/status").is_file():
        return _proc_status_mb("VmHWM")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # "VmHWM:   376084 kB"
    raise RuntimeError(f"/proc/self/status has no {field}")


def bench(
    methods: Sequence[str], model: dict, train_len: int, batch: int, steps: int, device: str = "cpu",
    threads: int | None = None, rounds: int = 2, compile: bool = False, precision: str = "fp32",
) -> list[dict]:
    """Rows per method with ratios to `none` (measured too, whether asked for or not). Speeds are
    measured in one process, methods interleaved for `rounds` rounds, best round kept, so drift in
    the machine's speed hits every method alike. `train_tflops`: model FLOPs (training_flops_per_token)
    per second of training; `mfu`: that over the GPU's bf16 peak, where bf16_peak_tflops knows it.
    `precision`: the CPU's, as TrainConfig.precision ("auto" resolved; CUDA measures bf16 autocast)."""
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    names = ["none", *[m for m in methods if m != "none"]]
    dev = torch.device(device)
    if dev.type == "cpu":
        keep_freed_memory()  # as training does
    nets = {pos: _build(ModelConfig(pos=pos, train_len=train_len, **model), dev, compile) for pos in names}
    if precision not in PRECISIONS:
        raise PosbenchError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    precision = resolve_precision(precision, dev)
    rows = _interleaved_speeds(nets, batch, train_len, steps, rounds, precision)
    flops = training_flops_per_token(nets["none"])
    del nets  # every model freed (loops live in the helper): on CUDA a live one would count in each peak below
    peak = bf16_peak_tflops(dev)
    for row in rows.values():  # the same model FLOPs for every method: its own extra work is its cost
        row["train_tflops"] = flops * row["train_tokens_per_s"] / 1e12
        row["mfu"] = row["train_tflops"] / peak if peak else None
    args = [(pos, model, train_len, batch, device, threads, compile, precision) for pos in names]
    if dev.type == "cpu":
        with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
            memory = pool.starmap(peak_memory, args, chunksize=1)
    else:
        memory = [peak_memory(*a) for a in args]
    base = rows["none"] | {"peak_memory_mb": memory[0]}
    for row, mb in zip(rows.values(), memory, strict=True):
        row["peak_memory_mb"] = mb
        for key, ratio in (("train_tokens_per_s", "train_vs_none"), ("eval_tokens_per_s", "eval_vs_none"),
                           ("peak_memory_mb", "memory_vs_none")):
            row[ratio] = row[key] / base[key] if base[key] > 0 else float("nan")  # a tiny step may add no RSS
    return [rows[pos] for pos in names if pos in methods]


def _interleaved_speeds(nets: dict[str, torch.nn.Module], batch: int, train_len: int, steps: int,
                        rounds: int, precision: str) -> dict[str, dict]:
    """A row per method: parameters and its best training and evaluation tokens/s over `rounds`
    rounds, each round timing every method in turn after one throwaway pass for all."""
    vocab = nets["none"].config.vocab_size
    rows = {pos: {"pos": pos, "params": net.num_params(), "precision": precision, "train_tokens_per_s": 0.0,
                  "eval_tokens_per_s": 0.0} for pos, net in nets.items()}
    shape = dict(batch=batch, train_len=train_len, vocab=vocab, precision=precision)
    for net in nets.values():  # a throwaway pass: first-touch allocations would count against `none`
        train_rate(net.train(), steps=1, warmup=0, **shape)
        eval_rate(net.eval(), steps=1, warmup=0, **shape)
    for _ in range(rounds):
        for pos, net in nets.items():
            row = rows[pos]
            row["train_tokens_per_s"] = max(row["train_tokens_per_s"], train_rate(net.train(), steps=steps, **shape))
            row["eval_tokens_per_s"] = max(row["eval_tokens_per_s"], eval_rate(net.eval(), steps=steps, **shape))
    return rows


def _build(config: ModelConfig, device: torch.device, compile: bool) -> torch.nn.Module:
    net = GPT(config).to(device)
    return torch.compile(net) if compile else net


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

