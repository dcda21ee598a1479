"""Batch the model work of concurrent requests: one worker thread, bounded queue, bounded batch size and wait.

Four kinds of work queue here, one row each: decoding an embedding to an image ("image", with its own seed),
decoding an embedding to a sentence ("text"), and encoding an image or a text ("encode_image",
"encode_text"). Rows batch only with rows of the same kind and settings (steps, options). One thread makes
every model call, so a local model needs no lock; the model process, which works through its calls in order,
is sent the next batch while it works on the last (at most two in flight). No row's output depends on its
batch: the mini decoder draws each row's start noise from the row's own seed, greedy sentence decoding is row
by row the same in a batch, and encoders see each row alone.

The batcher waits up to `wait_ms` for a batch to fill, but only while some request that could still add a
row is running: when every request in flight (`Batcher.working`) is already waiting on queued rows, waiting
longer cannot fill the batch, so a lone request never pays the wait.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

KINDS = ("image", "text", "encode_image", "encode_text")
log = logging.getLogger("blend.serve")


class QueueFull(Exception):
    """The model queue is at its limit: answer 429 with Retry-After."""


class Unavailable(Exception):
    """No model replica can take the work now (one died and none answered in time): answer 503 with Retry-After."""


@dataclass(eq=False)  # a row is itself: held rows are found and removed by identity, never by comparing tensors
class _Job:
    item: object  # a (D,) row, a PIL image or a text
    seed: int | None
    key: tuple  # (kind, steps, options): rows batch together only when their keys are equal
    options: dict
    future: Future = field(default_factory=Future)
    alone: bool = False  # its batch failed: decoded again by itself


class Batcher:
    def __init__(self, blender, max_batch: int = 8, wait_ms: float = 10.0, max_queue: int = 256, metrics=None):
        self.blender, self.max_batch, self.wait = blender, max(1, int(max_batch)), max(0.0, wait_ms) / 1000
        self.max_queue, self.metrics = max_queue, metrics
        self._stop = threading.Event()
        self._count = threading.Lock()
        self._working = 0  # requests in flight (inside `working()`)
        self._waiting = 0  # blocking calls waiting on their rows
        self.batches = self.rows = 0  # model calls made, and the rows they took
        self.on_encoded = None  # called with (images, (N, D) embeddings) where the model gives both at once
        # a model that takes calls without waiting for their answers (the model process: `submit`) gets the next
        # batch while it works on this one, at most `in_flight` batches unanswered
        self.pipelined = callable(getattr(blender, "submit", None))
        self.in_flight = threading.BoundedSemaphore(2)
        # one worker for every kind: a thread per model was measured no faster on 2 cores (the Python side of
        # small torch calls holds the GIL), and one thread never calls a model from two threads at once
        self._lane = _Lane(self)

    @property
    def depth(self) -> int:
        """Rows waiting for the model, all kinds together."""
        return self._lane.depth

    @property
    def alive(self) -> bool:
        return self._lane.thread.is_alive() and not self._stop.is_set()

    @contextmanager
    def working(self):
        """Mark one request in flight for its whole run, so the workers know whether more rows may come."""
        self._add("_working", 1)
        try:
            yield
        finally:
            self._add("_working", -1)

    def _add(self, name: str, k: int) -> None:
        with self._count:
            setattr(self, name, getattr(self, name) + k)

    def submit(self, kind: str, items, seeds=None, steps: int | None = None, **options) -> list[Future]:
        """Queue N rows of one kind (embeddings (N, D), PIL images or texts), N seeds for kind "image";
        returns one Future per row: a PIL image, a sentence, or a (D,) embedding."""
        if kind not in KINDS:
            raise ValueError(f"kind: one of {', '.join(KINDS)}, got {kind!r}")
        items = list(items)
        if self.depth + len(items) > self.max_queue:
            raise QueueFull(f"{self.depth} rows are waiting for the model (the limit is {self.max_queue})")
        seeds = [None] * len(items) if seeds is None else [int(s) for s in seeds]
        key = (kind, steps, tuple(sorted(options.items())))
        opts = {"steps": steps, **options} if kind == "image" else options
        jobs = [_Job(x, s, key, opts) for x, s in zip(items, seeds)]
        for j in jobs:
            self._lane.q.put(j)
        self._gauge()
        return [j.future for j in jobs]

    def run(self, kind: str, items, seeds=None, steps: int | None = None, timeout: float | None = None,
            **options) -> list:
        """Blocking: submit and wait for every row."""
        self._add("_waiting", 1)  # before the rows are queued, so the worker never waits for this caller
        try:
            futures = self.submit(kind, items, seeds, steps, **options)
            return [f.result(timeout=timeout) for f in futures]
        finally:
            self._add("_waiting", -1)

    def decode(self, emb: torch.Tensor, seeds: list[int], steps: int | None = None, timeout: float | None = None,
               **options) -> list:
        """Blocking: decode (N, D) rows with N seeds to N PIL images."""
        return self.run("image", emb, seeds, steps, timeout, **options)

    def close(self) -> None:
        self._stop.set()
        self._lane.thread.join(timeout=5)

    def more_may_come(self) -> bool:
        """Whether a request in flight is not yet waiting on its rows (so it may add one within the wait).
        Unknown (nobody marks requests, as with direct use of the batcher): assume so."""
        return self._working == 0 or self._waiting < self._working

    def plan(self, batch: list[_Job]):
        """The model call for one batch of one key: (method, args, kwargs, finish), where finish turns the
        method's output into one output per row."""
        kind = batch[0].key[0]
        if kind == "image":
            emb, seeds = torch.stack([j.item for j in batch]), [j.seed for j in batch]
            if self.on_encoded is not None and hasattr(self.blender, "decode_and_encode"):
                def finish(out):
                    images, embedded = out
                    self.on_encoded(images, embedded)
                    return images
                return "decode_and_encode", (emb,), {"seed": seeds, **batch[0].options}, finish
            return "decode_images", (emb,), {"seed": seeds, **batch[0].options}, list
        if kind == "text":
            return "decode_texts", (torch.stack([j.item for j in batch]),), {}, list
        if kind == "encode_image":
            return "encode_images", ([j.item for j in batch],), {}, list
        return "encode_texts", ([j.item for j in batch],), dict(batch[0].options), list

    def call(self, batch: list[_Job]) -> list:
        """The model call for one batch of one key, made here -> one output per row."""
        method, args, kwargs, finish = self.plan(batch)
        return finish(getattr(self.blender, method)(*args, **kwargs))

    def done(self, batch: list[_Job], seconds: float) -> None:
        self.batches += 1
        self.rows += len(batch)
        if self.metrics is not None:
            self.metrics.batch_size.labels(batch[0].key[0]).observe(len(batch))
            self.metrics.model_seconds.labels(batch[0].key[0]).inc(seconds)
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.depth)


class _Lane:
    """The worker thread and its queue: takes a row, fills a batch of rows with the same key (up to
    max_batch; waiting up to the batcher's wait only while no other work is ready and more may come), calls
    the model, answers each row."""

    def __init__(self, batcher: Batcher):
        self.b = batcher
        self.q: queue.Queue[_Job] = queue.Queue()
        self.held: list[_Job] = []  # taken from the queue but of another key than the batch being filled
        self.thread = threading.Thread(target=self._run, name="blend-model", daemon=True)
        self.thread.start()

    @property
    def depth(self) -> int:
        return self.q.qsize() + len(self.held)

    def _take(self, timeout: float) -> _Job | None:
        if self.held:
            return self.held.pop(0)
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None

    def _run(self) -> None:
        while not self.b._stop.is_set():
            batch: list[_Job] = []
            try:
                self._once(batch)
            except BaseException as e:  # noqa: BLE001 - the worker outlives any one batch; its rows hear of it
                log.exception("the model worker failed outside a model call; it goes on")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(RuntimeError(f"the model worker failed: {type(e).__name__}"))

    def _once(self, batch: list[_Job]) -> None:
        """Take one batch into `batch` (in place, so `_run` can answer its rows if anything fails) and decode it."""
        b = self.b
        first = self._take(0.2)
        if first is None:
            return
        if first.alone:
            self._alone(first)
            return
        batch.append(first)
        deadline, others = time.monotonic() + b.wait, []
        for j in list(self.held):  # rows held back from earlier batches come first
            if len(batch) < b.max_batch and j.key == first.key and not j.alone:
                batch.append(j)
                self.held.remove(j)
        while len(batch) < b.max_batch:
            # wait for more rows only while nothing else is ready and some request may still send one
            wait = deadline - time.monotonic() > 0 and not (others or self.held) and b.more_may_come()
            try:
                job = self.q.get(timeout=0.002) if wait else self.q.get_nowait()
            except queue.Empty:
                if not wait:
                    break
                continue
            (batch if job.key == first.key and not job.alone else others).append(job)
        self.held = others + self.held
        self._decode(batch)

    def _decode(self, batch: list[_Job]) -> None:
        batch = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not batch:
            return
        if self.b.pipelined:
            self._send(batch)
            return
        t = time.perf_counter()
        try:
            for j, out in zip(batch, self.b.call(batch)):
                j.future.set_result(out)
        except BaseException as e:
            if len(batch) > 1:  # one bad row must not fail the others' requests: each row again, alone
                for j in batch:
                    self._alone(j)
            else:
                batch[0].future.set_exception(e)
        self.b.done(batch, time.perf_counter() - t)

    def _send(self, batch: list[_Job]) -> None:
        """Hand the batch to a pipelined model and go on; its rows are answered when the reply comes."""
        method, args, kwargs, finish = self.b.plan(batch)
        self.b.in_flight.acquire()  # while the model has two batches, rows gather for the next one
        try:
            reply = self.b.blender.submit(method, *args, **kwargs)
        except BaseException as e:  # no model to send to (a new child did not start): these rows hear why
            self.b.in_flight.release()
            for j in batch:
                j.future.set_exception(e)
            return
        reply.add_done_callback(lambda f: self._answered(batch, finish, f))

    def _answered(self, batch: list[_Job], finish, reply: Future) -> None:
        """A pipelined batch's reply (in the thread that read it): each row's output, or its error; a failed
        batch of several rows goes back to the queue a row at a time, as `_decode` does."""
        try:
            try:
                out, seconds = reply.result()
                outs = finish(out)
            except BaseException as e:
                if len(batch) > 1:
                    for j in batch:
                        j.alone = True
                        self.q.put(j)
                else:
                    batch[0].future.set_exception(e)
                return
            for j, o in zip(batch, outs):
                j.future.set_result(o)
            self.b.done(batch, seconds)
        finally:
            self.b.in_flight.release()

    def _alone(self, job: _Job) -> None:
        if job.future.done():
            return
        try:
            job.future.set_result(self.b.call([job])[0])
        except BaseException as e:  # this request hears about it; the worker lives on
            job.future.set_exception(e)
