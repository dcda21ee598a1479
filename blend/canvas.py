"""The latent canvas's logic: tiles are recipes; a strength drag is a sweep decoded in one batch.

    tile = new_tile(blender, text="a red circle")                       # {recipe, image, text, agreement}
    sw = strength_sweep(blender, tile_recipe, {"pairs": [["large", "small"]]}, STRENGTHS)   # one batch
    child = child_recipe(tile_recipe, direction, 1.25)                   # commit: run it like any recipe
    both = blend_recipe(recipe_a, recipe_b, 0.3)                         # drop one tile on another

A drag shows the nearest precomputed strength at once (no server round trip per pointer move) and asks
for the exact strength when the pointer rests; `benchmarks/canvas.py` measures how many previews a second
that gives.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from . import ops
from .agreement import Agreement, sentences_and_agreement
from .directions import Direction, direction_vector
from .recipe import POINT_OPERATIONS, Recipe, Term
from .run import base_point, resolve_directions

STRENGTHS = tuple(round(-3 + 0.5 * i, 2) for i in range(13))  # -3 .. 3: the sweep a drag reads from
MAX_STRENGTH = 3.0
MAX_SWEEP = 25


@dataclass
class Sweep:
    strengths: list[float]
    points: torch.Tensor  # (S, D)
    images: list[Image.Image]
    texts: list[str]
    agreement: list[Agreement]


def word_direction(positive: str, negative: str) -> dict:
    """A direction typed as two words (or phrases): positive minus negative."""
    pos, neg = (positive or "").strip(), (negative or "").strip()
    if not pos or not neg:
        raise ValueError("direction: type both words, the one to move towards and the one to move away from")
    return Direction(name=f"{pos} − {neg}"[:60], pairs=[[pos, neg]]).check().to_dict()


def point_recipe(recipe: Recipe | dict, where: str = "tile") -> Recipe:
    """A recipe that makes one point (mix or directions, no sweep), as a clean copy without its place in a tree."""
    r = Recipe.from_dict(recipe) if isinstance(recipe, dict) else recipe.copy().check()
    if r.operation not in POINT_OPERATIONS or r.sweep is not None:
        raise ValueError(f"{where}: a {r.operation} tile is a strip or a grid, not one point: "
                         f"pick a mix or directions tile (or one frame of it)")
    r.id = r.parent = r.created = None
    return r


def child_recipe(parent: Recipe | dict, direction: dict, strength: float) -> Recipe:
    """The parent's recipe with one more direction at `strength`: what a released drag commits."""
    r = point_recipe(parent, "the selected tile")
    d = Direction.from_dict(direction)  # checked: a name and pairs or example sets
    s = _strength(strength)
    r.operation = "directions"
    r.directions = r.directions + [{"name": d.name, "strength": s, "definition": d.to_dict()}]
    return r.check()


def blend_recipe(a: Recipe | dict, b: Recipe | dict, weight: float, method: str = "slerp") -> Recipe:
    """Tile a dropped on tile b: a mix of the two points, b at `weight` (0: all a, 1: all b)."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ValueError(f"weight must be a number from 0 to 1, got {weight!r}")
    ra, rb = point_recipe(a, "the dragged tile"), point_recipe(b, "the tile dropped on")
    terms = [Term("recipe", ra.to_json(indent=None), round(1 - float(weight), 4)),
             Term("recipe", rb.to_json(indent=None), round(float(weight), 4))]
    return Recipe("mix", terms, method=method, seed=ra.seed, steps=ra.steps).check()


def _strength(s) -> float:
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not -MAX_STRENGTH <= s <= MAX_STRENGTH:
        raise ValueError(f"strength must be a number from {-MAX_STRENGTH:g} to {MAX_STRENGTH:g}, got {s!r}")
    return round(float(s), 4)


def strength_sweep(blender, parent: Recipe | dict, direction: dict, strengths=STRENGTHS, library=None,
                   agreement: bool = True) -> Sweep:
    """The parent's point moved along one direction at every strength, decoded in one batch from one noise.

    Args:
        parent: a mix/directions recipe (the selected tile).
        direction: a direction definition ({name, pairs} or {name, positive, negative}).
        strengths: up to MAX_SWEEP numbers in [-3, 3].
    Returns:
        a Sweep: one image, sentence and agreement per strength.
    """
    r = point_recipe(parent, "the selected tile")
    strengths = list(strengths)
    if not 1 <= len(strengths) <= MAX_SWEEP:
        raise ValueError(f"strengths: give 1 to {MAX_SWEEP} values, got {len(strengths)}")
    strengths = [_strength(s) for s in strengths]
    base = base_point(blender, r, library)
    vecs = resolve_directions(blender, r, library)
    fixed = [d["strength"] for d in r.directions]
    v = direction_vector(blender, Direction.from_dict(direction))
    points = torch.stack([ops.apply_directions(base, vecs + [v], fixed + [s]) for s in strengths])  # (S, D)
    images = blender.decode_images(points, seed=r.seed, steps=r.steps)  # one batch, one start noise
    texts, checks = sentences_and_agreement(blender, points, images, check=agreement)
    return Sweep(strengths, points, images, texts, checks)


# ---------------------------------------------------------------------------------------------- results as tiles
def frame_recipes(result) -> list[Recipe]:
    """One point recipe per picture of a result, each remaking that picture alone (same point, same seed).

    A mix or directions result gives one per seed; a strip one per strength; a path frame t is the mix
    of its ends with weights (1 - t, t) by the path's method; a plane cell (i, j) is the lerp mix of
    a, b, c with weights (1 - u - v, u, v). So every picture of every workspace can be a canvas tile.
    """
    r = result.recipe.copy(id=None, parent=None, created=None)
    op = r.operation
    if op in POINT_OPERATIONS and r.sweep is None:
        return [r.copy(seed=r.seed + i, n_seeds=1) for i in range(len(result.images))]
    if op in POINT_OPERATIONS:  # a strip: the swept direction at each strength
        j = [d["name"] for d in r.directions].index(r.sweep["name"])
        out = []
        for s in r.sweep["strengths"]:
            dirs = [dict(d) for d in r.directions]
            dirs[j]["strength"] = s
            out.append(r.copy(sweep=None, n_seeds=1, directions=dirs))
        return out
    if op == "path":
        a, b = r.terms
        ts = torch.linspace(0, 1, r.n).tolist()
        return [Recipe("mix", [Term(a.kind, a.value, 1 - t), Term(b.kind, b.value, t)], method=r.method,
                       seed=r.seed, steps=r.steps, preset=r.preset).check() for t in ts]
    a, b, c = r.terms  # plane, row-major like ops.plane
    u = torch.linspace(0, 1, r.k).tolist()
    return [Recipe("mix", [Term(a.kind, a.value, 1 - u[j] - u[i]), Term(b.kind, b.value, u[j]),
                           Term(c.kind, c.value, u[i])], method="lerp", seed=r.seed, steps=r.steps,
                   preset=r.preset).check() for i in range(r.k) for j in range(r.k)]


def marks(recipe: Recipe, count: int) -> list[str]:
    """What each picture is, in words: a path's start and end, a plane's corners (a, b, c, b + c − a)."""
    out = [""] * count
    if recipe.operation == "path" and count >= 2:
        out[0], out[-1] = "start", "end"
    elif recipe.operation == "plane" and count == recipe.k * recipe.k:
        k = recipe.k
        out[0], out[k - 1], out[k * (k - 1)], out[-1] = "a", "b", "c", "b + c − a"
    return out


def result_tiles(result) -> list[dict]:
    """Canvas tiles for every picture of a result: {recipe, image, text, label, agreement, mark, link, arrow}.

    `link` is the index of the tile it grows from within the same result (a path's previous frame) or None,
    and `arrow` says what moved along that link.
    """
    from .images import image_to_data_uri

    recipes = frame_recipes(result)
    r, n = result.recipe, len(result.images)
    names = marks(r, n)
    tiles = []
    for i, (rec, im) in enumerate(zip(recipes, result.images)):
        text = result.texts[i] if len(result.texts) == n else result.texts[0]
        label = f"{r.operation} {result.captions[i]}" + (f" · {names[i]}" if names[i] else "")
        link = i - 1 if r.operation == "path" and i else None
        tiles.append({"recipe": rec.to_dict(), "image": image_to_data_uri(im, max_side=4096), "text": text,
                      "label": label, "mark": names[i], "link": link,
                      "arrow": result.captions[i] if link is not None else "",
                      "agreement": result.agreement[i].to_dict() if i < len(result.agreement) else None})
    return tiles
