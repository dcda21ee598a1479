"""Facts about the machine that every benchmark prints beside its timings, so figures compare across machines."""
from __future__ import annotations

import os
import platform
import time

import torch


def matmul_peak_gflops(n: int = 1024, repeats: int = 10) -> float:
    """Best-of fp32 (n x n) @ (n x n) on this machine's CPU with torch's current thread count, in GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def describe() -> str:
    """One line: CPU count, torch threads, fp32 matmul peak."""
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, fp32 matmul peak {matmul_peak_gflops():.1f} GFLOP/s (1024^2)")
