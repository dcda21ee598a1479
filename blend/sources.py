"""Where a preset's models and files come from: the one place that reads `local-dir:`, `hf-hub:` and hub ids.

A source is `local-dir:PATH` (relative to the preset file), `hf-hub:ORG/NAME`, or a bare hub id
(`ORG/NAME`). `check_reachable` runs before a real preset loads anything, so an offline machine gets one
clear `ValueError` in a moment instead of a minute of hub retries.
"""
from __future__ import annotations

import os
from pathlib import Path

LOCAL = "local-dir:"
HUB = "hf-hub:"


def is_local(source: str) -> bool:
    return source.startswith(LOCAL)


def local_path(source: str, base_dir) -> Path:
    """`local-dir:rel` (or a plain path) -> an absolute path, relative paths taken from `base_dir`."""
    path = Path(source[len(LOCAL):] if is_local(source) else source)
    return path if path.is_absolute() else Path(base_dir) / path


def resolve_source(source: str, base_dir) -> str:
    """`local-dir:rel` -> an existing absolute folder path; hub ids and `hf-hub:` ids -> the bare hub id."""
    if is_local(source):
        path = local_path(source, base_dir)
        if not path.exists():
            hint = " (train it with `blend train shapes-mini`)" if "shapes-mini" in str(path) else ""
            raise ValueError(f"model folder {path} does not exist (from source {source!r}){hint}")
        return str(path.resolve())
    return source.removeprefix(HUB)


def optional_file(source: str | None, base_dir) -> Path | None:
    """The file a `local-dir:` / path source names, or None when it has not been written yet."""
    if not source:
        return None
    path = local_path(source, base_dir)
    return path if path.is_file() else None


def local_file_target(source: str | None, base_dir) -> Path | None:
    """Where a `local-dir:` file source will be written (it may not exist yet); None for hub sources."""
    if not source or not is_local(source):
        return None
    return local_path(source, base_dir)


# ---------------------------------------------------------------------------------------- hub, offline

def open_clip_hub_id(model: str, pretrained: str | None) -> str | None:
    """The hub repository open_clip downloads `model`/`pretrained` from, or None (local or no weights)."""
    if is_local(model):
        return None
    if model.startswith(HUB):
        return model[len(HUB):]
    if not pretrained:
        return None
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, pretrained) or {}
    return (cfg.get("hf_hub") or "").strip("/") or None


def hub_repos(preset: dict) -> list[str]:
    """Every hub repository a preset loads weights from (encoder, image decoder and its prior, gap map)."""
    repos = [open_clip_hub_id(preset["encoder"]["model"], preset["encoder"].get("pretrained"))]
    for part in ("image_decoder", "text_decoder", "gap"):
        spec = preset.get(part, {})
        for key in ("source", "prior", "text_encoder"):
            value = spec.get(key)
            if isinstance(value, str) and value and not is_local(value) and "/" in value:
                repos.append(value.removeprefix(HUB))
    return list(dict.fromkeys(r for r in repos if r))


def offline() -> bool:
    """True when the hub is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(f.upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def is_cached(repo: str) -> bool:
    """True when a snapshot of `repo` is in the local hub cache (no network is used)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo, local_files_only=True)
        return True
    except Exception:  # noqa: BLE001 - any miss (not cached, no snapshot) means "fetch it first"
        return False


def hub_answers(repo: str, timeout: float = 3.0) -> bool:
    """True when the hub answers for `repo` within `timeout` seconds (one request, no retries)."""
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(repo, timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - unreachable, refused, DNS failure, timeout: all mean "not now"
        return False


def fetch_command(repos: list[str]) -> str:
    return "; ".join(f"hf download {r}" for r in repos)


def check_reachable(preset: dict) -> None:
    """Raise one ValueError, fast, when a preset's hub weights are neither cached nor downloadable now."""
    missing = [r for r in hub_repos(preset) if not is_cached(r)]
    if not missing:
        return
    why = "the hub is switched off (HF_HUB_OFFLINE)" if offline() else None
    if why is None and not hub_answers(missing[0]):
        why = "the hub cannot be reached"
    if why is None:
        return
    raise ValueError(
        f"preset {preset['name']!r} cannot load: {why} and its weights are not in the local cache ({', '.join(missing)}). "
        f"Fetch them ahead of time on a connected machine with `{fetch_command(missing)}` "
        f"(`huggingface-cli download` with older huggingface_hub), or point the preset's sources at folders with "
        f"`local-dir:PATH` (see README, Real models)")
