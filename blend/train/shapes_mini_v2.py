"""`blend train shapes-mini-v2`: the 64-px world's bundle, stage by stage (clip, vae, vae-decoder, decoder), resumable.

Within a session a stage resumes from its checkpoint in `work`; in a new session (no checkpoint) CLIP and VAE
continue from the bundle's committed weights, so long training spreads over several sittings.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

FULL = {"clip_steps": 4500, "vae_steps": 6000, "vae_decoder_steps": 4000, "decoder_steps": 12000, "decoder_batch": 64}
QUICK = {"clip_steps": 2, "vae_steps": 2, "vae_decoder_steps": 2, "decoder_steps": 2, "decoder_batch": 4}


def train_shapes_mini_v2(out: str | Path, work: str | Path | None = None, seed: int = 0, quick: bool = False,
                         stages=("clip", "vae", "vae-decoder", "decoder"), threads: int | None = None) -> dict:
    from .clip_v2 import train_clip
    from .unclip_v2 import train_decoder
    from .vae import finetune_vae_decoder, train_vae

    if threads:
        torch.set_num_threads(threads)
    out, sizes, times = Path(out), (QUICK if quick else FULL), {}
    work = Path(work or out.parent / f".{out.name}-work")
    work.mkdir(parents=True, exist_ok=True)
    small = {"groups": 4, "partial": 8, "eval_every": 10**9} if quick else {}
    if "clip" in stages:
        t = time.time()
        train_clip(out / "clip", steps=sizes["clip_steps"], seed=seed, work=work / "clip", log=work / "clip.jsonl",
                   **({"lr": 3e-4} if not quick else {}), **small)
        times["clip_s"] = round(time.time() - t)
    if "vae" in stages:
        t = time.time()
        train_vae(out / "decoder" / "vae", steps=sizes["vae_steps"], batch=4 if quick else 32, seed=seed,
                  work=work / "vae", log=work / "vae.jsonl", eval_every=10**9 if quick else 500)
        times["vae_s"] = round(time.time() - t)
    if "vae-decoder" in stages:  # the encoder frozen from here on, so this may run beside the UNet's training
        t = time.time()
        finetune_vae_decoder(out / "decoder" / "vae", steps=sizes["vae_decoder_steps"], batch=4 if quick else 32,
                             seed=seed + 1, work=work / "vae-decoder", log=work / "vae-decoder.jsonl",
                             eval_every=10**9 if quick else 500)
        times["vae_decoder_s"] = round(time.time() - t)
    if "decoder" in stages:
        t = time.time()
        train_decoder(out / "clip", out / "decoder" / "vae", out / "decoder", steps=sizes["decoder_steps"],
                      batch=sizes["decoder_batch"], seed=seed, work=work / "decoder", log=work / "decoder.jsonl",
                      eval_every=10**9 if quick else 1000)
        times["decoder_s"] = round(time.time() - t)
    record = work / "times.json"  # stages may run in separate processes: merge, don't overwrite
    before = json.loads(record.read_text()) if record.is_file() else {}
    record.write_text(json.dumps({**before, "seed": seed, **sizes, **times}, indent=2))
    return times
