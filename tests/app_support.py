"""Shared by the recipe, directions and app tests: which preset to test, and the app as a server.

Tests run on the real `shapes-mini`. While its decoder trains, point them at a stand-in with
BLEND_TEST_PRESET=/path/to/preset; a missing trained model is a failure, never a skip.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRESET = os.environ.get("BLEND_TEST_PRESET", "shapes-mini")
ARTIFACTS = ROOT / "artifacts"


def require_models(preset: str = PRESET) -> None:
    """Fail (not skip) when the preset's decoders are not there yet."""
    from blend.presets import get_preset, resolve_source

    spec = get_preset(preset)
    for kind in ("image_decoder", "text_decoder"):
        source = spec[kind].get("source", "")
        if not source.startswith("local-dir:"):
            continue  # hub models are fetched by their loaders; only bundled folders can be checked here
        try:
            resolve_source(source, spec["_dir"])
        except ValueError as e:
            pytest.fail(f"preset {preset!r} has no trained {kind.replace('_', ' ')} ({e}). Train it with "
                        f"`blend train shapes-mini`, or set BLEND_TEST_PRESET to a preset folder while developing.")


def is_real_shapes_mini() -> bool:
    return PRESET == "shapes-mini"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`python app.py` in a subprocess on a free port of 127.0.0.1, with its own BLEND_HOME."""

    def __init__(self, home: Path, preset: str = PRESET, timeout: float = 180, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = home / "app.log"
        env = {**os.environ, "BLEND_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               **(env or {})}
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--preset", preset, "--host", "127.0.0.1",
                                      "--port", str(self.port)], cwd=ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"the app exited with code {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"the app did not serve {self.url} within {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
