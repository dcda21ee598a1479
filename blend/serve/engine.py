"""A Blender behind the service: cached encoders, and every model call batched across requests.

It has the calls `run_recipe` and `direction_vector` use (name, preset, embed_dim, encode_*, decode_*), so
recipes run unchanged on it.
"""
from __future__ import annotations

import hashlib
import threading
from contextlib import nullcontext

import torch

from .. import checks
from .batcher import Batcher
from .cache import LRU
from .worker import ModelProcess


class Engine:
    def __init__(self, blender, config, metrics=None):
        self.blender, self.config = blender, config
        self.name, self.preset, self.embed_dim = blender.name, blender.preset, blender.embed_dim
        # a remote blender (Ray workers) batches rows itself and takes calls in parallel; a local one hands every
        # model call to the batcher's one thread, where rows of concurrent requests share a batch, and with
        # `model_process` that thread hands them on to a child process (HTTP work and the model share no GIL)
        self.remote = getattr(blender, "batches_rows", False)
        self.process = ModelProcess(blender, config.model_threads or None) if (
            config.model_process and not self.remote) else None
        self.batcher = Batcher(self.process or blender, config.max_batch, config.batch_wait_ms, config.max_queue,
                               metrics)
        self.cache = LRU(config.cache_items, metrics.cache_lookup if metrics else None)
        self.batcher.on_encoded = self._remember

    def working(self):
        """`with engine.working():` around one request's model work, so the batcher waits for more rows only
        while some request in flight could still send one."""
        return nullcontext() if self.remote else self.batcher.working()

    def _model(self, kind: str, items, **options) -> list:
        if self.remote:
            raise AssertionError("a remote blender is called directly")
        return self.batcher.run(kind, items, timeout=self.config.request_timeout_s, **options)

    def encode_texts(self, texts, raw: bool = False) -> torch.Tensor:
        texts = checks.texts(texts, max_chars=self.config.max_text_chars)

        def make():
            if self.remote:
                return self.blender.encode_texts(texts, raw=raw)
            return torch.stack(self._model("encode_text", texts, raw=raw))
        return self.cache.get_or_make(("texts", tuple(texts), raw), make).clone()

    def encode_images(self, images) -> torch.Tensor:
        """Images -> (N, D); each is looked up by content hash, and the ones not cached are encoded together."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        pils = [checks.image(im, f"images[{i}]", self.config.max_image_pixels, self.config.max_image_bytes)
                for i, im in enumerate(images)]
        keys = [_image_key(p) for p in pils]
        rows = [self.cache.get(k) for k in keys]
        missing = [i for i, r in enumerate(rows) if r is None]
        if missing:
            todo = [pils[i] for i in missing]
            made = (list(self.blender.encode_images(todo)) if self.remote else self._model("encode_image", todo))
            for i, row in zip(missing, made):
                rows[i] = self.cache.put(keys[i], row.reshape(1, -1))
        return torch.cat(rows).clone()

    def _remember(self, images: list, embedded: torch.Tensor) -> None:
        """Decoded pictures' embeddings, made beside them by the model process: the agreement check's
        encoding of those pictures then finds them cached."""
        for im, row in zip(images, embedded):
            self.cache.put(_image_key(im), row.reshape(1, -1))

    def check_embeddings(self, emb, name: str = "embeddings") -> torch.Tensor:
        return self.blender.check_embeddings(emb, name)

    def decode_images(self, emb, seed=0, steps: int | None = None, **options) -> list:
        emb = self.check_embeddings(emb)
        seeds = checks.seeds(seed, emb.shape[0])
        seeds = seeds if isinstance(seeds, list) else [seeds] * emb.shape[0]
        if steps is not None:
            steps = checks.whole(steps, "steps", 1, self.config.max_steps)
        if self.remote:
            return self.blender.decode_images(emb, seed=seeds, steps=steps, **options)
        return self.batcher.decode(emb, seeds, steps, timeout=self.config.request_timeout_s, **options)

    def decode_texts(self, emb) -> list[str]:
        emb = self.check_embeddings(emb)
        return self.blender.decode_texts(emb) if self.remote else self._model("text", emb)

    def ready(self) -> tuple[bool, str]:
        """Whether work can start now: the model answers (a remote blender's own check) and the queue has room.
        Returns (ready, why not)."""
        if self.remote:
            return self.blender.ready()
        if not self.batcher.alive:
            return False, "the decoder thread has stopped"
        if self.process is not None and not self.process.alive():
            threading.Thread(target=self.process.ensure, name="blend-model-restart", daemon=True).start()
            return False, "the model process stopped; a new one is starting"
        if self.batcher.depth >= self.config.max_queue:
            return False, f"the model queue is full ({self.batcher.depth} rows waiting)"
        return True, ""

    def close(self) -> None:
        self.batcher.close()
        if self.process is not None:
            self.process.close()


def _image_key(pil) -> tuple:
    return ("image", hashlib.sha256(pil.tobytes() + repr(pil.size).encode()).hexdigest())
