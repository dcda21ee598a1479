"""Write general.txt: the caption bank shipped for the real presets' retrieval text decoder.

Every caption is built here from short word lists written for blend (no scraped or licensed text), so the
file may be redistributed with the project (MIT). Deterministic: the same lists and seed give the same file.
Run: python models/captions/make_general.py
"""
from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = {
    "animal": ["cat", "dog", "horse", "bird", "owl", "fox", "rabbit", "bear", "deer", "lion", "tiger", "elephant",
               "fish", "butterfly", "cow", "sheep", "duck", "wolf", "penguin", "turtle", "frog", "squirrel"],
    "person": ["woman", "man", "child", "old man", "old woman", "girl", "boy", "dancer", "musician", "chef",
               "astronaut", "knight", "farmer", "surfer", "cyclist", "painter"],
    "object": ["red apple", "bowl of fruit", "teapot", "vase of flowers", "bicycle", "vintage car", "sailboat",
               "lighthouse", "clock", "guitar", "pair of shoes", "cup of coffee", "stack of books", "lamp",
               "chair", "umbrella", "kite", "hot air balloon", "train", "bridge", "castle", "cottage", "windmill",
               "robot", "cake", "bottle of wine", "candle", "hat", "backpack", "telescope"],
    "place": ["mountain lake", "city street at night", "forest path", "sandy beach", "snowy village", "desert",
              "field of sunflowers", "waterfall", "harbour", "market square", "library", "kitchen", "garden",
              "river valley", "rocky coast", "rice terraces", "subway station", "rooftop", "meadow", "canyon"],
}
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple", "pink", "brown", "grey", "golden"]
STYLES = ["a photo of", "a close-up photo of", "a watercolour painting of", "an oil painting of", "a pencil sketch of",
          "a 3d render of", "a cartoon drawing of", "a black and white photo of", "a woodcut print of",
          "a pixel art image of", "an ink drawing of", "a blurry photo of"]
SETTINGS = ["on a table", "in the snow", "at sunset", "in the rain", "on the grass", "by the sea", "in a forest",
            "on a city street", "in a studio", "at night", "in the fog", "under a blue sky", "in a field",
            "on a wooden floor", "in the desert", "near a river"]
ACTIONS = {"animal": ["sleeping", "running", "sitting", "eating", "playing", "looking at the camera"],
           "person": ["smiling", "walking", "reading a book", "riding a bicycle", "holding an umbrella", "dancing"]}


def captions(n: int = 4000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        kind = rng.choice(list(SUBJECTS))
        subject = rng.choice(SUBJECTS[kind])
        style = rng.choice(STYLES)
        if kind == "place":
            text = f"{style} a {subject}" + (f" {rng.choice(['at sunset', 'at night', 'in winter', 'in autumn', 'in the fog'])}"
                                            if rng.random() < 0.5 else "")
        else:
            if kind != "person" and rng.random() < 0.4:
                subject = f"{rng.choice(COLOURS)} {subject}"
            article = "an" if subject[0] in "aeiou" else "a"
            text = f"{style} {article} {subject}"
            if kind in ACTIONS and rng.random() < 0.5:
                text += f" {rng.choice(ACTIONS[kind])}"
            if rng.random() < 0.6:
                text += f" {rng.choice(SETTINGS)}"
        out.add(text)
    return sorted(out)


if __name__ == "__main__":
    path = Path(__file__).with_name("general.txt")
    path.write_text("\n".join(captions()) + "\n", encoding="utf-8")
    print(f"wrote {path}")
