"""The shapes-mini decoder: a latent unCLIP UNet (with an `EmbeddingHint`) sampled with DPM-Solver++, then a VAE.

Trained by blend/train/unclip.py (the VAE by blend/train/vae.py). `sample_unclip` also samples a pixel-space
(pixel-unshuffled) UNet: benchmarks/speed.py times the retired 32-px decoder with it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class EmbeddingHint(ModelMixin, ConfigMixin):
    """An embedding drawn as a spatial map: (B, D) -> (B, C, L, L), fed to the UNet beside its latents.

    A UNet that sees its condition only as one global vector (the class embedding, one cross-attention token)
    must invent the layout from noise; given this map, trained to predict the target latents, it refines a
    layout it already has. As diffusers' `UnCLIPTextProjModel` turns a CLIP embedding into extra tokens, this
    turns it into extra input channels. Zero embeddings (the unconditional branch) are mapped too.
    """

    @register_to_config
    def __init__(self, embed_dim: int = 128, hidden: int = 512, channels: int = 16, size: int = 8):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(embed_dim, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, channels * size * size))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        c, s = self.config.channels, self.config.size
        # unit rows scaled to unit variance per dimension: the MLP fits 2-3x faster than on raw unit vectors
        return self.net(emb * self.config.embed_dim ** 0.5).view(emb.shape[0], c, s, s)


class EmbeddingPrior(ModelMixin, ConfigMixin):
    """A residual MLP that moves any embedding (a caption, a blend) to the image embedding it means.

    unCLIP's prior in miniature: trained on training scenes to map each condition onto the image embedding
    of its target scene, so the decoder, which draws best from image embeddings, is fed one.
    """

    @register_to_config
    def __init__(self, embed_dim: int = 128, hidden: int = 1024):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(embed_dim, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, embed_dim))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(emb + self.net(emb * self.config.embed_dim ** 0.5), dim=-1)


def unet_input(x: torch.Tensor, hint_map: torch.Tensor | None) -> torch.Tensor:
    """The UNet's input: the noisy latents, and the condition's spatial hint beside them when there is one."""
    return x if hint_map is None else torch.cat([x, hint_map.to(x.dtype)], dim=1)


def unet_condition(emb: torch.Tensor) -> dict:
    """How a (B, D) embedding is fed to the mini UNet: class embedding and a one-token cross-attention context."""
    return {"class_labels": emb, "encoder_hidden_states": emb[:, None, :]}


@torch.no_grad()
def sample_unclip(unet, emb: torch.Tensor, steps: int, guidance_scale: float, seed: int, config: dict,
                  scheduler_config: dict | None = None, scheduler=None, progress: bool = False,
                  hint=None, strength: float = 1.0) -> torch.Tensor:
    """DPM-Solver++ sampling with classifier-free guidance (Ho & Salimans 2022) from one shared start noise.

    emb (N, D) -> images (N, 3, S, S) in [-1, 1]. Every row starts from the same noise, drawn from `seed`,
    so rows differ only by what their embeddings mean; a list of N seeds gives row i the noise of seed[i]
    (so a row decodes the same whatever else is in its batch). `hint`: an `EmbeddingHint` whose map of the
    condition goes into the UNet beside the latents. `strength` < 1 (with a hint) starts from the hint's map
    noised to that fraction of the schedule and runs only the rest of it (SDEdit, Meng et al. 2022): the
    hint draws the layout, the UNet sharpens it.
    """
    from diffusers import DPMSolverMultistepScheduler

    if scheduler is None:
        scheduler = DPMSolverMultistepScheduler(**scheduler_config, algorithm_type="dpmsolver++", solver_order=2)
    device, dtype = emb.device, unet.dtype
    n = emb.shape[0]
    if "latent_channels" in config:  # a latent decoder: the UNet works on (C, L, L) VAE latents
        r, shape = 1, (config["latent_channels"], config["latent_size"], config["latent_size"])
    else:  # pixel space, pixel-unshuffled by r
        r = config["unshuffle"]
        shape = (3 * r * r, config["image_size"] // r, config["image_size"] // r)
    seeds = [int(s) for s in seed] if isinstance(seed, (list, tuple)) else [int(seed)]  # one shared, or one per row
    x = torch.cat([torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(s))
                   for s in seeds]).to(device, dtype).expand(n, -1, -1, -1).contiguous()
    scheduler.set_timesteps(steps, device=device)
    emb = emb.to(dtype)
    cond = torch.cat([torch.zeros_like(emb), emb]) if guidance_scale != 1.0 else emb
    hint_map = None if hint is None else hint(cond)
    timesteps = scheduler.timesteps
    if hint_map is not None and strength < 1.0:
        skip = min(len(timesteps) - 1, int(round(len(timesteps) * (1.0 - strength))))
        timesteps = timesteps[skip:]
        scheduler.set_begin_index(skip)
        x = scheduler.add_noise(hint_map[-n:].to(dtype), x, timesteps[:1].repeat(n))
    else:
        x = x * scheduler.init_noise_sigma
    if progress:
        from tqdm.auto import tqdm
        timesteps = tqdm(timesteps, desc="decode", leave=False)
    for t in timesteps:
        inp = torch.cat([x, x]) if guidance_scale != 1.0 else x
        inp = unet_input(scheduler.scale_model_input(inp, t), hint_map)
        out = unet(inp, t, **unet_condition(cond)).sample
        if guidance_scale != 1.0:
            uncond, c = out.chunk(2)
            out = uncond + guidance_scale * (c - uncond)
        x = scheduler.step(out, t, x).prev_sample
    if "latent_channels" in config:
        return x.float()  # (N, C, L, L) latents, scaled by the VAE's scaling_factor
    return F.pixel_shuffle(x.float(), r).clamp(-1, 1)


class MiniLatentUnCLIP:
    """The shapes-mini decoder: a UNet2DConditionModel on 8x8 VAE latents, then an AutoencoderKL decoder.

    As real unCLIP and Kandinsky: diffusion in a small latent space, pixels from a VAE that only ever drew
    clean renders, so flat regions come out flat. Folder: unet/, vae/, hint/ (`EmbeddingHint`), scheduler/
    (diffusers `save_pretrained`), decoder.json (sampling defaults), and optionally prior/ (`EmbeddingPrior`:
    the embedding is moved onto the image manifold first).
    """

    accepts = ("image", "text")  # trained on image, text and mixed embeddings: no gap map needed
    row_seeds = True  # `seed` may be a list, one per row

    def __init__(self, unet, scheduler, config: dict, device: torch.device, vae=None, hint=None, prior=None):
        self.unet, self.scheduler, self.config, self.device = unet, scheduler, config, device
        self.embed_dim = int(config["embed_dim"])
        self.vae, self.hint, self.prior = vae, hint, prior

    @classmethod
    def from_spec(cls, spec: dict, base_dir, device: torch.device, dtype: torch.dtype) -> "MiniLatentUnCLIP":
        import json
        from pathlib import Path

        from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel

        from ..sources import resolve_source

        folder = Path(resolve_source(spec["source"], base_dir))
        unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"), torch_dtype=torch.float32).to(device).eval()
        scheduler = DPMSolverMultistepScheduler.from_pretrained(str(folder / "scheduler"))
        config = {**json.loads((folder / "decoder.json").read_text()), **spec.get("options", {})}
        vae = AutoencoderKL.from_pretrained(str(folder / "vae"), torch_dtype=torch.float32).to(device).eval()
        hint = prior = None
        if (folder / "hint").is_dir():
            hint = EmbeddingHint.from_pretrained(str(folder / "hint"), torch_dtype=torch.float32).to(device).eval()
        if (folder / "prior").is_dir():
            prior = EmbeddingPrior.from_pretrained(str(folder / "prior"), torch_dtype=torch.float32).to(device).eval()
        return cls(unet, scheduler, config, device, vae=vae, hint=hint, prior=prior)

    def fresh_scheduler(self):
        """A scheduler of its own for each call: it keeps per-run state, and calls can overlap (the canvas)."""
        return type(self.scheduler).from_config(self.scheduler.config)

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """(N, C, L, L) scaled latents -> (N, 3, S, S) in [-1, 1]."""
        return self.vae.decode(z / self.vae.config.scaling_factor).sample.clamp(-1, 1)

    def __call__(self, emb: torch.Tensor, seed: int = 0, steps: int | None = None,
                 guidance_scale: float | None = None, size: int | None = None, progress: bool = False):
        from ..world import to_images

        steps = int(steps or self.config["steps"])
        scale = float(self.config["guidance_scale"] if guidance_scale is None else guidance_scale)
        emb = emb.to(self.device)
        if self.prior is not None:
            with torch.no_grad():
                emb = self.prior(emb)
        z = sample_unclip(self.unet, emb, steps=steps, guidance_scale=scale, seed=seed,
                          config=self.config, scheduler=self.fresh_scheduler(), progress=progress, hint=self.hint,
                          strength=float(self.config.get("strength", 1.0)))
        x = self.decode_latents(z)
        return to_images(x, size or int(self.config.get("display_size", self.config["image_size"])))
