"""`blend serve --ray`: the same REST API on Ray Serve (pip install 'blend[ray]').

The model runs on Ray as `BlendWorker`: N replicas (`--replicas`, or autoscaled up to `--max-replicas`), each
loading the preset once, with `num_gpus`/`num_cpus` per replica. Image decoding is batched with `@serve.batch`:
every row is its own call with its own seed, so rows of concurrent requests share a batch and each decodes to
the image it gives alone.

The HTTP front is the FastAPI app of `blend serve` (`create_app`: keys, limits, caches, metrics) over a
`RemoteBlender`, which sends every model call to a worker through a DeploymentHandle. Where it runs:
- `--front local` (the default): in the `blend serve` process (uvicorn), a single HTTP server as without Ray.
  Only model replicas run on Ray, and a model replica that dies fails no request (below).
- `--front ray` (and Ray's own `serve run` / config files, `build`): as a deployment, `BlendIngress`, behind
  Ray Serve's HTTP proxy, so the front scales out too. But an ingress replica that dies takes its in-flight
  requests with it: the proxy answers each with a bare 500 (it maps RayActorError to 500 and does not retry;
  `get_http_response_status` in ray/serve/_private/http_util.py), which no code in the replica can change.
  Every answer is fixed by its seed, so a client may send such a request again.

A worker that dies mid-call (killed, out of memory, node lost) fails only the calls it held; the front sends
each of them again (same rows, same seeds, so the same images) to a live replica, up to `retries` times, while
Ray restarts the dead one. If no replica answers in time the client gets 503 with Retry-After, never a bare 500.
`/readyz` is 200 only while a model replica answers (`RemoteBlender.ready`).
"""
from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
import time

from .. import checks, ops
from .batcher import QueueFull, Unavailable

log = logging.getLogger("blend.serve.ray")
APP_NAME = "blend"


# ---------------------------------------------------------------------------------------------- worker side
def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


class Worker:
    """One replica's model: the preset loaded once; one model call at a time (batches are the parallelism)."""

    def __init__(self, preset: str, device: str = "auto", threads: int | None = None):
        import torch

        import blend

        if threads:
            torch.set_num_threads(threads)
        self.blender = blend.load(preset, device=device)
        self.lock = threading.Lock()
        self.largest_batch = 0

    def info(self) -> dict:
        return {"name": self.blender.name, "embed_dim": self.blender.embed_dim, "pid": os.getpid(),
                "largest_batch": self.largest_batch}

    def _run(self, fn, *args, **kw):
        with self.lock:
            return fn(*args, **kw)

    async def encode_texts(self, texts: list[str], raw: bool = False):
        return await asyncio.to_thread(self._run, self.blender.encode_texts, texts, raw=raw)

    async def encode_images(self, images: list):
        return await asyncio.to_thread(self._run, self.blender.encode_images, images)

    async def decode_texts(self, emb):
        return await asyncio.to_thread(self._run, self.blender.decode_texts, emb)

    async def decode_batch(self, rows: list[tuple]) -> list[bytes]:
        """rows: (emb (D,), seed, steps, options) -> PNG bytes each; rows of other sampler settings decode apart."""
        import torch

        def work():
            self.largest_batch = max(self.largest_batch, len(rows))
            out: list[bytes | None] = [None] * len(rows)
            groups: dict[tuple, list[int]] = {}
            for i, (_, _, steps, options) in enumerate(rows):
                groups.setdefault((steps, options), []).append(i)
            for (steps, options), idx in groups.items():
                emb = torch.stack([torch.as_tensor(rows[i][0]) for i in idx])  # (B, D)
                images = self._run(self.blender.decode_images, emb, seed=[rows[i][1] for i in idx], steps=steps,
                                   **dict(options))
                for i, im in zip(idx, images):
                    out[i] = _png(im)
            return out

        return await asyncio.to_thread(work)


def make_worker_class(max_batch: int, batch_wait_s: float):
    """The worker with its `@serve.batch` decode (batch size and wait are fixed when the class is made)."""
    from ray import serve

    class BlendWorker(Worker):
        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=batch_wait_s)
        async def decode_row(self, rows: list[tuple]) -> list[bytes]:
            return await self.decode_batch(rows)

    return BlendWorker


# ---------------------------------------------------------------------------------------------- ingress side
def _retryable():
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import ReplicaUnavailableError

    return (RayActorError, ReplicaUnavailableError)


class RemoteBlender:
    """What `Engine` needs of a Blender, with every model call sent to a `BlendWorker` replica.

    A call whose replica died is sent again (another replica, or the restarted one) up to `retries` times;
    then `Unavailable` (503 with Retry-After). Back-pressure from Ray (the workers' queues are full) is
    `QueueFull` (429 with Retry-After).
    """

    batches_rows = True  # Engine hands rows straight here: batching happens on the workers (@serve.batch)

    def __init__(self, handle, preset: dict, embed_dim: int, retries: int = 3, timeout_s: float = 120.0,
                 backoff_s: float = 0.5, ready_timeout_s: float = 2.0):
        self.handle, self.preset, self.name, self.embed_dim = handle, preset, preset["name"], int(embed_dim)
        self.retries, self.timeout_s, self.backoff_s = retries, timeout_s, backoff_s
        self.ready_timeout_s = ready_timeout_s
        self.last_answer = float("-inf")  # time.monotonic() of the last call a model replica answered
        self.metrics = None  # the app's Metrics, once it is built: retries are counted there

    def ready(self) -> tuple[bool, str]:
        """Whether a model replica answers: one answered a call in the last `ready_timeout_s`, or answers a
        cheap `info` call within it. Returns (ready, why not). Blocking, at most about `ready_timeout_s`.

        A busy replica takes the probe after the rows queued before it; any of those answered meanwhile counts,
        so a saturated but working deployment stays ready.
        """
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        start = time.monotonic()
        if start - self.last_answer < self.ready_timeout_s:
            return True, ""
        deadline = start + self.ready_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            response = None
            try:
                response = self.handle.info.remote()
                response.result(timeout_s=left)
                self.last_answer = time.monotonic()
                return True, ""
            except TimeoutError:
                if response is not None:
                    response.cancel()
                break
            except BackPressureError:
                return False, "the model replicas are at their queue limit"
            except DeploymentUnavailableError:
                return False, "the model deployment is unavailable"
            except _retryable():  # the router still knew a dead replica: ask again while time is left
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            except Exception as e:  # a readiness probe answers, whatever the replica did
                log.warning("readiness call failed: %s", type(e).__name__)
                return False, "the model replicas answered with an error"
        if self.last_answer >= start:
            return True, ""
        return False, f"no model replica answered within {self.ready_timeout_s:g} s"

    def check_embeddings(self, emb, name: str = "embeddings"):
        return ops.normalize(checks.embeddings(emb, name, dim=self.embed_dim))

    def _call(self, method: str, *args, **kw):
        """One remote call, sent again while replicas die; blocking (run it in a thread, not on an event loop)."""
        from ray.exceptions import RayTaskError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        deadline = time.monotonic() + self.timeout_s
        for attempt in range(self.retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            response = getattr(self.handle, method).remote(*args, **kw)
            try:
                out = response.result(timeout_s=left)
                self.last_answer = time.monotonic()
                return out
            except TimeoutError:  # nobody waits for it any more: the replica is told to drop it
                response.cancel()
                raise Unavailable(f"the model replicas did not answer within {self.timeout_s:g} s; "
                                  f"retry shortly") from None
            except RayTaskError as e:  # the worker raised: a bad input stays a ValueError with its own message
                self.last_answer = time.monotonic()
                raise (e.cause if isinstance(e.cause, Exception) else RuntimeError(type(e).__name__)) from None
            except BackPressureError as e:
                raise QueueFull(f"the model replicas are at their queue limit ({e.message})") from e
            except DeploymentUnavailableError as e:
                raise Unavailable("no model replica is running; retry shortly") from e
            except _retryable() as e:
                if self.metrics is not None:
                    self.metrics.retries.inc()
                log.warning("%s: replica lost (%s); sending again (%d/%d)", method, type(e).__name__,
                            attempt + 1, self.retries)
                time.sleep(min(self.backoff_s * 2 ** attempt, max(0.0, deadline - time.monotonic())))
        raise Unavailable(f"the model replicas did not answer after {self.retries} retries; retry shortly")

    def encode_texts(self, texts, raw: bool = False):
        return self._call("encode_texts", list(texts), raw)

    def encode_images(self, images):
        return self._call("encode_images", list(images))

    def decode_texts(self, emb) -> list[str]:
        return self._call("decode_texts", self.check_embeddings(emb))

    def decode_images(self, emb, seed=0, steps: int | None = None, **options) -> list:
        from concurrent.futures import ThreadPoolExecutor

        from PIL import Image

        emb = self.check_embeddings(emb)  # (N, D)
        seeds = checks.seeds(seed, emb.shape[0])
        seeds = seeds if isinstance(seeds, list) else [seeds] * emb.shape[0]
        opts = tuple(sorted(options.items()))
        rows = [(emb[i].clone(), s, steps, opts) for i, s in enumerate(seeds)]
        with ThreadPoolExecutor(max_workers=min(len(rows), 16)) as pool:  # every row in flight at once
            pngs = list(pool.map(lambda r: self._call("decode_row", r), rows))
        return [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]


def front_app(worker, preset: str, embed_dim: int | None = None, retries: int = 3, config=None):
    """The REST API of `blend serve` over the model replicas behind `worker` (a DeploymentHandle); embed_dim
    None: asked of a replica (blocking: not on an event loop)."""
    from ..presets import get_preset
    from .api import create_app
    from .config import ServeConfig

    cfg = config or ServeConfig.from_env()
    if embed_dim is None:
        embed_dim = worker.info.remote().result(timeout_s=cfg.request_timeout_s)["embed_dim"]
    blender = RemoteBlender(worker, get_preset(preset), embed_dim, retries=retries, timeout_s=cfg.request_timeout_s)
    app = create_app(blender, None, cfg)
    blender.metrics = app.state.metrics
    return app


def make_ingress_class():
    from ray import serve

    @serve.ingress()
    class BlendIngress:
        async def __init__(self, worker, preset: str, retries: int = 3):
            self.worker, self.preset, self.retries = worker, preset, retries
            self.embed_dim = (await worker.info.remote())["embed_dim"]

        def __serve_build_asgi_app__(self):
            return front_app(self.worker, self.preset, self.embed_dim, self.retries)

    return BlendIngress


# ---------------------------------------------------------------------------------------------- deploying
def application(preset: str = "shapes-mini", replicas: int = 1, max_replicas: int | None = None,
                num_gpus: float = 0.0, num_cpus: float = 1.0, ingress_replicas: int = 1, device: str = "auto",
                retries: int = 3, config=None, front: str = "ray"):
    """The Ray Serve application (bind it with `serve.run`): the model replicas, and with front="ray" the HTTP
    app as a deployment too (front="local": the model replicas alone, for a `front_app` in this process)."""
    from ray import serve

    from .config import ServeConfig

    cfg = config or ServeConfig.from_env()
    replicas = checks.whole(replicas, "replicas", 1, 1024)
    scaling = {"num_replicas": replicas}
    if max_replicas is not None:
        max_replicas = checks.whole(max_replicas, "max_replicas", replicas, 1024)
        # Ray scales between the two bounds to keep ~max_batch rows waiting or running on each replica
        scaling = {"autoscaling_config": {"min_replicas": replicas, "max_replicas": max_replicas,
                                          "target_ongoing_requests": cfg.max_batch,
                                          "upscale_delay_s": 10, "downscale_delay_s": 120}}
    worker = serve.deployment(
        make_worker_class(cfg.max_batch, cfg.batch_wait_ms / 1000), name="BlendWorker",
        # every row is a call: let a replica hold two batches, and queue up to the decode-queue limit
        max_ongoing_requests=2 * cfg.max_batch, max_queued_requests=cfg.max_queue,
        health_check_period_s=5, health_check_timeout_s=30,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus}, **scaling,
    ).bind(preset, device, max(1, int(num_cpus)) if not num_gpus else None)
    if front == "local":
        return worker
    if front != "ray":
        raise ValueError(f"front must be 'ray' or 'local', got {front!r}")
    ingress_replicas = checks.whole(ingress_replicas, "ingress_replicas", 1, 1024)
    ingress = serve.deployment(make_ingress_class(), name="BlendIngress", num_replicas=ingress_replicas,
                               max_ongoing_requests=4 * cfg.max_queue,
                               ray_actor_options={"num_cpus": 0})  # thin: never kept off a full node
    return ingress.bind(worker, preset, retries)


def build(args: dict):
    """For a Ray Serve config file or `serve run`: `import_path: blend.serve.ray_app:build`, `args` as in
    `application` (`serve run blend.serve.ray_app:build replicas=2` passes strings: numbers are read here)."""
    kinds = {"replicas": int, "max_replicas": int, "ingress_replicas": int, "retries": int, "num_gpus": float,
             "num_cpus": float}
    unknown = set(args) - set(kinds) - {"preset", "device", "front"}
    if unknown:
        raise ValueError(f"args: unknown {sorted(unknown)}; known: {sorted(kinds) + ['device', 'front', 'preset']}")
    values = dict(args)
    for k, v in args.items():
        if k in kinds and isinstance(v, str):
            try:
                values[k] = kinds[k](v)
            except ValueError:
                raise ValueError(f"args.{k} must be a number, got {v!r}") from None
    return application(**values)


def serve_ray(preset: str = "shapes-mini", host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
              num_gpus: float = 0.0, num_cpus: float = 1.0, max_replicas: int | None = None,
              ingress_replicas: int = 1, front: str = "local", address: str | None = None,
              device: str = "auto") -> None:
    """Start (or join, with `address`) a Ray cluster and deploy. front="local": this process serves the API
    (uvicorn) and only the model replicas run on Ray, so any Ray replica may die without failing a request;
    front="ray": Serve's HTTP proxy on host:port in front of `ingress_replicas` replicas of the API, whose
    in-flight requests get the proxy's bare 500 when one dies (see the module docstring). `device`: where each
    model replica loads its preset ("auto": a GPU when the replica was given one with `num_gpus`)."""
    import ray
    from ray import serve

    from .config import ServeConfig
    from .run import warn_if_open

    if front == "local" and ingress_replicas != 1:
        raise ValueError("ingress_replicas: the API runs in this process with front='local'; use front='ray'")
    cfg = ServeConfig.from_env()
    warn_if_open(host, cfg)
    env = {k: v for k, v in os.environ.items() if k.startswith("BLEND_") or k == "PYTHONPATH"}
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, runtime_env={"env_vars": env},
                 **({} if address else {"object_store_memory": 100 * 2**20}))
    app = application(preset, replicas, max_replicas, num_gpus, num_cpus, ingress_replicas, device=device,
                      front=front, config=cfg)
    if front == "ray":
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=True)
        return
    import uvicorn

    serve.start(http_options={"location": "NoServer"})
    worker = serve.run(app, name=APP_NAME, route_prefix=None)
    api = front_app(worker, preset, config=cfg)
    uvicorn.run(api, host=host, port=port, timeout_graceful_shutdown=10)
