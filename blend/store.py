"""JSON files shared by processes: read with corruption tolerated, written atomically under a file lock.

A change is a locked read-modify-write (`transaction`): re-read the file, change it, write a temp file in the
same folder, fsync, `os.replace`. So two processes sharing BLEND_HOME never lose each other's saves and a killed
save never leaves half a file. A corrupt file is kept aside as `<name>.corrupt-<time>` with a warning, never a
crash; temp files of killed saves are removed by `clean_orphans`.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

log = logging.getLogger("blend.store")
TEMP_SUFFIX = ".tmp"
SAVE_GRACE_S = 60.0  # a save writes a small JSON in milliseconds: an older temp file is a killed save's


def read_items(path: Path, key: str, parse: Callable[[dict], object]) -> list:
    """The valid items of `{key: [...]}` (or a bare list) in `path`; bad files and entries are backed up, skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        items = data.get(key) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ValueError(f"expected {{{key!r}: [...]}}")
    except (ValueError, UnicodeDecodeError, OSError) as e:
        backup(path, f"unreadable ({type(e).__name__})")
        return []
    out, bad = [], 0
    for item in items:
        try:
            out.append(parse(item))
        except (ValueError, TypeError, AttributeError):
            bad += 1
    if bad:
        backup(path, f"{bad} invalid entr{'y' if bad == 1 else 'ies'} skipped", copy=True)
    return out


def backup(path: Path, why: str, copy: bool = False) -> Path:
    dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    if copy:
        dest.write_bytes(path.read_bytes())
    else:
        os.replace(path, dest)
    log.warning("%s: %s; the old file is kept as %s", path.name, why, dest.name)
    return dest


def write_atomic(path: Path, data) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def locked(path: Path, timeout: float = 10.0):
    """An exclusive lock on `path` across processes (a `<path>.lock` file beside it)."""
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path) + ".lock", timeout=timeout):
            yield
    except Timeout as e:
        raise ValueError(f"{path.name} is busy (locked by another process): try again") from e


def clean_orphans(folder: Path, max_age_s: float = 0.0, now: float | None = None) -> int:
    """Remove temp files of killed saves older than max_age_s under `folder`; returns how many."""
    n, now = 0, time.time() if now is None else now
    if not Path(folder).is_dir():
        return 0
    for p in Path(folder).rglob("*" + TEMP_SUFFIX):
        try:
            if p.is_file() and now - p.stat().st_mtime >= max_age_s:
                p.unlink()
                n += 1
        except OSError:
            pass
    return n
