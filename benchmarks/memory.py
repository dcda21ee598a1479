"""Where the service's memory goes: the REST app in one process, Python's heap traced across many /v1/mix requests.

    python benchmarks/memory.py [--warm 200] [--n 800] [--top 5]

`benchmarks/load.py --soak` sees the resident memory of the server and its model process from outside; this
runs the same requests (load.py's `body(i)`: example images with one word swapped, each its own seed) through
the app in this process (the model in-process too, FastAPI's TestClient, no sockets), and after `--warm`
requests compares two `tracemalloc` snapshots taken `--n` requests apart. What Python objects the requests
leave behind shows as the snapshot difference, by where they were allocated; growth of the resident memory
that the heap does not show is the native allocators' (torch, PIL, glibc's arenas).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from blend.machine import matmul_peak_gflops  # noqa: E402
from load import body, rss_parts  # noqa: E402


def rss_mb() -> float:
    """This process's resident memory in MB (the app and its model run in it: no child processes)."""
    return rss_parts(os.getpid())[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="shapes-mini")
    p.add_argument("--warm", type=int, default=200, help="requests before the first snapshot")
    p.add_argument("--n", type=int, default=800, help="requests between the snapshots")
    p.add_argument("--top", type=int, default=5, help="allocation sites to show")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    import blend
    from fastapi.testclient import TestClient

    from blend.serve.api import create_app
    from blend.serve.config import ServeConfig

    print(f"machine: {os.cpu_count()} CPU cores, torch {a.threads} threads, matmul peak {matmul_peak_gflops():.1f} "
          f"GFLOP/s (1024^2 fp32)")
    app = create_app(blend.load(a.preset, device="cpu"), config=ServeConfig(), home=tempfile.mkdtemp("-blend-memory"))
    with TestClient(app) as client:
        for i in range(a.warm):
            client.post("/v1/mix", json=body(i))
        gc.collect()
        tracemalloc.start(10)
        before, rss0, t = tracemalloc.take_snapshot(), rss_mb(), time.perf_counter()
        for i in range(a.warm, a.warm + a.n):
            r = client.post("/v1/mix", json=body(i))
            if r.status_code != 200:
                raise SystemExit(f"request {i} answered {r.status_code}: {r.text[:200]}")
        gc.collect()
        after, rss1, wall = tracemalloc.take_snapshot(), rss_mb(), time.perf_counter() - t
    diff = after.compare_to(before, "traceback")
    grown = sum(d.size_diff for d in diff)
    print(f"{a.n} requests after {a.warm} ({wall:.0f} s, {a.n / wall:.1f} req/s in one process): resident memory "
          f"{rss0:.1f} -> {rss1:.1f} MB ({rss1 - rss0:+.1f}); Python heap {grown / 1024:+.1f} KiB "
          f"({grown / a.n:+.0f} bytes per request)")
    for d in diff[:a.top]:
        frame = next((f for f in reversed(d.traceback) if "/blend/" in f.filename), d.traceback[-1])
        print(f"  {d.size_diff / 1024:+8.1f} KiB {d.count_diff:+6d} blocks  {frame.filename}:{frame.lineno}")


if __name__ == "__main__":
    main()
