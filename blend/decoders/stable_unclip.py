"""Stable unCLIP 2.1 behind one call: unit image-space embeddings -> images (`StableUnCLIPImg2ImgPipeline`)."""
from __future__ import annotations

import torch

from ..sources import resolve_source
from .common import (check_int, check_output_type, check_scale, norm_from_moments, place, pretrained_kwargs,
                     probe_images, read_stats, resolve_norm, shared_noise, use_sdpa)


class StableUnCLIP:
    """Stable unCLIP 2.1 (`StableUnCLIPImg2ImgPipeline`) driven by CLIP image embeddings through `image_embeds=`.

    Folder or hub id: a diffusers pipeline (`stabilityai/stable-diffusion-2-1-unclip` for ViT-H-14,
    `...-unclip-small` for ViT-L-14). Options (the pipeline's defaults): steps 20, guidance_scale 10,
    noise_level 0 (0..999: noise added to the embedding, more = freer variations), height/width 768,
    prompt "" (the text the UNet cross-attends to), negative_prompt None.
    The pipeline's own CLIP image encoder is not needed (embeddings come from blend's encoder) and stays on CPU.
    """

    DEFAULTS = {"steps": 20, "guidance_scale": 10.0, "noise_level": 0, "height": 768, "width": 768, "prompt": "",
                "negative_prompt": None}

    def __init__(self, pipe, config: dict, embed_norm: float, embed_norm_source: str):
        self.pipe, self.config = pipe, config
        self.embed_norm, self.embed_norm_source = embed_norm, embed_norm_source
        self.embed_dim = int(pipe.image_normalizer.mean.shape[-1])

    @classmethod
    def from_spec(cls, spec: dict, base_dir, device: torch.device, dtype: torch.dtype) -> "StableUnCLIP":
        from diffusers import StableUnCLIPImg2ImgPipeline

        pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(resolve_source(spec["source"], base_dir),
                                                           **pretrained_kwargs(spec, dtype))
        return cls.from_pipeline(pipe, spec, base_dir, device)

    @classmethod
    def from_pipeline(cls, pipe, spec: dict, base_dir, device: torch.device) -> "StableUnCLIP":
        """Wrap an already built pipeline (tests, notebooks) as a preset's `image_decoder` spec would."""
        config = {**cls.DEFAULTS, **spec.get("options", {})}
        norm, source = resolve_norm(spec, read_stats(spec, base_dir), lambda: cls._auto_norm(pipe, device))
        use_sdpa(pipe.unet)
        offload = spec.get("offload")
        place(pipe, device, offload)
        if offload in (None, "none") and device.type != "cpu":
            pipe.image_encoder.to("cpu")  # never run: image_embeds are given
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, config, norm, source)

    @staticmethod
    @torch.no_grad()
    def _auto_norm(pipe, device) -> tuple[float, str]:
        mean, std = pipe.image_normalizer.mean, pipe.image_normalizer.std
        if not (torch.all(mean == 0) and torch.all(std == 1)):
            return norm_from_moments(mean, std), "image_normalizer statistics"
        enc = pipe.image_encoder.to(device)
        pixels = pipe.feature_extractor(images=probe_images(), return_tensors="pt").pixel_values
        norms = enc(pixels.to(device, enc.dtype)).image_embeds.float().norm(dim=-1)
        enc.to("cpu")
        return float(norms.mean()), "probe images through the pipeline's image encoder (approximate)"

    def __call__(self, emb: torch.Tensor, seed: int = 0, steps: int | None = None, guidance_scale: float | None = None,
                 noise_level: int | None = None, height: int | None = None, width: int | None = None,
                 prompt: str | None = None, negative_prompt: str | None = None, progress: bool = False,
                 output_type: str = "pil"):
        c = self.config
        steps = check_int("steps", steps if steps is not None else c["steps"], 1, 1000)
        scale = check_scale(c["guidance_scale"] if guidance_scale is None else guidance_scale)
        levels = self.pipe.image_noising_scheduler.config.num_train_timesteps
        noise_level = check_int("noise_level", c["noise_level"] if noise_level is None else noise_level, 0, levels - 1)
        f = self.pipe.vae_scale_factor
        height = check_int("height", height or c["height"], f, 4096, multiple=8)
        width = check_int("width", width or c["width"], f, 4096, multiple=8)
        prompt = c["prompt"] if prompt is None else prompt
        negative_prompt = c["negative_prompt"] if negative_prompt is None else negative_prompt
        if not isinstance(prompt, str) or (negative_prompt is not None and not isinstance(negative_prompt, str)):
            raise ValueError("prompt and negative_prompt must be strings")
        n, device, dtype = emb.shape[0], self.pipe._execution_device, self.pipe.unet.dtype
        latents = shared_noise((self.pipe.unet.config.in_channels, height // f, width // f), n, seed, device, dtype)
        self.pipe.set_progress_bar_config(disable=not progress)
        out = self.pipe(image_embeds=(emb.float() * self.embed_norm).to(device, dtype), prompt=[prompt] * n,
                        negative_prompt=None if negative_prompt is None else [negative_prompt] * n,
                        num_inference_steps=steps, guidance_scale=scale, noise_level=noise_level, height=height,
                        width=width, latents=latents, generator=torch.Generator("cpu").manual_seed(int(seed)),
                        output_type=check_output_type(output_type))
        return out.images

    def enable_offload(self, mode: str = "model"):
        """Offload to CPU between uses on a small GPU: "model" (whole models, mild slowdown) or "sequential"."""
        place(self.pipe, self.pipe._execution_device, mode)
        return self
