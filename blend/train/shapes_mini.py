"""`blend train shapes-mini`: the whole embedded bundle from scratch, stage by stage, each resumable."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

# stage sizes used for the shipped bundle; `--quick` shrinks them to a smoke run
FULL = {"clip_steps": 500, "decoder_steps": 13000, "decoder_batch": 64, "inverter_steps": 1500}
QUICK = {"clip_steps": 3, "decoder_steps": 3, "decoder_batch": 4, "inverter_steps": 3}


def train_shapes_mini(out: str | Path, work: str | Path | None = None, seed: int = 0, quick: bool = False,
                      stages=("clip", "decoder", "inverter"), threads: int | None = None) -> dict:
    """Train CLIP, then the image decoder and the text inverter on it, into `out` (a bundle folder)."""
    from .clip import train_clip
    from .inverter import train_shapes_inverter
    from .unclip import train_decoder

    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    work = Path(work or out.parent / f".{out.name}-work")
    work.mkdir(parents=True, exist_ok=True)
    sizes = QUICK if quick else FULL
    times = {}
    if "clip" in stages:
        t = time.time()
        train_clip(out / "clip", steps=sizes["clip_steps"], seed=seed, work=work / "clip", log=work / "clip.jsonl",
                   batch=16 if quick else 256, partial=8 if quick else 128)
        times["clip_s"] = round(time.time() - t)
    if "decoder" in stages:
        t = time.time()
        train_decoder(out / "clip", out / "decoder", steps=sizes["decoder_steps"], batch=sizes["decoder_batch"],
                      seed=seed, work=work / "decoder", log=work / "decoder.jsonl",
                      eval_every=max(1, sizes["decoder_steps"] // 20))
        times["decoder_s"] = round(time.time() - t)
    if "inverter" in stages:
        t = time.time()
        train_shapes_inverter(out / "clip", out / "inverter", steps=sizes["inverter_steps"], seed=seed,
                              work=work / "inverter", log=work / "inverter.jsonl")
        times["inverter_s"] = round(time.time() - t)
    (out / "training.json").write_text(json.dumps({"seed": seed, **sizes, **times}, indent=2))
    return times


def clean_work(out: str | Path):
    shutil.rmtree(Path(out).parent / f".{Path(out).name}-work", ignore_errors=True)
