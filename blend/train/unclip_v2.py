"""Training the shapes-mini v2 image decoder: a diffusers `UNet2DConditionModel` on 8x8x16 VAE latents.

Conditions are what users will feed it, never a held-out scene (targets and every term are training scenes):
the image embedding E(x) (40 %), the caption T(cap x) (20 %), a partial description with a random scene it
is true of as the target (15 %), a word-arithmetic blend normalize(E(x) + s (T(new) - T(old))) with target
x' (15 %), and the normalized mean of two images that share some attributes with either as the target
(10 %), so partial prompts, overshooting directions and midpoints all land on a clean scene. A little noise
on every condition (unCLIP's noise augmentation), 10 % dropped for classifier-free guidance. v-prediction,
cosine schedule, min-SNR-5 weights, EMA.
"""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import world_v2 as world
from ..decoders.mini import sample_unclip, unet_condition
from .clip_v2 import _pair, warm_start
from .common import Checkpoint, Progress, cosine_lr, seed_everything
from .unclip import ema_update

EMBED_DIM = 128
LATENT_CHANNELS, LATENT_SIZE = 16, 8
UNET_CONFIG = dict(
    sample_size=LATENT_SIZE,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(64, 96, 96),
    layers_per_block=1,
    norm_num_groups=16,
    cross_attention_dim=96,
    attention_head_dim=3,
    encoder_hid_dim=EMBED_DIM,
    encoder_hid_dim_type="text_proj",
    class_embed_type="projection",
    projection_class_embeddings_input_dim=EMBED_DIM,
    resnet_time_scale_shift="scale_shift",
)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
DECODER_CONFIG = {"latent_channels": LATENT_CHANNELS, "latent_size": LATENT_SIZE, "image_size": world.SIZE,
                  "embed_dim": EMBED_DIM, "steps": 12, "guidance_scale": 3.0, "solver": "dpmsolver++"}


def build_unet(config: dict = UNET_CONFIG):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**config)


@torch.no_grad()
def conditions(clip, tokenizer, rng: random.Random, batch: int, noise: float, drop: float):
    """(B, D) conditions and the B training scenes each should decode to."""
    kinds = rng.choices(["image", "caption", "partial", "word", "mid"], weights=[40, 20, 15, 15, 10], k=batch)
    sources, targets = [], []  # sources: the scenes and strings each condition is made of
    for kind in kinds:
        if kind in ("image", "caption"):
            s = world.sample_scene(rng, split="train")
            sources.append((s,)), targets.append(s)
        elif kind == "partial":
            s = world.sample_scene(rng, split="train")
            text, _ = world.random_partial(rng, s, bare_p=0.3)
            sources.append((text,)), targets.append(s)  # s is one random scene the text is true of
        elif kind == "word":
            x, x2, k = _pair(rng)
            sources.append((x, world.phrase(k, getattr(x, k)), world.phrase(k, getattr(x2, k))))
            targets.append(x2)
        else:
            x, x2, _ = _pair(rng)
            y, _, _ = _pair(rng)
            other = x2 if rng.random() < 0.7 else y
            sources.append((x, other)), targets.append(x if rng.random() < 0.5 else other)
    scenes = sorted({s for src in sources for s in src if isinstance(s, world.Scene)}, key=id)
    where = {id(s): i for i, s in enumerate(scenes)}
    img = F.normalize(clip.encode_image(world.to_tensor([world.render(s) for s in scenes])), dim=-1)
    strings = sorted({world.caption(src[0]) for src, k in zip(sources, kinds) if k == "caption"}
                     | {t for src in sources for t in src if isinstance(t, str)})
    txt = dict(zip(strings, F.normalize(clip.encode_text(tokenizer(strings)), dim=-1))) if strings else {}
    rows = []
    for kind, src in zip(kinds, sources):
        if kind == "image":
            rows.append(img[where[id(src[0])]])
        elif kind == "caption":
            rows.append(txt[world.caption(src[0])])
        elif kind == "partial":
            rows.append(txt[src[0]])
        elif kind == "word":
            rows.append(img[where[id(src[0])]] + rng.uniform(0.8, 1.7) * (txt[src[2]] - txt[src[1]]))
        else:
            rows.append(img[where[id(src[0])]] + img[where[id(src[1])]])
    cond = F.normalize(torch.stack(rows), dim=-1)
    cond = F.normalize(cond + torch.rand(batch, 1) * noise * torch.randn_like(cond), dim=-1)
    return cond * (torch.rand(batch, 1) >= drop).float(), targets


@torch.no_grad()
def encode_latents(vae, scenes) -> torch.Tensor:
    x = world.to_tensor([world.render(s) for s in scenes])
    return vae.encode(x).latent_dist.mean * vae.config.scaling_factor  # (B, 16, 8, 8)


def save_decoder(unet, vae, folder: str | Path, extra: dict | None = None):
    """Write unet/, scheduler/, decoder.json (and vae/, unless `vae` is None: it already lives there)."""
    from diffusers import DPMSolverMultistepScheduler

    folder = Path(folder)
    unet.save_pretrained(str(folder / "unet"))
    if vae is not None:
        vae.save_pretrained(str(folder / "vae"))
    DPMSolverMultistepScheduler(**SCHEDULER_CONFIG, algorithm_type="dpmsolver++", solver_order=2).save_pretrained(
        str(folder / "scheduler"))
    (folder / "decoder.json").write_text(json.dumps({**DECODER_CONFIG, **(extra or {})}, indent=2))


@torch.no_grad()
def evaluate(unet, vae, clip, tokenizer, n: int = 32, seed: int = 777) -> dict:
    """Held-out scenes decoded from image and caption embeddings: share read back with all six right."""
    scenes = world.sample_scenes(n, seed, split="held-out")
    img = F.normalize(clip.encode_image(world.to_tensor([world.render(s) for s in scenes])), dim=-1)
    txt = F.normalize(clip.encode_text(tokenizer([world.caption(s) for s in scenes])), dim=-1)
    out = {}
    for name, cond in (("img", img), ("txt", txt)):
        z = sample_unclip(unet, cond, steps=12, guidance_scale=3.0, seed=0, config=DECODER_CONFIG,
                          scheduler_config=SCHEDULER_CONFIG)
        ims = world.to_images(vae.decode(z / vae.config.scaling_factor).sample)
        out[f"{name}_all"] = sum(world.read_attributes(im).matches(s) for im, s in zip(ims, scenes)) / n
    return out


def train_decoder(clip_dir: str | Path, vae_dir: str | Path, out: str | Path, steps: int = 12000, batch: int = 64,
                  lr: float = 5e-4, seed: int = 0, cond_noise: float = 0.03, drop: float = 0.1,
                  ema_decay: float = 0.999, work: str | Path | None = None, log: str | Path | None = None,
                  eval_every: int = 1000, config: dict = UNET_CONFIG, stop_at: int | None = None):
    """Train the latent unCLIP decoder against a trained CLIP and VAE; save unet/, vae/, scheduler/ in `out`."""
    import open_clip
    from diffusers import AutoencoderKL, DDPMScheduler

    out = Path(out)
    work = Path(work or out.parent / "_work" / "decoder")
    seed_everything(seed)
    rng = random.Random(seed)
    clip = open_clip.create_model(f"local-dir:{clip_dir}").eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{clip_dir}")
    vae = AutoencoderKL.from_pretrained(str(vae_dir)).eval()
    unet = build_unet(config)
    ema = copy.deepcopy(unet).requires_grad_(False)
    sched = DDPMScheduler(**SCHEDULER_CONFIG)
    alphas = sched.alphas_cumprod
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    both = torch.nn.ModuleDict({"unet": unet, "ema": ema})
    ckpt = Checkpoint(work)
    start = ckpt.resume(both, opt, rng)
    if start == 0 and warm_start(unet, out / "unet" / "diffusion_pytorch_model.safetensors"):
        ema.load_state_dict(unet.state_dict())  # the bundle holds the EMA weights: both continue from them
        start = int(json.loads((out / "decoder.json").read_text()).get("trained_steps", 0))
    # the VAE already in out/vae (fine-tuned separately, encoder frozen) is never overwritten with a stale copy
    keep_vae = None if Path(vae_dir).resolve() == (out / "vae").resolve() else vae
    bar = Progress(steps, start, "decoder-v2", log)
    for step in range(start, steps):
        unet.train()
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup=200)
        cond, scenes = conditions(clip, tokenizer, rng, batch, cond_noise, drop)
        x0 = encode_latents(vae, scenes)
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,))
        target = sched.get_velocity(x0, noise, t)
        pred = unet(sched.add_noise(x0, noise, t), t, **unet_condition(cond)).sample
        snr = alphas[t] / (1 - alphas[t])
        weight = snr.clamp(max=5.0) / (snr + 1)  # min-SNR-5 for v-prediction
        loss = (weight * ((pred - target) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema_update(ema, unet, min(ema_decay, (1 + step) / (10 + step)))
        bar.update(step + 1, loss=loss.item())
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            ema.eval()
            bar.write(json.dumps({"step": step + 1, **evaluate(ema, vae, clip, tokenizer)}))
            save_decoder(ema, keep_vae, out, {"trained_steps": step + 1, "batch": batch})
        if ckpt.step_done(both, opt, rng, step + 1, steps, stop_at, every=250):
            bar.close()
            return None
    bar.close()
    return ema
