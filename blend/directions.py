"""Named attribute directions: shipped defaults per preset plus the user's own, stored as JSON.

A direction is defined by text pairs ("large" vs "small") or by two sets of example images, and becomes
a vector through `blend.direction(positives, negatives)` on the preset's own embeddings.

Defaults: models/directions/<preset name>.json, else <preset world>.json, else general.json, or an inline
`"directions": [...]` list in the preset. User directions: $BLEND_HOME/directions/<preset name>.json
(BLEND_HOME defaults to ~/.config/blend).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checks, ops, store
from .images import image_value
from .presets import MODELS_DIR

DIRECTIONS_DIR = MODELS_DIR / "directions"
MAX_NAME = 60


def blend_home() -> Path:
    return Path(os.environ.get("BLEND_HOME") or Path.home() / ".config" / "blend")


@dataclass
class Direction:
    """pairs: [[positive text, negative text], ...]; or positive/negative: lists of example images."""

    name: str
    pairs: list[list[str]] = field(default_factory=list)
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    description: str = ""
    source: str = "user"  # "default" (shipped, read-only) or "user"

    @classmethod
    def from_dict(cls, d: dict, source: str = "user") -> "Direction":
        if not isinstance(d, dict):
            raise ValueError(f"a direction must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - {"name", "pairs", "positive", "negative", "description"}
        if unknown:
            raise ValueError(f"direction has unknown keys {sorted(unknown)}")
        out = cls(name=d.get("name"), pairs=d.get("pairs") or [], positive=d.get("positive") or [],
                  negative=d.get("negative") or [], description=d.get("description") or "", source=source)
        return out.check()

    def to_dict(self) -> dict:
        d = {"name": self.name, "description": self.description}
        if self.pairs:
            d["pairs"] = [list(p) for p in self.pairs]
        else:
            d["positive"], d["negative"] = list(self.positive), list(self.negative)
        return d

    def check(self) -> "Direction":
        self.name = check_name(self.name)
        if not isinstance(self.description, str):
            raise ValueError(f"direction {self.name!r}: description must be text")
        if self.pairs and (self.positive or self.negative):
            raise ValueError(f"direction {self.name!r}: give text pairs or example sets, not both")
        if self.pairs:
            if not isinstance(self.pairs, list):
                raise ValueError(f"direction {self.name!r}: pairs must be a list of [positive, negative] texts")
            for i, p in enumerate(self.pairs):
                if (not isinstance(p, (list, tuple)) or len(p) != 2
                        or not all(isinstance(s, str) and s.strip() for s in p)):
                    raise ValueError(f"direction {self.name!r}: pair {i + 1} must be two non-empty texts, "
                                     f"positive then negative, got {p!r}")
            self.pairs = [[p[0].strip(), p[1].strip()] for p in self.pairs]
        else:
            for side in ("positive", "negative"):
                items = getattr(self, side)
                if not isinstance(items, list) or not items or not all(isinstance(s, str) and s for s in items):
                    raise ValueError(f"direction {self.name!r}: give text pairs, or {side} examples "
                                     f"(a non-empty list of example images)")
        return self


def check_name(name) -> str:
    """One line of at most MAX_NAME characters, no control characters, slashes or '..'."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a direction needs a name")
    return checks.short_name(name, "direction name", MAX_NAME)


def parse_pairs(text: str) -> list[list[str]]:
    """`positive | negative` per line (blank lines skipped) -> [[positive, negative], ...]."""
    pairs = []
    for i, line in enumerate((text or "").splitlines()):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise ValueError(f"line {i + 1} of the pairs should read 'positive words | negative words', got {line!r}")
        pairs.append([parts[0].strip(), parts[1].strip()])
    return pairs


def direction_vector(blender, definition: dict | Direction) -> torch.Tensor:
    """A direction's vector in `blender`'s blend space -> (D,): mean(positives) - mean(negatives)."""
    d = definition if isinstance(definition, Direction) else Direction.from_dict(definition)
    try:
        if d.pairs:
            pos = blender.encode_texts([p for p, _ in d.pairs])
            neg = blender.encode_texts([n for _, n in d.pairs])
        else:
            pos = blender.encode_images([image_value(v) for v in d.positive])
            neg = blender.encode_images([image_value(v) for v in d.negative])
    except ValueError as e:
        raise ValueError(f"direction {d.name!r}: {e}") from e
    return ops.direction(pos, neg)


def _read_list(path: Path, source: str) -> list[Direction]:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"direction file {path} is not valid JSON: {e}") from e
    items = data.get("directions", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError(f"direction file {path}: expected {{\"directions\": [...]}}")
    return [Direction.from_dict(d, source) for d in items]


def default_directions(preset: dict) -> list[Direction]:
    """The shipped directions for a preset: inline in the preset, else the first file found in models/directions/."""
    if isinstance(preset.get("directions"), list):
        return [Direction.from_dict(d, "default") for d in preset["directions"]]
    for stem in (preset.get("name"), preset.get("world"), "general"):
        if stem and (DIRECTIONS_DIR / f"{stem}.json").is_file():
            return _read_list(DIRECTIONS_DIR / f"{stem}.json", "default")
    return []


class DirectionLibrary:
    """Defaults (read-only) and user directions (add, rename, delete; saved to `user_path` at once)."""

    def __init__(self, defaults: list[Direction] = (), user_path: str | Path | None = None, max_user: int = 1000):
        self.defaults = {d.name: d for d in defaults}
        self.user_path = Path(user_path) if user_path else None
        self.max_user = max_user
        self.user: dict[str, Direction] = {}
        self.reload()
        self._vectors: dict[tuple[str, str], torch.Tensor] = {}

    def reload(self) -> "DirectionLibrary":
        """Read the user file again (a corrupt file is backed up with a warning and read as empty)."""
        if self.user_path is not None:
            self.user = {d.name: d for d in store.read_items(self.user_path, "directions",
                                                             lambda d: Direction.from_dict(d, "user"))}
        return self

    @contextmanager
    def _change(self):
        """A locked read-modify-write of the user file, so processes sharing it never lose each other's saves."""
        if self.user_path is None:
            yield
            return
        with store.locked(self.user_path):
            self.reload()
            yield
            store.write_atomic(self.user_path, {"directions": [d.to_dict() for d in self.user.values()]})

    @classmethod
    def for_preset(cls, preset: dict, home: str | Path | None = None) -> "DirectionLibrary":
        """The library of one preset (a preset dict or a Blender): its defaults and the user's file for it."""
        preset = getattr(preset, "preset", preset)
        user = Path(home or blend_home()) / "directions" / f"{preset['name']}.json"
        return cls(default_directions(preset), user)

    def names(self) -> list[str]:
        return list(self.defaults) + sorted(self.user)

    def get(self, name: str) -> Direction:
        if name in self.user:
            return self.user[name]
        if name in self.defaults:
            return self.defaults[name]
        raise ValueError(f"no direction called {name!r}; known: {', '.join(self.names()) or '(none)'}")

    def add(self, definition: dict | Direction, blender=None, replace: bool = False) -> Direction:
        """Add (or with replace=True, update) a user direction; with a blender its words and images are checked now."""
        d = Direction.from_dict(definition.to_dict() if isinstance(definition, Direction) else definition, "user")
        if d.name in self.defaults:
            raise ValueError(f"{d.name!r} is a shipped direction: choose another name for yours")
        if d.name in self.user and not replace:
            raise ValueError(f"you already have a direction called {d.name!r}: pick another name or update it")
        if blender is not None:
            direction_vector(blender, d)
        with self._change():
            if d.name in self.user and not replace:
                raise ValueError(f"you already have a direction called {d.name!r}: pick another name or update it")
            if d.name not in self.user and len(self.user) >= self.max_user:
                raise ValueError(f"you have {len(self.user)} directions, the most kept: delete some first")
            self.user[d.name] = d
        self._forget(d.name)
        return d

    def rename(self, old: str, new: str) -> Direction:
        new = check_name(new)
        with self._change():
            self._own(old)
            if new in self.defaults or (new in self.user and new != old):
                raise ValueError(f"there is already a direction called {new!r}")
            d = self.user.pop(old)
            d.name = new
            self.user[new] = d
        self._forget(old)
        return d

    def delete(self, name: str) -> None:
        with self._change():
            self._own(name)
            del self.user[name]
        self._forget(name)

    def vector(self, blender, name: str) -> torch.Tensor:
        """The direction's (D,) vector for this blender, computed once."""
        key = (blender.name, name)
        if key not in self._vectors:
            self._vectors[key] = direction_vector(blender, self.get(name))
        return self._vectors[key]

    def save(self) -> None:
        """Write the user directions atomically under the file's lock (a crash never leaves half a file)."""
        if self.user_path is not None:
            with store.locked(self.user_path):
                store.write_atomic(self.user_path, {"directions": [d.to_dict() for d in self.user.values()]})

    def _own(self, name: str) -> None:
        if name in self.defaults and name not in self.user:
            raise ValueError(f"{name!r} is a shipped direction and cannot be changed: save a copy under a new name")
        if name not in self.user:
            raise ValueError(f"no direction of yours called {name!r}")

    def _forget(self, name: str) -> None:
        self._vectors = {k: v for k, v in self._vectors.items() if k[1] != name}
