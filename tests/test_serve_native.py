"""The server's native-heap hygiene (blend/serve/native.py): malloc_trim gives freed memory back, and the app
runs the trimmer from start to shutdown."""
import subprocess
import sys
import textwrap
import time

import pytest

from blend.serve import native

glibc = pytest.mark.skipif(native._LIBC is None, reason="malloc_trim is glibc's")

FRAGMENT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from blend.serve import native

    def rss():
        return int(next(l for l in Path("/proc/self/status").read_text().splitlines()
                        if l.startswith("VmRSS:")).split()[1]) / 1024

    native.trim()
    base = rss()
    blocks = [bytes(4000) + bytes([i % 256]) for i in range(40_000)]   # ~160 MB of malloc'd blocks
    keep = blocks[::64]                                                 # one in 64 stays: the heap cannot shrink
    del blocks
    before = rss()
    released = native.trim() if sys.argv[1] == "trim" else False
    print(before - base, rss() - base, released)
""")


def _fragmented(mode: str) -> tuple[float, float, bool]:
    out = subprocess.run([sys.executable, "-c", FRAGMENT, mode], capture_output=True, text=True, check=True)
    held, after, released = out.stdout.split()
    return float(held), float(after), released == "True"


@glibc
def test_trim_hands_freed_blocks_back_that_free_alone_keeps():
    held, kept, _ = _fragmented("none")
    assert held > 100 and kept > 100, (held, kept)  # freed, but still resident: the one block in 64 pins the heap
    held, after, released = _fragmented("trim")
    assert released and after < held / 4, (held, after)


@glibc
def test_the_app_trims_from_start_to_shutdown(mini, tmp_path):
    from fastapi.testclient import TestClient

    from blend.serve.api import create_app
    from blend.serve.config import ServeConfig

    app = create_app(mini, config=ServeConfig(malloc_trim_s=0.05), home=tmp_path)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        deadline = time.monotonic() + 10
        while app.state.trimmer.trims < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.trimmer.trims >= 2
    trims = app.state.trimmer.trims
    time.sleep(0.2)
    assert app.state.trimmer.trims == trims  # stopped with the app


def test_zero_turns_both_off():
    assert native.cap_arenas(0) is False
    t = native.Trimmer(0).start()
    assert t._thread is None
    t.close()
