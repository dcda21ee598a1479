"""The model in a child process, so that the server's HTTP work and the model never share one GIL.

In one process, every small torch call of the sentence decoder gives up the GIL and then waits for it again
while the event loop parses and answers requests: under load on 2 CPU cores a batch of 25 sentences took
75 ms against 30 ms alone (benchmarks/load.py). `ModelProcess` loads the same preset in a child process and
answers the batcher's calls (decode_images, decode_and_encode, decode_texts, encode_images, encode_texts)
there, in the order they come over a pipe; the child's replies carry the seconds it spent on each call. Tensors cross as numpy arrays (plain pickles, no shared-memory handles), PIL
images and strings as themselves.

If the child dies, the calls in flight fail with `Unavailable` (503 with Retry-After) and the next call
starts a new child; `ready()` says so meanwhile. A ValueError in the child comes back as a ValueError.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from .batcher import Unavailable

_MAIN_LOCK = threading.Lock()  # two children starting at once must not see each other's hidden path


@contextlib.contextmanager
def _script_hidden():
    """A spawned child first runs the parent's `__main__` script again (as `__mp_main__`), before it unpickles
    its target. Under `python app.py` that imported gradio and the whole UI into the model process, which needs
    only this module: hide the script's path while the child starts. A `python -m` main (it has a `__spec__`)
    is imported by name as usual."""
    with _MAIN_LOCK:
        main = sys.modules.get("__main__")
        path = getattr(main, "__file__", None)
        if path is None or getattr(main, "__spec__", None) is not None:
            yield
            return
        del main.__file__
        try:
            yield
        finally:
            main.__file__ = path


CALLS = ("decode_images", "decode_texts", "encode_images", "encode_texts", "decode_and_encode")


@dataclass
class _Array:
    """A tensor on the wire: its numpy array (a plain pickle, not torch's shared-memory handle)."""
    array: np.ndarray


def _to_wire(x):
    if isinstance(x, torch.Tensor):
        return _Array(x.detach().cpu().numpy())
    if isinstance(x, (list, tuple)):
        return type(x)(_to_wire(v) for v in x)
    return x


def _from_wire(x):
    if isinstance(x, _Array):
        return torch.from_numpy(x.array)
    if isinstance(x, (list, tuple)):
        return type(x)(_from_wire(v) for v in x)
    return x


def _child(conn, preset: dict, device: str, threads: int | None) -> None:
    """The child's loop: load the preset, then answer (call, args, kwargs) until None or a closed pipe."""
    if threads:
        torch.set_num_threads(threads)
    from ..blender import Blender

    try:
        b = Blender(preset, device=device)
        b.image_decoder, b.text_decoder  # noqa: B018 - load both now, not on the first request
    except Exception as e:  # noqa: BLE001 - the parent reports it
        conn.send(("error", ("RuntimeError", f"the model process could not load {preset.get('name')!r}: {e}")))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        call, args, kwargs = msg
        start = time.perf_counter()
        try:
            if call not in CALLS:
                raise ValueError(f"call: one of {', '.join(CALLS)}, got {call!r}")
            if call == "decode_and_encode":  # the pictures and their embeddings, for the agreement check
                images = b.decode_images(*_from_wire(args), **kwargs)
                out = (images, b.encode_images(images))
            else:
                out = getattr(b, call)(*_from_wire(args), **kwargs)
            conn.send(("ok", _to_wire(out), time.perf_counter() - start))
        except Exception as e:  # noqa: BLE001 - the caller's request hears about it; the child lives on
            conn.send(("error", (type(e).__name__, str(e)), time.perf_counter() - start))


class ModelProcess:
    """A Blender's model calls, made in a child process that loaded the same preset (see the module docstring).

    `submit` sends a call and returns at once, so the next batch can wait in the pipe while the child works on
    this one (the batcher keeps two in flight: the child never waits for the server to read a reply and send
    the next call); replies come back in order, read by a thread of their own. The blocking calls
    (decode_images, ...) are `submit(...).result()`.

    Args:
        blender: the serving process's Blender (its preset and device are what the child loads).
        threads: torch threads in the child (default: torch's default there).
        start_timeout: seconds to wait for the child to load.
    """

    def __init__(self, blender, threads: int | None = None, start_timeout: float = 600.0):
        self.preset, self.device = blender.preset, str(blender.device)
        # on the CPU, one core is left to the server's HTTP work (measured on 2 cores: a 2-thread model
        # process gave 87 req/s against 97-144 with one, benchmarks/load.py)
        if threads is None and self.device == "cpu":
            threads = max(1, (os.cpu_count() or 2) - 1)
        self.threads, self.start_timeout = threads, start_timeout
        self._ctx = mp.get_context("spawn")  # no fork of a process that holds torch's threads
        self._lock = threading.Lock()  # sending, and starting a child
        self._proc = self._conn = None
        self._pending: deque[Future] = deque()  # the calls sent to this child, in order, not yet answered
        self.starts = 0
        with self._lock:
            self._start()

    # ------------------------------------------------------------------ the child
    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_child, args=(child, self.preset, self.device, self.threads),
                                 name="blend-model", daemon=True)
        with _script_hidden():
            proc.start()
        child.close()
        if not parent.poll(self.start_timeout):
            proc.kill()
            raise Unavailable(f"the model process did not load in {self.start_timeout:g} s")
        try:
            status, value = parent.recv()
        except (EOFError, OSError):
            status, value = "error", ("RuntimeError", "the model process stopped while loading")
        if status != "ready":
            proc.join(5)
            raise RuntimeError(value[1])
        self._proc, self._conn, self._pending = proc, parent, deque()
        threading.Thread(target=self._read, args=(parent, self._pending), name="blend-model-replies",
                         daemon=True).start()
        self.starts += 1

    def _read(self, conn, pending: deque) -> None:
        """Answer this child's calls in the order they were sent; when it dies, fail the ones still waiting."""
        while True:
            try:
                status, value, seconds = conn.recv()
            except (EOFError, OSError, TypeError, ValueError):
                break
            if not pending:
                continue
            future = pending.popleft()
            if status == "ok":
                future.set_result((_from_wire(value), seconds))
            else:
                kind, message = value
                future.set_exception((ValueError if kind == "ValueError" else RuntimeError)(message))
        while pending:
            pending.popleft().set_exception(
                Unavailable("the model process stopped; a new one starts with the next request"))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def ensure(self) -> None:
        """Start a new child if the last one died (blocking; the next call would do it too)."""
        with self._lock:
            self._restart_if_dead()

    def _restart_if_dead(self) -> None:  # holding the lock
        if not self.alive():
            self._lost()
            self._start()

    def submit(self, call: str, *args, **kwargs) -> Future:
        """Send one call now; the Future gets (its output, the seconds the child spent on it), or the child's
        ValueError / RuntimeError, or Unavailable when the child dies before answering."""
        future: Future = Future()
        with self._lock:
            self._restart_if_dead()  # a new child for this call (the batch that met the dead one got a 503)
            self._pending.append(future)  # before sending: the reply may come before send() returns
            try:
                self._conn.send((call, _to_wire(args), kwargs))
            except (EOFError, OSError) as e:
                self._lost()
                if not future.done():
                    lost = Unavailable("the model process stopped; a new one starts with the next request")
                    lost.__cause__ = e
                    future.set_exception(lost)
        return future

    def _call(self, call: str, *args, **kwargs):
        return self.submit(call, *args, **kwargs).result()[0]

    def _lost(self) -> None:  # holding the lock
        if self._conn is not None:
            self._conn.close()  # the reader thread then fails what this child had not answered
        if self._proc is not None:
            self._proc.join(1)
        self._proc = self._conn = None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.send(None)
                except OSError:
                    pass
            if self._proc is not None:
                self._proc.join(5)
                if self._proc.is_alive():
                    self._proc.kill()
            self._lost()

    # ------------------------------------------------------------------ what the batcher calls
    def decode_images(self, emb, seed=0, steps=None, **options) -> list:
        return self._call("decode_images", emb, seed=seed, steps=steps, **options)

    def decode_and_encode(self, emb, seed=0, steps=None, **options) -> tuple[list, torch.Tensor]:
        """The decoded pictures and their (N, D) embeddings, in one round trip: the agreement check encodes
        every decoded picture, and the child has it at hand."""
        return self._call("decode_and_encode", emb, seed=seed, steps=steps, **options)

    def decode_texts(self, emb) -> list[str]:
        return self._call("decode_texts", emb)

    def encode_images(self, images) -> torch.Tensor:
        return self._call("encode_images", list(images))

    def encode_texts(self, texts, raw: bool = False) -> torch.Tensor:
        return self._call("encode_texts", list(texts), raw=raw)
