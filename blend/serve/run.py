"""`blend serve`: load the preset once, build the UI (when app.py is there) and the API, run uvicorn."""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

from . import auth
from .config import ServeConfig

log = logging.getLogger("blend.serve")


def load_demo(blender):
    """The Gradio UI: `app.build_demo(blender)` where app.py has it, else app.py's module-level `demo`."""
    path = Path(__file__).resolve().parents[2] / "app.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("blend_app_ui", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_demo(blender) if hasattr(module, "build_demo") else module.demo


def warn_if_open(host: str, cfg: ServeConfig) -> None:
    if not auth.is_local(host) and not auth.load_keys(cfg.keys, cfg.keys_file):
        msg = (f"blend serve: listening on {host} WITHOUT API keys: anyone who can reach this port can use it. "
               f"Set BLEND_API_KEYS='name:key,...' or BLEND_API_KEYS_FILE, or put it behind a proxy that checks.")
        log.warning(msg)
        print("\n" + "!" * 100 + "\n" + msg + "\n" + "!" * 100 + "\n", file=sys.stderr)


def served_config(device: str = "cpu", **overrides) -> ServeConfig:
    """The config of a server (`blend serve`, `python app.py`): as `ServeConfig.from_env`, but on the CPU with
    the model in a child process unless BLEND_MODEL_PROCESS or `model_process` says otherwise. Not on a GPU,
    where the UI's own copy of the models would be a second copy in GPU memory, and the GIL matters less."""
    if overrides.get("model_process") is None and "BLEND_MODEL_PROCESS" not in os.environ:
        overrides["model_process"] = str(device) == "cpu"
    return ServeConfig.from_env(**overrides)


def serve(preset: str = "shapes-mini", host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          ui: bool = True, **overrides) -> None:
    import uvicorn

    import blend
    from .api import create_app

    logging.basicConfig(level=logging.INFO)
    blender = blend.load(preset, device=device)
    cfg = served_config(blender.device, **overrides)
    warn_if_open(host, cfg)
    app = create_app(blender, load_demo(blender) if ui else None, cfg)
    uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=10)
