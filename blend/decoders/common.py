"""What the real image decoders share: scale restoration, placement, attention, seeded noise, option checks.

Both real wrappers receive unit image-space embeddings and restore the scale their pipeline was trained on:
image_embeds = emb * embed_norm, where embed_norm is, in order of preference,
  1. `image_norm` in the preset's stats file (the mean raw image-embedding norm `blend calibrate` measured),
  2. a number given as `embed_norm` in the preset,
  3. ("auto") the model's own embedding statistics, E|x| ~ sqrt(|mean|^2 + |std|^2): Stable unCLIP's
     `image_normalizer` where it is not the identity (unclip-l), Kandinsky's prior `clip_mean`/`clip_std`,
  4. ("auto", Stable unCLIP only) the pipeline's own image encoder measured on a few procedural images.
`embed_norm_source` says which one a loaded decoder uses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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

    from ..sources import optional_file

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


def check_int(name: str, value, low: int, high: int | None = None, multiple: int = 1) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < low
            or (high is not None and value > high)):
        raise ValueError(f"{name} must be a whole number from {low} to {high if high is not None else 'up'}, "
                         f"got {value!r}")
    if int(value) % multiple:
        raise ValueError(f"{name} must be a multiple of {multiple}, got {value!r}")
    return int(value)


def check_scale(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 50:
        raise ValueError(f"guidance_scale must be a number from 0 to 50, got {value!r}")
    return float(value)


def check_output_type(value) -> str:
    """"pil" (PIL images, the default), "np" (float arrays in [0, 1]) or "pt" (tensors): what the pipeline returns."""
    if value not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {value!r}")
    return value


def probe_images(n: int = 16, size: int = 224):
    """n procedural images (scenes of the shapes world, drawn at `size`): a stand-in when no images are given."""
    from .. import world

    return [world.render(s, size) for s in world.sample_scenes(n, seed=4321)]


def pretrained_kwargs(spec: dict, dtype: torch.dtype, library: str = "diffusers") -> dict:
    """Keyword arguments for `from_pretrained`: the dtype, and safetensors only (never a pickle) unless the
    preset says `"use_safetensors": false` for a repository that has none."""
    return {**dtype_kwarg(dtype, library), "use_safetensors": bool(spec.get("use_safetensors", True))}
