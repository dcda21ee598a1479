"""Temp files of the app and the service (GIFs, downloads, Gradio's uploads and cached images), kept bounded.

Everything lives under one root, `$BLEND_TMP_DIR` (default `<tmp>/blend-<user>`): this process's own folder
`run-<pid>-*`, and `gradio/` (Gradio's cache, when app.py points GRADIO_TEMP_DIR there). A `Janitor` removes
files older than `BLEND_TEMP_MAX_AGE_S` every so often, removes this process's folder on shutdown (and at exit),
and at start removes the folders of processes that died without cleaning up.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger("blend.tempfiles")
DEFAULT_MAX_AGE_S = 3600.0
_RUN_DIR = re.compile(r"run-(\d+)-")
_lock = threading.Lock()
_own: Path | None = None


def root() -> Path:
    """The folder every blend temp file goes under (one per user, so users never share files)."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(os.environ.get("BLEND_TMP_DIR") or Path(tempfile.gettempdir()) / f"blend-{user}")


def process_dir() -> Path:
    """This process's own temp folder, made on first use and removed at exit."""
    global _own
    with _lock:
        if _own is None or not _own.is_dir():
            root().mkdir(parents=True, exist_ok=True, mode=0o700)
            _own = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=root()))
            atexit.register(remove_process_dir)
        return _own


def remove_process_dir() -> None:
    global _own
    with _lock:
        if _own is not None:
            shutil.rmtree(_own, ignore_errors=True)
            _own = None


def gradio_cache() -> Path:
    """Where Gradio keeps uploads and the files it serves, when app.py sets GRADIO_TEMP_DIR to it."""
    return root() / "gradio"


def max_age(value=None) -> float:
    """A positive age in seconds: `value`, else BLEND_TEMP_MAX_AGE_S (ServeConfig.temp_max_age_s), else one hour."""
    if value is None:
        value = os.environ.get("BLEND_TEMP_MAX_AGE_S", DEFAULT_MAX_AGE_S)
    try:
        age = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"temp_max_age_s (BLEND_TEMP_MAX_AGE_S) must be a number of seconds, got {value!r}") from None
    if not 0 < age < float("inf"):
        raise ValueError(f"temp_max_age_s (BLEND_TEMP_MAX_AGE_S) must be a positive number of seconds, got {value!r}")
    return age


def gradio_delete_cache(max_age_s=None) -> tuple[int, int]:
    """`gr.Blocks(delete_cache=...)`: (how often, how old) in whole seconds; Gradio also clears its files at shutdown."""
    age = max_age(max_age_s)
    return max(1, round(_interval(age))), max(1, round(age))


def _interval(age: float) -> float:
    return min(600.0, max(0.05, age / 4))


def sweep(folder: Path, max_age_s: float, now: float | None = None) -> int:
    """Remove files under `folder` not modified for max_age_s seconds, then empty sub-folders as old; returns how
    many files went. `folder` itself stays. `now` is for tests (a fake clock)."""
    folder, now = Path(folder), time.time() if now is None else now
    if not folder.is_dir():
        return 0
    n, ages = 0, {}
    for dirpath, _, _ in os.walk(folder):  # folder ages before this sweep changes them
        try:
            ages[dirpath] = now - os.stat(dirpath).st_mtime
        except OSError:
            pass
    for dirpath, dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            p = Path(dirpath) / name
            try:
                if not p.is_symlink() and now - p.stat().st_mtime >= max_age_s:
                    p.unlink()
                    n += 1
            except OSError:
                pass  # gone already, or not ours to remove
        if Path(dirpath) != folder:
            try:
                if not os.listdir(dirpath) and ages.get(dirpath, 0) >= max_age_s:
                    os.rmdir(dirpath)
            except OSError:
                pass
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_dead_runs(base: Path | None = None) -> int:
    """Remove the `run-<pid>-*` folders of processes no longer running (killed before they could clean up)."""
    base, n = Path(base or root()), 0
    if not base.is_dir():
        return 0
    for d in base.iterdir():
        m = _RUN_DIR.match(d.name)
        if m and d.is_dir() and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n


class Janitor:
    """Keeps temp folders bounded: `sweep_once()` removes what is older than max_age_s; `start()` runs it every
    interval_s in a daemon thread; `close()` stops it and removes this process's own folder.

    Args:
        folders: folders to sweep by age (default: the blend temp root, Gradio's cache included).
        max_age_s: a file untouched this long is removed (default BLEND_TEMP_MAX_AGE_S, else 1 h).
        extra: more sweeps, each called with `now`, returning how many files went (e.g. killed saves' temp files).
        clock: seconds since the epoch; tests pass a fake one.
    """

    def __init__(self, folders: list[Path] | None = None, max_age_s: float | None = None,
                 extra: list[Callable[[float], int]] | None = None, clock: Callable[[], float] = time.time):
        self.max_age_s = max_age(max_age_s)
        self.folders, self.extra = [Path(f) for f in folders or [root()]], list(extra or [])
        self.interval_s = _interval(self.max_age_s)
        self.clock, self.removed = clock, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> int:
        now = self.clock()
        n = sum(sweep(folder, self.max_age_s, now) for folder in self.folders) + sum(f(now) for f in self.extra)
        self.removed += n
        if n:
            log.info("removed %d temp files older than their age limit", n)
        return n

    def start(self) -> "Janitor":
        remove_dead_runs()
        self.sweep_once()
        self._thread = threading.Thread(target=self._run, name="blend-temp-janitor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep_once()
            except Exception:  # noqa: BLE001 - cleaning must never take the server down
                log.exception("temp sweep failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        remove_process_dir()
