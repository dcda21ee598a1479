"""Running a recipe on a Blender: encode its terms, blend, decode images and sentences, check they agree.

    result = run_recipe(blender, recipe)     # result.images, result.texts, result.agreement, result.recipe
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from PIL import Image

from . import ops
from .agreement import Agreement, sentences_and_agreement
from .directions import direction_vector
from .images import image_to_data_uri
from .recipe import Recipe, Term

Progress = Callable[[float, str], None]


@dataclass
class Result:
    """What a recipe made. `texts` has one sentence per point; `images` one picture per caption."""

    recipe: Recipe  # resolved: preset filled in, each direction's definition copied in
    points: torch.Tensor  # (M, D) the decoded embeddings
    texts: list[str]
    images: list[Image.Image]
    captions: list[str]
    nearest: list[tuple[str, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    agreement: list[Agreement] = field(default_factory=list)  # one per image

    def labelled(self) -> list[tuple[Image.Image, str]]:
        """(image, caption) pairs; where each image has its own point, the caption carries its sentence."""
        if len(self.images) == len(self.texts) and len(self.texts) > 1:
            return [(im, f"{c}: {t}") for im, c, t in zip(self.images, self.captions, self.texts)]
        return list(zip(self.images, self.captions))

    def to_dict(self) -> dict:
        """JSON for API clients: images as PNG data URIs."""
        return {"recipe": self.recipe.to_dict(), "texts": self.texts, "captions": self.captions,
                "images": [image_to_data_uri(im, max_side=4096) for im in self.images],
                "nearest": [{"name": n, "cosine": round(s, 4)} for n, s in self.nearest],
                "embeddings": [[round(x, 6) for x in row] for row in self.points.tolist()],
                "agreement": [a.to_dict() for a in self.agreement],
                "warnings": self.warnings}


def encode_terms(blender, terms: Sequence[Term], examples_dir=None, library=None) -> torch.Tensor:
    """Terms -> (K, D) unit embeddings in the blend space, in order. A recipe term is its recipe's point."""
    rows = []
    for i, t in enumerate(terms):
        try:
            if t.kind == "image":
                rows.append(blender.encode_images([t.load_image(examples_dir)]))
            elif t.kind == "text":
                rows.append(blender.encode_texts([t.value]))
            else:
                rows.append(recipe_point(blender, t.inner(), library, examples_dir)[None])
        except ValueError as e:
            msg, sep = str(e), ": "
            for prefix in ("texts[0]", "images[0]", "image"):
                if msg.startswith(prefix):
                    msg, sep = msg[len(prefix):].lstrip(": "), " " if msg[len(prefix):].startswith(" ") else ": "
                    break
            raise ValueError(f"term {i + 1} ({t.label[:40]}){sep}{msg}") from e
    return torch.cat(rows)


def resolve_directions(blender, recipe: Recipe, library) -> list[torch.Tensor]:
    """Each direction's vector; its definition is copied into the recipe so the recipe outlives the library."""
    vecs = []
    for d in recipe.directions:
        if "definition" not in d:
            if library is None:
                raise ValueError(f"direction {d['name']!r} has no definition and no direction library was given")
            d["definition"] = library.get(d["name"]).to_dict()
        vecs.append(direction_vector(blender, d["definition"]))
    return vecs


def base_point(blender, recipe: Recipe, library=None, examples_dir=None) -> torch.Tensor:
    """The mix of a mix/directions recipe's active terms, before directions -> (D,)."""
    active = [t for t in recipe.terms if t.active]
    if not active:
        raise ValueError("every term is muted or has weight 0: unmute a term or give it a non-zero weight")
    return ops.mix(encode_terms(blender, active, examples_dir, library), [t.weight for t in active], recipe.method)


def recipe_point(blender, recipe: Recipe, library=None, examples_dir=None) -> torch.Tensor:
    """The one point a mix/directions recipe (no sweep) makes -> (D,). Resolves its directions in place."""
    point = base_point(blender, recipe, library, examples_dir)
    vecs = resolve_directions(blender, recipe, library)
    return ops.apply_directions(point, vecs, [d["strength"] for d in recipe.directions]) if vecs else point


def _decode_rows(blender, points: torch.Tensor, recipe: Recipe, progress: Progress, start: float, chunk: int):
    """Decode (M, D) points from one start noise, `chunk` rows at a time so progress can be shown."""
    images = []
    for i in range(0, len(points), chunk):
        progress(start + (1 - start) * i / len(points), f"decoding {i + 1}-{min(i + chunk, len(points))} of {len(points)}")
        images += blender.decode_images(points[i:i + chunk], seed=recipe.seed, steps=recipe.steps)
    return images


def _sweep_points(blender, recipe: Recipe, library, examples_dir) -> tuple[torch.Tensor, list[str]]:
    point = base_point(blender, recipe, library, examples_dir)
    name = recipe.sweep["name"]
    names = [d["name"] for d in recipe.directions]
    if name not in names:  # sweeping a direction not applied: add it at strength 0
        if library is None:
            raise ValueError(f"sweep direction {name!r} is not among the recipe's directions")
        recipe.directions.append({"name": name, "strength": 0.0, "definition": library.get(name).to_dict()})
        names.append(name)
    vecs = resolve_directions(blender, recipe, library)
    strengths = [d["strength"] for d in recipe.directions]
    j = names.index(name)
    rows = []
    for s in recipe.sweep["strengths"]:
        st = list(strengths)
        st[j] = s
        rows.append(ops.apply_directions(point, vecs, st))
    return torch.stack(rows), [f"{name} {s:+.2f}" for s in recipe.sweep["strengths"]]  # (S, D)


def run_recipe(blender, recipe: Recipe | dict, library=None, index=None, examples_dir=None,
               progress: Progress | None = None, agreement: bool = True) -> Result:
    """Execute a recipe on a Blender: the same recipe and preset give the same images and sentences.

    Args:
        blender: a loaded `Blender`.
        recipe: a `Recipe` or its dict.
        library: a `DirectionLibrary` for directions named without a definition.
        index: an `ExampleIndex` for the nearest examples of a mix (optional).
        examples_dir: where example images are (default `examples/`).
        progress: called as progress(fraction, message).
        agreement: encode every decoded image again and compare it with its point and sentence.
    Returns:
        a `Result`; its `.recipe` is a resolved copy (preset and direction definitions filled in).
    """
    recipe = (Recipe.from_dict(recipe) if isinstance(recipe, dict) else recipe.copy()).check()
    progress = progress or (lambda f, m: None)
    warnings = []
    if recipe.preset and recipe.preset != blender.name:
        warnings.append(f"this recipe was made with preset {recipe.preset!r}; it runs here on {blender.name!r}, "
                        f"so its pictures differ from the original")
    recipe.preset = blender.name
    progress(0.0, "encoding")
    op = recipe.operation
    which = None
    if op in ("mix", "directions") and recipe.sweep is None:
        points = recipe_point(blender, recipe, library, examples_dir)[None]  # (1, D)
        images = []
        for i in range(recipe.n_seeds):
            progress(0.1 + 0.8 * i / recipe.n_seeds, f"decoding seed {recipe.seed + i}")
            images += blender.decode_images(points, seed=recipe.seed + i, steps=recipe.steps)
        captions = [f"seed {recipe.seed + i}" for i in range(recipe.n_seeds)]
        which = [0] * len(images)
    elif op in ("mix", "directions"):
        points, captions = _sweep_points(blender, recipe, library, examples_dir)
        images = _decode_rows(blender, points, recipe, progress, 0.1, len(points))
    elif op == "path":
        a, b = encode_terms(blender, recipe.terms, examples_dir, library)
        points = ops.interpolate(a, b, recipe.n, method=recipe.method)  # (n, D)
        images = _decode_rows(blender, points, recipe, progress, 0.1, 4)
        captions = [f"t={t:.2f}" for t in torch.linspace(0, 1, recipe.n).tolist()]
    else:  # plane
        a, b, c = encode_terms(blender, recipe.terms, examples_dir, library)
        points = ops.plane(a, b, c, recipe.k).reshape(recipe.k * recipe.k, -1)  # (k*k, D), row-major
        images = _decode_rows(blender, points, recipe, progress, 0.1, recipe.k)
        captions = [f"({i},{j})" for i in range(recipe.k) for j in range(recipe.k)]
    progress(0.95, "decoding sentences")
    texts, checks = sentences_and_agreement(blender, points, images, which, check=agreement)
    nearest = index.nearest(points[0]) if index is not None and op in ("mix", "directions") and len(points) == 1 else []
    return Result(recipe, points, texts, images, captions, nearest, warnings, checks)
