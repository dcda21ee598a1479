"""The shipped examples: images and recipes in `examples/`, and a nearest-neighbour index over the images."""
from __future__ import annotations

import os
from pathlib import Path

import torch

EXAMPLES_DIR = Path(os.environ.get("BLEND_EXAMPLES", Path(__file__).resolve().parent.parent / "examples"))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _folder(folder: str | Path | None) -> Path:
    return Path(folder) if folder is not None else EXAMPLES_DIR


def list_examples(folder: str | Path | None = None) -> list[str]:
    """Names of the example images (file names in the examples folder), sorted."""
    folder = _folder(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def list_recipes(folder: str | Path | None = None) -> list[str]:
    """Names of the example recipe JSON files, sorted."""
    folder = _folder(folder)
    return sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []


def example_path(name: str, folder: str | Path | None = None) -> Path:
    """The file of one example, by bare file name only: recipes may come from strangers, so no paths."""
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"example name must be a bare file name such as 'red-circle-on-blue.png', got {name!r}")
    path = _folder(folder) / name
    if not path.is_file():
        known = list_examples(folder)
        raise ValueError(f"no example called {name!r}; known examples: {', '.join(known) or '(none)'}")
    return path


class ExampleIndex:
    """The example images embedded once by one Blender; `nearest` finds the closest ones by cosine."""

    def __init__(self, blender, folder: str | Path | None = None):
        self.blender, self.folder = blender, _folder(folder)
        self._names: list[str] | None = None
        self._embs: torch.Tensor | None = None  # (E, D) unit

    def _build(self):
        if self._names is None:
            names = list_examples(self.folder)
            self._embs = (self.blender.encode_images([self.folder / n for n in names]) if names
                          else torch.zeros(0, self.blender.embed_dim))
            self._names = names

    @property
    def names(self) -> list[str]:
        self._build()
        return list(self._names)

    def nearest(self, emb: torch.Tensor, k: int = 4) -> list[tuple[str, float]]:
        """The k examples closest to one embedding (D,) or (1, D): [(name, cosine)], closest first."""
        self._build()
        if not self._names:
            return []
        q = self.blender.check_embeddings(emb)[0]
        sims = self._embs @ q  # (E,)
        top = torch.topk(sims, min(int(k), len(self._names)))
        return [(self._names[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]
