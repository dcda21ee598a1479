"""The shapes-mini v2 text inverter: the generic prefix-inverter loop (`inverter.train_inverter`) on the 64-px world."""
from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import world_v2 as world
from .inverter import train_inverter


def shapes_batch(rng: random.Random, n: int, partial_share: float = 0.25) -> tuple[list[str], list[bool]]:
    """Texts of training scenes (a canonical caption, or a partial description), and whether each is a caption."""
    texts, canonical = [], []
    for _ in range(n):
        s = world.sample_scene(rng, split="train")
        if rng.random() < partial_share:
            texts.append(world.random_partial(rng, s, bare_p=0.2)[0]), canonical.append(False)
        else:
            texts.append(world.caption(s)), canonical.append(True)
    return texts, canonical


def train_shapes_inverter(clip_dir: str | Path, out: str | Path, steps: int = 3000, blend_share: float = 0.5,
                          noise: float = 0.3, batch: int = 128, seed: int = 0, work=None, log=None,
                          stop_at: int | None = None):
    """The shapes-mini inverter: world captions and partial descriptions said back from their noisy text
    embeddings (CapDec), and, for `blend_share` of the caption rows, the caption of the scene a blend means
    from the blend's embedding (images, word and caption arithmetic, analogies, midpoints: the decoder's own
    training conditions, `unclip_v2.conditions`). Training scenes only. Its tokenizer keeps the comma, so
    the sentences are captions as `world.caption` spells them."""
    import open_clip

    from ..tokenizer import build_word_tokenizer
    from .unclip_v2 import conditions

    clip = open_clip.create_model(f"local-dir:{clip_dir}").eval()
    clip_tok = open_clip.get_tokenizer(f"local-dir:{clip_dir}")
    tokenizer = build_word_tokenizer(world.VOCAB_WORDS, max_length=32, punctuation=",")
    dim = clip.text_projection.shape[1]

    def encode_text(texts):
        return F.normalize(clip.encode_text(clip_tok(texts)), dim=-1)

    def sample_texts(rng, n):
        texts, canonical = shapes_batch(rng, n)
        use = torch.tensor([c and rng.random() < blend_share for c in canonical])
        cond, targets = conditions(clip, clip_tok, rng, int(use.sum()), noise=0.0, drop=0.0)
        it = iter(zip(cond, targets))
        rows = []
        for i, u in enumerate(use.tolist()):
            if u:
                e, target = next(it)
                texts[i] = world.caption(target)
                rows.append(e)
        return texts, {"pairable": use, "cond": torch.stack(rows) if rows else torch.zeros(0, dim)}

    def encode_blends(payload, use):
        return payload["cond"]  # `use` is exactly the pairable rows (image_share = 1)

    return train_inverter(encode_text, sample_texts, dim, tokenizer, out, steps=steps, batch=batch, noise=noise,
                          seed=seed, encode_paired_images=encode_blends, image_share=1.0,
                          work=work, log=log, stop_at=stop_at)
