"""Batch decode work from concurrent requests: one worker thread, bounded queue, bounded batch size and wait.

Each submitted row carries its own seed, and the mini decoder draws each row's start noise from its own seed,
so a row decodes to the same image whatever else shares its batch. Rows batch only with rows of the same
sampler settings (steps, options).
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch


class QueueFull(Exception):
    """The decode queue is at its limit: answer 429 with Retry-After."""


class Unavailable(Exception):
    """No model replica can take the work now (one died and none answered in time): answer 503 with Retry-After."""


@dataclass
class _Job:
    emb: torch.Tensor  # (D,)
    seed: int
    key: tuple  # rows batch together only when their keys are equal
    options: dict
    future: Future = field(default_factory=Future)


class DecodeBatcher:
    def __init__(self, blender, max_batch: int = 8, wait_ms: float = 10.0, max_queue: int = 256, metrics=None):
        self.blender, self.max_batch, self.wait = blender, max(1, int(max_batch)), max(0.0, wait_ms) / 1000
        self.max_queue, self.metrics = max_queue, metrics
        self._q: queue.Queue[_Job] = queue.Queue()
        self._held: list[_Job] = []  # taken from the queue but of another key than the batch being filled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blend-decode-batcher", daemon=True)
        self._thread.start()
        self.batches = 0

    @property
    def depth(self) -> int:
        return self._q.qsize() + len(self._held)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def submit(self, emb: torch.Tensor, seeds: list[int], steps: int | None = None, **options) -> list[Future]:
        """Queue N rows (N, D) with N seeds; returns one Future per row, each resolving to a PIL image."""
        if self.depth + len(emb) > self.max_queue:
            raise QueueFull(f"{self.depth} images are waiting to be decoded (the limit is {self.max_queue})")
        key = (steps, tuple(sorted(options.items())))
        jobs = [_Job(row, int(s), key, {"steps": steps, **options}) for row, s in zip(emb, seeds)]
        for j in jobs:
            self._q.put(j)
        self._gauge()
        return [j.future for j in jobs]

    def decode(self, emb: torch.Tensor, seeds: list[int], steps: int | None = None, timeout: float | None = None,
               **options) -> list:
        """Blocking: submit and wait for every row."""
        futures = self.submit(emb, seeds, steps, **options)
        return [f.result(timeout=timeout) for f in futures]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ worker
    def _take(self, timeout: float | None) -> _Job | None:
        if self._held:
            return self._held.pop(0)
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self._take(0.2)
            if first is None:
                continue
            batch, deadline, others = [first], time.monotonic() + self.wait, []
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    job = self._q.get(timeout=max(left, 0)) if left > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                (batch if job.key == first.key else others).append(job)
            self._held = others + self._held
            self._gauge()
            self._decode(batch)

    def _decode(self, batch: list[_Job]) -> None:
        batch = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            emb = torch.stack([j.emb for j in batch])  # (B, D)
            images = self.blender.decode_images(emb, seed=[j.seed for j in batch], **batch[0].options)
            for j, im in zip(batch, images):
                j.future.set_result(im)
        except BaseException as e:  # every waiting request hears about it; the worker lives on
            for j in batch:
                if not j.future.done():
                    j.future.set_exception(e)
        self.batches += 1
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(batch))

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.depth)
