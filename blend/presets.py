"""Named setups are data: each preset is one JSON file, scanned into a registry.

A preset names an encoder (open_clip), an image decoder and a text decoder, each by a `type` and a
`source`. Sources use open_clip's prefixes: `local-dir:PATH` (relative to the preset file), `hf-hub:ORG/NAME`,
or a bare hub id / built-in model name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .sources import is_local, local_path, resolve_source  # noqa: F401  (resolve_source: public here too)

MODELS_DIR = Path(os.environ.get("BLEND_MODELS", Path(__file__).resolve().parent.parent / "models"))
PRESETS_DIR = MODELS_DIR / "presets"
REQUIRED = ("name", "encoder", "image_decoder", "text_decoder")


def _read(path: Path) -> dict:
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"preset file {path} is not valid JSON: {e}") from e
    missing = [k for k in REQUIRED if k not in spec]
    if missing:
        raise ValueError(f"preset file {path} lacks {', '.join(missing)}")
    spec["_dir"] = str(path.parent.resolve())
    spec["_file"] = str(path.resolve())
    return spec


def scan(folder: Path = PRESETS_DIR) -> dict[str, dict]:
    """Every preset JSON in `folder`, by name."""
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        spec = _read(path)
        out[spec["name"]] = spec
    return out


def list_presets() -> list[str]:
    """Names of the presets blend knows (the files in models/presets/)."""
    return sorted(scan())


def get_preset(name_or_path: str | os.PathLike) -> dict:
    """A preset by registry name, by path to its JSON file, or by a folder holding `preset.json`."""
    name = str(name_or_path)
    registry = scan()
    if name in registry:
        return registry[name]
    path = local_path(name, Path.cwd()) if is_local(name) else Path(name)
    if path.is_file() and path.suffix == ".json":
        return _read(path)
    if path.is_dir() and (path / "preset.json").is_file():
        return _read(path / "preset.json")
    raise ValueError(f"unknown preset {name!r}: choose one of {sorted(registry)} or give a folder with preset.json")
