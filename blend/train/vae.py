"""Training the shapes-mini latent autoencoder: a small diffusers `AutoencoderKL` (64x64x3 <-> 8x8x16).

Real unCLIP and Kandinsky decode through a VAE; so does shapes-mini. The UNet then works on 8 x 8
latents (as cheap as the retired 32-px decoder's 8 x 8 pixel patches) while the VAE decoder, which has only
ever produced clean renders, draws flat regions flat. Loss: L1 + L2 on pixels plus a tiny KL term; latents are also jittered
so the decoder stays clean when a diffusion sample lands slightly off. Training scenes only.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import world
from .clip import _bundle_steps, warm_start
from .common import Checkpoint, Progress, cosine_lr, seed_everything

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 32, 64, 64),
    layers_per_block=1,
    latent_channels=16,
    norm_num_groups=8,
    sample_size=world.SIZE,
)


def build_vae(config: dict = VAE_CONFIG):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**config)


def vae_batch(rng: random.Random, n: int) -> torch.Tensor:
    return world.to_tensor([world.render(world.sample_scene(rng, split="train")) for _ in range(n)])


@torch.no_grad()
def latent_scale(vae, n: int = 256, seed: int = 5) -> float:
    """1 / std of the latents (SD's scaling_factor), so diffusion sees unit-variance latents."""
    x = vae_batch(random.Random(seed), n)
    return float(1.0 / vae.encode(x).latent_dist.mean.std())


@torch.no_grad()
def reconstruction_report(vae, n: int = 100, seed: int = 9, split: str = "held-out") -> dict:
    """Share of reconstructions read back with all six attributes right, and the background's pixel std."""
    scenes = world.sample_scenes(n, seed, split=split)
    x = world.to_tensor([world.render(s) for s in scenes])
    rec = vae.decode(vae.encode(x).latent_dist.mean).sample
    ims = world.to_images(rec)
    readings = [world.read_attributes(im) for im in ims]
    right = sum(r.attributes == s.attributes for r, s in zip(readings, scenes)) / n
    std = sum(world.background_std(im, r) for im, r in zip(ims, readings)) / n
    return {"all_right": right, "bg_std": std, "mse": float(F.mse_loss(rec, x))}


def train_vae(out: str | Path, steps: int = 3000, batch: int = 32, lr: float = 1e-3, seed: int = 0,
              kl: float = 1e-6, jitter: float = 0.1, work: str | Path | None = None, log: str | Path | None = None,
              stop_at: int | None = None, eval_every: int = 500):
    """Train the autoencoder and save it (diffusers folder, safetensors) in `out`. Resumable from `work`."""
    out = Path(out)
    work = Path(work or out.parent / "_work" / "vae")
    seed_everything(seed)
    rng = random.Random(seed)
    vae = build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    ckpt = Checkpoint(work)
    start = ckpt.resume(vae, opt, rng)
    if start == 0 and warm_start(vae, out / "diffusion_pytorch_model.safetensors"):
        start = _bundle_steps(out)
    bar = Progress(steps, start, "vae", log)
    for step in range(start, steps):
        vae.train()
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup=100)
        x = vae_batch(rng, batch)
        post = vae.encode(x).latent_dist
        z = post.sample()
        z = z + jitter * torch.rand(batch, 1, 1, 1) * z.detach().std() * torch.randn_like(z)
        rec = vae.decode(z).sample
        l1, l2 = (rec - x).abs().mean(), F.mse_loss(rec, x)
        loss = l1 + l2 + kl * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        bar.update(step + 1, loss=loss.item(), l1=l1.item(), mse=l2.item())
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            vae.eval()
            bar.write(json.dumps({"step": step + 1, **{k: round(v, 4) for k, v in reconstruction_report(vae).items()}}))
            save_vae(vae, out)
            (out / "training.json").write_text(json.dumps({"steps": step + 1, "batch": batch, "seed": seed}))
        if ckpt.step_done(vae, opt, rng, step + 1, steps, stop_at, every=100):
            bar.close()
            return None
    bar.close()
    vae.eval()
    save_vae(vae, out)
    return vae


def outline_mask(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) bool: pixels whose 3x3 neighbourhood spans more than 0.1 (in [-1, 1] units) in any channel.

    Lighting ramps change a pixel by < 0.02 per step; an outline by far more.
    """
    return (F.max_pool2d(x, 3, 1, 1) + F.max_pool2d(-x, 3, 1, 1)).amax(dim=1, keepdim=True) > 0.1


def edge_weights(x: torch.Tensor, edge: float) -> torch.Tensor:
    """(B, 1, S, S) pixel weights: 1 in flat regions, 1 + edge on outlines (`outline_mask`)."""
    return 1.0 + edge * outline_mask(x).float()


def finetune_vae_decoder(out: str | Path, steps: int = 4000, batch: int = 32, lr: float = 5e-4, seed: int = 1,
                         edge: float = 4.0, jitter: float = 0.15, work: str | Path | None = None,
                         log: str | Path | None = None, stop_at: int | None = None, eval_every: int = 500):
    """Sharpen the VAE's decoder with its encoder frozen, so latents (and a UNet trained on them) stay valid.

    Outlines weigh `1 + edge` in the L1 + L2 loss: small stars and triangles are what blurs first.
    """
    out = Path(out)
    work = Path(work or out.parent / "_work" / "vae-decoder")
    seed_everything(seed)
    rng = random.Random(seed)
    vae = build_vae()
    if not warm_start(vae, out / "diffusion_pytorch_model.safetensors"):
        raise ValueError(f"out: no trained VAE in {out} to fine-tune")
    meta = json.loads((out / "training.json").read_text()) if (out / "training.json").is_file() else {}
    scale = json.loads((out / "config.json").read_text())["scaling_factor"]
    vae.register_to_config(scaling_factor=scale)
    frozen = [vae.encoder, vae.quant_conv]
    for m in frozen:
        m.requires_grad_(False).eval()
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ckpt = Checkpoint(work)
    start = ckpt.resume(vae, opt, rng)
    if start == 0:
        start = int(meta.get("decoder_steps", 0))
    bar = Progress(steps, start, "vae-decoder", log)
    for step in range(start, steps):
        vae.decoder.train()
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup=50)
        x = vae_batch(rng, batch)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
            z = z + jitter * torch.rand(batch, 1, 1, 1) * z.std() * torch.randn_like(z)
        rec = vae.decode(z).sample
        w = edge_weights(x, edge)
        l1, l2 = (w * (rec - x).abs()).mean(), (w * (rec - x) ** 2).mean()
        loss = l1 + l2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bar.update(step + 1, loss=loss.item(), l1=l1.item(), mse=l2.item())
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            vae.eval()
            bar.write(json.dumps({"step": step + 1, **{k: round(v, 4) for k, v in reconstruction_report(vae).items()}}))
            vae.register_to_config(scaling_factor=scale)  # the encoder is unchanged, so is its latent scale
            vae.save_pretrained(str(out))
            (out / "training.json").write_text(json.dumps({**meta, "decoder_steps": step + 1, "decoder_seed": seed}))
        if ckpt.step_done(vae, opt, rng, step + 1, steps, stop_at, every=100):
            bar.close()
            return None
    bar.close()
    return vae


def save_vae(vae, out: str | Path):
    vae.register_to_config(scaling_factor=latent_scale(vae))
    vae.save_pretrained(str(out))
