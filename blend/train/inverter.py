"""Training a prefix text inverter on CLIP text embeddings with noise augmentation (CapDec).

`train_inverter` is one loop for any open_clip encoder: it embeds texts, adds Gaussian noise on the
sphere so the decoder learns a neighbourhood of each text rather than a point (which is where image
embeddings of the same meaning fall), and teaches a GPT-2 to say the text back. For shapes-mini the
corpus is generated from the world, and paired image embeddings may be mixed in (`image_share`).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .. import world
from .common import Checkpoint, Progress, cosine_lr, seed_everything


def noisy(emb: torch.Tensor, noise: float) -> torch.Tensor:
    """Unit embeddings plus isotropic noise of expected norm `noise`, back on the sphere."""
    return F.normalize(emb + noise / emb.shape[-1] ** 0.5 * torch.randn_like(emb), dim=-1)


def shapes_batch(rng: random.Random, n: int, partial_share: float = 0.35) -> tuple[list[world.Scene], list[str], list[bool]]:
    """Scenes, the text for each (canonical caption or a partial description), and whether it is canonical."""
    scenes = [world.sample_scene(rng) for _ in range(n)]
    texts, canonical = [], []
    for s in scenes:
        if rng.random() < partial_share:
            texts.append(world.random_partial(rng, s)[0])
            canonical.append(False)
        else:
            texts.append(world.caption(s))
            canonical.append(True)
    return scenes, texts, canonical


def train_inverter(encode_text: Callable, sample_texts: Callable, embed_dim: int, tokenizer, out: str | Path,
                   steps: int = 1500, batch: int = 128, lr: float = 1e-3, seed: int = 0, noise: float = 0.3,
                   encode_paired_images: Callable | None = None, image_share: float = 0.0,
                   work: str | Path | None = None, log: str | Path | None = None, model_kwargs: dict | None = None):
    """Train and save a `PrefixInverter`.

    Args:
        encode_text: list[str] -> (N, D) unit text embeddings (frozen CLIP).
        sample_texts: (rng, n) -> (texts, payload); payload goes to `encode_paired_images`.
        noise: expected norm of the Gaussian noise added to each unit text embedding (CapDec).
        encode_paired_images: optional (payload, mask) -> (M, D) image embeddings for the masked rows.
        image_share: share of rows whose condition is the paired image embedding instead of the text's.
    """
    from ..decode_text import PrefixInverter

    out = Path(out)
    work = Path(work or out.parent / "_work" / "inverter")
    seed_everything(seed)
    rng = random.Random(seed)
    model = PrefixInverter.build(tokenizer, embed_dim, **(model_kwargs or {}), noise=noise, image_share=image_share)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    ckpt = Checkpoint(work)
    start = 0
    if ckpt.exists:
        start = ckpt.load(model, opt)["step"]
        rng.setstate(random.getstate())
    bar = Progress(steps, start, "inverter", log)
    model.train()
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup=100)
        texts, payload = sample_texts(rng, batch)
        with torch.no_grad():
            emb = noisy(encode_text(texts), noise)
            if encode_paired_images is not None and image_share > 0:
                use = torch.tensor([rng.random() < image_share for _ in texts]) & payload["pairable"]
                if use.any():
                    emb[use] = noisy(encode_paired_images(payload, use), noise / 3)
        loss = model.loss(emb, texts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(step + 1, loss=loss.item())
        if (step + 1) % 250 == 0 or step + 1 == steps:
            random.setstate(rng.getstate())
            ckpt.save(model, opt, step + 1)
    bar.close()
    model.eval()
    model.save_pretrained(out)
    return model


def train_shapes_inverter(clip_dir: str | Path, out: str | Path, steps: int = 1500, image_share: float = 0.3,
                          noise: float = 0.3, seed: int = 0, work=None, log=None):
    """The shapes-mini inverter: world captions and partial descriptions, with paired renders mixed in."""
    import open_clip
    from transformers import AutoTokenizer

    clip = open_clip.create_model(f"local-dir:{clip_dir}").eval()
    clip_tok = open_clip.get_tokenizer(f"local-dir:{clip_dir}")
    tokenizer = AutoTokenizer.from_pretrained(str(clip_dir))

    def encode_text(texts):
        return F.normalize(clip.encode_text(clip_tok(texts)), dim=-1)

    def sample_texts(rng, n):
        scenes, texts, canonical = shapes_batch(rng, n)
        return texts, {"scenes": scenes, "pairable": torch.tensor(canonical)}

    def encode_images(payload, use):
        scenes = [s for s, u in zip(payload["scenes"], use.tolist()) if u]
        return F.normalize(clip.encode_image(world.to_tensor([world.render(s) for s in scenes])), dim=-1)

    return train_inverter(encode_text, sample_texts, clip.text_projection.shape[1], tokenizer, out, steps=steps,
                          noise=noise, seed=seed, encode_paired_images=encode_images, image_share=image_share,
                          work=work, log=log)
