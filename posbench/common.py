"""The bottom of the house: names every layer shares (splits, where files go), the device and
process-group set-up, and the process's malloc setting for CPU training. Imports nothing of posbench
but its errors."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import PosbenchError

SPLITS = ("train", "valid", "test")  # every corpus is cut into these
HELD_OUT = ("valid", "test")  # the splits a run is evaluated and probed on
RUNS_ROOT = Path("runs")  # where `posbench train` puts a run without --out
DEVICE = "auto"  # every command's --device default: CUDA when there is one (resolve_device)


def cache_dir() -> Path:
    """Token caches and fetched corpora: $POSBENCH_CACHE, else ~/.cache/posbench."""
    return Path(os.environ.get("POSBENCH_CACHE") or "~/.cache/posbench").expanduser()


def data_dir() -> Path:
    """Where fetched corpora are unpacked: $POSBENCH_DATA, else <cache_dir()>/corpora."""
    return Path(os.environ.get("POSBENCH_DATA") or cache_dir() / "corpora").expanduser()


def check_split(split: str) -> str:
    if split not in HELD_OUT:
        raise PosbenchError(f"--split must be valid or test, got '{split}'")
    return split


# glibc mallopt parameters (malloc.h) and the values keep_freed_memory sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_ON_TOP = 2**31 - 1  # free memory kept at the top of the heap before trimming (bytes, C int max)
MAP_ABOVE = 2**30  # only blocks over 1 GiB get a mapping of their own


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a CPU training step frees, for the next step to reuse. Every
    step allocates and frees the same activation buffers; by default glibc hands blocks over its
    (at most 32 MiB) threshold to mmap and trims the heap, so each step faults its pages in afresh:
    ~80k page faults a step at d = 256, L = 256, batch 16, ~10% of the step on 2 threads (5 paired
    runs of fresh processes, all faster). The cost: the process's memory stays at its peak. True where
    it took effect; a no-op (False) where malloc is not glibc's."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if sys.platform.startswith("linux") else None
    if mallopt is None:
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, KEEP_ON_TOP)) and bool(mallopt(M_MMAP_THRESHOLD, MAP_ABOVE))


PRECISIONS = ("fp32", "bf16", "auto")


def cpu_has_fast_bf16() -> bool:
    """True on a CPU with bf16 matrix instructions (x86 AVX512-BF16 or AMX; /proc/cpuinfo's flags),
    where autocast to bf16 speeds training up; False elsewhere (emulated bf16 is slower than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str, device: torch.device) -> str:
    """The CPU precision a run records: fp32 or bf16 as asked, "auto" -> bf16 where cpu_has_fast_bf16(),
    else fp32. On CUDA the setting is kept as given and training is bf16 autocast whatever it says,
    as before the option existed (so GPU runs written before it resume and are reused). The value is
    checked by TrainConfig.validate."""
    if precision == "auto" and device.type != "cuda":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (always) and on the CPU for precision "bf16"; weights, optimizer state
    and the loss stay fp32, and on the CPU the attention too (model/gpt.py, Attention.forward)."""
    if device.type == "cuda" or precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when there is one), 'cpu' or 'cuda[:N]' -> a torch device, or a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PosbenchError("--device cuda was asked for, but this torch sees no CUDA device (use --device cpu)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise PosbenchError(f"--device must be auto, cpu or cuda, got '{name}'")
    return torch.device(name)


def fused_optimizer(model: torch.nn.Module) -> bool:
    """AdamW's fused kernel on CUDA: one pass over parameters, gradients and moments. The default
    (foreach) update took ~7 of the paper-shape model's 34 ms per training step on an H200 (a profile of
    2026-11-27). The CPU keeps the default, which its exact-resume and speed figures were taken with."""
    return next(model.parameters()).device.type == "cuda"


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); sets up torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if device.type == "cuda":  # before NCCL starts: its communicator binds to the current device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world


def shutdown_distributed() -> None:
    """Destroy the process group, if one was set up: a gloo group left to the interpreter's exit can
    abort the process ("terminate called without an active exception"), and the rank reads as failed."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def rank0_first(rank: int, world: int):
    """Rank 0 runs the block first (e.g. tokenises into the cache); the others then run it."""
    if world > 1 and rank != 0:
        dist.barrier()
    yield
    if world > 1 and rank == 0:
        dist.barrier()


def average_across_ranks(loss: torch.Tensor, elapsed: float, world: int) -> tuple[torch.Tensor, float]:
    """The global batch's loss, and one clock for all ranks, in a single all-reduce (gloo has no AVG).

    Each rank times its own steps; under --minutes a rank that kept its own clock would pick another
    learning rate and stop at another step than the rest, and the others would wait for it forever.
    """
    both = loss.new_tensor([loss.item(), elapsed], dtype=torch.float64)  # float64: the clock runs for hours
    dist.all_reduce(both)
    both /= world
    return both[0], both[1].item()
