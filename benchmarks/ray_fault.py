"""Kill one Ray Serve replica of `blend serve --ray` under load and count what happened to each request.

    python benchmarks/ray_fault.py                      # as `blend serve --ray`: the API in this process
                                                        # (uvicorn), 2 CPU model replicas; kill one (BlendWorker)
    python benchmarks/ray_fault.py --front ray          # the API as a Ray deployment behind Serve's proxy
    python benchmarks/ray_fault.py --front ray --kill ingress   # kill the API's replica (BlendIngress) instead

Starts a local Ray cluster (no dashboard, a 100 MB object store), deploys the app, sends --requests one-row
/v1/decode requests, --concurrency at a time, kills one replica of the chosen deployment when the first answer
arrives, and prints the status codes (or connection errors), the model calls the ingress sent again, and how
long Serve took to bring the replica count back.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def replicas(kind: str) -> list[str]:
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if kind in a["name"]]


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="shapes-mini")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--kill", choices=["worker", "ingress"], default="worker")
    p.add_argument("--front", choices=["local", "ray"], default="local")
    a = p.parse_args(argv)
    if a.front == "local" and a.kill == "ingress":
        p.error("--front local has no ingress replica: the API runs in this process")

    import httpx
    import ray
    from ray import serve

    sys.path.insert(0, str(ROOT))
    from blend.serve.ray_app import APP_NAME, application, front_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=a.replicas + 2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}})
    try:
        app = application(a.preset, replicas=a.replicas, num_cpus=1, front=a.front)
        if a.front == "ray":
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(app, name=APP_NAME, route_prefix="/")
        else:
            import threading

            import uvicorn

            serve.start(http_options={"location": "NoServer"})
            worker = serve.run(app, name=APP_NAME, route_prefix=None)
            api = front_app(worker, a.preset)
            server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
            threading.Thread(target=server.run, daemon=True).start()
            while not server.started:
                time.sleep(0.1)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300)
        emb = client.post("/v1/mix", json={"terms": [{"kind": "text", "value": "a large red circle"}]}).json()["embedding"]

        def decode(seed):
            try:
                return client.post("/v1/decode", json={"embeddings": [emb], "seed": seed}).status_code
            except httpx.HTTPError as e:
                return type(e).__name__

        def retried() -> float:
            try:
                text = client.get("/metrics").text
            except httpx.HTTPError:
                return float("nan")
            return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith("blend_replica_retries_total"))

        kind = {"worker": "BlendWorker", "ingress": "BlendIngress"}[a.kill]
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from load import matmul_gflops
        print(f"machine: {os.cpu_count()} CPU cores, matmul peak {matmul_gflops():.1f} GFLOP/s (1024^2 fp32); "
              f"front {a.front}, {a.replicas} model replicas of 1 CPU")
        before, n_before = retried(), len(replicas(kind))
        with ThreadPoolExecutor(a.concurrency) as pool:
            futures = [pool.submit(decode, s) for s in range(a.requests)]
            next(as_completed(futures))
            ray.kill(ray.get_actor(replicas(kind)[0], namespace="serve"), no_restart=True)
            killed = time.monotonic()
            got = Counter(f.result() for f in futures)
        print(f"killed one {kind} replica of {n_before} under load ({a.requests} requests, {a.concurrency} at a time): "
              f"{dict(got)}; model calls sent again: {retried() - before:g} (a new ingress counts from 0)")
        while len(replicas(kind)) < n_before:
            time.sleep(0.5)
        print(f"{kind} replicas back to {n_before} {time.monotonic() - killed:.0f} s after the kill; "
              f"then {dict(Counter(decode(s) for s in range(4)))}")
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
