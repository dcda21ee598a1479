"""`blend serve --ray`: the same FastAPI app as N Ray Serve replicas (pip install 'blend[ray]').

Each replica loads the preset once and batches its own decode work with the same DecodeBatcher as
`blend serve`; Ray Serve spreads requests over replicas and restarts a replica that dies.
Not yet covered by a test in this repository (see the README).
"""
from __future__ import annotations

import os


def build_app():
    """Runs on each replica: load the preset named by BLEND_PRESET and build the REST API."""
    import blend

    from .api import create_app

    return create_app(blend.load(os.environ.get("BLEND_PRESET", "shapes-mini"), device="auto"))


def deployment(replicas: int = 1, num_gpus: float = 0.0, num_cpus: float = 1.0):
    from ray import serve

    @serve.deployment(num_replicas=replicas, max_ongoing_requests=64,
                      ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus})
    @serve.ingress(build_app)
    class Blend:
        pass

    return Blend.bind()


def serve_ray(preset: str = "shapes-mini", host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
              num_gpus: float = 0.0) -> None:
    import ray
    from ray import serve

    from .run import warn_if_open
    from .config import ServeConfig

    warn_if_open(host, ServeConfig.from_env())
    ray.init(runtime_env={"env_vars": {"BLEND_PRESET": preset, **{k: v for k, v in os.environ.items()
                                                                   if k.startswith("BLEND_")}}})
    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(replicas, num_gpus), blocking=True)
