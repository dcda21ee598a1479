"""Make the shipped examples: shapes-world images at 256 px and recipe files that use them.

    python examples/make_examples.py            # rewrites examples/*.png and examples/*.json

Deterministic: the scenes are fixed and their small offsets come from random.Random(SEED).
"""
from __future__ import annotations

import random
from pathlib import Path

from blend.recipe import Recipe, Term
from blend.world import MAX_SHIFT, Scene, render

SEED = 0
SIZE = 256
HERE = Path(__file__).resolve().parent

# (color, background, shape, size): every colour, shape and size appears, no two alike
SCENES = [
    ("red", "blue", "circle", "large"),
    ("blue", "yellow", "square", "large"),
    ("green", "white", "triangle", "large"),
    ("yellow", "purple", "circle", "large"),
    ("purple", "green", "square", "large"),
    ("orange", "black", "triangle", "large"),
    ("white", "red", "circle", "large"),
    ("black", "orange", "square", "large"),
    ("red", "white", "square", "small"),
    ("blue", "green", "triangle", "small"),
    ("green", "black", "circle", "small"),
    ("yellow", "blue", "triangle", "small"),
]


def example_name(scene: Scene) -> str:
    size = "small-" if scene.size == "small" else ""
    return f"{size}{scene.color}-{scene.shape}-on-{scene.background}.png"


def recipes() -> dict[str, Recipe]:
    return {
        "mix-circle-to-square.json": Recipe(
            "mix", [Term("image", "red-circle-on-blue.png"), Term("text", "a square"), Term("text", "a circle", -1.0)],
            method="lerp", seed=0, n_seeds=2, preset="shapes-mini",
            note="word arithmetic on a picture: red circle on blue + 'a square' - 'a circle'"),
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
    for color, bg, shape, size in SCENES:
        scene = Scene(color, bg, shape, size, rng.randint(-MAX_SHIFT, MAX_SHIFT), rng.randint(-MAX_SHIFT, MAX_SHIFT))
        render(scene, SIZE).save(out / example_name(scene))
    for name, recipe in recipes().items():
        (out / name).write_text(recipe.check().to_json() + "\n")
    print(f"wrote {len(SCENES)} images and {len(recipes())} recipes to {out}")


if __name__ == "__main__":
    main()
