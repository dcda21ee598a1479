"""The REST API: FastAPI routes over an Engine, with keys, limits, metrics and error ids."""
from __future__ import annotations

import base64
import io
import logging
import os
import re
import tempfile
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np
import torch
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import checks, store, tempfiles
from ..directions import DirectionLibrary, blend_home, default_directions
from ..images import DATA_URI, png_bytes
from ..recipe import Recipe, Term, image_to_data_uri, run_recipe
from . import auth, native
from .batcher import QueueFull, Unavailable
from .config import ServeConfig
from .engine import Engine
from .metrics import Metrics
from .schemas import (DecodeIn, DirectionIn, DirectionOut, DirectionsOut, EncodeIn, EncodeOut, Error, Images,
                      MixIn, MixOut, PathIn, PlaneIn, PresetsOut, RenameIn, TermIn)

log = logging.getLogger("blend.serve")
ERRORS = {code: {"model": Error} for code in (400, 401, 404, 413, 429, 500, 503)}


def _scrub(message: str) -> str:
    """No server paths reach a client: absolute paths under known folders become their last part."""
    for root in {str(Path.home()), str(blend_home()), tempfile.gettempdir(), str(Path(__file__).parents[2]),
                 os.getcwd()}:
        if root and root != "/":
            message = message.replace(root, "…")
    return re.sub(r"(/[\w.-]+){2,}", lambda m: "…/" + m.group(0).rsplit("/", 1)[-1], message)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    eid = uuid.uuid4().hex[:12]
    return JSONResponse({"error": _scrub(message), "error_id": eid}, status, headers=headers)


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is answered 413 before it is read whole."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _error(413, f"request body larger than {self.limit} bytes")(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _error(413, f"request body larger than {self.limit} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


class Gate:
    """ASGI middleware in front of the routes: the caller's user (API key) or session on /v1, 401 for a wrong
    key, the X-Session-Id header for a new session, and request metrics. Plain ASGI rather than
    `@app.middleware("http")`, whose per-request wrapping cost more than a shapes-mini decode."""

    def __init__(self, app, keys: dict, metrics: Metrics, ui: bool):
        self.app, self.keys, self.metrics, self.ui = app, keys, metrics, ui

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]
        state = scope.setdefault("state", {})
        state["user"], session = None, None
        if scope["path"].startswith("/v1"):
            headers = Headers(scope=scope)
            if self.keys:
                user = auth.user_for_key(self.keys, auth.presented_key(headers))
                if user is None:
                    self._count(scope, 401, start)
                    return await _error(401, "missing or wrong API key: send Authorization: Bearer KEY",
                                        {"WWW-Authenticate": "Bearer"})(scope, receive, send)
                state["user"] = "user:" + user
            else:
                sid, new = auth.session_for(headers)
                state["user"], state["session"] = "session:" + sid, sid
                session = sid if new else None

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                if session is not None:
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"x-session-id", session.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._count(scope, status[0], start)

    def _count(self, scope, status: int, start: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or ("/ui" if self.ui else "other")
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


def _png_uri(im) -> str:
    if isinstance(im, Image.Image) and im.mode == "RGB" and max(im.size) <= 4096:  # a decoded picture: as it is
        return DATA_URI + base64.b64encode(png_bytes(im)).decode("ascii")
    return image_to_data_uri(im, max_side=4096)


def _rows(t) -> list[list[float]]:
    """(..., D) -> rows of floats rounded to 6 places (numpy's rounding: Python's, a row at a time, cost more
    than a shapes-mini decode)."""
    return np.round(t.detach().reshape(-1, t.shape[-1]).double().cpu().numpy(), 6).tolist()


def create_app(blender, demo=None, config: ServeConfig | None = None, home: str | Path | None = None,
               ui_options: dict | None = None) -> FastAPI:
    """One app: the REST API under /v1, /healthz, /readyz, /metrics, and (when given) the Gradio UI at /.

    Args:
        blender: a loaded `Blender`.
        demo: a `gr.Blocks` to mount at / (None: API only).
        config: limits and knobs (default: `ServeConfig.from_env()`).
        home: where per-user data lives (default: BLEND_HOME).
        ui_options: passed to `gr.mount_gradio_app` (theme, css, max_file_size, ...).
    """
    cfg = config or ServeConfig.from_env()
    home = Path(home or blend_home())
    keys = auth.load_keys(cfg.keys, cfg.keys_file)
    metrics = Metrics(cfg.max_batch)
    native.cap_arenas(cfg.malloc_arenas)  # before the batcher's and the thread pool's threads start
    trimmer = native.Trimmer(cfg.malloc_trim_s)
    engine = Engine(blender, cfg, metrics)
    defaults = default_directions(blender.preset)
    removed = store.clean_orphans(home / "users", store.SAVE_GRACE_S)
    if removed:
        log.info("removed %d temp files of killed saves", removed)
    janitor = tempfiles.Janitor(max_age_s=cfg.temp_max_age_s,
                                extra=[lambda now: store.clean_orphans(home / "users", store.SAVE_GRACE_S, now)])
    app = FastAPI(title="blend", version="1", description="Cross-modal latent blending: encode, mix, decode.")
    app.state.engine, app.state.config, app.state.metrics, app.state.keys = engine, cfg, metrics, keys
    app.state.janitor, app.state.trimmer = janitor, trimmer
    app.router.on_startup.extend([janitor.start, trimmer.start])
    app.router.on_shutdown.extend([engine.close, janitor.close, trimmer.close])
    api = APIRouter(prefix="/v1", responses=ERRORS)

    def library(request: Request) -> DirectionLibrary:
        folder = home / "users" / store_user_dir(request.state.user)
        return DirectionLibrary(defaults, folder / "directions" / f"{blender.name}.json", cfg.max_user_directions)

    def check_terms(terms: list[TermIn]) -> None:
        if len(terms) > cfg.max_terms:
            raise ValueError(f"terms: at most {cfg.max_terms}, got {len(terms)}")
        for i, t in enumerate(terms):
            if t.kind == "text":
                checks.text(t.value, f"terms[{i}].value", cfg.max_text_chars)
            elif t.value.startswith("data:"):
                checks.image(t.value, f"terms[{i}].value", cfg.max_image_pixels, cfg.max_image_bytes)

    def steps_ok(steps):
        if steps is not None:
            checks.whole(steps, "steps", 1, cfg.max_steps)

    async def run(recipe: dict, request: Request):
        lib = await run_in_threadpool(library, request)
        with engine.working():
            return await run_in_threadpool(run_recipe, engine, Recipe.from_dict(recipe), lib)

    # ------------------------------------------------------------------ middleware and errors
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        return _error(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(ValueError)
    async def bad_input(request, e: ValueError):
        return _error(400, str(e))

    @app.exception_handler(QueueFull)
    async def busy(request, e):
        return _error(429, f"busy: {e}; retry shortly", {"Retry-After": "2"})

    @app.exception_handler(Unavailable)
    async def unavailable(request, e):
        return _error(503, f"unavailable: {e}", {"Retry-After": "5"})

    @app.exception_handler(FutureTimeout)
    async def timeout(request, e):
        return _error(503, f"the request took longer than {cfg.request_timeout_s:g} s", {"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        detail = [{"loc": [str(x) for x in err.get("loc", ())], "msg": str(err.get("msg", ""))[:300],
                   "type": str(err.get("type", ""))} for err in e.errors()[:20]]
        first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
        return JSONResponse({"detail": detail, "error": f"{'.'.join(first['loc'][1:]) or 'body'}: {first['msg']}",
                             "error_id": uuid.uuid4().hex[:12]}, 422)

    @app.exception_handler(Exception)
    async def internal(request, e: Exception):
        eid = uuid.uuid4().hex[:12]
        log.exception("internal error %s on %s", eid, request.url.path)
        return JSONResponse({"error": "internal error", "error_id": eid}, 500)

    # ------------------------------------------------------------------ health and metrics
    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"model": Error}})
    def readyz():
        """Ready for work: the decoder thread is alive and the queue has room; on Ray, a model replica answers."""
        ok, why = engine.ready()
        if not ok:
            return _error(503, f"not ready: {why}", {"Retry-After": "2"})
        if engine.remote:  # rows queue on the model replicas, not here
            return {"status": "ready", "preset": blender.name}
        return {"status": "ready", "preset": blender.name, "queue": engine.batcher.depth}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def prometheus():
        """Prometheus text format: requests, latency, batch sizes, queue depth, cache hits."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    # ------------------------------------------------------------------ /v1
    @api.post("/encode", response_model=EncodeOut)
    async def encode(body: EncodeIn, request: Request):
        """Embed images and texts (in order) into the blend space -> (N, D) unit rows."""
        check_terms(body.terms)
        rows = []
        with engine.working():
            for t in body.terms:
                if t.kind == "text":
                    rows.append(await run_in_threadpool(engine.encode_texts, [t.value]))
                else:
                    img = await run_in_threadpool(Term(t.kind, t.value).load_image)
                    rows.append(await run_in_threadpool(engine.encode_images, [img]))
        return {"embeddings": _rows(torch.cat(rows)), "dim": blender.embed_dim}

    @api.post("/mix", response_model=MixOut, responses={200: {"content": {"image/png": {}}}})
    async def mix(body: MixIn, request: Request):
        """A mix recipe in; images (PNG data URIs, or with format=png the first image), sentence, embedding out."""
        check_terms(body.terms)
        steps_ok(body.steps)
        if body.n_seeds > cfg.max_n_seeds:
            raise ValueError(f"n_seeds: at most {cfg.max_n_seeds}")
        if len(body.directions) > cfg.max_directions:
            raise ValueError(f"directions: at most {cfg.max_directions}")
        recipe = body.model_dump(exclude={"format"})
        recipe["operation"] = "mix"
        result = await run(recipe, request)
        if body.format == "png":
            buf = io.BytesIO()
            result.images[0].save(buf, format="PNG")
            return Response(buf.getvalue(), media_type="image/png",
                            headers={"X-Blend-Text": result.texts[0].encode("ascii", "replace").decode()})
        rows = _rows(result.points)
        return {"images": [_png_uri(im) for im in result.images], "texts": result.texts,
                "embeddings": rows, "embedding": rows[0],
                "recipe": result.recipe.to_dict(), "warnings": result.warnings}

    @api.post("/decode", response_model=Images)
    async def decode(body: DecodeIn):
        """Embeddings of this preset's space -> one image and one sentence per row."""
        steps_ok(body.steps)
        emb = checks.embeddings(body.embeddings, "embeddings", dim=blender.embed_dim, max_rows=cfg.max_rows)
        with engine.working():
            images = await run_in_threadpool(engine.decode_images, emb, body.seed, body.steps)
            texts = await run_in_threadpool(engine.decode_texts, emb)
        return {"images": [_png_uri(im) for im in images], "texts": texts, "embeddings": _rows(engine.check_embeddings(emb))}

    @api.post("/path", response_model=Images)
    async def path(body: PathIn, request: Request):
        """n frames from start to end (slerp by default), every frame from the same start noise."""
        check_terms([body.start, body.end])
        steps_ok(body.steps)
        checks.whole(body.n, "n", 2, cfg.max_n)
        r = await run({"operation": "path", "terms": [body.start.model_dump(), body.end.model_dump()], "n": body.n,
                       "method": body.method, "seed": body.seed, "steps": body.steps}, request)
        return {"images": [_png_uri(im) for im in r.images], "texts": r.texts, "embeddings": _rows(r.points)}

    @api.post("/plane", response_model=Images)
    async def plane(body: PlaneIn, request: Request):
        """A k x k grid on the plane through a, b, c (row-major; the corner opposite a is b + c - a)."""
        check_terms([body.a, body.b, body.c])
        steps_ok(body.steps)
        checks.whole(body.k, "k", 2, cfg.max_k)
        r = await run({"operation": "plane", "terms": [t.model_dump() for t in (body.a, body.b, body.c)],
                       "k": body.k, "seed": body.seed, "steps": body.steps}, request)
        return {"images": [_png_uri(im) for im in r.images], "texts": r.texts, "embeddings": _rows(r.points)}

    @api.get("/directions", response_model=DirectionsOut)
    async def list_directions(request: Request):
        """The shipped directions and yours (per API key, or per X-Session-Id without keys)."""
        lib = await run_in_threadpool(library, request)
        return {"directions": [_direction_out(lib.get(n)) for n in lib.names()]}

    @api.post("/directions", response_model=DirectionOut, status_code=201)
    async def create_direction(body: DirectionIn, request: Request):
        """Save a direction of yours: text pairs, or positive and negative example images."""
        if max(len(body.pairs), len(body.positive), len(body.negative)) > cfg.max_pairs:
            raise ValueError(f"a direction has at most {cfg.max_pairs} pairs or examples a side")
        for i, p in enumerate(body.pairs):
            for j, s in enumerate(p):
                checks.text(s, f"pairs[{i}][{j}]", cfg.max_text_chars)
        lib = await run_in_threadpool(library, request)
        with engine.working():
            d = await run_in_threadpool(lib.add, body.model_dump(), engine)
        return _direction_out(d)

    @api.patch("/directions/{name}", response_model=DirectionOut)
    async def rename_direction(name: str, body: RenameIn, request: Request):
        """Rename one of your directions."""
        lib = await run_in_threadpool(library, request)
        return _direction_out(await run_in_threadpool(lib.rename, name, body.name))

    @api.delete("/directions/{name}", status_code=204, response_class=Response)
    async def delete_direction(name: str, request: Request):
        """Delete one of your directions."""
        lib = await run_in_threadpool(library, request)
        await run_in_threadpool(lib.delete, name)
        return Response(status_code=204)

    @api.get("/presets", response_model=PresetsOut)
    def presets():
        """The presets this installation knows, and the one being served."""
        from ..presets import scan
        return {"current": blender.name,
                "presets": [{"name": n, "description": s.get("description", "")} for n, s in sorted(scan().items())]}

    app.include_router(api)
    app.add_middleware(Gate, keys=keys, metrics=metrics, ui=demo is not None)
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)
    if demo is not None:
        import gradio as gr
        users = sorted({(u, k) for k, u in keys.items()})
        app = gr.mount_gradio_app(app, demo, path="/", auth=users or None, **(ui_options or {}))
    return app


def _direction_out(d) -> dict:
    return {"name": d.name, "source": d.source, "description": d.description, "pairs": [list(p) for p in d.pairs],
            "positive": list(d.positive), "negative": list(d.negative)}


def store_user_dir(user: str) -> str:
    import hashlib
    return hashlib.sha256(user.encode()).hexdigest()[:24]
