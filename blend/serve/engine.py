"""A Blender behind the service: cached encoders, batched image decoding, serialised model calls.

It has the calls `run_recipe` and `direction_vector` use (name, preset, embed_dim, encode_*, decode_*), so
recipes run unchanged on it.
"""
from __future__ import annotations

import hashlib
import threading
from contextlib import nullcontext

import torch

from .. import checks
from .batcher import DecodeBatcher
from .cache import LRU


class Engine:
    def __init__(self, blender, config, metrics=None):
        self.blender, self.config = blender, config
        self.name, self.preset, self.embed_dim = blender.name, blender.preset, blender.embed_dim
        self.batcher = DecodeBatcher(blender, config.max_batch, config.batch_wait_ms, config.max_queue, metrics)
        self.cache = LRU(config.cache_items, metrics.cache_lookup if metrics else None)
        # a remote blender (Ray workers) batches rows itself and takes calls in parallel; a local one takes turns:
        # encoder and text decoder one call at a time (the UNet has the batcher's thread)
        self.remote = getattr(blender, "batches_rows", False)
        self._lock = nullcontext() if self.remote else threading.Lock()

    def _locked(self, fn, *args, **kw):
        with self._lock:
            return fn(*args, **kw)

    def encode_texts(self, texts, raw: bool = False) -> torch.Tensor:
        texts = checks.texts(texts, max_chars=self.config.max_text_chars)
        return self.cache.get_or_make(("texts", tuple(texts), raw),
                                      lambda: self._locked(self.blender.encode_texts, texts, raw=raw)).clone()

    def encode_images(self, images) -> torch.Tensor:
        if not isinstance(images, (list, tuple)):
            images = [images]
        rows = []
        for i, im in enumerate(images):
            pil = checks.image(im, f"images[{i}]", self.config.max_image_pixels, self.config.max_image_bytes)
            key = ("image", hashlib.sha256(pil.tobytes() + repr(pil.size).encode()).hexdigest())
            rows.append(self.cache.get_or_make(key, lambda p=pil: self._locked(self.blender.encode_images, [p])))
        return torch.cat(rows).clone()

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
        return self._locked(self.blender.decode_texts, emb)

    def ready(self) -> tuple[bool, str]:
        """Whether work can start now: the model answers (a remote blender's own check) and the queue has room.
        Returns (ready, why not)."""
        if self.remote:
            return self.blender.ready()
        if not self.batcher.alive:
            return False, "the decoder thread has stopped"
        if self.batcher.depth >= self.config.max_queue:
            return False, f"the decode queue is full ({self.batcher.depth} images waiting)"
        return True, ""

    def close(self) -> None:
        self.batcher.close()
