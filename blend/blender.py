"""Blender: one preset's encoder and decoders, loaded lazily, with every input checked at the edge."""
from __future__ import annotations

import importlib
import inspect
from typing import Sequence

import torch

from . import checks, ops
from .decoders import IMAGE_DECODERS
from .encode import Encoder
from .presets import get_preset
from .sources import check_reachable

# image decoders: blend.decoders.IMAGE_DECODERS, `type` -> "module:Class" with from_spec(spec, base_dir, device, dtype)
# text decoders' from_spec also takes `encoder=`: the blender's own, for those that re-embed text (rerank)
TEXT_DECODERS = {
    "prefix-inverter": "blend.decode_text:PrefixInverter",
    "retrieval": "blend.decode_text:Retrieval",
}
# preset `gap` type -> "module:Class"; each has from_spec(spec, base_dir, blender), to_image(T, texts), to_text(E)
GAP_MAPS = {
    "none": "blend.gap:NoGap",
    "mean-shift": "blend.gap:MeanShift",
    "linear": "blend.gap:LinearMap",
    "prior": "blend.gap:PriorGap",
}


def _import(path: str):
    module, cls = path.split(":")
    return getattr(importlib.import_module(module), cls)


def pick_device(device: str | torch.device = "auto") -> tuple[torch.device, torch.dtype]:
    """`auto`: CUDA in fp16 where there is one, else CPU in fp32."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    return device, torch.float16 if device.type == "cuda" else torch.float32


class Blender:
    """Encode images and texts into one space, and decode embeddings back into images and sentences."""

    def __init__(self, preset: dict, device: str | torch.device = "auto"):
        self.preset = preset
        self.name = preset["name"]
        self.device, self.dtype = pick_device(device)
        check_reachable(preset)  # offline and not cached: one clear ValueError now, not minutes of retries
        self.encoder = Encoder.from_spec(preset["encoder"], preset["_dir"], self.device, self.dtype)
        self.embed_dim = self.encoder.embed_dim
        self._image_decoder = None
        self._text_decoder = None
        gap = preset.get("gap", {"type": "none"})
        if gap["type"] not in GAP_MAPS:
            raise ValueError(f"preset {self.name!r}: unknown gap type {gap['type']!r}; known: {sorted(GAP_MAPS)}")
        self.gap = _import(GAP_MAPS[gap["type"]]).from_spec(gap, preset["_dir"], self)

    def __repr__(self):
        return f"Blender({self.name!r}, dim={self.embed_dim}, device={self.device})"

    # ------------------------------------------------------------------ decoders, loaded on first use
    def _load_decoder(self, kind: str, registry: dict, **extra):
        spec = self.preset[kind]
        if spec["type"] not in registry:
            raise ValueError(f"preset {self.name!r}: unknown {kind} type {spec['type']!r}; known: {sorted(registry)}")
        dec = _import(registry[spec["type"]]).from_spec(spec, self.preset["_dir"], self.device, self.dtype, **extra)
        dim = getattr(dec, "embed_dim", self.embed_dim)
        if dim != self.embed_dim:
            raise ValueError(f"preset {self.name!r}: {kind} reads {dim}-d embeddings, the encoder makes {self.embed_dim}-d")
        return dec

    @property
    def image_decoder(self):
        if self._image_decoder is None:
            self._image_decoder = self._load_decoder("image_decoder", IMAGE_DECODERS)
        return self._image_decoder

    @property
    def text_decoder(self):
        if self._text_decoder is None:
            self._text_decoder = self._load_decoder("text_decoder", TEXT_DECODERS, encoder=self.encoder)
        return self._text_decoder

    # ------------------------------------------------------------------ encode
    def encode_images(self, images) -> torch.Tensor:
        """Images (PIL, paths, bytes or uint8 arrays) -> (N, D) float32 unit embeddings."""
        return self.encoder.encode_images(images)

    def encode_texts(self, texts: Sequence[str] | str, raw: bool = False) -> torch.Tensor:
        """Texts -> (N, D) float32 unit embeddings in the blend space.

        The blend space is the image-embedding space: text embeddings cross the modality gap through the
        preset's gap map (identity where the decoders were trained on both modalities, as in shapes-mini),
        so images and texts mix on equal terms and no decoder is fed raw text embeddings.
        `raw=True` returns the CLIP text embeddings as they are.
        """
        texts = self.encoder.check_texts(texts)
        t = self.encoder.encode_texts(texts)
        return t if raw else self.gap.to_image(t, texts=texts)

    # ------------------------------------------------------------------ decode
    def check_embeddings(self, emb, name: str = "embeddings") -> torch.Tensor:
        """(N, D) or (D,) finite, non-zero, of this model's dimension -> (N, D) unit float32."""
        return ops.normalize(checks.embeddings(emb, name, dim=self.embed_dim))

    def decode_images(self, emb, seed: int = 0, steps: int | None = None, **options):
        """(N, D) or (D,) embeddings -> N PIL images, one per row.

        `seed` fixes the start noise: one seed is shared by every row; a list of N seeds gives each row its own
        (where the decoder draws noise per row), so a row's image does not depend on the others.
        """
        emb = self.check_embeddings(emb)
        seed = checks.seeds(seed, emb.shape[0])
        if steps is not None:
            steps = checks.whole(steps, "steps", 1, 200)
        dec = self.image_decoder
        params = inspect.signature(dec.__call__).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            checks.options(options, [k for k in params if k not in ("self", "emb", "seed", "steps")])
        if isinstance(seed, list) and not getattr(dec, "row_seeds", False):
            return [im for i, s in enumerate(seed) for im in dec(emb[i:i + 1], seed=s, steps=steps, **options)]
        return dec(emb, seed=seed, steps=steps, **options)

    def decode_texts(self, emb) -> list[str]:
        """(N, D) or (D,) embeddings -> N sentences."""
        emb = self.gap.to_text(self.check_embeddings(emb))
        return self.text_decoder.generate(emb.to(self.device))


def load(name_or_path: str = "shapes-mini", device: str | torch.device = "auto") -> Blender:
    """Load a preset by name (see `list_presets()`) or from a folder holding `preset.json`."""
    return Blender(get_preset(name_or_path), device=device)
