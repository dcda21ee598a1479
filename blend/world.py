"""The shapes world: a procedural, seeded world of one flat shape on a flat background.

This spec is fixed; tests, benchmarks and the shipped `shapes-mini` models rely on it.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32  # S: images are S x S RGB
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 190),
    "orange": (240, 140, 30),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
COLORS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
RADIUS = {"small": 0.18, "large": 0.34}  # r as a fraction of S
MAX_SHIFT = 2  # dx, dy uniform integers in [-2, 2] at S = 32
ATTRIBUTES = ("color", "background", "shape", "size")
VOCAB_WORDS = ("a", "an", "on", "background") + COLORS + SHAPES + SIZES


@dataclass(frozen=True)
class Scene:
    """One image of the world: its four attributes and the shape's offset from the centre."""

    color: str
    background: str
    shape: str
    size: str
    dx: int = 0
    dy: int = 0

    def __post_init__(self):
        if self.color not in PALETTE or self.background not in PALETTE:
            raise ValueError(f"colors must be among {COLORS}, got {self.color!r} on {self.background!r}")
        if self.color == self.background:
            raise ValueError(f"shape color must differ from background, both are {self.color!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {self.size!r}")

    @property
    def attributes(self) -> tuple[str, str, str, str]:
        return (self.color, self.background, self.shape, self.size)

    def with_(self, **changes) -> "Scene":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def all_combinations() -> list[tuple[str, str, str, str]]:
    """Every (color, background, shape, size) the world allows: 8 * 7 * 3 * 2 = 336."""
    return [
        (c, bg, sh, sz)
        for c, bg, sh, sz in itertools.product(COLORS, COLORS, SHAPES, SIZES)
        if c != bg
    ]


def caption(scene: Scene) -> str:
    """The canonical caption: `a {size} {color} {shape} on a {bg} background`."""
    return f"a {scene.size} {scene.color} {scene.shape} on a {scene.background} background"


def article(next_word: str) -> str:
    return "an" if next_word == "orange" else "a"


def partial_caption(color=None, background=None, shape=None, size=None) -> str:
    """A description naming any subset of the attributes, e.g. `a red circle`, `large`, `on a blue background`."""
    noun = [w for w in (size, color, shape) if w]
    parts = []
    if noun:
        phrase = " ".join(noun)
        # a bare adjective ("red", "large") reads as a word, a phrase with a noun takes an article
        parts.append(f"{article(noun[0])} {phrase}" if shape or len(noun) > 1 else phrase)
    if background:
        parts.append(f"on {article(background)} {background} background")
    if not parts:
        raise ValueError("a description needs at least one attribute")
    return " ".join(parts)


def render(scene: Scene, size: int = SIZE) -> Image.Image:
    """Draw a scene at S = 32 (the world's resolution); larger sizes are nearest-neighbour scaled for display."""
    img = Image.new("RGB", (SIZE, SIZE), PALETTE[scene.background])
    draw = ImageDraw.Draw(img)
    r = RADIUS[scene.size] * SIZE
    cx, cy = SIZE / 2 + scene.dx, SIZE / 2 + scene.dy
    fill = PALETTE[scene.color]
    if scene.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif scene.shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    if size != SIZE:
        img = img.resize((size, size), Image.NEAREST)
    return img


def sample_scene(rng: random.Random, attributes: tuple[str, str, str, str] | None = None) -> Scene:
    """A random scene (uniform attributes and offset), or a random offset for the given attributes."""
    if attributes is None:
        color, background = rng.sample(COLORS, 2)
        attributes = (color, background, rng.choice(SHAPES), rng.choice(SIZES))
    dx, dy = rng.randint(-MAX_SHIFT, MAX_SHIFT), rng.randint(-MAX_SHIFT, MAX_SHIFT)
    return Scene(*attributes, dx=dx, dy=dy)


def sample_scenes(n: int, seed: int) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng) for _ in range(n)]


def distinct_batch(rng: random.Random, n: int) -> list[Scene]:
    """n scenes with pairwise distinct attribute combinations (n <= 336), random offsets."""
    combos = rng.sample(all_combinations(), n)
    return [sample_scene(rng, combo) for combo in combos]


def random_partial(rng: random.Random, scene: Scene) -> tuple[str, dict]:
    """A description of a random non-empty subset of the scene's attributes, and that subset."""
    keys = [k for k in ATTRIBUTES if rng.random() < 0.5] or [rng.choice(ATTRIBUTES)]
    values = dict(zip(ATTRIBUTES, scene.attributes))
    subset = {k: values[k] for k in keys}
    return partial_caption(**subset), subset


# ---------------------------------------------------------------- reading attributes back

_PALETTE_ARRAY = np.array(list(PALETTE.values()), dtype=np.float32)  # (8, 3)


def _nearest_palette(pixels: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour for each pixel. pixels (..., 3) -> (...)"""
    d = ((pixels[..., None, :].astype(np.float32) - _PALETTE_ARRAY) ** 2).sum(-1)
    return d.argmin(-1)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, comp = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            comp.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(comp) > len(best):
            best = comp
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


@dataclass(frozen=True)
class Reading:
    """What the attribute reader sees in an image. Any field is None when it cannot be read."""

    color: str | None
    background: str | None
    shape: str | None
    size: str | None

    @property
    def attributes(self) -> tuple:
        return (self.color, self.background, self.shape, self.size)

    def matches(self, scene: Scene) -> bool:
        return self.attributes == scene.attributes


def _templates() -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Masks of every (shape, size, offset) the world can draw: (150, S, S) bool, and their (shape, size)."""
    global _TEMPLATES
    if _TEMPLATES is None:
        masks, labels = [], []
        for shape in SHAPES:
            for size in SIZES:
                for dx in range(-MAX_SHIFT, MAX_SHIFT + 1):
                    for dy in range(-MAX_SHIFT, MAX_SHIFT + 1):
                        img = render(Scene("white", "black", shape, size, dx, dy))
                        masks.append(np.asarray(img)[..., 0] > 128)
                        labels.append((shape, size))
        _TEMPLATES = (np.stack(masks), labels)
    return _TEMPLATES


_TEMPLATES = None


def read_attributes(image: Image.Image) -> Reading:
    """Read colour, background, shape and size back from an image of the world (any size, downscaled to S).

    Background: the commonest palette colour on the border. Colour: the commonest other palette colour.
    Shape and size: the drawable shape (any shape, size and offset of the world's spec) whose mask best
    overlaps that colour's largest blob (intersection over union), so soft or slightly rounded edges in a
    decoded image do not flip a triangle into a circle.
    """
    img = image.convert("RGB")
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.BOX)
    labels = _nearest_palette(np.asarray(img))  # (S, S)
    border = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    bg = int(np.bincount(border, minlength=len(COLORS)).argmax())
    inner = labels[labels != bg]
    if inner.size < 8:
        return Reading(None, COLORS[bg], None, None)
    fg = int(np.bincount(inner, minlength=len(COLORS)).argmax())
    blob = _largest_component(labels == fg)  # (S, S)
    masks, names = _templates()
    inter = (masks & blob).sum((1, 2))
    union = (masks | blob).sum((1, 2))
    shape, size = names[int((inter / union).argmax())]
    return Reading(COLORS[fg], COLORS[bg], shape, size)


def to_tensor(images) -> "torch.Tensor":
    """PIL images of the world -> (N, 3, S, S) float32 in [-1, 1] (what CLIP's preprocess gives at mean=std=0.5)."""
    import torch

    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])  # (N, S, S, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def to_images(x: "torch.Tensor", size: int = SIZE) -> list[Image.Image]:
    """(N, 3, S, S) in [-1, 1] -> PIL images (nearest-neighbour scaled when size != S)."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(dtype=__import__("torch").uint8)
    out = [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in arr]
    return [im.resize((size, size), Image.NEAREST) if size != im.width else im for im in out]
