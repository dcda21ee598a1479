"""Maps across the modality gap between CLIP's image and text embeddings (Liang et al. 2022, "Mind the Gap").

The blend space is the image-embedding space. `to_image` carries text embeddings into it before they
are mixed or decoded into images; `to_text` carries blend-space points to where a text decoder reads.
"""
from __future__ import annotations

import torch

from .ops import normalize
from .sources import optional_file, resolve_source


class NoGap:
    """Identity: the decoders were trained on image, text and mixed embeddings alike (shapes-mini)."""

    @classmethod
    def from_spec(cls, spec: dict, base_dir, blender) -> "NoGap":
        return cls()

    def to_image(self, t: torch.Tensor, texts: list[str] | None = None) -> torch.Tensor:
        return t

    def to_text(self, e: torch.Tensor) -> torch.Tensor:
        return e


class MeanShift:
    """normalize(x + shift) with shift = mean(image embeddings) - mean(text embeddings), stored as safetensors."""

    def __init__(self, shift: torch.Tensor):
        self.shift = shift.float()

    @classmethod
    def from_spec(cls, spec: dict, base_dir, blender):
        return _measured(cls, spec, base_dir, blender)

    @classmethod
    def from_tensors(cls, tensors: dict) -> "MeanShift":
        return cls(tensors["shift"])

    @staticmethod
    def fit(image_embs: torch.Tensor, text_embs: torch.Tensor) -> torch.Tensor:
        """The shift from paired (or merely same-distribution) unit image and text embeddings."""
        return normalize(image_embs).mean(0) - normalize(text_embs).mean(0)

    def to_image(self, t: torch.Tensor, texts: list[str] | None = None) -> torch.Tensor:
        return normalize(t + self.shift.to(t))

    def to_text(self, e: torch.Tensor) -> torch.Tensor:
        return normalize(e - self.shift.to(e))


SHIPPED_CAPTIONS = "models/captions/general.txt"


class Uncalibrated:
    """A gap map whose measured file is missing: refuses to carry texts into image space rather than guess.

    Image-only mixes still work; `to_text` passes through (CLIP ranks texts against images across the gap).
    """

    def __init__(self, preset: str, path: str):
        self.preset, self.path = preset, path

    def to_image(self, t: torch.Tensor, texts: list[str] | None = None) -> torch.Tensor:
        raise ValueError(
            f"texts cannot be mixed with preset {self.preset!r} yet: its gap map {self.path} has not been measured, "
            f"and it cannot be built offline (it needs real images, which blend does not ship). Run once: "
            f"`blend calibrate {self.preset} --images DIR --captions {SHIPPED_CAPTIONS}` with a few hundred of "
            f"your own images (image-only mixes work meanwhile)")

    def to_text(self, e: torch.Tensor) -> torch.Tensor:
        return e


def _measured(cls, spec: dict, base_dir, blender):
    """Load a measured map from spec['source'], or an `Uncalibrated` stand-in when the file is not there yet."""
    from safetensors.torch import load_file

    path = optional_file(spec.get("source"), base_dir)
    if path is None:
        return Uncalibrated(getattr(blender, "name", "?"), spec.get("source"))
    return cls.from_tensors(load_file(str(path)))


class LinearMap:
    """Ridge-regressed affine maps between paired text and image embeddings (both ways), stored as safetensors.

    to_image(t) = normalize(t W + b); to_text(e) = normalize(e W' + b'), each fitted on its own direction.
    """

    def __init__(self, w: torch.Tensor, b: torch.Tensor, w_inv: torch.Tensor, b_inv: torch.Tensor):
        self.w, self.b, self.w_inv, self.b_inv = w.float(), b.float(), w_inv.float(), b_inv.float()

    @classmethod
    def from_spec(cls, spec: dict, base_dir, blender):
        return _measured(cls, spec, base_dir, blender)

    @classmethod
    def from_tensors(cls, tensors: dict) -> "LinearMap":
        return cls(tensors["linear.w"], tensors["linear.b"], tensors["linear.w_inv"], tensors["linear.b_inv"])

    @staticmethod
    def fit(image_embs: torch.Tensor, text_embs: torch.Tensor, ridge: float = 1e-2) -> dict[str, torch.Tensor]:
        """Paired unit embeddings (N, D) each -> the tensors `from_tensors` reads."""
        def solve(x, y):  # least squares y ~ [x, 1] @ [[W], [b]] with a ridge on W
            xa = torch.cat([x, torch.ones(len(x), 1)], 1)  # (N, D + 1)
            reg = ridge * torch.eye(xa.shape[1])
            reg[-1, -1] = 0
            sol = torch.linalg.solve(xa.T @ xa + reg, xa.T @ y)  # (D + 1, D)
            return sol[:-1], sol[-1]

        x, y = normalize(text_embs.double()), normalize(image_embs.double())
        w, b = solve(x, y)
        w_inv, b_inv = solve(y, x)
        return {"linear.w": w.float(), "linear.b": b.float(), "linear.w_inv": w_inv.float(),
                "linear.b_inv": b_inv.float()}

    def to_image(self, t: torch.Tensor, texts: list[str] | None = None) -> torch.Tensor:
        return normalize(t @ self.w.to(t) + self.b.to(t))

    def to_text(self, e: torch.Tensor) -> torch.Tensor:
        return normalize(e @ self.w_inv.to(e) + self.b_inv.to(e))


class PriorGap:
    """Text terms through a diffusion prior, seeded: Kandinsky 2.2's `KandinskyV22PriorPipeline` (`"prior":
    "kandinsky-2.2"`, the default) or the Karlo prior that diffusers' `StableUnCLIPPipeline` runs before
    Stable unCLIP small (`"prior": "karlo"`, with `text_encoder`, a CLIP ViT-L-14 in transformers format).

    The prior reads the text itself (its token states, not only the pooled embedding), so `to_image` needs
    the texts behind the embeddings, which `Blender.encode_texts` hands over. Each text runs alone
    from the same seed, so a text maps to one image embedding whatever it is batched with.
    `to_text` is the identity, or a measured mean shift when `to_text_source` names one.
    """

    DEFAULTS = {"steps": 25, "guidance_scale": 4.0, "seed": 0}  # both upstream pipelines' prior defaults
    KINDS = ("kandinsky-2.2", "karlo")

    def __init__(self, source: str, options: dict, device, dtype, offload: str | None = None,
                 back: "MeanShift | None" = None, kind: str = "kandinsky-2.2", text_encoder: str | None = None,
                 use_safetensors: bool = True):
        if kind not in self.KINDS:
            raise ValueError(f"gap prior must be one of {self.KINDS}, got {kind!r}")
        if kind == "karlo" and not text_encoder:
            raise ValueError("gap prior 'karlo' needs `text_encoder` (e.g. openai/clip-vit-large-patch14)")
        self.source, self.options, self.device, self.dtype, self.offload = source, options, device, dtype, offload
        self.back, self.kind, self.text_encoder, self.use_safetensors = back, kind, text_encoder, use_safetensors
        self._pipe = None

    @classmethod
    def from_spec(cls, spec: dict, base_dir, blender) -> "PriorGap":
        from safetensors.torch import load_file

        back = optional_file(spec.get("to_text_source"), base_dir)
        text_encoder = spec.get("text_encoder")
        return cls(resolve_source(spec["source"], base_dir), {**cls.DEFAULTS, **spec.get("options", {})},
                   blender.device, blender.dtype, spec.get("offload"),
                   MeanShift(load_file(str(back))["shift"]) if back else None, spec.get("prior", "kandinsky-2.2"),
                   resolve_source(text_encoder, base_dir) if text_encoder else None,
                   bool(spec.get("use_safetensors", True)))

    @property
    def pipe(self):
        if self._pipe is None:
            from .priors import load_kandinsky_prior, load_karlo_prior

            if self.kind == "karlo":
                self._pipe = load_karlo_prior(self.source, self.text_encoder, self.device, self.dtype,
                                              self.use_safetensors)
            else:
                self._pipe = load_kandinsky_prior(self.source, self.device, self.dtype, self.offload)
        return self._pipe

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (N, D) unit image embeddings predicted by the prior, one seeded run per text."""
        out = []
        steps, scale = int(self.options["steps"]), float(self.options["guidance_scale"])
        for text in texts:
            g = torch.Generator("cpu").manual_seed(int(self.options["seed"]))
            if self.kind == "karlo":
                out.append(self.pipe(text, generator=g, steps=steps, guidance_scale=scale).float().cpu())
                continue
            # negative_prompt="" keeps the prior from embedding a blank image with its own image encoder,
            # which this map does not load; the text's own output is the same kind of sample either way
            res = self.pipe(text, negative_prompt="", generator=g, num_inference_steps=steps, guidance_scale=scale,
                            output_type="pt")
            out.append(res.image_embeds.float().cpu())
        return normalize(torch.cat(out))

    def to_image(self, t: torch.Tensor, texts: list[str] | None = None) -> torch.Tensor:
        if texts is None or len(texts) != len(t):
            raise ValueError("this preset carries texts into image space with a prior, which reads the text itself: "
                             "encode texts with Blender.encode_texts (raw text embeddings cannot be mapped)")
        return self.embed_texts(list(texts))

    def to_text(self, e: torch.Tensor) -> torch.Tensor:
        return self.back.to_text(e) if self.back is not None else e
