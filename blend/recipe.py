"""Recipes: what made a result, as JSON (terms, weights, method, directions, seed, preset), and their lineage.

    r = Recipe(operation="mix", terms=[Term("image", "red-circle-on-blue.png"), Term("text", "square", 0.5)])
    result = run_recipe(blender, r)          # result.images, result.texts, result.recipe (resolved)
    h = History(); node = h.add(result.recipe); child = h.branch(node.id, seed=3)
    Recipe.from_json(r.to_json()) == r       # and running it again gives the same images
"""
from __future__ import annotations

import base64
import binascii
import copy
import io
import json
import math
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Callable, Sequence

import torch
from PIL import Image

from . import ops

VERSION = 1
OPERATIONS = ("mix", "directions", "path", "plane")
METHODS = ("lerp", "slerp")
KINDS = ("image", "text")
DATA_URI = "data:image/png;base64,"
MAX_IMAGE_SIDE = 512  # uploaded images are stored at most this large, and encoded as stored
MAX_JSON_BYTES = 20 * 2**20
LIMITS = {"n_seeds": (1, 4), "n": (2, 32), "k": (2, 8), "terms": 6, "directions": 8, "sweep": (2, 16)}

Progress = Callable[[float, str], None]


# ---------------------------------------------------------------------------------------------- images as text
def image_to_data_uri(image, max_side: int = MAX_IMAGE_SIDE) -> str:
    """A PIL image (or anything `load_image` reads) -> `data:image/png;base64,...`, shrunk to at most max_side."""
    from .encode import load_image

    img = load_image(image)
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return DATA_URI + base64.b64encode(buf.getvalue()).decode("ascii")


def data_uri_to_image(uri: str, name: str = "image") -> Image.Image:
    """`data:image/...;base64,...` -> PIL RGB (checked like every image: see `checks.image`)."""
    from .encode import load_image

    if not isinstance(uri, str) or not uri.startswith("data:image/"):
        raise ValueError(f"{name}: embedded images must start with 'data:image/...;base64,'")
    return load_image(uri, name)


# ---------------------------------------------------------------------------------------------- terms
@dataclass
class Term:
    """One input: an image (an example's file name or an embedded PNG data URI) or a text, with its weight."""

    kind: str
    value: str
    weight: float = 1.0
    muted: bool = False

    @classmethod
    def from_dict(cls, d: dict, where: str = "term") -> "Term":
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be an object with kind and value, got {type(d).__name__}")
        unknown = set(d) - {"kind", "value", "weight", "muted"}
        if unknown:
            raise ValueError(f"{where} has unknown keys {sorted(unknown)}; allowed: kind, value, weight, muted")
        t = cls(kind=d.get("kind"), value=d.get("value"), weight=d.get("weight", 1.0), muted=d.get("muted", False))
        t.check(where)
        return t

    def to_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value, "weight": self.weight, "muted": self.muted}

    def check(self, where: str = "term") -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be 'image' or 'text', got {self.kind!r}")
        if not isinstance(self.value, str) or not self.value.strip():
            what = "an example name or an embedded image" if self.kind == "image" else "some words"
            raise ValueError(f"{where} is an empty {self.kind} term: give it {what}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight):
            raise ValueError(f"{where}: weight must be a finite number, got {self.weight!r}")
        if not isinstance(self.muted, bool):
            raise ValueError(f"{where}: muted must be true or false, got {self.muted!r}")
        self.weight = float(self.weight)

    @property
    def active(self) -> bool:
        """Muted terms and weight-0 terms stay in the recipe but take no part in the mix."""
        return not self.muted and self.weight != 0

    @property
    def label(self) -> str:
        if self.kind == "text":
            return repr(self.value)
        return "uploaded image" if self.value.startswith(DATA_URI) else self.value

    def load_image(self, examples_dir=None) -> Image.Image:
        from .examples import example_path
        from .encode import load_image

        if self.kind != "image":
            raise ValueError(f"{self.label} is a text term, not an image")
        if self.value.startswith("data:"):
            return data_uri_to_image(self.value)
        return load_image(example_path(self.value, examples_dir))


def make_term(kind: str, example: str | None = None, image=None, text: str | None = None, weight: float = 1.0,
              muted: bool = False, where: str = "term") -> Term:
    """A term from what a form holds: an image term takes the example if one is picked, else the uploaded image."""
    if kind == "image":
        if example:
            value = example
        elif image is not None:
            value = image_to_data_uri(image)
        else:
            raise ValueError(f"{where} is an image term without an image: upload one or pick an example")
    elif kind == "text":
        value = (text or "").strip()
        if not value:
            raise ValueError(f"{where} is a text term without text: type a few words")
    else:
        raise ValueError(f"{where}: kind must be 'image' or 'text', got {kind!r}")
    t = Term(kind, value, weight if weight is not None else 1.0, bool(muted))
    t.check(where)
    return t


def encode_terms(blender, terms: Sequence[Term], examples_dir=None) -> torch.Tensor:
    """Terms -> (K, D) unit embeddings in the blend space, in order."""
    rows = []
    for i, t in enumerate(terms):
        try:
            rows.append(blender.encode_images([t.load_image(examples_dir)]) if t.kind == "image"
                        else blender.encode_texts([t.value]))
        except ValueError as e:
            msg, sep = str(e), ": "
            for prefix in ("texts[0]", "images[0]", "image"):
                if msg.startswith(prefix):
                    msg, sep = msg[len(prefix):].lstrip(": "), " " if msg[len(prefix):].startswith(" ") else ": "
                    break
            raise ValueError(f"term {i + 1} ({t.label[:40]}){sep}{msg}") from e
    return torch.cat(rows)


# ---------------------------------------------------------------------------------------------- recipes
def _whole(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or not lo <= value <= hi:
        raise ValueError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
    return int(value)


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass
class Recipe:
    """Everything needed to make a result again. `id`/`parent` place it in a History."""

    operation: str = "mix"
    terms: list[Term] = field(default_factory=list)
    method: str = "lerp"  # mix and directions: how terms combine; path: how the two ends are joined
    directions: list[dict] = field(default_factory=list)  # [{name, strength, definition?}]
    seed: int = 0
    n_seeds: int = 1  # mix and directions: images from seed, seed + 1, ...
    steps: int | None = None  # sampler steps; None: the preset's default
    n: int = 8  # path: frames, both ends included
    k: int = 3  # plane: the grid is k x k
    sweep: dict | None = None  # directions: {name, strengths}: a strip with one direction's strength varied
    preset: str = ""
    id: str | None = None
    parent: str | None = None
    created: str | None = None
    note: str = ""

    # ------------------------------------------------------------------ checks
    def check(self) -> "Recipe":
        """Raise ValueError naming the field and the fix; return self (with numbers made canonical)."""
        if self.operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, got {self.operation!r}")
        if not isinstance(self.terms, list) or not self.terms:
            raise ValueError("terms is empty: a recipe needs at least one image or text")
        if len(self.terms) > LIMITS["terms"]:
            raise ValueError(f"at most {LIMITS['terms']} terms, got {len(self.terms)}")
        for i, t in enumerate(self.terms):
            if not isinstance(t, Term):
                raise ValueError(f"terms[{i}] must be a Term")
            t.check(f"term {i + 1}")
        need = {"path": 2, "plane": 3}.get(self.operation)
        if need and len(self.terms) != need:
            raise ValueError(f"a {self.operation} needs exactly {need} terms, got {len(self.terms)}")
        if self.method not in METHODS:
            raise ValueError(f"method must be 'lerp' or 'slerp', got {self.method!r}")
        self.seed = _whole(self.seed, "seed", 0, 2**31 - 1)
        self.n_seeds = _whole(self.n_seeds, "n_seeds", *LIMITS["n_seeds"])
        if self.steps is not None:
            self.steps = _whole(self.steps, "steps", 1, 200)
        self.n = _whole(self.n, "n (path frames)", *LIMITS["n"])
        self.k = _whole(self.k, "k (plane grid size)", *LIMITS["k"])
        if not isinstance(self.directions, list) or len(self.directions) > LIMITS["directions"]:
            raise ValueError(f"directions must be a list of at most {LIMITS['directions']} {{name, strength}}")
        if self.directions and self.operation not in ("mix", "directions"):
            raise ValueError(f"directions apply to mix and directions recipes, not to a {self.operation}")
        for i, d in enumerate(self.directions):
            if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"].strip():
                raise ValueError(f"directions[{i}] must be an object with a name and a strength")
            unknown = set(d) - {"name", "strength", "definition"}
            if unknown:
                raise ValueError(f"directions[{i}] has unknown keys {sorted(unknown)}")
            d["strength"] = _number(d.get("strength", 1.0), f"directions[{i}].strength")
        if self.sweep is not None:
            if self.operation != "directions":
                raise ValueError("sweep belongs to a directions recipe")
            s = self.sweep
            if not isinstance(s, dict) or not isinstance(s.get("name"), str) or not isinstance(s.get("strengths"), list):
                raise ValueError("sweep must be {name: a direction, strengths: [numbers]}")
            lo, hi = LIMITS["sweep"]
            if not lo <= len(s["strengths"]) <= hi:
                raise ValueError(f"sweep.strengths needs {lo} to {hi} values, got {len(s['strengths'])}")
            s["strengths"] = [_number(x, "sweep.strengths") for x in s["strengths"]]
        for name in ("preset", "note"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string")
        for name in ("id", "parent", "created"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or len(v) > 64):
                raise ValueError(f"{name} must be a short string or null, got {v!r}")
        return self

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """Only the fields this operation reads, so a recipe file says what matters."""
        d = {"version": VERSION, "operation": self.operation, "preset": self.preset,
             "terms": [t.to_dict() for t in self.terms], "seed": self.seed, "steps": self.steps}
        if self.operation in ("mix", "directions"):
            d.update(method=self.method, n_seeds=self.n_seeds, directions=copy.deepcopy(self.directions))
            if self.sweep is not None:
                d["sweep"] = copy.deepcopy(self.sweep)
        elif self.operation == "path":
            d.update(method=self.method, n=self.n)
        else:
            d.update(k=self.k)
        d.update(id=self.id, parent=self.parent, created=self.created, note=self.note)
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        if not isinstance(d, dict):
            raise ValueError(f"a recipe must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("version", VERSION)
        if version != VERSION:
            raise ValueError(f"recipe version {version!r} is not supported (this blend reads version {VERSION})")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"recipe has unknown keys {sorted(unknown)}; known: {sorted(known)}")
        terms = d.pop("terms", [])
        if not isinstance(terms, list):
            raise ValueError("terms must be a list of {kind, value, weight, muted}")
        r = cls(**d, terms=[Term.from_dict(t, f"term {i + 1}") for i, t in enumerate(terms)])
        if r.directions is None:
            r.directions = []
        return r.check()

    @classmethod
    def from_json(cls, text: str | bytes) -> "Recipe":
        return cls.from_dict(_parse_json(text))

    def copy(self, **changes) -> "Recipe":
        r = copy.deepcopy(self)
        for k, v in changes.items():
            if k not in {f.name for f in fields(self)}:
                raise ValueError(f"a recipe has no field {k!r}")
            setattr(r, k, v)
        return r

    @property
    def summary(self) -> str:
        """One line for a tree view: the operation, its inputs and the seed."""
        if self.operation == "path":
            body = f"{self.terms[0].label} → {self.terms[1].label} ({self.n} {self.method})"
        elif self.operation == "plane":
            body = ", ".join(t.label for t in self.terms) + f" ({self.k}×{self.k})"
        else:
            parts = [f"{'~' if not t.active else ''}{t.label}×{t.weight:g}" for t in self.terms]
            parts += [f"{d['name']}×{d['strength']:+g}" for d in self.directions]
            body = " + ".join(parts)
            if self.sweep:
                body += f", sweep {self.sweep['name']}"
        return f"{self.operation}: {body} · seed {self.seed}"


def _parse_json(text) -> object:
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_JSON_BYTES:
            raise ValueError(f"JSON is larger than {MAX_JSON_BYTES // 2**20} MB")
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise ValueError("expected JSON text")
    if len(text) > MAX_JSON_BYTES:
        raise ValueError(f"JSON is larger than {MAX_JSON_BYTES // 2**20} MB")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON: {e}") from e


# ---------------------------------------------------------------------------------------------- running
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
                "warnings": self.warnings}


def _resolve_directions(blender, recipe: Recipe, library) -> list[torch.Tensor]:
    """Each direction's vector; its definition is copied into the recipe so the recipe outlives the library."""
    from .directions import direction_vector

    vecs = []
    for d in recipe.directions:
        if "definition" not in d:
            if library is None:
                raise ValueError(f"direction {d['name']!r} has no definition and no direction library was given")
            d["definition"] = library.get(d["name"]).to_dict()
        vecs.append(direction_vector(blender, d["definition"]))
    return vecs


def _decode_rows(blender, points: torch.Tensor, recipe: Recipe, progress: Progress, start: float, chunk: int):
    """Decode (M, D) points from one start noise, `chunk` rows at a time so progress can be shown."""
    images = []
    for i in range(0, len(points), chunk):
        progress(start + (1 - start) * i / len(points), f"decoding {i + 1}-{min(i + chunk, len(points))} of {len(points)}")
        images += blender.decode_images(points[i:i + chunk], seed=recipe.seed, steps=recipe.steps)
    return images


def run_recipe(blender, recipe: Recipe | dict, library=None, index=None, examples_dir=None,
               progress: Progress | None = None) -> Result:
    """Execute a recipe on a Blender: the same recipe and preset give the same images and sentences.

    Args:
        blender: a loaded `Blender`.
        recipe: a `Recipe` or its dict.
        library: a `DirectionLibrary` for directions named without a definition.
        index: an `ExampleIndex` for the nearest examples of a mix (optional).
        examples_dir: where example images are (default `examples/`).
        progress: called as progress(fraction, message).
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
    if op in ("mix", "directions"):
        active = [t for t in recipe.terms if t.active]
        if not active:
            raise ValueError("every term is muted or has weight 0: unmute a term or give it a non-zero weight")
        point = ops.mix(encode_terms(blender, active, examples_dir), [t.weight for t in active], recipe.method)
        vecs = _resolve_directions(blender, recipe, library)
        strengths = [d["strength"] for d in recipe.directions]
        if recipe.sweep is None:
            if vecs:
                point = ops.apply_directions(point, vecs, strengths)
            points = point[None]  # (1, D)
            images = []
            for i in range(recipe.n_seeds):
                progress(0.1 + 0.8 * i / recipe.n_seeds, f"decoding seed {recipe.seed + i}")
                images += blender.decode_images(points, seed=recipe.seed + i, steps=recipe.steps)
            captions = [f"seed {recipe.seed + i}" for i in range(recipe.n_seeds)]
        else:
            name = recipe.sweep["name"]
            names = [d["name"] for d in recipe.directions]
            if name not in names:  # sweeping a direction not applied: add it at strength 0
                if library is None:
                    raise ValueError(f"sweep direction {name!r} is not among the recipe's directions")
                recipe.directions.append({"name": name, "strength": 0.0, "definition": library.get(name).to_dict()})
                vecs = _resolve_directions(blender, recipe, library)
                strengths.append(0.0)
                names.append(name)
            j = names.index(name)
            rows = []
            for s in recipe.sweep["strengths"]:
                st = list(strengths)
                st[j] = s
                rows.append(ops.apply_directions(point, vecs, st))
            points = torch.stack(rows)  # (S, D)
            images = _decode_rows(blender, points, recipe, progress, 0.1, len(points))
            captions = [f"{name} {s:+.2f}" for s in recipe.sweep["strengths"]]
    elif op == "path":
        a, b = encode_terms(blender, recipe.terms, examples_dir)
        points = ops.interpolate(a, b, recipe.n, method=recipe.method)  # (n, D)
        images = _decode_rows(blender, points, recipe, progress, 0.1, 4)
        captions = [f"t={t:.2f}" for t in torch.linspace(0, 1, recipe.n).tolist()]
    else:  # plane
        a, b, c = encode_terms(blender, recipe.terms, examples_dir)
        points = ops.plane(a, b, c, recipe.k).reshape(recipe.k * recipe.k, -1)  # (k*k, D), row-major
        images = _decode_rows(blender, points, recipe, progress, 0.1, recipe.k)
        captions = [f"({i},{j})" for i in range(recipe.k) for j in range(recipe.k)]
    progress(0.95, "decoding sentences")
    texts = blender.decode_texts(points)
    nearest = index.nearest(points[0]) if index is not None and op in ("mix", "directions") and len(points) == 1 else []
    return Result(recipe, points, texts, images, captions, nearest, warnings)


# ---------------------------------------------------------------------------------------------- history
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class History:
    """Results as a tree of recipes: each node is a Recipe whose `parent` is the node it was made from."""

    def __init__(self):
        self.nodes: dict[str, Recipe] = {}  # insertion order is creation order

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, node_id) -> bool:
        return node_id in self.nodes

    def add(self, recipe: Recipe | dict, parent: str | None = None) -> Recipe:
        """Store a copy of `recipe` as a new node under `parent` (None: a root); returns the stored node."""
        r = (Recipe.from_dict(recipe) if isinstance(recipe, dict) else recipe.copy()).check()
        if parent is not None and parent not in self.nodes:
            raise ValueError(f"no history node {parent!r} to attach to")
        r.id, r.parent, r.created = uuid.uuid4().hex[:8], parent, _now()
        self.nodes[r.id] = r
        return r.copy()

    def get(self, node_id: str) -> Recipe:
        if node_id not in self.nodes:
            raise ValueError(f"no history node {node_id!r}: pick one from the list")
        return self.nodes[node_id].copy()

    def children(self, node_id: str | None) -> list[Recipe]:
        """The nodes made from `node_id` (None: the roots), oldest first."""
        return [r.copy() for r in self.nodes.values() if r.parent == node_id]

    def lineage(self, node_id: str) -> list[Recipe]:
        """The path of recipes that led to a node: its root first, the node last."""
        out, seen = [], set()
        while node_id is not None and node_id not in seen:
            seen.add(node_id)
            r = self.get(node_id)
            out.append(r)
            node_id = r.parent
        return out[::-1]

    def branch(self, node_id: str, **changes) -> Recipe:
        """A new child of `node_id`: its recipe with `changes` applied (run it to see the result)."""
        base = self.get(node_id)
        return self.add(base.copy(**changes), parent=node_id)

    def tree(self) -> list[tuple[int, Recipe]]:
        """(depth, node) in depth-first order, children oldest first."""
        out = []

        def walk(parent, depth):
            for r in self.children(parent):
                out.append((depth, r))
                walk(r.id, depth + 1)

        walk(None, 0)
        return out

    def render(self, current: str | None = None) -> str:
        """The tree as indented text lines, the current node marked."""
        lines = []
        for depth, r in self.tree():
            mark = "  ◀ current" if r.id == current else ""
            lines.append(f"{'    ' * depth}{'└─ ' if depth else ''}{r.id}  {r.summary}{mark}")
        return "\n".join(lines) or "(no results yet)"

    def to_dict(self) -> dict:
        return {"version": VERSION, "history": [r.to_dict() for r in self.nodes.values()]}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def merge(self, data) -> list[str]:
        """Add nodes from a history document, a single recipe or a list of recipes (dicts or JSON text).

        Ids are kept; nodes already present are skipped; a node whose parent is unknown becomes a root.
        Returns the ids added, in order.
        """
        if isinstance(data, (str, bytes, bytearray)):
            data = _parse_json(data)
        if isinstance(data, dict) and "history" in data:
            version = data.get("version", VERSION)
            if version != VERSION:
                raise ValueError(f"history version {version!r} is not supported (this blend reads version {VERSION})")
            data = data["history"]
        items = data if isinstance(data, list) else [data]
        recipes = [Recipe.from_dict(d) for d in items]  # all checked before any is added
        added = []
        for r in recipes:
            if r.id is not None and r.id in self.nodes:
                continue
            r = r.copy()
            r.id = r.id or uuid.uuid4().hex[:8]
            r.created = r.created or _now()
            if r.parent is not None and r.parent not in self.nodes:
                r.parent = None
            self.nodes[r.id] = r
            added.append(r.id)
        return added

    @classmethod
    def from_json(cls, text) -> "History":
        h = cls()
        h.merge(text)
        return h
