"""Load test of `blend serve`: C concurrent clients x R decode-heavy requests against one-at-a-time, same run.

    python benchmarks/load.py                      # 50 clients x 4 /v1/mix requests on shapes-mini
    python benchmarks/load.py --soak 600           # then keep the load on for 10 minutes, sampling server memory
                                                   # (on an idle machine: the issue's "memory flat" figure)

Starts the server as a subprocess (REST API only, `blend serve` defaults: the model in a child process), prints
throughput, p50/p95 latency, lost or failed requests, the CPU time each process spent per request (read from
/proc: where the cores go), the resident memory of the server and its model process
over the soak, and the machine's matmul peak beside the timings. Request i is an example image with one word
swapped (17 images x 8 swaps, each its own point and seed); `--same` sends the one README recipe every time.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from blend.machine import matmul_peak_gflops as matmul_gflops  # noqa: E402  (ray_fault.py imports it from here)


TICK = os.sysconf("SC_CLK_TCK")


def cpu_parts(pid: int) -> tuple[float, float, float]:
    """CPU seconds (user + system) so far of this process (the clients), the server and its model process."""
    def cpu(p):
        f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK
    return cpu(os.getpid()), cpu(pid), sum(cpu(k) for k in children(pid))


def cpu_line(before, after, n: int, wall: float) -> str:
    ms = [1000 * (b - a) / n for a, b in zip(before, after)]
    return (f"  CPU per request: model process {ms[2]:.1f} ms, server {ms[1]:.1f} ms, clients {ms[0]:.1f} ms; "
            f"cores busy {sum(ms) * n / 1000 / wall:.2f} of {os.cpu_count()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """The child processes of `pid` (of all its threads), from /proc."""
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def rss_parts(pid: int) -> tuple[float, float]:
    """Resident memory, in MB, of the server process and of its child processes (the model process)."""
    own, children, todo = 0.0, 0.0, [(pid, True)]
    while todo:
        p, top = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    mb = int(line.split()[1]) / 1024
                    own, children = (own + mb, children) if top else (own, children + mb)
            todo += [(c, False) for c in children(p)]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return own, children


EXAMPLES = sorted(p.name for p in (Path(__file__).resolve().parent.parent / "examples").glob("*.png"))
SWAPS = [("square", "circle"), ("star", "triangle"), ("red", "blue"), ("large", "small"), ("on the left", "on the right"),
         ("lit from above", "lit from below"), ("on a white background", "on a black background"), ("circle", "star")]
SAME = False  # --same: every request the one recipe of the README (red circle - circle + square), seeds apart


def body(i: int) -> dict:
    """Request i: an example image with one word swapped, a different point for each of the first 128 requests
    (so that no cache answers for the model), and its own seed."""
    image, (new, old) = ("red-circle-on-blue.png", SWAPS[0]) if SAME else (
        EXAMPLES[i % len(EXAMPLES)], SWAPS[(i // len(EXAMPLES)) % len(SWAPS)])
    return {"terms": [{"kind": "image", "value": image},
                      {"kind": "text", "value": new, "weight": 1.0},
                      {"kind": "text", "value": old, "weight": -1.0}], "seed": i}


async def one(client, url, i, lat, failures):
    t = time.perf_counter()
    try:
        r = await client.post(url + "/v1/mix", json=body(i))
        if r.status_code != 200 or not r.json().get("images"):
            failures.append(r.status_code)
    except Exception as e:  # noqa: BLE001 - counted as lost
        failures.append(type(e).__name__)
    lat.append(time.perf_counter() - t)


async def sequential(url, n):
    lat, failures = [], []
    async with httpx.AsyncClient(timeout=600) as c:
        t = time.perf_counter()
        for i in range(n):
            await one(c, url, i, lat, failures)
        return n / (time.perf_counter() - t), lat, failures


async def concurrent(url, clients, per_client, offset=0):
    lat, failures = [], []
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as c:
        async def client(k):
            for j in range(per_client):
                await one(c, url, offset + k * per_client + j, lat, failures)
        t = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        return clients * per_client / (time.perf_counter() - t), lat, failures


def slope(ts, xs) -> float:
    """Least-squares slope of xs over ts (MB per minute when ts are minutes)."""
    mt, mx = statistics.mean(ts), statistics.mean(xs)
    var = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (x - mx) for t, x in zip(ts, xs)) / var if var else 0.0


def soak(url, pid, clients, seconds):
    """Rounds of `clients` concurrent requests for `seconds`, sampling the resident memory of the server
    process and of its model process after each round; prints a line a minute and the trend of each part
    (its least-squares slope over the second half: "flat" is a slope near zero there, after the warm-up rise)."""
    t0, rounds, failed = time.perf_counter(), 0, 0
    ts, parts = [0.0], [rss_parts(pid)]
    print(f"soak start: server {parts[0][0]:.0f} MB, model process {parts[0][1]:.0f} MB", flush=True)
    next_line = 60.0
    while time.perf_counter() - t0 < seconds:
        _, _, f = asyncio.run(concurrent(url, clients, 1, offset=10_000 + rounds * clients))
        rounds += 1
        failed += len(f)
        ts.append(time.perf_counter() - t0)
        parts.append(rss_parts(pid))
        if f:
            print(f"soak round {rounds}: {len(f)} failed {f[:5]}", flush=True)
        if ts[-1] >= next_line:
            print(f"  {ts[-1]:4.0f} s  {rounds * clients:6d} requests  server {parts[-1][0]:.0f} MB  "
                  f"model process {parts[-1][1]:.0f} MB", flush=True)
            next_line += 60.0
    minutes = [t / 60 for t in ts]
    total = [sum(p) for p in parts]
    print(f"soak end: {ts[-1]:.0f} s, {rounds * clients} more requests ({failed} failed or lost); "
          f"server + model process {total[0]:.0f} -> {total[-1]:.0f} MB (min {min(total):.0f}, max {max(total):.0f})")
    half = len(ts) // 2
    for i, who in enumerate(("server process", "model process", "both")):
        xs = total if i == 2 else [p[i] for p in parts]
        print(f"  {who:14s} {xs[0]:6.0f} -> {xs[-1]:6.0f} MB; half means {statistics.mean(xs[:half or 1]):.0f}/"
              f"{statistics.mean(xs[half:]):.0f}; trend over the second half {slope(minutes[half:], xs[half:]):+.2f}"
              f" MB/min (whole soak {slope(minutes, xs):+.2f})")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="shapes-mini")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=4, help="per client")
    p.add_argument("--sequential", type=int, default=40, help="one-at-a-time requests for the baseline")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--soak", type=float, default=0, help="seconds of continued load, sampling server memory")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--server-log", help="write the server's log here")
    p.add_argument("--same", action="store_true", help="every request the same recipe (only seeds differ)")
    a = p.parse_args(argv)
    global SAME
    SAME = a.same
    torch.set_num_threads(a.threads)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "BLEND_HOME": os.environ.get("BLEND_HOME", "/tmp/blend-load")}
    server = subprocess.Popen([sys.executable, "-m", "blend.cli", "serve", "--no-ui", "--preset", a.preset,
                               "--port", str(port), "--device", "cpu", "--max-batch", str(a.max_batch),
                               "--max-queue", "1024"], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(a.server_log, "w") if a.server_log else subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        asyncio.run(sequential(url, 2))  # warm up
        print(f"machine: {os.cpu_count()} CPU cores, torch {torch.get_num_threads()} threads, "
              f"matmul peak {matmul_gflops():.1f} GFLOP/s (1024^2 fp32)")
        c0 = cpu_parts(server.pid)
        seq, lat1, f1 = asyncio.run(sequential(url, a.sequential))
        c1 = cpu_parts(server.pid)
        print(f"one at a time: {seq:.2f} req/s  p50 {pct(lat1, .5):.2f} s  p95 {pct(lat1, .95):.2f} s  failed {len(f1)}")
        print(cpu_line(c0, c1, a.sequential, a.sequential / seq))
        thr, lat, f = asyncio.run(concurrent(url, a.clients, a.requests))
        n = a.clients * a.requests
        c2 = cpu_parts(server.pid)
        print(f"{a.clients} clients x {a.requests}: {thr:.2f} req/s ({thr / seq:.1f}x one at a time)  "
              f"p50 {pct(lat, .5):.2f} s  p95 {pct(lat, .95):.2f} s  answered {len(lat)}/{n}  failed {len(f)}")
        print(cpu_line(c1, c2, n, n / thr), flush=True)
        if a.soak:  # run it on an idle machine: other jobs' load changes the request rate, and so the memory
            soak(url, server.pid, a.clients, a.soak)
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
