"""The machine under a GPU measurement: torch and CUDA versions, the device, and the two ceilings
measured once (a large bf16 matrix product on random data, a device-to-device copy), the rates the
model's MFU and memory traffic are read against. Part of benchmarks/gpu_check.sh.

    python benchmarks/gpu_info.py [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch


def timed(fn, device: torch.device, repeats: int = 10) -> float:
    """Median seconds of fn() over `repeats` runs after three warm-ups (synchronised host clock)."""
    times = []
    for i in range(3 + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    device = torch.device(parser.parse_args().device)
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        print(f"{props.name}: {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB")
    n = 8192 if device.type == "cuda" else 512
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    seconds = timed(lambda: a @ b, device)
    print(f"{dtype} matmul {n}^3 on random data: {2 * n**3 / seconds / 1e12:.1f} TFLOP/s")
    x = torch.randn(2**28 if device.type == "cuda" else 2**22, device=device)
    y = torch.empty_like(x)
    seconds = timed(lambda: y.copy_(x), device)
    print(f"copy of {x.numel() * 4 / 2**30:.1f} GiB: {2 * x.numel() * 4 / seconds / 1e12:.2f} TB/s (read + written)")


if __name__ == "__main__":
    main()
