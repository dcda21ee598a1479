"""The shapes-mini decoder: a `LayeredDraft` drawn straight from the embedding, optionally redrawn by a latent
unCLIP UNet sampled with DPM-Solver++, then a VAE.

Trained by blend/train/unclip.py (the VAE by blend/train/vae.py). `sample_unclip` also samples a pixel-space
(pixel-unshuffled) UNet: benchmarks/speed.py times the retired 32-px decoder with it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


def upsample_matrix(n: int, size: int, align_corners: bool = False) -> torch.Tensor:
    """(size, n): linear upsampling of a length-n signal as a matrix, so that a map is upsampled bilinearly
    by two matmuls (U m U^T), several times faster on CPU than `F.interpolate`'s backward."""
    eye = torch.eye(n)[:, None, :]
    return F.interpolate(eye, size=size, mode="linear", align_corners=align_corners)[:, 0, :].T.contiguous()


def blind_projection(codes: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """(D, D) Q = I - pinv(codes)[:, rows] codes[rows] for a linear code model `codes` (K, D): e Q is e without what
    the code rows `rows` add to it, an oblique projection (codes[rows] Q = 0, codes[j] Q = codes[j] otherwise)."""
    m = codes.double()
    return torch.eye(m.shape[1], dtype=torch.float64) - torch.linalg.pinv(m)[:, rows] @ m[rows]


class LayeredDraft(ModelMixin, ConfigMixin):
    """An embedding drawn straight as a picture, (B, D) -> (B, 3, S, S) in [-1, 1]: two layers under a mask, lit.

    Object-centric decoders (MONet, Burgess et al. 2019; GENESIS, Engelcke et al. 2020) compose a scene from
    layers, each an appearance under a mask; intrinsic images (Barrow & Tenenbaum 1978) split appearance into
    albedo and shading. Here a shared MLP trunk feeds linear heads for a mask (logits at `mask_size`, bilinear,
    then a sigmoid while training and a threshold when drawing, so edges are as hard as the world's and flat
    regions flat), an albedo for each of the two layers (an RGB colour) and a shading map (`shade_size`,
    bilinear with aligned corners, so a lighting ramp is exact). Each head needs only part of the meaning (the
    mask: shape, size and position; an albedo: one colour; the shading: the lighting), so a combination never
    seen in training is drawn from parts that were. Measured against the latent-space MLP it replaced: held-out
    captions drawn with every attribute right 0.69 -> 0.99 (README, issue 7). `split_mask`: the mask gets a trunk of
    its own that reads the embedding with the colour and background codes taken out (`blind_mask_to`), so the
    shape drawn cannot depend on the (colour, background) pair; held-out shape words 0.865 -> 0.905 against 0.875
    for the plain draft fine-tuned alike (models/shapes-mini/README.md).
    """

    @register_to_config
    def __init__(self, embed_dim: int = 128, hidden: int = 1024, mask_size: int = 32, shade_size: int = 8,
                 image_size: int = 64, split_mask: bool = False):
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(embed_dim, hidden), torch.nn.SiLU(),
                                         torch.nn.Linear(hidden, hidden), torch.nn.SiLU())
        if split_mask:  # the mask's own trunk, on e @ mask_input: colour and background codes out
            self.mask_trunk = torch.nn.Sequential(torch.nn.Linear(embed_dim, hidden), torch.nn.SiLU(),
                                                  torch.nn.Linear(hidden, hidden), torch.nn.SiLU())
            self.register_buffer("mask_input", torch.eye(embed_dim))  # set by `blind_mask_to` before fitting
        self.mask = torch.nn.Linear(hidden, mask_size * mask_size)
        self.albedo = torch.nn.Linear(hidden, 6)  # foreground and background RGB in [0, 1]
        self.shade = torch.nn.Linear(hidden, shade_size * shade_size)
        torch.nn.init.zeros_(self.shade.weight), torch.nn.init.ones_(self.shade.bias)  # start evenly lit
        self.register_buffer("up_mask", upsample_matrix(mask_size, image_size), persistent=False)
        self.register_buffer("up_shade", upsample_matrix(shade_size, image_size, align_corners=True),
                             persistent=False)

    def blind_mask_to(self, codes: torch.Tensor, rows: list[int]) -> None:
        """Let the mask trunk read the embedding without what the code rows `rows` of a linear code model
        `codes` (K, D) add to it: e Q with Q = I - pinv(codes)[:, rows] codes[rows], an oblique projection that
        removes exactly those codes (codes[rows] Q = 0) and leaves the other rows' codes (codes[j] Q = codes[j])."""
        self.mask_input.copy_(blind_projection(codes, rows).to(self.mask_input))

    def forward(self, emb: torch.Tensor, hard: bool = False) -> torch.Tensor:
        c = self.config
        h = self.trunk(emb * c.embed_dim ** 0.5)  # unit rows scaled to unit variance per dimension
        hm = self.mask_trunk((emb @ self.mask_input.to(emb)) * c.embed_dim ** 0.5) if c.split_mask else h
        logits = self.up_mask @ self.mask(hm).view(-1, 1, c.mask_size, c.mask_size) @ self.up_mask.T
        m = (logits > 0).to(logits.dtype) if hard else torch.sigmoid(logits)
        fg, bg = self.albedo(h)[:, :, None, None].chunk(2, dim=1)
        shade = self.up_shade @ self.shade(h).view(-1, 1, c.shade_size, c.shade_size) @ self.up_shade.T
        return 2 * shade * (m * fg + (1 - m) * bg) - 1

    def draw(self, emb: torch.Tensor) -> torch.Tensor:
        """The picture as the decoder shows it: the thresholded mask, clamped to [-1, 1], in float32."""
        return self(emb.to(self.dtype), hard=True).float().clamp(-1, 1)


class EmbeddingPrior(ModelMixin, ConfigMixin):
    """A blend moved onto the image embeddings, (B, D) -> (B, D) unit: the embedding of the picture it means.

    unCLIP (Ramesh et al. 2022) puts a prior between a text embedding and the decoder, because a decoder draws
    well only from the embeddings it was trained on, and images' embeddings lie on their own manifold. A blend
    (an image minus one word plus another, a direction at a strength, a slerp midpoint) lands off that manifold:
    in this CLIP, E(x) - T("a circle") + T("a star") stays nearer E(x) than E(x as a star), although a linear probe
    reads the wanted shape from it 99.6 % of the time on held-out scenes. This prior is deterministic (DALL-E 2's
    regression baseline, not its diffusion prior): a residual MLP, normalize(e + MLP(e)), fitted to the image
    embedding of the scene each training condition means (blend/train/prior.py). Its last layer starts at zero,
    so it starts as the identity, and image embeddings pass nearly unchanged. `split` (the shipped prior): two
    MLPs, split by `split_at` as the draft's mask is: one reads everything but writes only colour and background
    codes, the other writes the rest without reading them; held-out slerp midpoints 0.925 -> 0.960 and partial
    descriptions 0.930 -> 0.995 (README).
    """

    @register_to_config
    def __init__(self, embed_dim: int = 128, hidden: int = 1024, layers: int = 3, split: bool = False):
        super().__init__()
        self.net = self._mlp(embed_dim, hidden, layers)
        if split:  # a second net that cannot read colour and background; the first may write only those codes
            self.blind_net = self._mlp(embed_dim, hidden, layers)
            self.register_buffer("blind_input", torch.eye(embed_dim))  # both set by `split_at` before fitting
            self.register_buffer("seen_output", torch.eye(embed_dim))

    @staticmethod
    def _mlp(embed_dim: int, hidden: int, layers: int) -> torch.nn.Sequential:
        mods = [torch.nn.Linear(embed_dim, hidden), torch.nn.SiLU()]
        for _ in range(layers - 1):
            mods += [torch.nn.Linear(hidden, hidden), torch.nn.SiLU()]
        net = torch.nn.Sequential(*mods, torch.nn.Linear(hidden, embed_dim))
        torch.nn.init.zeros_(net[-1].weight), torch.nn.init.zeros_(net[-1].bias)
        return net

    def split_at(self, codes: torch.Tensor, rows: list[int]) -> None:
        """Split the correction by the code rows `rows` of a linear code model `codes` (K, D): `blind_net` reads
        e Q (Q = I - pinv(codes)[:, rows] codes[rows], as `LayeredDraft.blind_mask_to`: those codes out) and
        `net`'s output is projected onto the span of codes[rows] (P = pinv(codes[rows]) codes[rows]), which Q
        takes out again. So what a draft reading through Q sees of the output (shape, size, position) cannot
        depend on those codes (colour, background): no held-out (colour, shape, background) to snap."""
        m = codes.double()
        self.blind_input.copy_(blind_projection(codes, rows).to(self.blind_input))
        self.seen_output.copy_((torch.linalg.pinv(m[rows]) @ m[rows]).to(self.seen_output))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        x, scale = emb.to(self.dtype), self.config.embed_dim ** 0.5
        if not self.config.split:
            return F.normalize(x + self.net(x * scale), dim=-1).to(emb.dtype)
        seen = self.net(x * scale) @ self.seen_output.to(x)
        blind = self.blind_net((x @ self.blind_input.to(x)) * scale)
        return F.normalize(x + seen + blind, dim=-1).to(emb.dtype)


class DraftLatents(torch.nn.Module):
    """The draft in the VAE's latent space, (B, D) -> (B, C, L, L) scaled latents: the map the UNet takes
    beside its noisy latents (as diffusers' `UnCLIPTextProjModel` turns an embedding into extra tokens, this
    turns it into extra input channels), and where `strength` < 1 sampling starts from."""

    def __init__(self, draft: LayeredDraft, vae):
        super().__init__()
        self.draft, self.vae = draft, vae

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(self.draft.draw(emb)).latent_dist.mean * self.vae.config.scaling_factor


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
    (so a row decodes the same whatever else is in its batch). `hint`: a module (`DraftLatents`) whose map of
    the condition goes into the UNet beside the latents. `strength` < 1 (with a hint) starts from the hint's map
    noised to that fraction of the schedule and runs only the rest of it (SDEdit, Meng et al. 2022): the
    hint draws the layout, the UNet redraws it.
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
    """The shapes-mini decoder: an `EmbeddingPrior` (when the bundle has one), a `LayeredDraft`, refined (`strength` > 0) by a UNet2DConditionModel on 8x8
    VAE latents, then an AutoencoderKL decoder.

    `strength` 0 (the bundle's default) returns the draft itself: the most faithful picture, the same for every
    seed. `strength` in (0, 1] starts from the draft's latents noised that far (SDEdit, Meng et al. 2022) and lets
    the UNet redraw, so seeds give variations, at some cost in fidelity (README, benchmarks/fidelity.py
    --strength). `prior` False skips the prior (benchmarks/fidelity.py --no-prior shows what it gives). Folder:
    prior/ (optional), draft/, unet/, vae/, scheduler/ (diffusers `save_pretrained`), decoder.json (sampling
    defaults).
    """

    accepts = ("image", "text")  # trained on image, text and mixed embeddings: no gap map needed
    row_seeds = True  # `seed` may be a list, one per row

    def __init__(self, unet, scheduler, config: dict, device: torch.device, vae=None, draft=None, prior=None):
        self.unet, self.scheduler, self.config, self.device = unet, scheduler, config, device
        self.embed_dim = int(config["embed_dim"])
        self.vae, self.draft, self.prior = vae, draft, prior

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
        draft = LayeredDraft.from_pretrained(str(folder / "draft"), torch_dtype=torch.float32).to(device).eval()
        prior = None
        if (folder / "prior").is_dir():
            prior = EmbeddingPrior.from_pretrained(str(folder / "prior"), torch_dtype=torch.float32).to(device).eval()
        return cls(unet, scheduler, config, device, vae=vae, draft=draft, prior=prior)

    def fresh_scheduler(self):
        """A scheduler of its own for each call: it keeps per-run state, and calls can overlap (the canvas)."""
        return type(self.scheduler).from_config(self.scheduler.config)

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """(N, C, L, L) scaled latents -> (N, 3, S, S) in [-1, 1]."""
        return self.vae.decode(z / self.vae.config.scaling_factor).sample.clamp(-1, 1)

    @torch.no_grad()
    def __call__(self, emb: torch.Tensor, seed: int = 0, steps: int | None = None,
                 guidance_scale: float | None = None, size: int | None = None, progress: bool = False,
                 strength: float | None = None, prior: bool | None = None):
        from .. import checks
        from ..world import to_images

        steps = int(steps or self.config["steps"])
        scale = float(self.config["guidance_scale"] if guidance_scale is None else guidance_scale)
        strength = checks.number(self.config.get("strength", 0.0) if strength is None else strength, "strength", 0, 1)
        prior = checks.flag(self.config.get("prior", self.prior is not None) if prior is None else prior, "prior")
        if prior and self.prior is None:
            raise ValueError("prior: this decoder has no prior")
        emb = emb.to(self.device)
        if prior:
            emb = self.prior(emb)
        if strength <= 0.0:
            x = self.draft.draw(emb)
        else:
            z = sample_unclip(self.unet, emb, steps=steps, guidance_scale=scale, seed=seed, config=self.config,
                              scheduler=self.fresh_scheduler(), progress=progress,
                              hint=DraftLatents(self.draft, self.vae), strength=strength)
            x = self.decode_latents(z)
        return to_images(x, size or int(self.config.get("display_size", self.config["image_size"])))
