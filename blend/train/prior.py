"""Training the shapes-mini prior: blends moved onto the image embeddings of the scenes they mean.

The prior (`decoders.mini.EmbeddingPrior`) is fitted on cached conditions from the decoder's own mixture
(`unclip.conditions`: images, captions, partial descriptions, word and caption arithmetic, analogies, slerps;
training scenes only), weighted towards word arithmetic, the blends that land furthest from any image: each
condition's target is the CLIP image embedding of the render of the scene it means, and the loss is the
cosine distance to it. Measured on the shipped bundle, with the draft that was fitted before it
(benchmarks/fidelity.py --n 200, held-out): the large - small direction 0.520 -> 0.955, word arithmetic for
shape 0.475 -> 0.875 and size 0.705 -> 0.950 (models/shapes-mini/README.md).
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

from ..decoders.mini import EmbeddingPrior
from .common import encode_renders, save_half, seed_everything
from .unclip import _clip, caption_codes, condition_dataset, fit

# the decoder's mixture with word arithmetic (the blends furthest from any image) at half of the rows
PRIOR_KINDS = {"image": 10, "caption": 5, "partial": 10, "word": 50, "caption_arith": 5, "analogy": 5, "mid": 15}
PRIOR_CONFIG = dict(hidden=1024, layers=3, split=True)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance of unit rows, in percent (so that the progress bar reads well)."""
    return 100 * (1 - (pred * target).sum(-1)).mean()


def train_prior(clip_dir: str | Path, out: str | Path, rows: int = 262144, steps: int = 20000, batch: int = 512,
                lr: float = 1e-3, seed: int = 2, cond_noise: float = 0.02, kinds: dict = PRIOR_KINDS,
                config: dict = PRIOR_CONFIG, log: str | Path | None = None, warm: bool = False) -> EmbeddingPrior:
    """Fit the prior on `rows` cached conditions (no dropped rows) and save it in `out`/prior (fp16) every 5,000
    steps and at the end. `warm`: start from the prior already in `out` (a fine-tune; a plain prior's net seeds
    both halves of a split one). About 10 min of data and 30 min of fitting on 2 cores."""
    seed_everything(seed)
    clip, tokenizer = _clip(clip_dir)
    cond, target = condition_dataset(clip, tokenizer, random.Random(seed), rows, cond_noise, 0.0,
                                     lambda scenes: encode_renders(clip, scenes), "prior data", kinds=kinds)
    prior = EmbeddingPrior(**{**config, "embed_dim": cond.shape[1]})
    if prior.config.split:  # the half that knows colour and background writes only their codes
        codes, code_rows = caption_codes(clip, tokenizer)
        prior.split_at(codes, code_rows["color"] + code_rows["background"])
    del clip
    if warm:
        warm_start_prior(prior, Path(out) / "prior" / "diffusion_pytorch_model.safetensors")
    return fit(prior, cond, target, cosine_loss, steps, batch, lr, seed, "prior", log,
               save=lambda m: save_half(m, Path(out) / "prior"), save_every=5000)


def warm_start_prior(prior: EmbeddingPrior, weights: Path) -> None:
    """Load `weights` into `prior`; a plain prior's net into both halves of a split one, each half's last layer
    keeping only what it may write (net: the seen codes' span; blind_net: the rest), so it starts near the old."""
    from safetensors.torch import load_file

    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    if not prior.config.split or any(k.startswith("blind_net.") for k in state):
        prior.load_state_dict(state)
        return
    net = {k.removeprefix("net."): v for k, v in state.items()}
    prior.net.load_state_dict(net)
    last = str(len(prior.net) - 1)
    rest = torch.eye(prior.config.embed_dim) - prior.seen_output
    prior.blind_net.load_state_dict({**net, f"{last}.weight": rest @ net[f"{last}.weight"],
                                     f"{last}.bias": net[f"{last}.bias"] @ rest})
