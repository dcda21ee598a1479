"""Contrastive training of the shapes-mini CLIP, an ordinary open_clip `CLIP` built from a JSON config.

Each batch holds scenes with pairwise distinct attribute combinations, their canonical captions, and
partial descriptions ("red", "a large circle", "on a blue background"). A partial description is a
positive for every image it is true of (a multi-positive InfoNCE), so short prompts and single words
land at the centre of what they describe and word arithmetic has something to work with.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import world
from .common import Checkpoint, Progress, cosine_lr, seed_everything

CLIP_CONFIG = json.loads((Path(__file__).parents[1] / "model_configs" / "shapes-mini.json").read_text())
PREPROCESS_CONFIG = {"size": world.SIZE, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                     "interpolation": "bilinear", "resize_mode": "squash"}


def build_clip(config: dict = CLIP_CONFIG):
    from open_clip.model import CLIP

    return CLIP(**config)


def save_clip(model, tokenizer, folder: str | Path, config: dict = CLIP_CONFIG, preprocess: dict = PREPROCESS_CONFIG):
    """Write an open_clip `local-dir:` bundle: open_clip_config.json, open_clip_model.safetensors, tokenizer."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    tokenizer.save_pretrained(str(folder))


def clip_batch(rng: random.Random, n_scenes: int, n_partial: int, noise: float):
    """Images (N,3,S,S), texts (N + P), and positives (N + P, N): text j is true of image i."""
    scenes = world.distinct_batch(rng, n_scenes)
    images = world.to_tensor([world.render(s) for s in scenes])
    if noise > 0:  # decoded images are never exact renders: teach the encoder to read slightly noisy ones
        sigma = torch.rand(len(scenes), 1, 1, 1) * noise
        images = images + sigma * torch.randn_like(images)
    texts = [world.caption(s) for s in scenes]
    positives = torch.eye(n_scenes, dtype=torch.bool)
    rows = []
    for _ in range(n_partial):
        text, subset = world.random_partial(rng, rng.choice(scenes))
        texts.append(text)
        rows.append([all(getattr(s, k) == v for k, v in subset.items()) for s in scenes])
    if rows:
        positives = torch.cat([positives, torch.tensor(rows)], 0)
    return images, texts, positives


def clip_loss(img: torch.Tensor, txt: torch.Tensor, positives: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; images score against canonical captions only, texts against all their true images."""
    n = img.shape[0]
    logits = scale * txt @ img.T  # (N + P, N)
    target = positives.float() / positives.float().sum(1, keepdim=True)
    t2i = -(target * logits.log_softmax(-1)).sum(-1).mean()
    i2t = F.cross_entropy(logits[:n].T, torch.arange(n))
    return (t2i + i2t) / 2


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, n: int = 500, seed: int = 1234) -> dict:
    """Classify held-out images among all 336 canonical captions; per-attribute and all-four accuracy."""
    combos = world.all_combinations()
    captions = [world.caption(world.Scene(*c)) for c in combos]
    txt = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
    scenes = world.sample_scenes(n, seed)
    img = F.normalize(model.encode_image(world.to_tensor([world.render(s) for s in scenes])), dim=-1)
    pred = (img @ txt.T).argmax(-1)
    out = {a: 0.0 for a in world.ATTRIBUTES}
    out["all"] = 0.0
    for s, p in zip(scenes, pred.tolist()):
        guess = combos[p]
        for a, g, t in zip(world.ATTRIBUTES, guess, s.attributes):
            out[a] += (g == t) / n
        out["all"] += (guess == s.attributes) / n
    return out


def train_clip(out: str | Path, steps: int = 600, batch: int = 256, partial: int = 128, lr: float = 1e-3,
               seed: int = 0, noise: float = 0.1, work: str | Path | None = None, config: dict = CLIP_CONFIG,
               log: str | Path | None = None, stop_at: int | None = None):
    """Train the shapes-mini CLIP and save it as an open_clip `local-dir:` bundle in `out`. Resumable from `work`."""
    from open_clip.tokenizer import HFTokenizer

    from ..tokenizer import save_word_tokenizer

    out = Path(out)
    work = Path(work or out.parent / "_work" / "clip")
    seed_everything(seed)
    rng = random.Random(seed)
    tok_dir = work / "tokenizer"
    save_word_tokenizer(tok_dir)
    tokenizer = HFTokenizer(str(tok_dir), context_length=config["text_cfg"]["context_length"])
    model = build_clip(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    ckpt = Checkpoint(work)
    start = ckpt.resume(model, opt, rng)
    bar = Progress(steps, start, "clip", log)
    model.train()
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup=min(50, steps // 10 + 1))
        images, texts, positives = clip_batch(rng, batch, partial, noise)
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
        loss = clip_loss(img, txt, positives, model.logit_scale.exp().clamp(max=100))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(step + 1, loss=loss.item(), scale=model.logit_scale.exp().item())
        if ckpt.step_done(model, opt, rng, step + 1, steps, stop_at, every=100):
            bar.close()
            return None
    model.eval()
    acc = zero_shot_accuracy(model, tokenizer)
    bar.write(f"clip zero-shot accuracy: {json.dumps({k: round(v, 4) for k, v in acc.items()})}")
    bar.close()
    save_clip(model, tokenizer.tokenizer, out, config)
    return model, acc
