"""History: results as a tree of recipes; each node's `parent` is the node it was made from.

    h = History(); node = h.add(result.recipe, result=result); child = h.branch(node.id, seed=3)
    h.outcome(node.id)            # the stored pictures and sentences: shown again without recomputing
    download_name(node)           # "blend-mix-red-star-seed0.png"

Bounded (`MAX_NODES`, and `max_stored` results kept with their pictures) and walked without recursion, so a
long session cannot exhaust the stack.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from PIL import Image

from .recipe import VERSION, Recipe, _parse_json

MAX_NODES = 5000
MAX_STORED = 64  # results kept with their pictures; older ones are run again when reopened
_FILLER = {"a", "an", "the", "on", "of", "in", "at", "with", "and", "to", "png", "jpg", "jpeg"}


@dataclass
class Outcome:
    """What a node's recipe made: its pictures, one sentence per point, captions, agreement checks (dicts)."""

    images: list[Image.Image]
    texts: list[str]
    captions: list[str]
    agreement: list[dict] = field(default_factory=list)

    @classmethod
    def from_result(cls, result) -> "Outcome":
        return cls(list(result.images), list(result.texts), list(result.captions),
                   [a.to_dict() for a in getattr(result, "agreement", [])])

    def sentence(self, i: int) -> str:
        """The sentence under picture i: its own point's, or the one point's (seeds of one mix)."""
        return self.texts[i] if len(self.texts) == len(self.images) else self.texts[0]


def download_name(recipe: Recipe, ext: str = "png", max_words: int = 6) -> str:
    """A readable file name for a result: `blend-<operation>-<its words>-seed<seed>.<ext>`.

    The words come from the recipe's inputs (text terms, example file names, direction names), without
    articles and prepositions, so `mix` of "a red star" with seed 0 is `blend-mix-red-star-seed0.png`.
    """
    words: list[str] = []
    for t in recipe.terms:
        if t.kind == "text":
            src = t.value
        elif t.kind == "recipe":
            src = "tile"
        else:
            src = "image" if t.value.startswith("data:") else t.value.rsplit(".", 1)[0]
        words += re.findall(r"[a-z0-9]+", src.lower())
    for d in recipe.directions:
        words += re.findall(r"[a-z0-9]+", str(d.get("name", "")).lower())
    kept: list[str] = []
    for w in words:
        if w not in _FILLER and w not in kept:
            kept.append(w)
    slug = "-".join(kept[:max_words])[:60].strip("-") or "result"
    return f"blend-{recipe.operation}-{slug}-seed{recipe.seed}.{ext}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class History:
    """Results as a tree of recipes: each node is a Recipe whose `parent` is the node it was made from."""

    def __init__(self, max_nodes: int = MAX_NODES, max_stored: int = MAX_STORED):
        self.nodes: dict[str, Recipe] = {}  # insertion order is creation order
        self.outcomes: dict[str, Outcome] = {}  # the newest `max_stored` results, oldest first
        self.max_nodes, self.max_stored = max_nodes, max_stored

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, node_id) -> bool:
        return node_id in self.nodes

    def _room(self, n: int = 1) -> None:
        if len(self.nodes) + n > self.max_nodes:
            raise ValueError(f"the history holds at most {self.max_nodes} nodes: download it, then start a new one")

    def add(self, recipe: Recipe | dict, parent: str | None = None, result=None) -> Recipe:
        """Store a copy of `recipe` as a new node under `parent` (None: a root); returns the stored node.

        With `result` (a run's Result), its pictures and sentences are kept too (see `outcome`).
        """
        r = (Recipe.from_dict(recipe) if isinstance(recipe, dict) else recipe.copy()).check()
        if parent is not None and parent not in self.nodes:
            raise ValueError(f"no history node {parent!r} to attach to")
        self._room()
        r.id, r.parent, r.created = uuid.uuid4().hex[:8], parent, _now()
        self.nodes[r.id] = r
        if result is not None:
            self.keep(r.id, result)
        return r.copy()

    def keep(self, node_id: str, result) -> None:
        """Keep what `node_id`'s recipe made (a Result or an Outcome); the oldest kept result goes past max_stored."""
        if node_id not in self.nodes:
            raise ValueError(f"no history node {node_id!r}")
        self.outcomes.pop(node_id, None)
        self.outcomes[node_id] = result if isinstance(result, Outcome) else Outcome.from_result(result)
        while len(self.outcomes) > self.max_stored:
            self.outcomes.pop(next(iter(self.outcomes)))

    def outcome(self, node_id: str) -> Outcome | None:
        """The kept pictures and sentences of a node, or None (never run here, or no longer kept)."""
        return self.outcomes.get(node_id)

    def origin(self, recipe: Recipe, candidate: str | None) -> str | None:
        """The node a new result came from: `candidate` (the node last shown in its workspace) when the new
        recipe is the same operation and shares at least one input with it, else None (a new root)."""
        if candidate is None or candidate not in self.nodes:
            return None
        base = self.nodes[candidate]
        inputs = {(t.kind, t.value) for t in base.terms}
        same = base.operation == recipe.operation or {base.operation, recipe.operation} <= {"mix", "directions"}
        return candidate if same and any((t.kind, t.value) in inputs for t in recipe.terms) else None

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
        """(depth, node) in depth-first order, children oldest first; iterative, any depth."""
        kids: dict[str | None, list[Recipe]] = {}
        for r in self.nodes.values():
            kids.setdefault(r.parent if r.parent in self.nodes else None, []).append(r)
        out, stack = [], [(0, r) for r in reversed(kids.get(None, []))]
        seen = set()
        while stack:
            depth, r = stack.pop()
            if r.id in seen:
                continue
            seen.add(r.id)
            out.append((depth, r.copy()))
            stack += [(depth + 1, c) for c in reversed(kids.get(r.id, []))]
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
        self._room(len(items))
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
