"""The shapes-mini CLIP's image tower, retrained against its locked text tower (LiT, Zhai et al. 2022, the other way round).

Why: the joint stage's CLIP (a 3-layer ViT with 8-px patches, trained with the text tower) learned a text space that is linear
in the six attributes (a one-hot linear model fits held-out captions at cosine 0.98, and a linear probe reads
shape from them at 0.98), but its image embeddings carried almost no shape: a linear probe read shape from
held-out images 0.32 of the time (chance 0.25) and size 0.61, so no decoder could draw the right shape. Here
the text tower is frozen and a small convolutional tower (open_clip's `ModifiedResNet`) learns to put every
image on its caption's embedding: a softmax over the embeddings of every training caption (the held-out
ones are never used, not even as negatives) plus a cosine pull onto its own. Images then sit in the text
space, where arithmetic is linear, and the image/text gap closes.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import world
from .clip import CLIP_CONFIG, build_clip, save_clip
from .common import Checkpoint, Progress, cosine_lr, encode_renders, seed_everything

SCALE = 50.0  # the logit scale of the caption softmax (fixed: the text side is locked)


def text_parameters(model) -> list[str]:
    return [k for k in model.state_dict() if not k.startswith("visual.")]


@torch.no_grad()
def caption_table(model, tokenizer, split: str = "train", batch: int = 2048) -> tuple[list[tuple], torch.Tensor]:
    """Every attribute combination of a split and its caption's unit embedding (the locked text tower)."""
    combos = world.all_combinations(split)
    caps = [world.caption(world.Scene(*c)) for c in combos]
    emb = torch.cat([F.normalize(model.encode_text(tokenizer(caps[i:i + batch])), dim=-1)
                     for i in range(0, len(caps), batch)])
    return combos, emb


def image_batch(rng: random.Random, n: int, noise: float):
    scenes = [world.sample_scene(rng, split="train") for _ in range(n)]
    x = world.to_tensor([world.render(s) for s in scenes])
    if noise > 0:  # decoded images are never exact renders
        x = x + torch.rand(n, 1, 1, 1) * noise * torch.randn_like(x)
    return scenes, x


@torch.no_grad()
def probe(model, table: tuple, n_train: int = 2000, n_test: int = 400, seed: int = 31) -> dict:
    """Held-out images: share whose nearest caption (among all 30,240) is their own, and linear-probe accuracy
    per attribute (a probe fit on training images), the figure the old tower failed on."""
    model.eval()
    combos, emb = table
    where = {c: i for i, c in enumerate(combos)}
    tr = world.sample_scenes(n_train, seed, split="train")
    ho = world.sample_scenes(n_test, seed + 1, split="held-out")
    enc = lambda sc: torch.cat([encode_renders(model, sc[i:i + 500]) for i in range(0, len(sc), 500)])
    e_tr, e_ho = enc(tr), enc(ho)
    own = torch.tensor([where[s.attributes] for s in ho])
    out = {"caption_top1": float(((e_ho @ emb.T).argmax(1) == own).float().mean()),
           "cos_own": float((e_ho * emb[own]).sum(1).mean())}
    with torch.enable_grad():
        for a in world.ATTRIBUTES:
            vals = world.VALUES[a]
            y_tr = torch.tensor([vals.index(getattr(s, a)) for s in tr])
            y_ho = torch.tensor([vals.index(getattr(s, a)) for s in ho])
            lin = torch.nn.Linear(e_tr.shape[1], len(vals))
            opt = torch.optim.Adam(lin.parameters(), 1e-2)
            for _ in range(200):
                loss = F.cross_entropy(lin(10 * e_tr), y_tr)
                opt.zero_grad(), loss.backward(), opt.step()
            out[f"probe_{a}"] = float((lin(10 * e_ho).argmax(1) == y_ho).float().mean())
    return out


def train_image_tower(out: str | Path, steps: int = 3000, batch: int = 256, lr: float = 2e-3, seed: int = 0,
                      noise: float = 0.1, cos_weight: float = 2.0, work: str | Path | None = None,
                      config: dict = CLIP_CONFIG, log: str | Path | None = None, stop_at: int | None = None,
                      eval_every: int = 500, save_every: int = 250):
    """Retrain `out`'s image tower against its locked text tower; the bundle in `out` is rewritten in place."""
    import open_clip
    from safetensors.torch import load_file

    out = Path(out)
    work = Path(work or out.parent / "_work" / "clip-image")
    seed_everything(seed)
    rng = random.Random(seed)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    model = build_clip(config)
    bundle = load_file(str(out / "open_clip_model.safetensors"))
    model.load_state_dict({k: v for k, v in bundle.items() if not k.startswith("visual.")}, strict=False)
    resumed_bundle = all(k in bundle and bundle[k].shape == v.shape for k, v in model.visual.state_dict(prefix="visual.").items())
    if resumed_bundle:  # the bundle already has this tower: continue from it
        model.load_state_dict(bundle)
    for k, p in model.named_parameters():
        p.requires_grad_(k.startswith("visual."))
    model.eval()
    table = caption_table(model, tokenizer, "train")
    test_table = caption_table(model, tokenizer, "all")
    opt = torch.optim.AdamW(model.visual.parameters(), lr=lr, weight_decay=0.05)
    ckpt = Checkpoint(work)
    start = ckpt.resume(model.visual, opt, rng)
    meta = out / "training.json"
    if start == 0 and resumed_bundle and meta.is_file():
        start = int(json.loads(meta.read_text()).get("image_steps", 0))
    where = {c: i for i, c in enumerate(table[0])}
    bar = Progress(steps, start, "clip-image", log)
    for step in range(start, steps):
        model.visual.train()
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup=100)
        scenes, x = image_batch(rng, batch, noise)
        img = F.normalize(model.encode_image(x), dim=-1)
        own = torch.tensor([where[s.attributes] for s in scenes])
        ce = F.cross_entropy(SCALE * img @ table[1].T, own)
        cos = (1 - (img * table[1][own]).sum(-1)).mean()
        loss = ce + cos_weight * cos
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.visual.parameters(), 1.0)
        opt.step()
        bar.update(step + 1, loss=loss.item(), ce=ce.item(), cos=cos.item())
        if (step + 1) % eval_every == 0 or step + 1 == steps >= eval_every:  # a final eval unless evals are off
            bar.write(json.dumps({"step": step + 1, **{k: round(v, 3) for k, v in probe(model, test_table).items()}}))
        if (step + 1) % save_every == 0 or step + 1 == steps:
            model.eval()
            save_clip(model, tokenizer.tokenizer, out, config)
            old = json.loads(meta.read_text()) if meta.is_file() else {}
            meta.write_text(json.dumps({**old, "image_steps": step + 1, "image_batch": batch, "image_seed": seed,
                                        "image_tower": "ModifiedResNet, text tower locked"}))
        if ckpt.step_done(model.visual, opt, rng, step + 1, steps, stop_at, every=100):
            bar.close()
            return None
    bar.close()
    return model.eval()
