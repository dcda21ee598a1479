"""Recipes: what made a result, as JSON (terms, weights, method, directions, seed, preset). Schema and codec only.

    r = Recipe(operation="mix", terms=[Term("image", "red-circle-on-blue.png"), Term("text", "square", 0.5)])
    Recipe.from_json(r.to_json()) == r
    # running one: blend.run.run_recipe(blender, r); lineage: blend.history.History

A term is an image (an example's file name or an embedded PNG data URI), some words, or a whole other
mix/directions recipe (`kind: "recipe"`, its JSON as the value): that is how tiles of the canvas are blended.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field, fields

from .images import DATA_URI, MAX_IMAGE_SIDE, data_uri_to_image, image_to_data_uri, image_value  # noqa: F401

VERSION = 1
OPERATIONS = ("mix", "directions", "path", "plane")
POINT_OPERATIONS = ("mix", "directions")  # recipes that make one point (a sweep aside): these can be terms
METHODS = ("lerp", "slerp")
KINDS = ("image", "text", "recipe")
MAX_JSON_BYTES = 20 * 2**20
MAX_NESTING = 16  # a recipe term inside a recipe term inside ...
LIMITS = {"n_seeds": (1, 4), "n": (2, 32), "k": (2, 8), "terms": 6, "directions": 8, "sweep": (2, 16)}


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

    def check(self, where: str = "term", depth: int = 0) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be 'image', 'text' or 'recipe', got {self.kind!r}")
        if not isinstance(self.value, str) or not self.value.strip():
            what = {"image": "an example name or an embedded image", "text": "some words",
                    "recipe": "a mix or directions recipe as JSON"}[self.kind]
            raise ValueError(f"{where} is an empty {self.kind} term: give it {what}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight):
            raise ValueError(f"{where}: weight must be a finite number, got {self.weight!r}")
        if not isinstance(self.muted, bool):
            raise ValueError(f"{where}: muted must be true or false, got {self.muted!r}")
        self.weight = float(self.weight)
        if self.kind == "recipe":
            self.inner(where, depth)

    def inner(self, where: str = "term", depth: int = 0) -> "Recipe":
        """The recipe a `recipe` term holds, checked: one point (mix or directions, no sweep)."""
        if self.kind != "recipe":
            raise ValueError(f"{where} is a {self.kind} term, not a recipe")
        if depth >= MAX_NESTING:
            raise ValueError(f"{where}: recipes nest at most {MAX_NESTING} deep")
        try:
            r = Recipe.from_dict(_parse_json(self.value), depth=depth + 1)
        except ValueError as e:
            raise ValueError(f"{where} (a recipe term): {e}") from e
        if r.operation not in POINT_OPERATIONS or r.sweep is not None:
            raise ValueError(f"{where}: only a mix or directions recipe without a sweep makes one point, "
                             f"got a {r.operation}{' with a sweep' if r.sweep else ''}")
        return r

    @property
    def active(self) -> bool:
        """Muted terms and weight-0 terms stay in the recipe but take no part in the mix."""
        return not self.muted and self.weight != 0

    @property
    def label(self) -> str:
        if self.kind == "text":
            return repr(self.value)
        if self.kind == "recipe":
            return "(" + self.inner().summary.split(" · ")[0] + ")"
        return "uploaded image" if self.value.startswith(DATA_URI) else self.value

    def load_image(self, examples_dir=None):
        """The PIL image of an image term."""
        if self.kind != "image":
            raise ValueError(f"{self.label} is a {self.kind} term, not an image")
        return image_value(self.value, examples_dir)


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
    elif kind in ("text", "recipe"):
        value = (text or "").strip()
        if not value:
            raise ValueError(f"{where} is a {kind} term without {'text' if kind == 'text' else 'a recipe'}")
    else:
        raise ValueError(f"{where}: kind must be 'image', 'text' or 'recipe', got {kind!r}")
    t = Term(kind, value, weight if weight is not None else 1.0, bool(muted))
    t.check(where)
    return t


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
    def check(self, depth: int = 0) -> "Recipe":
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
            t.check(f"term {i + 1}", depth)
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
    def from_dict(cls, d: dict, depth: int = 0) -> "Recipe":
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
        if not all(isinstance(t, dict) for t in terms):
            raise ValueError("each term must be an object with kind and value")
        r = cls(**d, terms=[Term(t.get("kind"), t.get("value"), t.get("weight", 1.0), t.get("muted", False))
                            for t in terms])
        for i, t in enumerate(terms):
            unknown_t = set(t) - {"kind", "value", "weight", "muted"}
            if unknown_t:
                raise ValueError(f"term {i + 1} has unknown keys {sorted(unknown_t)}; allowed: kind, value, weight, muted")
        if r.directions is None:
            r.directions = []
        return r.check(depth)

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




def __getattr__(name):
    """`from blend.recipe import run_recipe, History, Result, encode_terms` keeps working: they now live in
    blend/run.py and blend/history.py, which import this module (resolved lazily, so no import cycle)."""
    if name in ("run_recipe", "Result", "encode_terms", "recipe_point"):
        from . import run
        return getattr(run, name)
    if name == "History":
        from . import history
        return history.History
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
