"""Measure, once per preset, the statistics real decoders need: `blend calibrate` and `blend index`.

A preset's stats file (safetensors beside the preset) holds, from the preset's own encoder:
  image_norm  mean L2 norm of raw image embeddings: the scale image decoders restore (see blend/decoders/common.py)
  shift       mean(image) - mean(text) of unit embeddings: the `mean-shift` gap map (Liang et al. 2022)
  zero_image  raw embedding of the all-zero pixel tensor: Kandinsky's default negative image embedding
  linear.*    with paired data, ridge-regressed maps text -> image and image -> text (the `linear` gap map)
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .sources import local_file_target

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The images in a folder, sorted by name (the order `--paired` captions follow)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"images: no folder at {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"images: no {'/'.join(sorted(IMAGE_SUFFIXES))} files in {folder}")
    return files


@torch.no_grad()
def raw_image_embeddings(encoder, images, batch: int = 32) -> torch.Tensor:
    """Images -> (N, D) float32 image embeddings before normalization (their norm is what decoders were fed)."""
    from .encode import load_image

    out = []
    for i in range(0, len(images), batch):
        pils = [load_image(im, f"images[{i + j}]") for j, im in enumerate(images[i:i + batch])]
        x = torch.stack([encoder.preprocess(im) for im in pils]).to(encoder.device, encoder._dtype())
        out.append(encoder.model.encode_image(x).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def zero_image(encoder) -> torch.Tensor:
    """(D,) raw embedding of the all-zero (already normalized) pixel tensor, as diffusers' `get_zero_embed`."""
    size = encoder.model.visual.image_size
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.zeros(1, 3, h, w, device=encoder.device, dtype=encoder._dtype())
    return encoder.model.encode_image(x)[0].float().cpu()


def measure(blender, images, captions, paired: bool = False) -> dict[str, torch.Tensor]:
    """The stats-file tensors for one preset, from images and captions of similar content."""
    from .decode_text import embed_texts, read_captions
    from .gap import LinearMap, MeanShift
    from .ops import normalize

    captions = read_captions(captions)
    if paired and len(images) != len(captions):
        raise ValueError(f"paired calibration needs one caption per image: {len(images)} images, "
                         f"{len(captions)} captions")
    raw = raw_image_embeddings(blender.encoder, list(images))
    img, txt = normalize(raw), embed_texts(blender.encoder, captions)
    stats = {"image_norm": raw.norm(dim=-1).mean().reshape(()), "shift": MeanShift.fit(img, txt),
             "zero_image": zero_image(blender.encoder), "count": torch.tensor([len(img), len(txt)])}
    if paired:
        stats.update(LinearMap.fit(img, txt))
    return stats


def default_stats_path(preset: dict) -> Path | None:
    """Where the preset reads its stats: the image decoder's `stats`, else its gap map's `source`."""
    for spec in (preset.get("image_decoder", {}), preset.get("gap", {})):
        for key in ("stats", "source", "to_text_source"):
            src = spec.get(key)
            path = local_file_target(src, preset["_dir"])
            if path is not None and path.suffix == ".safetensors":
                return path
    return None


def calibrate(blender, images, captions, out: str | os.PathLike | None = None, paired: bool = False) -> Path:
    """Measure the preset's statistics and write its stats file (default: the path the preset names).

    Args:
        images: a folder of images or a list of images (a few hundred, of the content you will blend).
        captions: a text file (one caption a line) or a list; with `paired`, caption i describes image i.
    Returns:
        the path written.
    """
    from safetensors.torch import save_file

    if isinstance(images, (str, os.PathLike)):
        images = image_files(images)
    out = Path(out) if out else default_stats_path(blender.preset)
    if out is None:
        raise ValueError(f"preset {blender.name!r} names no stats file: give --out")
    stats = measure(blender, images, captions, paired)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in stats.items()}, str(out),
              metadata={"preset": blender.name, "encoder": blender.encoder.name})
    return out


def default_bank_path(preset: dict) -> Path | None:
    spec = preset.get("text_decoder", {})
    return local_file_target(spec.get("source"), preset["_dir"]) if spec.get("type") == "retrieval" else None


def index(blender, captions, out: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Embed a caption bank once with the preset's encoder and save it (default: the preset's retrieval source)."""
    from .decode_text import CaptionBank

    out = Path(out) if out else default_bank_path(blender.preset)
    if out is None:
        raise ValueError(f"preset {blender.name!r} has no retrieval text decoder to index for: give --out")
    bank = CaptionBank.build(blender.encoder, captions, progress=progress)
    bank.save(out)
    return out
