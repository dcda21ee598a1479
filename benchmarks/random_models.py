"""Each real preset's components at full size with random weights, from the published configs in tests/configs/.

Speed and memory do not depend on the weights, and dimensions and conventions are what the full-size test checks,
so nothing is downloaded. Every builder seeds torch, and builds straight into `dtype` (bf16 halves the memory).
Tokenizers are the byte-level stand-ins of tests/tiny.py: a tokenizer is a vocabulary, not an architecture.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "configs"
PRESETS = ("unclip-l", "unclip-h", "kandinsky-2.2")
sys.path.insert(0, str(ROOT / "tests"))


def config(preset: str) -> dict:
    """The preset's component configs, without the `_source` / `_about` notes."""
    raw = json.loads((CONFIGS / f"{preset}.json").read_text())
    return {k: {a: b for a, b in v.items() if not a.startswith("_")} for k, v in raw.items() if not k.startswith("_")}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def encoder(preset: str, dtype: torch.dtype, device="cpu"):
    """blend's Encoder around a randomly initialised OpenCLIP model of the preset's architecture."""
    import open_clip

    from blend.encode import Encoder

    name = config(preset)["open_clip"]["model"]
    torch.manual_seed(0)
    with default_dtype(dtype):
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device=device)
    return Encoder(model.to(dtype).eval(), preprocess, open_clip.get_tokenizer(name), torch.device(device), name)


def _clip_text(cfg: dict, projection: bool, tmp: Path):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    import tiny

    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, **cfg)).eval(), tiny.clip_tokenizer(tmp)


def image_pipeline(preset: str, dtype: torch.dtype, tmp: Path):
    """The preset's diffusers decoding pipeline (StableUnCLIPImg2ImgPipeline or KandinskyV22Pipeline), random weights."""
    from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, KandinskyV22Pipeline,
                           StableUnCLIPImg2ImgPipeline, UNet2DConditionModel, VQModel)
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

    c = config(preset)
    torch.manual_seed(0)
    with default_dtype(dtype):
        unet = UNet2DConditionModel(**c["unet"]).eval()
        if preset == "kandinsky-2.2":
            return KandinskyV22Pipeline(unet=unet, scheduler=DDPMScheduler(**c["scheduler"]),
                                        movq=VQModel(**c["movq"]).eval())
        text_encoder, tokenizer = _clip_text(c["text_encoder"], False, tmp / "sd-vocab")
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

        return StableUnCLIPImg2ImgPipeline(
            feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
            image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**c["image_encoder"])).eval(),
            image_normalizer=StableUnCLIPImageNormalizer(**c["image_normalizer"]).eval(),
            image_noising_scheduler=DDPMScheduler(**c["image_noising_scheduler"]), tokenizer=tokenizer,
            text_encoder=text_encoder, unet=unet, scheduler=DDIMScheduler(**c["scheduler"]),
            vae=AutoencoderKL(**c["vae"]).eval())


def prior(preset: str, dtype: torch.dtype, tmp: Path):
    """The preset's text prior (KarloPrior for unclip-l, KandinskyV22PriorPipeline for kandinsky-2.2), or None."""
    from diffusers import DDPMScheduler, KandinskyV22PriorPipeline, PriorTransformer, UnCLIPScheduler

    from blend.priors import KarloPrior

    c = config(preset)
    if "prior" not in c:
        return None
    torch.manual_seed(0)
    with default_dtype(dtype):
        model = PriorTransformer(**c["prior"]).eval()
        with torch.no_grad():  # the embedding statistics are weights too (zeros until loaded): random, non-trivial
            model.clip_mean.copy_(0.1 * torch.randn_like(model.clip_mean))
            model.clip_std.copy_(0.5 + torch.rand_like(model.clip_std))
        text_encoder, tokenizer = _clip_text(c["prior_text_encoder"], True, tmp / "prior-vocab")
    scheduler = UnCLIPScheduler(**c["prior_scheduler"])
    if preset == "unclip-l":
        return KarloPrior(tokenizer, text_encoder, model, DDPMScheduler.from_config(scheduler.config))
    return KandinskyV22PriorPipeline(prior=model, image_encoder=None, text_encoder=text_encoder, tokenizer=tokenizer,
                                     scheduler=scheduler, image_processor=None)


def params(module) -> int:
    return sum(p.numel() for p in module.parameters())
