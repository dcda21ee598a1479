"""Make the shipped examples: shapes-world images (64 px, the world's own size) and recipe files that use them.

    python examples/make_examples.py            # rewrites examples/*.png and examples/*.json

Deterministic: the scenes are fixed and their nuisances (exact radius, jitter) come from random.Random(SEED).
A file name says what the picture is: `red-circle-on-blue.png` is a large red circle in the centre on a blue
background, evenly lit; any other size, position or lighting is named (`small-...-top-left-lit-from-above.png`).
No example is a held-out scene (`world.is_held_out`); `mix-circle-to-star.json` makes one by arithmetic.
"""
from __future__ import annotations

import random
from pathlib import Path

from blend import world
from blend.recipe import Recipe, Term
from blend.world import Scene, render, sample_scene

SEED = 0
HERE = Path(__file__).resolve().parent

# (color, background, shape, size, position, lighting): every value of every attribute appears
SCENES = [
    ("red", "blue", "circle", "large", "centre", "even"),
    ("yellow", "purple", "circle", "large", "centre", "even"),
    ("blue", "yellow", "square", "large", "centre", "even"),
    ("green", "white", "triangle", "large", "centre", "even"),
    ("purple", "green", "star", "large", "centre", "even"),
    ("orange", "black", "star", "large", "centre", "even"),
    ("white", "red", "circle", "large", "centre", "even"),
    ("black", "orange", "square", "large", "centre", "even"),
    ("red", "white", "square", "small", "top left", "even"),
    ("blue", "green", "triangle", "medium", "centre", "left"),
    ("green", "black", "circle", "small", "bottom right", "top"),
    ("yellow", "blue", "star", "medium", "right", "even"),
    ("orange", "purple", "square", "large", "left", "bottom"),
    ("white", "black", "triangle", "medium", "top", "right"),
    ("purple", "yellow", "circle", "small", "bottom", "even"),
    ("black", "white", "star", "medium", "top right", "even"),
    ("red", "green", "triangle", "small", "bottom left", "even"),
]

LIGHT_NAMES = {"left": "lit-from-left", "right": "lit-from-right", "top": "lit-from-above", "bottom": "lit-from-below"}


def example_name(scene: Scene) -> str:
    """`[size-]colour-shape-on-background[-position][-lighting].png`, naming what is not large, centre, even."""
    parts = [scene.size] if scene.size != "large" else []
    parts += [scene.color, scene.shape, "on", scene.background]
    if scene.position != "centre":
        parts.append(scene.position.replace(" ", "-"))
    if scene.lighting != "even":
        parts.append(LIGHT_NAMES[scene.lighting])
    return "-".join(parts) + ".png"


def recipes() -> dict[str, Recipe]:
    return {
        "mix-circle-to-square.json": Recipe(
            "mix", [Term("image", "red-circle-on-blue.png"), Term("text", "a square"), Term("text", "a circle", -1.0)],
            method="lerp", seed=0, n_seeds=2, preset="shapes-mini",
            note="word arithmetic on a picture: red circle on blue + 'a square' - 'a circle' = a red square on blue"),
        "mix-circle-to-star.json": Recipe(
            "mix", [Term("image", "yellow-circle-on-purple.png"), Term("text", "a star"), Term("text", "a circle", -1.0)],
            method="lerp", seed=0, n_seeds=2, preset="shapes-mini",
            note="a held-out scene by arithmetic: yellow circle on purple + 'a star' - 'a circle' = a yellow star on "
                 "purple, a (colour, shape, background) no model saw in training"),
        "path-circle-to-triangle.json": Recipe(
            "path", [Term("image", "red-circle-on-blue.png"), Term("text", "a small green triangle on a white background")],
            method="slerp", n=8, seed=0, preset="shapes-mini",
            note="from a picture to a sentence; every frame starts from the same noise"),
        "plane-colour-shape.json": Recipe(
            "plane", [Term("image", "red-circle-on-blue.png"), Term("image", "yellow-circle-on-purple.png"),
                      Term("text", "a large red square on a blue background")],
            k=4, seed=0, preset="shapes-mini",
            note="across: colours change; down: the shape changes; bottom right: yellow square on purple by analogy"),
    }


def main(out: Path = HERE) -> None:
    rng = random.Random(SEED)
    for old in out.glob("*.png"):
        old.unlink()
    for attributes in SCENES:
        scene = sample_scene(rng, attributes)
        assert not scene.held_out, scene
        render(scene).save(out / example_name(scene))
    for name, recipe in recipes().items():
        (out / name).write_text(recipe.check().to_json() + "\n")
    print(f"wrote {len(SCENES)} images and {len(recipes())} recipes to {out}")


if __name__ == "__main__":
    assert world.is_held_out("yellow", "star", "purple")  # what mix-circle-to-star.json makes
    main()
