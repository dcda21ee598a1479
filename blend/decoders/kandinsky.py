"""Kandinsky 2.2's decoder behind one call: unit image-space embeddings -> images (`KandinskyV22Pipeline`)."""
from __future__ import annotations

import torch

from ..priors import read_model_tensors, zero_image_embed
from ..sources import resolve_source
from .common import (check_int, check_output_type, check_scale, norm_from_moments, place, pretrained_kwargs,
                     read_stats, resolve_norm, shared_noise, use_sdpa)


class Kandinsky22:
    """Kandinsky 2.2's decoder (`KandinskyV22Pipeline`): image embeddings -> images through a MoVQ latent UNet.

    Options (the pipeline's defaults): steps 100, guidance_scale 4, height/width 512 (multiples of 64),
    negative_image_embeds "zero-image" (the library's default negative: the CLIP embedding of a blank input),
    "zeros", or unit blend-space embeddings (1 or N rows) rescaled like the positives.
    """

    DEFAULTS = {"steps": 100, "guidance_scale": 4.0, "height": 512, "width": 512, "negative_image_embeds": "zero-image"}

    def __init__(self, pipe, config: dict, embed_norm: float, embed_norm_source: str, zero_image=None):
        self.pipe, self.config = pipe, config
        self.embed_norm, self.embed_norm_source = embed_norm, embed_norm_source
        self.embed_dim = int(pipe.unet.config.encoder_hid_dim)
        self._zero_image = zero_image  # callable -> (D,) raw, or None

    @classmethod
    def from_spec(cls, spec: dict, base_dir, device: torch.device, dtype: torch.dtype) -> "Kandinsky22":
        from diffusers import KandinskyV22Pipeline

        pipe = KandinskyV22Pipeline.from_pretrained(resolve_source(spec["source"], base_dir),
                                                    **pretrained_kwargs(spec, dtype))
        return cls.from_pipeline(pipe, spec, base_dir, device, dtype)

    @classmethod
    def from_pipeline(cls, pipe, spec: dict, base_dir, device: torch.device,
                      dtype: torch.dtype = torch.float32) -> "Kandinsky22":
        config = {**cls.DEFAULTS, **spec.get("options", {})}
        prior = resolve_source(spec["prior"], base_dir) if spec.get("prior") else None
        stats = read_stats(spec, base_dir)

        def auto():
            if prior is None:
                return None
            t = read_model_tensors(prior, "prior", ("clip_mean", "clip_std"))
            if torch.all(t["clip_std"] == 0):
                return None
            return norm_from_moments(t["clip_mean"], t["clip_std"]), "prior clip_mean/clip_std statistics"

        norm, source = resolve_norm(spec, stats, auto)
        if "zero_image" in stats:
            zero = (lambda z=stats["zero_image"].float(): z)
        elif prior is not None:
            zero = (lambda: zero_image_embed(prior, device, dtype))
        else:
            zero = None
        use_sdpa(pipe.unet)
        place(pipe, device, spec.get("offload"))
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, config, norm, source, zero)

    def negative(self, value, n: int) -> torch.Tensor:
        """(n, D) raw negative image embeddings from an option value."""
        if isinstance(value, str):
            if value == "zeros":
                return torch.zeros(n, self.embed_dim)
            if value == "zero-image":
                if self._zero_image is None:
                    raise ValueError("negative_image_embeds='zero-image' needs the prior (preset key `prior`) or a "
                                     "stats file from `blend calibrate`; pass 'zeros' or embeddings instead")
                return self._zero_image()[None].expand(n, -1)
            raise ValueError(f"negative_image_embeds must be 'zero-image', 'zeros' or embeddings, got {value!r}")
        neg = torch.as_tensor(value, dtype=torch.float32)
        neg = neg[None] if neg.ndim == 1 else neg
        if neg.ndim != 2 or neg.shape[1] != self.embed_dim or neg.shape[0] not in (1, n):
            raise ValueError(f"negative_image_embeds must be (D,), (1, D) or ({n}, D) with D = {self.embed_dim}, "
                             f"got {tuple(neg.shape)}")
        if not torch.isfinite(neg).all():
            raise ValueError("negative_image_embeds contains NaN or inf")
        from ..ops import normalize

        return (normalize(neg) * self.embed_norm).expand(n, -1)

    @property
    def negative_image_embeds(self) -> torch.Tensor:
        """(D,) raw default negative, as the pipeline receives it."""
        return self.negative(self.config["negative_image_embeds"], 1)[0]

    def __call__(self, emb: torch.Tensor, seed: int = 0, steps: int | None = None, guidance_scale: float | None = None,
                 height: int | None = None, width: int | None = None, negative_image_embeds=None,
                 progress: bool = False, output_type: str = "pil"):
        from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import downscale_height_and_width

        c = self.config
        steps = check_int("steps", steps if steps is not None else c["steps"], 1, 1000)
        scale = check_scale(c["guidance_scale"] if guidance_scale is None else guidance_scale)
        m = self.pipe.movq_scale_factor ** 2
        height = check_int("height", height or c["height"], m, 4096, multiple=m)
        width = check_int("width", width or c["width"], m, 4096, multiple=m)
        n, device, dtype = emb.shape[0], self.pipe._execution_device, self.pipe.unet.dtype
        neg = self.negative(c["negative_image_embeds"] if negative_image_embeds is None else negative_image_embeds, n)
        h, w = downscale_height_and_width(height, width, self.pipe.movq_scale_factor)
        latents = shared_noise((self.pipe.unet.config.in_channels, h, w), n, seed, device, dtype)
        self.pipe.set_progress_bar_config(disable=not progress)
        out = self.pipe(image_embeds=(emb.float() * self.embed_norm).to(device, dtype),
                        negative_image_embeds=neg.to(device, dtype), num_inference_steps=steps,
                        guidance_scale=scale, height=height, width=width, latents=latents,
                        generator=torch.Generator("cpu").manual_seed(int(seed)),
                        output_type=check_output_type(output_type))
        return out.images

    def enable_offload(self, mode: str = "model"):
        """Offload to CPU between uses on a small GPU: "model" (whole models, mild slowdown) or "sequential"."""
        place(self.pipe, self.pipe._execution_device, mode)
        return self
