"""Image decoders behind one call: (N, D) unit embeddings -> list of PIL images."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def unet_condition(emb: torch.Tensor) -> dict:
    """How a (B, D) embedding is fed to the mini UNet: class embedding and a one-token cross-attention context."""
    return {"class_labels": emb, "encoder_hidden_states": emb[:, None, :]}


@torch.no_grad()
def sample_unclip(unet, emb: torch.Tensor, steps: int, guidance_scale: float, seed: int, config: dict,
                  scheduler_config: dict | None = None, scheduler=None, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++ sampling with classifier-free guidance (Ho & Salimans 2022) from one shared start noise.

    emb (N, D) -> images (N, 3, S, S) in [-1, 1]. Every row starts from the same noise, drawn from `seed`,
    so rows differ only by what their embeddings mean; a list of N seeds gives row i the noise of seed[i]
    (so a row decodes the same whatever else is in its batch).
    """
    from diffusers import DPMSolverMultistepScheduler

    if scheduler is None:
        scheduler = DPMSolverMultistepScheduler(**scheduler_config, algorithm_type="dpmsolver++", solver_order=2)
    device, dtype = emb.device, unet.dtype
    n, r = emb.shape[0], config["unshuffle"]
    side = config["image_size"] // r
    seeds = [int(s) for s in seed] if isinstance(seed, (list, tuple)) else [int(seed)]  # one shared, or one per row
    x = torch.cat([torch.randn((1, 3 * r * r, side, side), generator=torch.Generator("cpu").manual_seed(s))
                   for s in seeds]).to(device, dtype).expand(n, -1, -1, -1).contiguous()
    scheduler.set_timesteps(steps, device=device)
    x = x * scheduler.init_noise_sigma
    emb = emb.to(dtype)
    cond = torch.cat([torch.zeros_like(emb), emb]) if guidance_scale != 1.0 else emb
    timesteps = scheduler.timesteps
    if progress:
        from tqdm.auto import tqdm
        timesteps = tqdm(timesteps, desc="decode", leave=False)
    for t in timesteps:
        inp = torch.cat([x, x]) if guidance_scale != 1.0 else x
        inp = scheduler.scale_model_input(inp, t)
        out = unet(inp, t, **unet_condition(cond)).sample
        if guidance_scale != 1.0:
            uncond, c = out.chunk(2)
            out = uncond + guidance_scale * (c - uncond)
        x = scheduler.step(out, t, x).prev_sample
    return F.pixel_shuffle(x.float(), r).clamp(-1, 1)


class MiniUnCLIP:
    """The shapes-mini decoder: a pixel-space (pixel-unshuffled) UNet2DConditionModel + DPM-Solver++.

    Folder: unet/ and scheduler/ (diffusers `save_pretrained`), decoder.json (sampling defaults).
    """

    accepts = ("image", "text")  # trained on image, text and mixed embeddings: no gap map needed
    row_seeds = True  # `seed` may be a list, one per row

    def __init__(self, unet, scheduler, config: dict, device: torch.device):
        self.unet, self.scheduler, self.config, self.device = unet, scheduler, config, device
        self.embed_dim = int(config["embed_dim"])

    @classmethod
    def from_spec(cls, spec: dict, base_dir, device: torch.device, dtype: torch.dtype) -> "MiniUnCLIP":
        import json
        from pathlib import Path

        from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel

        from .presets import resolve_source

        folder = Path(resolve_source(spec["source"], base_dir))
        unet = UNet2DConditionModel.from_pretrained(str(folder / "unet")).to(device).eval()
        scheduler = DPMSolverMultistepScheduler.from_pretrained(str(folder / "scheduler"))
        config = {**json.loads((folder / "decoder.json").read_text()), **spec.get("options", {})}
        return cls(unet, scheduler, config, device)

    def __call__(self, emb: torch.Tensor, seed: int = 0, steps: int | None = None,
                 guidance_scale: float | None = None, size: int | None = None, progress: bool = False):
        from .world import to_images

        steps = int(steps or self.config["steps"])
        scale = float(self.config["guidance_scale"] if guidance_scale is None else guidance_scale)
        x = sample_unclip(self.unet, emb.to(self.device), steps=steps, guidance_scale=scale, seed=seed,
                          config=self.config, scheduler=self.scheduler, progress=progress)
        return to_images(x, size or int(self.config.get("display_size", self.config["image_size"])))


# ---------------------------------------------------------------------------------------- real decoders
# Both wrappers receive unit image-space embeddings and restore the scale their pipeline was trained on:
# image_embeds = emb * embed_norm, where embed_norm is, in order of preference,
#   1. `image_norm` in the preset's stats file (the mean raw image-embedding norm `blend calibrate` measured),
#   2. a number given as `embed_norm` in the preset,
#   3. ("auto") the model's own embedding statistics, E|x| ~ sqrt(|mean|^2 + |std|^2): Stable unCLIP's
#      `image_normalizer` where it is not the identity (unclip-l), Kandinsky's prior `clip_mean`/`clip_std`,
#   4. ("auto", Stable unCLIP only) the pipeline's own image encoder measured on a few procedural images.
# `embed_norm_source` says which one a loaded decoder uses.

OFFLOAD = (None, "none", "model", "sequential")


def dtype_kwarg(dtype: torch.dtype, library: str = "diffusers") -> dict:
    """`dtype=` where the library reads it (newer diffusers / transformers >= 4.56), else the older `torch_dtype=`."""
    if library == "diffusers":
        from diffusers.pipelines import pipeline_utils

        new = hasattr(pipeline_utils, "_resolve_dtype")
    else:
        import transformers
        from packaging.version import Version

        new = Version(transformers.__version__) >= Version("4.56")
    return {"dtype" if new else "torch_dtype": dtype}


def place(pipe, device: torch.device, offload: str | None = None):
    """Move a diffusers pipeline to `device`, or offload it to CPU between uses (CUDA only) for small GPUs."""
    import warnings

    if offload not in OFFLOAD:
        raise ValueError(f"offload must be one of {OFFLOAD[1:]}, got {offload!r}")
    if offload in ("model", "sequential"):
        if device.type == "cuda":
            (pipe.enable_model_cpu_offload if offload == "model" else pipe.enable_sequential_cpu_offload)(device=device)
            return pipe
        warnings.warn(f"offload={offload!r} needs a CUDA device; running on {device} without it", stacklevel=3)
    return pipe.to(device)


def use_sdpa(model):
    """Swap any classic attention processor for its PyTorch scaled-dot-product-attention twin."""
    from diffusers.models.attention_processor import (AttnAddedKVProcessor, AttnAddedKVProcessor2_0, AttnProcessor,
                                                      AttnProcessor2_0)

    if not hasattr(F, "scaled_dot_product_attention"):
        return model
    twins = {AttnProcessor: AttnProcessor2_0, AttnAddedKVProcessor: AttnAddedKVProcessor2_0}
    procs = model.attn_processors
    if any(type(p) in twins for p in procs.values()):
        model.set_attn_processor({k: twins[type(p)]() if type(p) in twins else p for k, p in procs.items()})
    return model


def shared_noise(shape: tuple, n: int, seed: int, device, dtype) -> torch.Tensor:
    """(n, *shape) start noise drawn once from `seed` on the CPU (the same on every device) and shared by all rows."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn((1, *shape), generator=g).to(device, dtype).expand(n, *shape).contiguous()


def read_stats(spec: dict, base_dir) -> dict:
    """The tensors of the preset's stats file (written by `blend calibrate`), or {} before it is measured."""
    from safetensors.torch import load_file

    from .gap import optional_file

    path = optional_file(spec.get("stats"), base_dir)
    return load_file(str(path)) if path else {}


def norm_from_moments(mean: torch.Tensor, std: torch.Tensor) -> float:
    """sqrt(E|x|^2) for x with per-dimension mean and std: the RMS norm those statistics describe."""
    return float((mean.detach().float().pow(2).sum() + std.detach().float().pow(2).sum()).sqrt())


def resolve_norm(spec: dict, stats: dict, auto) -> tuple[float, str]:
    """(embed_norm, where it came from); `auto()` -> (value, source) or None when the model carries no statistics."""
    if "image_norm" in stats:
        return float(stats["image_norm"]), "measured (stats file)"
    value = spec.get("embed_norm", "auto")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not value > 0:
            raise ValueError(f"embed_norm must be a positive number or 'auto', got {value!r}")
        return float(value), "preset"
    if value != "auto":
        raise ValueError(f"embed_norm must be a positive number or 'auto', got {value!r}")
    found = auto()
    if found is None:
        raise ValueError("embed_norm is 'auto' but this model carries no embedding statistics: run `blend calibrate` "
                         "or give a number in the preset")
    return found


def _check_int(name: str, value, low: int, high: int | None = None, multiple: int = 1) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < low
            or (high is not None and value > high)):
        raise ValueError(f"{name} must be a whole number from {low} to {high if high is not None else 'up'}, "
                         f"got {value!r}")
    if int(value) % multiple:
        raise ValueError(f"{name} must be a multiple of {multiple}, got {value!r}")
    return int(value)


def _check_scale(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 50:
        raise ValueError(f"guidance_scale must be a number from 0 to 50, got {value!r}")
    return float(value)


def probe_images(n: int = 16, size: int = 224):
    """n procedural images (scenes of the shapes world, drawn at `size`): a stand-in when no images are given."""
    from . import world

    return [world.render(s, size) for s in world.sample_scenes(n, seed=4321)]


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

        from .presets import resolve_source

        pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(resolve_source(spec["source"], base_dir),
                                                           **dtype_kwarg(dtype))
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
                 prompt: str | None = None, negative_prompt: str | None = None, progress: bool = False):
        c = self.config
        steps = _check_int("steps", steps if steps is not None else c["steps"], 1, 1000)
        scale = _check_scale(c["guidance_scale"] if guidance_scale is None else guidance_scale)
        levels = self.pipe.image_noising_scheduler.config.num_train_timesteps
        noise_level = _check_int("noise_level", c["noise_level"] if noise_level is None else noise_level, 0, levels - 1)
        f = self.pipe.vae_scale_factor
        height = _check_int("height", height or c["height"], f, 4096, multiple=8)
        width = _check_int("width", width or c["width"], f, 4096, multiple=8)
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
                        width=width, latents=latents, generator=torch.Generator("cpu").manual_seed(int(seed)))
        return out.images

    def enable_offload(self, mode: str = "model"):
        """Offload to CPU between uses on a small GPU: "model" (whole models, mild slowdown) or "sequential"."""
        place(self.pipe, self.pipe._execution_device, mode)
        return self


_PRIORS: dict = {}
_ZERO_IMAGE: dict = {}


def load_kandinsky_prior(source: str, device: torch.device, dtype: torch.dtype, offload: str | None = None):
    """Kandinsky 2.2's `KandinskyV22PriorPipeline` without its image encoder (not needed to embed texts); cached."""
    key = (source, str(device), str(dtype), offload)
    if key not in _PRIORS:
        from diffusers import KandinskyV22PriorPipeline

        pipe = KandinskyV22PriorPipeline.from_pretrained(source, image_encoder=None, **dtype_kwarg(dtype))
        pipe.set_progress_bar_config(disable=True)
        _PRIORS[key] = place(pipe, device, offload)
    return _PRIORS[key]


def read_model_tensors(source: str, subfolder: str, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A few named tensors from a diffusers model's safetensors (local folder or hub), without building the model."""
    from pathlib import Path

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
                                                            **dtype_kwarg(dtype, "transformers")).to(device).eval()
        s = enc.config.image_size
        _ZERO_IMAGE[key] = enc(torch.zeros(1, 3, s, s, device=device, dtype=dtype)).image_embeds[0].float().cpu()
        del enc
    return _ZERO_IMAGE[key]


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

        from .presets import resolve_source

        pipe = KandinskyV22Pipeline.from_pretrained(resolve_source(spec["source"], base_dir), **dtype_kwarg(dtype))
        return cls.from_pipeline(pipe, spec, base_dir, device, dtype)

    @classmethod
    def from_pipeline(cls, pipe, spec: dict, base_dir, device: torch.device,
                      dtype: torch.dtype = torch.float32) -> "Kandinsky22":
        from .presets import resolve_source

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
        from .ops import normalize

        return (normalize(neg) * self.embed_norm).expand(n, -1)

    @property
    def negative_image_embeds(self) -> torch.Tensor:
        """(D,) raw default negative, as the pipeline receives it."""
        return self.negative(self.config["negative_image_embeds"], 1)[0]

    def __call__(self, emb: torch.Tensor, seed: int = 0, steps: int | None = None, guidance_scale: float | None = None,
                 height: int | None = None, width: int | None = None, negative_image_embeds=None,
                 progress: bool = False):
        from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import downscale_height_and_width

        c = self.config
        steps = _check_int("steps", steps if steps is not None else c["steps"], 1, 1000)
        scale = _check_scale(c["guidance_scale"] if guidance_scale is None else guidance_scale)
        m = self.pipe.movq_scale_factor ** 2
        height = _check_int("height", height or c["height"], m, 4096, multiple=m)
        width = _check_int("width", width or c["width"], m, 4096, multiple=m)
        n, device, dtype = emb.shape[0], self.pipe._execution_device, self.pipe.unet.dtype
        neg = self.negative(c["negative_image_embeds"] if negative_image_embeds is None else negative_image_embeds, n)
        h, w = downscale_height_and_width(height, width, self.pipe.movq_scale_factor)
        latents = shared_noise((self.pipe.unet.config.in_channels, h, w), n, seed, device, dtype)
        self.pipe.set_progress_bar_config(disable=not progress)
        out = self.pipe(image_embeds=(emb.float() * self.embed_norm).to(device, dtype),
                        negative_image_embeds=neg.to(device, dtype), num_inference_steps=steps,
                        guidance_scale=scale, height=height, width=width, latents=latents,
                        generator=torch.Generator("cpu").manual_seed(int(seed)))
        return out.images

    def enable_offload(self, mode: str = "model"):
        """Offload to CPU between uses on a small GPU: "model" (whole models, mild slowdown) or "sequential"."""
        place(self.pipe, self.pipe._execution_device, mode)
        return self
