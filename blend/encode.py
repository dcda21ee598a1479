"""Encoder: an OpenCLIP model with its preprocess and tokenizer -> unit (N, D) embeddings."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

MODEL_CONFIGS = Path(__file__).parent / "model_configs"  # architectures registered with open_clip by file name
MAX_PIXELS = 40_000_000  # larger images are refused before they are decoded
MAX_BYTES = 50 * 2**20


def load_image(item, name: str = "image") -> Image.Image:
    """A PIL RGB image from a PIL image, a path, bytes or an (H, W, 3) uint8 array; clear errors otherwise."""
    if isinstance(item, Image.Image):
        img = item
    elif isinstance(item, np.ndarray):
        if item.ndim not in (2, 3) or item.dtype != np.uint8:
            raise ValueError(f"{name}: arrays must be (H, W) or (H, W, 3) uint8, got {item.shape} {item.dtype}")
        img = Image.fromarray(item)
    elif isinstance(item, (bytes, bytearray, str, os.PathLike)):
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise ValueError(f"{name}: no image file at {path}")
            if path.stat().st_size > MAX_BYTES:
                raise ValueError(f"{name}: {path} is larger than {MAX_BYTES // 2**20} MB")
            data = path.read_bytes()
        else:
            data = bytes(item)
        try:
            img = Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{name}: cannot read image ({e})") from e
    else:
        raise ValueError(f"{name}: expected a PIL image, a path, bytes or an array, got {type(item).__name__}")
    if img.width * img.height > MAX_PIXELS:
        raise ValueError(f"{name}: {img.width}x{img.height} is too large (at most {MAX_PIXELS:,} pixels)")
    if img.width < 1 or img.height < 1:
        raise ValueError(f"{name}: image is empty")
    try:
        img.load()
        return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{name}: cannot read image ({e})") from e


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
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty: give at least one text")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"texts[{i}] must be a string, got {type(t).__name__}")
            if not t.strip():
                raise ValueError(f"texts[{i}] is empty")
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
