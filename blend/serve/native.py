"""The server's native heap kept flat: glibc's malloc arenas capped, and freed memory handed back to the system.

The server answers each request on one of a thread pool's threads. glibc gives threads their own malloc arenas
(up to 8 per core), and memory a request freed (PIL buffers, PNG and JSON bytes, tensors from the model
process) stays in its arena, in pieces that the next requests' sizes fit badly: under a 10-minute load the
server's resident memory kept rising about 1 MB/min while Python's own heap did not grow (benchmarks/memory.py).
`cap_arenas` limits the arenas (as MALLOC_ARENA_MAX does, but settable after start), and `Trimmer` calls
`malloc_trim(0)` every few seconds, which returns the free pages of every arena to the system.

Elsewhere than glibc (macOS, musl) both are no-ops (`cap_arenas` returns False, the trimmer logs it).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

log = logging.getLogger("blend.serve")
_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.malloc_trim  # noqa: B018
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


def cap_arenas(n: int) -> bool:
    """At most `n` malloc arenas for threads started from now on (0 leaves glibc's default). True when set."""
    if n <= 0 or _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_ARENA_MAX, int(n)))


def trim() -> bool:
    """Give the free memory of every malloc arena back to the system; True when some was released."""
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False


class Trimmer:
    """Calls `trim()` every `interval_s` seconds in a daemon thread, from `start()` until `close()`."""

    def __init__(self, interval_s: float):
        self.interval_s, self.trims = float(interval_s), 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Trimmer":
        if self.interval_s > 0 and _LIBC is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="blend-malloc-trim", daemon=True)
            self._thread.start()
        elif self.interval_s > 0:
            log.info("malloc_trim: not glibc, the native heap is left to its allocator")
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            trim()
            self.trims += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
