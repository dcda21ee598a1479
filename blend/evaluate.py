"""Blend quality, measured in the shapes world, where the true attributes of every image are known.

Each figure is the share of samples whose decoded output has all four attributes right (colour,
background, shape, size), read back by `world.read_attributes` from images and parsed from sentences.
"""
from __future__ import annotations

import random
import re

import torch

from . import world
from .ops import mix

_CAPTION = re.compile(r"^an? (small|large) (\w+) (circle|square|triangle) on an? (\w+) background$")


def parse_caption(text: str) -> tuple | None:
    """Attributes (color, background, shape, size) named by a canonical caption, or None."""
    m = _CAPTION.match(text.strip().lower())
    return (m.group(2), m.group(4), m.group(3), m.group(1)) if m else None


def _share(hits) -> float:
    hits = list(hits)
    return sum(hits) / len(hits)


def images_right(images, targets: list[world.Scene]) -> list[bool]:
    return [world.read_attributes(im).attributes == t.attributes for im, t in zip(images, targets)]


def texts_right(texts, targets: list[world.Scene]) -> list[bool]:
    return [parse_caption(t) == s.attributes for t, s in zip(texts, targets)]


def arithmetic_pairs(scenes: list[world.Scene], rng: random.Random) -> list[tuple[world.Scene, world.Scene, str]]:
    """For each x, an x' that differs in shape colour, shape or size (in turn), and which one changed."""
    out = []
    for i, s in enumerate(scenes):
        what = ("color", "shape", "size")[i % 3]
        if what == "color":
            new = s.with_(color=rng.choice([c for c in world.COLORS if c not in (s.color, s.background)]))
        elif what == "shape":
            new = s.with_(shape=rng.choice([x for x in world.SHAPES if x != s.shape]))
        else:
            new = s.with_(size="large" if s.size == "small" else "small")
        out.append((s, new, what))
    return out


@torch.no_grad()
def fidelity(blender, n: int = 200, seed: int = 2024, decode_seed: int = 0, steps: int | None = None,
             batch: int = 100) -> dict:
    """All six fidelity figures of issue 2 on `n` held-out scenes (fresh draws from `seed`)."""
    rng = random.Random(seed)
    scenes = [world.sample_scene(rng) for _ in range(n)]
    renders = [world.render(s) for s in scenes]
    captions = [world.caption(s) for s in scenes]
    E = blender.encode_images(renders)
    T = blender.encode_texts(captions)

    def decode(m):
        out = []
        for i in range(0, len(m), batch):
            out += blender.decode_images(m[i:i + batch], seed=decode_seed, steps=steps, size=world.SIZE)
        return out

    res = {"n": n}
    res["image_to_image"] = _share(images_right(decode(E), scenes))
    res["text_to_image"] = _share(images_right(decode(T), scenes))
    res["text_to_text"] = _share(t == c for t, c in zip(blender.decode_texts(T), captions))
    res["image_to_text"] = _share(texts_right(blender.decode_texts(E), scenes))

    pairs = arithmetic_pairs(scenes, rng)
    T2 = blender.encode_texts([world.caption(p[1]) for p in pairs])
    M = torch.stack([mix(torch.stack([E[i], T[i], T2[i]]), [1, -1, 1]) for i in range(n)])
    hits = images_right(decode(M), [p[1] for p in pairs])
    res["arithmetic"] = _share(hits)
    for what in ("color", "shape", "size"):
        res[f"arithmetic_{what}"] = _share(h for h, p in zip(hits, pairs) if p[2] == what)
    res["arithmetic_text"] = _share(texts_right(blender.decode_texts(M), [p[1] for p in pairs]))

    # word arithmetic: x - T(its colour word) + T(another colour word) -> x in the other colour
    words = sorted(set(world.COLORS))
    word_emb = dict(zip(words, blender.encode_texts(words)))
    targets, rows = [], []
    for i, s in enumerate(scenes):
        new = rng.choice([c for c in world.COLORS if c not in (s.color, s.background)])
        targets.append(s.with_(color=new))
        rows.append(mix(torch.stack([E[i], word_emb[s.color], word_emb[new]]), [1, -1, 1]))
    res["word_arithmetic"] = _share(images_right(decode(torch.stack(rows)), targets))
    return res


@torch.no_grad()
def zero_shot(blender, n: int = 500, seed: int = 1234) -> dict:
    """CLIP zero-shot accuracy: each held-out image classified among all 336 canonical captions."""
    combos = world.all_combinations()
    txt = blender.encode_texts([world.caption(world.Scene(*c)) for c in combos], raw=True)
    scenes = world.sample_scenes(n, seed)
    img = blender.encode_images([world.render(s) for s in scenes])
    pred = (img @ txt.T).argmax(-1).tolist()
    out = {a: _share(combos[p][k] == s.attributes[k] for p, s in zip(pred, scenes))
           for k, a in enumerate(world.ATTRIBUTES)}
    out["all"] = _share(combos[p] == s.attributes for p, s in zip(pred, scenes))
    return out


@torch.no_grad()
def gap_stats(blender, n: int = 300, seed: int = 5) -> dict:
    """The modality gap as CLIP leaves it: cos(image, its caption) and |mean(image) - mean(text)|, raw embeddings."""
    scenes = world.sample_scenes(n, seed)
    e = blender.encode_images([world.render(s) for s in scenes])
    t = blender.encode_texts([world.caption(s) for s in scenes], raw=True)
    return {"cos_image_caption": float((e * t).sum(-1).mean()), "mean_gap_norm": float((e.mean(0) - t.mean(0)).norm()),
            "cos_image_image": float((e @ e.T).mean()), "cos_text_text": float((t @ t.T).mean())}
