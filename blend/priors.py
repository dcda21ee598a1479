"""Diffusion priors: text -> CLIP image embedding, the way upstream pipelines run them.

`load_kandinsky_prior`: Kandinsky 2.2's `KandinskyV22PriorPipeline` (ViT-bigG-14 image embeddings).
`KarloPrior`: the Karlo unCLIP prior (ViT-L-14 image embeddings) that diffusers' `StableUnCLIPPipeline`
runs before Stable unCLIP small; blend calls the pipeline's own prior steps on it, so the result matches.
Both are used by the `prior` gap map (gap.py) and, for Kandinsky, by its decoder's default negative.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .decoders.common import place, pretrained_kwargs

_PRIORS: dict = {}
_ZERO_IMAGE: dict = {}


def load_kandinsky_prior(source: str, device: torch.device, dtype: torch.dtype, offload: str | None = None):
    """Kandinsky 2.2's `KandinskyV22PriorPipeline` without its image encoder (not needed to embed texts); cached."""
    key = (source, str(device), str(dtype), offload)
    if key not in _PRIORS:
        from diffusers import KandinskyV22PriorPipeline

        pipe = KandinskyV22PriorPipeline.from_pretrained(source, image_encoder=None, **pretrained_kwargs({}, dtype))
        pipe.set_progress_bar_config(disable=True)
        _PRIORS[key] = place(pipe, device, offload)
    return _PRIORS[key]


def read_model_tensors(source: str, subfolder: str, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A few named tensors from a diffusers model's safetensors (local folder or hub), without building the model."""
    from safetensors import safe_open

    folder = Path(source) / subfolder
    if folder.is_dir():
        files = sorted(folder.glob("*.safetensors"))
    else:
        from huggingface_hub import hf_hub_download

        files = []
        for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"):
            try:
                files.append(Path(hf_hub_download(source, name, subfolder=subfolder)))
                break
            except Exception:  # noqa: BLE001 - try the next file name, report below if none exists
                continue
    if not files:
        raise ValueError(f"no safetensors weights found for {source}/{subfolder} (offline, or not a diffusers folder)")
    out = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in names if k in f.keys()})
    missing = [k for k in names if k not in out]
    if missing:
        raise ValueError(f"{source}/{subfolder} has no tensors {missing}")
    return out


@torch.no_grad()
def zero_image_embed(prior_source: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(D,) raw embedding of the all-zero pixel tensor: what `KandinskyV22PriorPipeline.get_zero_embed` returns,
    the library's default negative image embedding. Loads the prior's image encoder once, then frees it."""
    key = (prior_source, str(dtype))
    if key not in _ZERO_IMAGE:
        from transformers import CLIPVisionModelWithProjection

        enc = CLIPVisionModelWithProjection.from_pretrained(prior_source, subfolder="image_encoder",
                                                            **pretrained_kwargs({}, dtype, "transformers"))
        enc = enc.to(device).eval()
        s = enc.config.image_size
        _ZERO_IMAGE[key] = enc(torch.zeros(1, 3, s, s, device=device, dtype=dtype)).image_embeds[0].float().cpu()
        del enc
    return _ZERO_IMAGE[key]


class KarloPrior:
    """The Karlo prior of `StableUnCLIPPipeline`: a `PriorTransformer` reading a CLIP ViT-L text encoder.

    `__call__` runs the pipeline's steps 3-7 (encode the prompt, prior latents from `generator`, the guided
    prior loop, `post_process_latents`) through the pipeline's own methods, so a text gives the very
    `image_embeds` the upstream pipeline would hand to its UNet for the same generator.
    """

    DEFAULTS = {"steps": 25, "guidance_scale": 4.0}  # StableUnCLIPPipeline's prior defaults

    def __init__(self, prior_tokenizer, prior_text_encoder, prior, prior_scheduler):
        self.prior_tokenizer, self.prior_text_encoder = prior_tokenizer, prior_text_encoder
        self.prior, self.prior_scheduler = prior, prior_scheduler

    @classmethod
    def from_pretrained(cls, source: str, text_encoder: str, device, dtype, use_safetensors: bool = True):
        """`source`: a Karlo repo/folder with prior/ and prior_scheduler/; `text_encoder`: CLIP ViT-L-14 (transformers)."""
        from diffusers import DDPMScheduler, PriorTransformer, UnCLIPScheduler
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        spec = {"use_safetensors": use_safetensors}
        prior = PriorTransformer.from_pretrained(source, subfolder="prior", **pretrained_kwargs(spec, dtype))
        scheduler = DDPMScheduler.from_config(UnCLIPScheduler.from_pretrained(source, subfolder="prior_scheduler").config)
        tokenizer = CLIPTokenizer.from_pretrained(text_encoder)
        encoder = CLIPTextModelWithProjection.from_pretrained(text_encoder,
                                                              **pretrained_kwargs(spec, dtype, "transformers"))
        return cls(tokenizer, encoder.to(device).eval(), prior.to(device).eval(), scheduler)

    @torch.no_grad()
    def __call__(self, prompt: str, generator: torch.Generator, steps: int = 25, guidance_scale: float = 4.0,
                 eta: float = 0.0) -> torch.Tensor:
        """One prompt -> (1, D) raw image embedding, as `StableUnCLIPPipeline.__call__` computes it."""
        from diffusers import StableUnCLIPPipeline as P

        device = self.prior.device
        cfg = guidance_scale > 1.0
        embeds, hidden, mask = P._encode_prior_prompt(self, prompt=[prompt], device=device, num_images_per_prompt=1,
                                                      do_classifier_free_guidance=cfg)
        self.prior_scheduler.set_timesteps(steps, device=device)
        latents = P.prepare_latents(self, (1, self.prior.config.embedding_dim), embeds.dtype, device, generator, None,
                                    self.prior_scheduler)
        extra = P.prepare_prior_extra_step_kwargs(self, generator, eta)
        for t in self.prior_scheduler.timesteps:
            inp = self.prior_scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
            pred = self.prior(inp, timestep=t, proj_embedding=embeds, encoder_hidden_states=hidden,
                              attention_mask=mask).predicted_image_embedding
            if cfg:
                uncond, text = pred.chunk(2)
                pred = uncond + guidance_scale * (text - uncond)
            latents = self.prior_scheduler.step(pred, timestep=t, sample=latents, **extra, return_dict=False)[0]
        return self.prior.post_process_latents(latents)


_KARLO: dict = {}


def load_karlo_prior(source: str, text_encoder: str, device, dtype, use_safetensors: bool = True) -> KarloPrior:
    key = (source, text_encoder, str(device), str(dtype))
    if key not in _KARLO:
        _KARLO[key] = KarloPrior.from_pretrained(source, text_encoder, device, dtype, use_safetensors)
    return _KARLO[key]
