"""Encoder: an OpenCLIP model with its preprocess and tokenizer -> unit (N, D) embeddings."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import checks

MODEL_CONFIGS = Path(__file__).parent / "model_configs"  # architectures registered with open_clip by file name
MAX_PIXELS = checks.MAX_PIXELS  # larger images are refused from their header, before they are decoded
MAX_BYTES = checks.MAX_BYTES


def load_image(item, name: str = "image") -> Image.Image:
    """A PIL RGB image from a PIL image, a path, bytes, a data URI or a uint8 array (see `checks.image`)."""
    return checks.image(item, name, MAX_PIXELS, MAX_BYTES)


def register_model_configs() -> None:
    """Make `open_clip.create_model("shapes-mini")` build blend's own architectures (weights come separately)."""
    import open_clip

    if "shapes-mini" not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIGS)


class Encoder:
    """OpenCLIP behind one calling convention: `encode_images` / `encode_texts` -> unit (N, D) float32 on CPU."""

    def __init__(self, model, preprocess, tokenizer, device: torch.device, name: str):
        self.model, self.preprocess, self.tokenizer, self.device, self.name = model, preprocess, tokenizer, device, name
        self.embed_dim = int(model.text_projection.shape[1] if getattr(model, "text_projection", None) is not None
                             else model.visual.output_dim)
        self.context_length = getattr(tokenizer, "context_length", None) or 77
        hf = getattr(tokenizer, "tokenizer", None)
        unk = getattr(hf, "unk_token_id", None)
        # a closed word vocabulary (shapes-mini) names words it does not know instead of encoding them as [UNK]
        self.vocab = set(hf.get_vocab()) if unk is not None and len(hf) < 1000 else None
        self._hf = hf

    @classmethod
    def from_spec(cls, spec: dict, base_dir: str | Path, device: torch.device, dtype: torch.dtype) -> "Encoder":
        import open_clip

        from .sources import LOCAL, is_local, resolve_source

        register_model_configs()
        model_name = spec["model"]
        if is_local(model_name):
            model_name = LOCAL + resolve_source(model_name, base_dir)
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=spec.get("pretrained"), device=device,
            precision="fp16" if dtype == torch.float16 else "fp32")
        tokenizer = open_clip.get_tokenizer(model_name)
        return cls(model.eval(), preprocess, tokenizer, device, spec["model"])

    def check_texts(self, texts) -> list[str]:
        texts = checks.texts(texts)
        for i, t in enumerate(texts):
            if self._hf is not None:
                enc = self._hf(t, verbose=False, return_offsets_mapping=self.vocab is not None)
                n = len(enc.input_ids)
            else:  # open_clip's own BPE: encode() gives the tokens between start and end of text
                n = len(self.tokenizer.encode(t)) + 2 if hasattr(self.tokenizer, "encode") else 0
            if n > self.context_length:
                raise ValueError(f"texts[{i}] is too long: {n} tokens, this encoder reads at most {self.context_length}")
            if self.vocab is not None:
                unk = self._hf.unk_token_id
                unknown = [t[a:b] for tid, (a, b) in zip(enc.input_ids, enc.offset_mapping) if tid == unk]
                if unknown:
                    known = sorted(w for w in self.vocab if not w.startswith("["))
                    raise ValueError(f"texts[{i}] has words this model does not know: {', '.join(unknown)}. "
                                     f"Its vocabulary: {' '.join(known)}")
        return texts

    @torch.no_grad()
    def encode_texts(self, texts) -> torch.Tensor:
        texts = self.check_texts(texts)
        tokens = self.tokenizer(texts).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()

    @torch.no_grad()
    def encode_images(self, images) -> torch.Tensor:
        if isinstance(images, (Image.Image, str, os.PathLike, bytes, np.ndarray)):
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("images is empty: give at least one image")
        pils = [load_image(im, f"images[{i}]") for i, im in enumerate(images)]
        x = torch.stack([self.preprocess(im) for im in pils]).to(self.device, dtype=self._dtype())
        return F.normalize(self.model.encode_image(x).float(), dim=-1).cpu()

    def _dtype(self):
        return next(self.model.parameters()).dtype
