"""Maps across the modality gap between CLIP's image and text embeddings (Liang et al. 2022, "Mind the Gap").

The blend space is the image-embedding space. `to_image` carries text embeddings into it before they
are mixed or decoded into images; `to_text` carries blend-space points to where a text decoder reads.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .ops import normalize


class NoGap:
    """Identity: the decoders were trained on image, text and mixed embeddings alike (shapes-mini)."""

    @classmethod
    def from_spec(cls, spec: dict, base_dir, blender) -> "NoGap":
        return cls()

    def to_image(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def to_text(self, e: torch.Tensor) -> torch.Tensor:
        return e


class MeanShift:
    """normalize(x + shift) with shift = mean(image embeddings) - mean(text embeddings), stored as safetensors."""

    def __init__(self, shift: torch.Tensor):
        self.shift = shift.float()

    @classmethod
    def from_spec(cls, spec: dict, base_dir, blender) -> "MeanShift":
        from safetensors.torch import load_file

        from .presets import resolve_source

        path = Path(resolve_source(spec["source"], base_dir))
        return cls(load_file(str(path))["shift"])

    @staticmethod
    def fit(image_embs: torch.Tensor, text_embs: torch.Tensor) -> torch.Tensor:
        """The shift from paired (or merely same-distribution) unit image and text embeddings."""
        return normalize(image_embs).mean(0) - normalize(text_embs).mean(0)

    def to_image(self, t: torch.Tensor) -> torch.Tensor:
        return normalize(t + self.shift.to(t))

    def to_text(self, e: torch.Tensor) -> torch.Tensor:
        return normalize(e - self.shift.to(e))
