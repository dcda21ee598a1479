"""The shapes world (v2): one flat shape on a flat background at 64 x 64, with size, position and lighting.

This spec is fixed (issue 7); tests, benchmarks, the app and the shipped `shapes-mini` models rely on it.

Six attributes: colour (8), background (8, != colour), shape (4), size (3), position (3 x 3) and lighting (5),
plus continuous nuisances (the exact radius and a +-1.5 px jitter) that no caption names.

HELD-OUT RULE: a scene is held out when its (colour c, shape s, background b) indices satisfy
`(c + 3*s + 5*b) % 8 == 0` (28 of the 224 valid triples). No training image, caption or mix may contain a
held-out scene; partial descriptions naming at most two of the three are fine. `is_held_out` is the rule,
`sample_scene(..., split="train")` never yields such a scene, and figures are reported on both splits.
"""
from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # images are SIZE x SIZE RGB
# the 8-colour palette of v1, same RGB, in index order 0-7 (the spec)
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
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "medium", "large")
SIZE_RANGE = {"small": (0.09, 0.12), "medium": (0.145, 0.175), "large": (0.20, 0.23)}  # r / SIZE
POSITIONS = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")
POSITION_PHRASES = dict(zip(POSITIONS, (
    "in the top left", "at the top", "in the top right", "on the left", "in the centre", "on the right",
    "in the bottom left", "at the bottom", "in the bottom right")))
CENTRES = (0.28, 0.5, 0.72)  # row / column centres as a fraction of SIZE
JITTER = 1.5  # px, uniform real jitter of the centre
LIGHTINGS = ("even", "left", "right", "top", "bottom")
LIGHTING_PHRASES = dict(zip(LIGHTINGS, (
    "evenly lit", "lit from the left", "lit from the right", "lit from above", "lit from below")))
LIGHT_DROP = 0.45  # the far edge is 1 - 0.45 = 0.55 as bright
ATTRIBUTES = ("color", "background", "shape", "size", "position", "lighting")
VALUES = {"color": COLORS, "background": COLORS, "shape": SHAPES, "size": SIZES, "position": POSITIONS,
          "lighting": LIGHTINGS}
VOCAB_WORDS = ("a", "an", "on", "background", "in", "the", "at", "top", "bottom", "left", "right", "centre",
               "evenly", "lit", "from", "above", "below") + COLORS + SHAPES + SIZES


def is_held_out(color: str, shape: str, background: str) -> bool:
    """The held-out rule: (c + 3 s + 5 b) mod 8 == 0 on palette and shape indices."""
    return (COLORS.index(color) + 3 * SHAPES.index(shape) + 5 * COLORS.index(background)) % 8 == 0


@dataclass(frozen=True)
class Scene:
    """One image of the world: six attributes and the continuous nuisances (radius fraction, jitter)."""

    color: str
    background: str
    shape: str
    size: str
    position: str = "centre"
    lighting: str = "even"
    f: float | None = None  # r / SIZE; None: the middle of the size's range
    jx: float = 0.0  # centre jitter in px, each in [-JITTER, JITTER]
    jy: float = 0.0

    def __post_init__(self):
        for name in ATTRIBUTES:
            value = getattr(self, name)
            if value not in VALUES[name]:
                raise ValueError(f"{name} must be one of {VALUES[name]}, got {value!r}")
        if self.color == self.background:
            raise ValueError(f"shape color must differ from background, both are {self.color!r}")
        lo, hi = SIZE_RANGE[self.size]
        if self.f is not None and not lo <= self.f <= hi:
            raise ValueError(f"f must be in [{lo}, {hi}] for size {self.size!r}, got {self.f}")
        if abs(self.jx) > JITTER or abs(self.jy) > JITTER:
            raise ValueError(f"jitter must be within +-{JITTER} px, got ({self.jx}, {self.jy})")

    @property
    def attributes(self) -> tuple[str, str, str, str, str, str]:
        return tuple(getattr(self, a) for a in ATTRIBUTES)

    @property
    def held_out(self) -> bool:
        return is_held_out(self.color, self.shape, self.background)

    @property
    def radius(self) -> float:
        lo, hi = SIZE_RANGE[self.size]
        return SIZE * (self.f if self.f is not None else (lo + hi) / 2)

    @property
    def centre(self) -> tuple[float, float]:
        """(cx, cy) in px."""
        i = POSITIONS.index(self.position)
        return SIZE * CENTRES[i % 3] + self.jx, SIZE * CENTRES[i // 3] + self.jy

    def with_(self, **changes) -> "Scene":
        """The same scene with some attributes changed; a new size draws its radius from the middle of its range."""
        if "size" in changes and "f" not in changes:
            changes["f"] = None
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def all_combinations(split: str = "all") -> list[tuple[str, ...]]:
    """Every attribute combination (8*7*4*3*9*5 = 30,240), or those of one split ("train" / "held-out")."""
    out = [c for c in itertools.product(COLORS, COLORS, SHAPES, SIZES, POSITIONS, LIGHTINGS) if c[0] != c[1]]
    if split == "all":
        return out
    return [c for c in out if is_held_out(c[0], c[2], c[1]) == _want_held_out(split)]


def _want_held_out(split: str) -> bool:
    if split not in ("train", "held-out"):
        raise ValueError(f"split must be 'all', 'train' or 'held-out', got {split!r}")
    return split == "held-out"


def triples(split: str = "all") -> list[tuple[str, str, str]]:
    """(colour, shape, background) triples: 224 in all, 28 held out."""
    out = [(c, s, b) for c in COLORS for s in SHAPES for b in COLORS if c != b]
    if split == "all":
        return out
    return [t for t in out if is_held_out(*t) == _want_held_out(split)]


# ---------------------------------------------------------------- words


def article(next_word: str) -> str:
    return "an" if next_word == "orange" else "a"


def caption(scene: Scene) -> str:
    """`a {size} {color} {shape} {position} on a {bg} background, {lighting}`."""
    return partial_caption(**dict(zip(ATTRIBUTES, scene.attributes)))


def partial_caption(color=None, background=None, shape=None, size=None, position=None, lighting=None,
                    bare: bool = False) -> str:
    """A description naming any non-empty subset of the attributes, in the canonical order.

    `a red star`, `a star on the left`, `lit from above`, `on a blue background`, `large`. A lone adjective
    reads as a word; `bare=True` also drops the article of a noun phrase (`red star`), as people type it.
    """
    noun = [w for w in (size, color, shape) if w]
    parts = []
    if noun:
        phrase = " ".join(noun)
        if (shape or len(noun) > 1) and not bare:
            phrase = f"{article(noun[0])} {phrase}"
        parts.append(phrase)
    if position:
        parts.append(POSITION_PHRASES[position])
    if background:
        parts.append(f"on {article(background)} {background} background")
    text = " ".join(parts)
    if lighting:
        text = f"{text}, {LIGHTING_PHRASES[lighting]}" if text else LIGHTING_PHRASES[lighting]
    if not text:
        raise ValueError("a description needs at least one attribute")
    return text


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_CAPTION = re.compile(
    rf"an? ({_alternation(SIZES)}) ({_alternation(COLORS)}) ({_alternation(SHAPES)}) "
    rf"({_alternation(POSITION_PHRASES.values())}) on an? ({_alternation(COLORS)}) background, "
    rf"({_alternation(LIGHTING_PHRASES.values())})")
_POSITION_OF = {v: k for k, v in POSITION_PHRASES.items()}
_LIGHTING_OF = {v: k for k, v in LIGHTING_PHRASES.items()}


def parse_caption(text: str) -> tuple[str, str, str, str, str, str] | None:
    """The six attributes (color, background, shape, size, position, lighting) of a canonical caption, else None.

    The exact inverse of `caption`: `parse_caption(caption(s)) == s.attributes` for every combination, and
    any other string (a partial description, a wrong article, colour == background) gives None.
    """
    m = _CAPTION.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        return None
    size, color, shape, position, background, lighting = m.groups()
    if color == background:
        return None
    attrs = (color, background, shape, size, _POSITION_OF[position], _LIGHTING_OF[lighting])
    return attrs if caption(Scene(*attrs)) == text.strip() else None  # articles as `caption` writes them


_BACKGROUND = re.compile(rf"(?:^| )on an? ({_alternation(COLORS)}) background$")
_NOUN_WORD = {**{w: "size" for w in SIZES}, **{w: "color" for w in COLORS}, **{w: "shape" for w in SHAPES}}


def parse_description(text: str) -> dict[str, str] | None:
    """The attributes a description names ({attribute: value}), for any text `partial_caption` writes (captions
    included, with or without the article), else None (also for colour == background, as `parse_caption`):
    the inverse of `partial_caption`, checked by writing the description again."""
    if not isinstance(text, str):
        return None
    text, named = text.strip(), {}
    head, _, tail = text.rpartition(", ")
    light = tail if head else text
    if light in _LIGHTING_OF:
        named["lighting"] = _LIGHTING_OF[light]
    else:
        head = text
    m = _BACKGROUND.search(head)
    if m:
        named["background"], head = m.group(1), head[:m.start()]
    for phrase_, position in sorted(_POSITION_OF.items(), key=lambda kv: -len(kv[0])):
        if head == phrase_ or head.endswith(" " + phrase_):
            named["position"], head = position, head[:-len(phrase_)].rstrip()
            break
    words = head.split()
    if words and words[0] in ("a", "an"):
        words = words[1:]
    for w in words:
        if w not in _NOUN_WORD or _NOUN_WORD[w] in named:
            return None
        named[_NOUN_WORD[w]] = w
    if "color" in named and named["color"] == named.get("background"):
        return None
    try:
        ok = named and text in (partial_caption(**named), partial_caption(**named, bare=True))
    except (TypeError, ValueError):
        return None
    return named if ok else None


def phrase(attribute: str, value: str) -> str:
    """The single-attribute phrase: `red`, `on a red background`, `a star`, `large`, `on the left`, `lit from above`."""
    return partial_caption(**{attribute: value})


def random_partial(rng: random.Random, scene: Scene, bare_p: float = 0.0) -> tuple[str, dict]:
    """A description of a random non-empty subset of the scene's attributes, and that subset."""
    keys = [k for k in ATTRIBUTES if rng.random() < 0.4] or [rng.choice(ATTRIBUTES)]
    subset = {k: getattr(scene, k) for k in keys}
    return partial_caption(**subset, bare=rng.random() < bare_p), subset


# ---------------------------------------------------------------- drawing


def _outline(shape: str, cx: float, cy: float, r: float):
    if shape == "circle":
        return "ellipse", [cx - r, cy - r, cx + r, cy + r]
    if shape == "square":
        return "rectangle", [cx - r, cy - r, cx + r, cy + r]
    if shape == "triangle":
        return "polygon", [(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)]
    pts = []
    for k in range(10):
        a = math.radians(-90 + 36 * k)
        rk = r if k % 2 == 0 else 0.5 * r
        pts.append((cx + rk * math.cos(a), cy + rk * math.sin(a)))
    return "polygon", pts


def draw_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """The boolean (SIZE, SIZE) mask PIL draws for a shape."""
    img = Image.new("L", (SIZE, SIZE), 0)
    kind, xy = _outline(shape, cx, cy, r)
    getattr(ImageDraw.Draw(img), kind)(xy, fill=255)
    return np.asarray(img) > 127


def light_gain(lighting: str, size: int = SIZE) -> np.ndarray:
    """The (size, size) brightness multiplier g of a lighting."""
    ramp = 1 - LIGHT_DROP * np.arange(size, dtype=np.float64) / (size - 1)  # 1 at index 0, 0.55 at the end
    ones = np.ones(size)
    return {
        "even": np.ones((size, size)),
        "left": np.outer(ones, ramp),
        "right": np.outer(ones, ramp[::-1]),
        "top": np.outer(ramp, ones),
        "bottom": np.outer(ramp[::-1], ones),
    }[lighting]


def render(scene: Scene, size: int = SIZE) -> Image.Image:
    """Draw a scene at SIZE (the world's resolution); other sizes are nearest-neighbour scaled for display."""
    img = Image.new("RGB", (SIZE, SIZE), PALETTE[scene.background])
    kind, xy = _outline(scene.shape, *scene.centre, scene.radius)
    getattr(ImageDraw.Draw(img), kind)(xy, fill=PALETTE[scene.color])
    if scene.lighting != "even":
        arr = np.asarray(img, dtype=np.float64) * light_gain(scene.lighting)[..., None]
        img = Image.fromarray(np.round(arr).clip(0, 255).astype(np.uint8))
    if size != SIZE:
        img = img.resize((size, size), Image.NEAREST)
    return img


# ---------------------------------------------------------------- sampling


def sample_scene(rng: random.Random, attributes: tuple | dict | None = None, split: str = "all") -> Scene:
    """A random scene of a split (uniform over its combinations), or random nuisances for given attributes."""
    if attributes is None:
        while True:
            color, background = rng.sample(COLORS, 2)
            shape = rng.choice(SHAPES)
            if split == "all" or is_held_out(color, shape, background) == _want_held_out(split):
                break
        attributes = (color, background, shape, rng.choice(SIZES), rng.choice(POSITIONS), rng.choice(LIGHTINGS))
    values = dict(zip(ATTRIBUTES, attributes)) if not isinstance(attributes, dict) else dict(attributes)
    lo, hi = SIZE_RANGE[values["size"]]
    return Scene(**values, f=rng.uniform(lo, hi), jx=rng.uniform(-JITTER, JITTER), jy=rng.uniform(-JITTER, JITTER))


def sample_scenes(n: int, seed: int, split: str = "all") -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng, split=split) for _ in range(n)]


DEFAULTS = {"size": "medium", "position": "centre", "lighting": "even"}  # what a description leaves unsaid
_DEFAULT_ORDER = {"color": ("white", "red", "blue", "yellow", "green", "orange", "purple", "black"),
                  "background": ("black", "white", "blue", "green", "red", "yellow", "purple", "orange"),
                  "shape": ("circle", "square", "triangle", "star")}


def meant_scene(named: dict, split: str = "train") -> Scene:
    """The one scene a description means: its named attributes, the rest at defaults, mid radius, centred.

    A caption names all six; `a red star` is a medium red star in the centre on the first background of
    `_DEFAULT_ORDER` that is valid (and in `split`), evenly lit. Trained on, it gives each text one target
    rather than the average of every scene it is true of (a blur).
    """
    unknown = set(named) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"named: unknown attributes {sorted(unknown)}")
    values = {**DEFAULTS, **named}
    options = {k: [named[k]] if k in named else _DEFAULT_ORDER[k] for k in _DEFAULT_ORDER}
    for c, b, s in itertools.product(options["color"], options["background"], options["shape"]):
        if c != b and (split == "all" or is_held_out(c, s, b) == _want_held_out(split)):
            return Scene(**{**values, "color": c, "background": b, "shape": s})
    raise ValueError(f"named: no valid scene of split {split!r} has {named}")


def variant(rng: random.Random, scene: Scene, attribute: str, split: str = "all", value: str | None = None) -> Scene:
    """The scene with one attribute changed to another valid value (keeping the split); nuisances kept."""
    choices = [v for v in VALUES[attribute] if v != getattr(scene, attribute)]
    if attribute in ("color", "background"):
        other = scene.background if attribute == "color" else scene.color
        choices = [v for v in choices if v != other]
    if split != "all":
        choices = [v for v in choices if scene.with_(**{attribute: v}).held_out == _want_held_out(split)]
    if value is not None:
        if value not in choices:
            raise ValueError(f"{attribute}={value!r} is not a valid change of {scene}")
        choices = [value]
    if not choices:
        raise ValueError(f"no valid change of {attribute} keeps {scene} in split {split!r}")
    new = rng.choice(choices)
    if attribute == "size":
        lo, hi = SIZE_RANGE[new]
        t = (scene.radius / SIZE - SIZE_RANGE[scene.size][0]) / (SIZE_RANGE[scene.size][1] - SIZE_RANGE[scene.size][0])
        return replace(scene, size=new, f=lo + t * (hi - lo))
    return replace(scene, **{attribute: new})


# ---------------------------------------------------------------- reading attributes back

_PALETTE_ARRAY = np.array(list(PALETTE.values()), dtype=np.float64)  # (8, 3)
_GAINS = {name: light_gain(name) for name in LIGHTINGS}
_BORDER = np.zeros((SIZE, SIZE), dtype=bool)
_BORDER[[0, -1], :] = True
_BORDER[:, [0, -1]] = True


@dataclass(frozen=True)
class Reading:
    """What the attribute reader sees in an image. Any field is None when it cannot be read."""

    color: str | None
    background: str | None
    shape: str | None
    size: str | None
    position: str | None
    lighting: str | None
    radius: float | None = None

    @property
    def attributes(self) -> tuple:
        return (self.color, self.background, self.shape, self.size, self.position, self.lighting)

    def matches(self, scene: Scene, only=ATTRIBUTES) -> bool:
        return all(getattr(self, a) == getattr(scene, a) for a in only)


def _nearest_palette(pixels: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour for each pixel. pixels (..., 3) -> (...)"""
    d = ((pixels[..., None, :] - _PALETTE_ARRAY) ** 2).sum(-1)
    return d.argmin(-1)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (sizes.argmax() + 1)


# bounding-box geometry of each shape, in units of r: (left, right, top, bottom) offsets from (cx, cy)
_BOX = {
    "circle": (-1.0, 1.0, -1.0, 1.0),
    "square": (-1.0, 1.0, -1.0, 1.0),
    "triangle": (-1.0, 1.0, -1.0, 1.0),
    "star": (-math.cos(math.radians(18)), math.cos(math.radians(18)), -1.0, math.sin(math.radians(54))),
}


def _fit_shape(blob: np.ndarray) -> tuple[str, float, float, float]:
    """The (shape, cx, cy, r) whose PIL mask best overlaps the blob (IoU).

    Each shape starts from the blob's bounding box and climbs the IoU by half-pixel moves of cx, cy and r.
    """
    ys, xs = np.nonzero(blob)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1  # pixel-edge box

    def iou(shape, cx, cy, r):
        m = draw_mask(shape, cx, cy, r)
        return (m & blob).sum() / max(1, (m | blob).sum())

    best = (-1.0, "circle", 0.0, 0.0, 0.0)
    for shape, (l, rr, t, b) in _BOX.items():
        r = max(1.0, ((x1 - x0) / (rr - l) + (y1 - y0) / (b - t)) / 2 - 0.5)
        p = [(x0 + x1) / 2 - (l + rr) / 2 * r - 0.5, (y0 + y1) / 2 - (t + b) / 2 * r - 0.5, r]
        score = iou(shape, *p)
        for _ in range(6):
            moves = [(i, d) for i in range(3) for d in (-0.5, 0.5)]
            trials = [(iou(shape, *[v + d if j == i else v for j, v in enumerate(p)]), i, d) for i, d in moves]
            top = max(trials)
            if top[0] <= score:
                break
            score, p[top[1]] = top[0], p[top[1]] + top[2]
        if score > best[0]:
            best = (score, shape, *p)
    return best[1], best[2], best[3], best[4]


def _size_of(r: float) -> str:
    f = r / SIZE
    cuts = [(SIZE_RANGE["small"][1] + SIZE_RANGE["medium"][0]) / 2, (SIZE_RANGE["medium"][1] + SIZE_RANGE["large"][0]) / 2]
    return SIZES[int(f > cuts[0]) + int(f > cuts[1])]


def _position_of(cx: float, cy: float) -> str:
    col = int(np.abs(np.array(CENTRES) * SIZE - cx).argmin())
    row = int(np.abs(np.array(CENTRES) * SIZE - cy).argmin())
    return POSITIONS[3 * row + col]


def read_attributes(image: Image.Image) -> Reading:
    """Read all six attributes back from an image of the world (any size; resampled to SIZE).

    Lighting: the gain map under which the border (always background: no shape reaches it) is flattest.
    With the lighting undone, background is the commonest palette colour on the border and colour the
    commonest other one; shape, size and position come from the PIL mask (any shape, centre and radius)
    that best overlaps that colour's largest blob, so soft edges in a decoded image do not flip a shape.
    """
    img = image.convert("RGB")
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.BOX)
    arr = np.asarray(img, dtype=np.float64)  # (S, S, 3)
    border = arr[_BORDER]  # (4S - 4, 3)

    def flatness(name):
        undone = border / _GAINS[name][_BORDER][:, None]
        return undone.std(0).sum()

    lighting = min(LIGHTINGS, key=flatness)
    flat = arr / _GAINS[lighting][..., None]
    labels = _nearest_palette(flat)  # (S, S)
    bg = int(np.bincount(labels[_BORDER], minlength=len(COLORS)).argmax())
    inner = labels[labels != bg]
    if inner.size < 8:
        return Reading(None, COLORS[bg], None, None, None, lighting)
    fg = int(np.bincount(inner, minlength=len(COLORS)).argmax())
    blob = _largest_component(labels == fg)
    shape, cx, cy, r = _fit_shape(blob)
    return Reading(COLORS[fg], COLORS[bg], shape, _size_of(r), _position_of(cx, cy), lighting, r)


def background_std(image: Image.Image, reading: Reading | None = None) -> float:
    """Pixel standard deviation of the background (away from the shape), after undoing the lighting.

    A true render has < 1 (rounding only); decoder grain shows up here.
    """
    img = image.convert("RGB")
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.BOX)
    reading = reading or read_attributes(img)
    arr = np.asarray(img, dtype=np.float64) / _GAINS[reading.lighting or "even"][..., None]
    labels = _nearest_palette(arr)
    from scipy import ndimage

    shape_zone = ndimage.binary_dilation(labels != COLORS.index(reading.background or "black"), iterations=3)
    bg = arr[~shape_zone]
    return float(bg.std(0).mean()) if len(bg) else float("nan")


def to_tensor(images) -> "torch.Tensor":
    """PIL images of the world -> (N, 3, S, S) float32 in [-1, 1] (what CLIP's preprocess gives at mean=std=0.5)."""
    import torch

    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])  # (N, S, S, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def to_images(x: "torch.Tensor", size: int = SIZE) -> list[Image.Image]:
    """(N, 3, S, S) in [-1, 1] -> PIL images (nearest-neighbour scaled when size != S)."""
    import torch

    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(dtype=torch.uint8)
    out = [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in arr]
    return [im.resize((size, size), Image.NEAREST) if size != im.width else im for im in out]
