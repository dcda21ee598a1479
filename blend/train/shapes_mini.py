"""`blend train shapes-mini`: the 64-px world's bundle, stage by stage, each resumable.

Stages, in order (each reads what the ones before it wrote into `out`):
  clip         the joint CLIP (text tower + a small ViT) for arithmetic on meaning      train/clip.py
  clip-image   the image tower replaced by a ModifiedResNet, trained on the locked text  train/clip_image.py
  vae          the latent autoencoder, then `vae-decoder` (its decoder, encoder frozen)  train/vae.py
  prior        the EmbeddingPrior (a blend -> the image embedding of what it means)      train/prior.py
  draft        the LayeredDraft (the prior's output -> picture: a mask over two layers)  train/unclip.py
  decoder      the latent UNet, redrawing the frozen draft for seeded variations          train/unclip.py
  inverter     the GPT-2 text inverter                                                  train/inverter.py
Within a session a stage resumes from its checkpoint in `work`; in a new session (no checkpoint) a stage
continues from the bundle's committed weights, so long training spreads over several sittings.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

STAGES = ("clip", "clip-image", "vae", "vae-decoder", "prior", "draft", "decoder", "inverter")
# stage sizes of the shipped bundle; `--quick` shrinks them to a smoke run
FULL = {"clip_steps": 4200, "clip_image_steps": 1300, "vae_steps": 6000, "vae_decoder_steps": 4000,
        "prior_steps": 20000, "draft_steps": 12000, "decoder_steps": 9000, "decoder_batch": 64, "inverter_steps": 3000}
QUICK = {"clip_steps": 2, "clip_image_steps": 2, "vae_steps": 2, "vae_decoder_steps": 2, "prior_steps": 2, "draft_steps": 2,
         "decoder_steps": 2, "decoder_batch": 4, "inverter_steps": 2}


def train_shapes_mini(out: str | Path, work: str | Path | None = None, seed: int = 0, quick: bool = False,
                      stages=STAGES, threads: int | None = None) -> dict:
    """Train the stages named in `stages` into the bundle folder `out`; seconds per stage."""
    from .clip import train_clip
    from .clip_image import train_image_tower
    from .inverter import train_shapes_inverter
    from .prior import train_prior
    from .unclip import train_decoder, train_draft
    from .vae import finetune_vae_decoder, train_vae

    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; known: {', '.join(STAGES)}")
    if threads:
        torch.set_num_threads(threads)
    out, sizes, times = Path(out), (QUICK if quick else FULL), {}
    work = Path(work or out.parent / f".{out.name}-work")
    work.mkdir(parents=True, exist_ok=True)
    quiet = 10**9  # no periodic evaluation in a smoke run
    runs = {
        "clip": lambda: train_clip(out / "clip", steps=sizes["clip_steps"], seed=seed, work=work / "clip",
                                   log=work / "clip.jsonl", **({"groups": 4, "partial": 8, "eval_every": quiet}
                                                               if quick else {"lr": 3e-4})),
        "clip-image": lambda: train_image_tower(out / "clip", steps=sizes["clip_image_steps"], seed=seed,
                                                batch=8 if quick else 256, work=work / "clip-image",
                                                log=work / "clip-image.jsonl", eval_every=quiet if quick else 500),
        "vae": lambda: train_vae(out / "decoder" / "vae", steps=sizes["vae_steps"], batch=4 if quick else 32,
                                 seed=seed, work=work / "vae", log=work / "vae.jsonl",
                                 eval_every=quiet if quick else 500),
        "vae-decoder": lambda: finetune_vae_decoder(out / "decoder" / "vae", steps=sizes["vae_decoder_steps"],
                                                    batch=4 if quick else 32, seed=seed + 1, work=work / "vae-decoder",
                                                    log=work / "vae-decoder.jsonl", eval_every=quiet if quick else 500),
        "prior": lambda: train_prior(out / "clip", out / "decoder", steps=sizes["prior_steps"],
                                     rows=64 if quick else 262144, batch=8 if quick else 512, seed=seed + 2,
                                     log=work / "prior.jsonl"),
        "draft": lambda: train_draft(out / "clip", out / "decoder", steps=sizes["draft_steps"],
                                     rows=64 if quick else 163840, batch=8 if quick else 256, seed=seed + 1,
                                     log=work / "draft.jsonl"),
        "decoder": lambda: train_decoder(out / "clip", out / "decoder" / "vae", out / "decoder",
                                         steps=sizes["decoder_steps"], batch=sizes["decoder_batch"], seed=seed,
                                         work=work / "decoder", log=work / "decoder.jsonl",
                                         eval_every=quiet if quick else 1000),
        "inverter": lambda: train_shapes_inverter(out / "clip", out / "inverter", steps=sizes["inverter_steps"],
                                                  batch=8 if quick else 128, seed=seed, work=work / "inverter",
                                                  log=work / "inverter.jsonl"),
    }
    for stage in STAGES:
        if stage in stages:
            t = time.time()
            runs[stage]()
            times[f"{stage}_s"] = round(time.time() - t)
    record = work / "times.json"  # stages may run in separate processes: merge, don't overwrite
    before = json.loads(record.read_text()) if record.is_file() else {}
    record.write_text(json.dumps({**before, "seed": seed, **sizes, **times}, indent=2))
    return times
