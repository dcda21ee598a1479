"""Blend quality, measured in the shapes world (v2), where the true attributes of every image are known.

Every figure is the share of samples whose decoded output has every attribute right (all six, unless the
figure checks fewer): images are read back by `world.read_attributes`, sentences by `world.parse_caption`.
Each figure is measured twice, on held-out and on training combinations (`world.is_held_out`), because only
the held-out column shows what the models learned rather than what they saw.

A figure is a builder `(rng, split) -> Case`: the terms of one blend (scenes, encoded as their renders, and
words), how they are combined, and the scene it should decode to. `run_cases` encodes, blends, decodes and
reads the cases of every figure together, in batches, through the Blender API only.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import torch

from . import world
from .ops import apply_directions, direction, mix, slerp

SPLITS = ("held-out", "train")
TRIPLE = ("color", "shape", "background")  # the attributes the held-out rule reads


@dataclass(frozen=True)
class Case:
    """One sample of a figure.

    op "mix": mix(terms, weights); "slerp": slerp(terms[0], terms[1], weights[0]);
    "direction": apply_directions(terms[0], direction(terms[1], terms[2]), [weights[0]]).
    A term is a `world.Scene` (its render is encoded) or a string (encoded as text).
    """

    terms: tuple
    weights: tuple[float, ...]
    target: world.Scene
    op: str = "mix"
    check: tuple[str, ...] = world.ATTRIBUTES  # the attributes that must come out right
    out: str = "image"  # decode to an "image" or a "text"

    @property
    def scenes(self) -> list[world.Scene]:
        """Every scene the case touches: its image terms and its target."""
        return [t for t in self.terms if isinstance(t, world.Scene)] + [self.target]


# ---------------------------------------------------------------- scene builders, one split at a time


def _scene(rng: random.Random, split: str, **fixed) -> world.Scene:
    """A random scene of the split with some attributes fixed (rejection: every split holds each value)."""
    while True:
        s = world.sample_scene(rng, split=split)
        if all(getattr(s, k) == v for k, v in fixed.items()):
            return s


def _pair(rng: random.Random, k: str, split: str) -> tuple[world.Scene, world.Scene]:
    """(x, x') with x' = x with attribute k changed; x' is in the split (and x too, for the train split).

    A held-out x' differing in colour, shape or background may come from any x: the blend moves into a
    held-out triple. Changing size, position or lighting keeps the triple, so there x is held out too.
    """
    while True:
        x = world.sample_scene(rng, split="all" if split == "held-out" and k in TRIPLE else split)
        try:
            return x, world.variant(rng, x, k, split=split)
        except ValueError:  # no change of k lands in the split
            continue


def _same(x: world.Scene, y: world.Scene) -> tuple[str, ...]:
    return tuple(a for a in world.ATTRIBUTES if getattr(x, a) == getattr(y, a))


def image_to_image(rng, split):
    x = world.sample_scene(rng, split=split)
    return Case((x,), (1.0,), x)


def text_to_image(rng, split):
    x = world.sample_scene(rng, split=split)
    return Case((world.caption(x),), (1.0,), x)


def text_to_text(rng, split):
    x = world.sample_scene(rng, split=split)
    return Case((world.caption(x),), (1.0,), x, out="text")


def image_to_text(rng, split):
    x = world.sample_scene(rng, split=split)
    return Case((x,), (1.0,), x, out="text")


def caption_arithmetic(k: str) -> Callable:
    def build(rng, split):
        """E(x) - T(cap x) + T(cap x') -> x'."""
        x, x2 = _pair(rng, k, split)
        return Case((x, world.caption(x), world.caption(x2)), (1.0, -1.0, 1.0), x2)
    return build


def word_arithmetic(k: str) -> Callable:
    def build(rng, split):
        """E(x) - T(phrase of x's value) + T(phrase of the new value) -> x'."""
        x, x2 = _pair(rng, k, split)
        return Case((x, world.phrase(k, getattr(x, k)), world.phrase(k, getattr(x2, k))), (1.0, -1.0, 1.0), x2)
    return build


def partial_to_image(rng, split):
    """A random partial description -> an image with the named attributes right.

    On the held-out split the description names a held-out (colour, shape, background) triple, plus the
    random subset of the rest; a description naming at most two of the three is no held-out text.
    """
    x = world.sample_scene(rng, split=split)
    _, named = world.random_partial(rng, x)
    if split == "held-out":
        named = {**named, **{k: getattr(x, k) for k in TRIPLE}}
    check = tuple(a for a in world.ATTRIBUTES if a in named)
    return Case((world.partial_caption(**{a: named[a] for a in check}),), (1.0,), x, check=check)


def analogy(rng, split):
    """A + B - C, C = B with A's value of an attribute k -> A with B's value of k ("colour of B, shape of A")."""
    while True:
        a, b = world.sample_scene(rng), world.sample_scene(rng)
        k = rng.choice(world.ATTRIBUTES)
        if getattr(a, k) == getattr(b, k):
            continue
        try:
            c, target = b.with_(**{k: getattr(a, k)}), a.with_(**{k: getattr(b, k)})
        except ValueError:  # colour == background
            continue
        if split == "held-out" and target.held_out or split == "train" and not any(
                s.held_out for s in (a, b, c, target)):
            return Case((a, b, c), (1.0, 1.0, -1.0), target)


def slerp_midpoint(rng, split):
    """slerp(E(x), E(y), 0.5) of two scenes of the split that differ in 1-3 attributes: every shared one kept."""
    while True:
        x = world.sample_scene(rng, split=split)
        y = x
        for k in rng.sample(world.ATTRIBUTES, rng.randint(1, 3)):
            try:
                y = world.variant(rng, y, k, split=split)
            except ValueError:
                continue
        if y.attributes != x.attributes:
            return Case((x, y), (0.5,), x, op="slerp", check=_same(x, y))


def direction_large(rng, split):
    """apply_directions(E(x), direction(T("large"), T("small")), [1.5]) on a small x -> x large."""
    x = _scene(rng, split, size="small")
    return Case((x, "large", "small"), (1.5,), world.variant(rng, x, "size", value="large"), op="direction")


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    build: Callable  # (rng, split) -> Case
    target: float  # on held-out scenes (the target)
    floor: float  # what the tests assert


_EXAMPLE = {"color": "red", "background": "on a red background", "shape": "a star", "size": "large",
            "position": "on the left", "lighting": "lit from above"}


def _figures() -> list[Figure]:
    out = [
        Figure("image_to_image", "image -> image", image_to_image, 0.98, 0.93),
        Figure("text_to_text", "text -> text (caption -> its attributes)", text_to_text, 0.98, 0.93),
        Figure("image_to_text", "image -> text (the image's caption)", image_to_text, 0.98, 0.93),
        Figure("text_to_image", "text -> image (caption -> image)", text_to_image, 0.95, 0.88),
    ]
    out += [Figure(f"caption_arithmetic_{k}", f"E(x) - T(cap x) + T(cap x') -> x', x' differs in {k}",
                   caption_arithmetic(k), 0.95, 0.85) for k in world.ATTRIBUTES]
    out += [Figure(f"word_arithmetic_{k}", f"E(x) - T(old) + T(new) -> x', {k} words (\"{_EXAMPLE[k]}\")",
                   word_arithmetic(k), 0.90, 0.80) for k in world.ATTRIBUTES]
    out += [
        Figure("partial_to_image", "partial description -> image (named attributes)", partial_to_image, 0.95, 0.85),
        Figure("analogy", "analogy A + B - C -> A with B's value of k", analogy, 0.90, 0.75),
        Figure("slerp_midpoint", "slerp(E(x), E(y), 0.5) keeps the shared attributes", slerp_midpoint, 0.95, 0.85),
        Figure("direction_large", "E(small x) + 1.5 (T(large) - T(small)) -> x large", direction_large, 0.90, 0.80),
    ]
    return out


FIGURES: dict[str, Figure] = {f.key: f for f in _figures()}


def cases(key: str, split: str, n: int, seed: int) -> list[Case]:
    """n cases of one figure on one split, the same for the same (key, split, n, seed)."""
    rng = random.Random(f"{seed}:{key}:{split}")  # str seeds hash with sha512: stable across runs
    return [FIGURES[key].build(rng, split) for _ in range(n)]


def below_floor(res: dict) -> list[str]:
    """The figures (and splits) of a `fidelity` result under their floor, as readable strings."""
    return [f"{key} on {split}: {share:.3f} < floor {FIGURES[key].floor:.2f}"
            for key, shares in res["figures"].items() for split, share in shares.items()
            if not share >= FIGURES[key].floor]


# ---------------------------------------------------------------- running cases through the Blender API


def _chunks(seq, size):
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


@torch.no_grad()
def embed_terms(blender, all_cases: list[Case], batch: int = 256) -> dict:
    """Every distinct term of the cases -> its (D,) blend-space embedding (renders and texts, in batches)."""
    scenes = list(dict.fromkeys(t for c in all_cases for t in c.terms if isinstance(t, world.Scene)))
    texts = list(dict.fromkeys(t for c in all_cases for t in c.terms if isinstance(t, str)))
    out = {}
    for part in _chunks(scenes, batch):
        out.update(zip(part, blender.encode_images([world.render(s) for s in part])))
    for part in _chunks(texts, batch):
        out.update(zip(part, blender.encode_texts(part)))
    return out


def point(case: Case, emb: dict) -> torch.Tensor:
    """The case's blend: a (D,) unit vector."""
    e = [emb[t] for t in case.terms]
    if case.op == "mix":
        return mix(torch.stack(e), list(case.weights))
    if case.op == "slerp":
        return slerp(e[0], e[1], case.weights[0])
    if case.op == "direction":
        return apply_directions(e[0], [direction(e[1][None], e[2][None])], [case.weights[0]])
    raise ValueError(f"unknown op {case.op!r}")


@torch.no_grad()
def run_cases(blender, all_cases: list[Case], seeds: list[int], batch: int = 64, steps: int | None = None,
              progress: bool = True) -> list[dict]:
    """Decode every case (image cases with their own seed, in batches of `batch`) and read it back.

    Returns one dict per case: `ok` (the checked attributes right), `read` (the attributes seen or parsed),
    and for images `background_std`.
    """
    from tqdm.auto import tqdm

    emb = embed_terms(blender, all_cases)
    points = torch.stack([point(c, emb) for c in all_cases])  # (N, D)
    results: list[dict | None] = [None] * len(all_cases)
    images = [i for i, c in enumerate(all_cases) if c.out == "image"]
    texts = [i for i, c in enumerate(all_cases) if c.out == "text"]
    bar = tqdm(total=len(all_cases), desc="fidelity", unit="case", disable=not progress)
    for part in _chunks(texts, 256):
        for i, sentence in zip(part, blender.decode_texts(points[part])):
            parsed = world.parse_caption(sentence)
            results[i] = {"ok": parsed == all_cases[i].target.attributes, "read": parsed, "sentence": sentence}
        bar.update(len(part))
    for part in _chunks(images, batch):
        decoded = blender.decode_images(points[part], seed=[seeds[i] for i in part], steps=steps, size=world.SIZE)
        for i, im in zip(part, decoded):
            r = world.read_attributes(im)
            results[i] = {"ok": r.matches(all_cases[i].target, all_cases[i].check), "read": r.attributes,
                          "background_std": world.background_std(im, r)}
        bar.update(len(part))
    bar.close()
    return results


def _mean(xs) -> float:
    xs = [float(x) for x in xs]
    return sum(xs) / len(xs) if xs else float("nan")


@torch.no_grad()
def fidelity(blender, n: int = 200, seed: int = 2024, figures: list[str] | None = None,
             splits: tuple[str, ...] = SPLITS, batch: int = 64, steps: int | None = None,
             progress: bool = True) -> dict:
    """Every figure on n cases per split (row i of a figure decodes with seed i).

    Args:
        blender: a loaded shapes-world preset (`blend.load("shapes-mini")`).
        n: cases per figure and split.
        seed: draws the scenes; each figure and split has its own stream.
        figures: keys of FIGURES (default all).
        batch: rows per image decode.
        steps: decoder steps (default: the preset's).
    Returns:
        {"figures": {key: {split: share}}, "background_std": {split: mean over the decoded images},
         "background_std_renders": {split: the same on the true renders}, "n", "seed", "wall_s"}.
    """
    import time

    start = time.perf_counter()
    keys = list(figures or FIGURES)
    plan = [(k, s, c) for k in keys for s in splits for c in cases(k, s, n, seed)]
    seeds = [i % n for i in range(len(plan))]  # row i of every figure and split: seed i
    results = run_cases(blender, [c for _, _, c in plan], seeds, batch=batch, steps=steps, progress=progress)
    out = {"n": n, "seed": seed, "figures": {k: {} for k in keys}, "background_std": {},
           "background_std_renders": {}}
    for k in keys:
        for s in splits:
            out["figures"][k][s] = _mean(r["ok"] for (kk, ss, _), r in zip(plan, results) if (kk, ss) == (k, s))
    for s in splits:
        stds = [r["background_std"] for (_, ss, _), r in zip(plan, results) if ss == s and "background_std" in r]
        out["background_std"][s] = _mean(v for v in stds if v == v)  # nan: no background seen in that image
        renders = [world.render(c.target) for kk, ss, c in plan if ss == s and kk == "image_to_image"]
        out["background_std_renders"][s] = _mean(world.background_std(im) for im in renders)
    out["wall_s"] = time.perf_counter() - start
    return out


# ---------------------------------------------------------------- CLIP itself


@torch.no_grad()
def zero_shot(blender, n: int = 500, seed: int = 1234, splits: tuple[str, ...] = SPLITS) -> dict:
    """CLIP zero-shot accuracy per attribute: an image's own caption must beat every caption with that attribute changed.

    Raw CLIP embeddings (no gap map). "all": the own caption beats every one-attribute change at once.
    Returns {split: {attribute: accuracy, "all": accuracy}}.
    """
    out = {}
    for split in splits:
        scenes = world.sample_scenes(n, seed, split)
        rivals = [{k: [world.caption(s.with_(**{k: v})) for v in world.VALUES[k] if v != getattr(s, k)
                       and (k not in ("color", "background") or v != (s.background if k == "color" else s.color))]
                   for k in world.ATTRIBUTES} for s in scenes]
        texts = list(dict.fromkeys([world.caption(s) for s in scenes] +
                                   [t for r in rivals for ts in r.values() for t in ts]))
        txt = dict(zip(texts, torch.cat([blender.encode_texts(p, raw=True) for p in _chunks(texts, 512)])))
        img = torch.cat([blender.encode_images([world.render(s) for s in p]) for p in _chunks(scenes, 256)])
        wins = {k: [] for k in world.ATTRIBUTES}
        for e, s, r in zip(img, scenes, rivals):
            own = float(e @ txt[world.caption(s)])
            for k, ts in r.items():
                wins[k].append(all(float(e @ txt[t]) < own for t in ts))
        out[split] = {k: _mean(v) for k, v in wins.items()}
        out[split]["all"] = _mean(all(ws) for ws in zip(*wins.values()))
    return out
