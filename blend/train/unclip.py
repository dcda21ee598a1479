"""Training the shapes-mini image decoder: an `EmbeddingHint` and a `UNet2DConditionModel` on 8x8x16 VAE latents.

The hint draws the condition as an 8 x 8 map (trained to predict the target's latents), which the UNet takes
beside the noisy latents and refines; without it, a UNet that saw the embedding only as a global vector got
shape wrong on most held-out scenes (0.25-0.34 with all six attributes right after 7,000 steps).

Conditions are what users will feed it, never a held-out scene (targets and every term are training scenes):
image embeddings E(x), captions T(cap x), partial descriptions (with a random scene they are true of as the
target), word arithmetic normalize(E(x) + s (T(new) - T(old))) with s in [0.8, 1.7] (directions at a
strength), caption arithmetic, image analogies A + B - C, and midpoints of two scenes that share some
attributes. A little noise on every condition (unCLIP's noise augmentation), 10 % dropped for
classifier-free guidance. v-prediction, cosine schedule, min-SNR-5 weights, EMA.
"""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import world
from ..decoders.mini import EmbeddingHint, sample_unclip, unet_condition, unet_input
from .clip import _pair, warm_start
from .common import Checkpoint, Progress, cosine_lr, seed_everything

EMBED_DIM = 128
LATENT_CHANNELS, LATENT_SIZE = 16, 8
UNET_CONFIG = dict(
    sample_size=LATENT_SIZE,
    in_channels=2 * LATENT_CHANNELS,  # the noisy latents and the hint's map
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
HINT_CONFIG = dict(embed_dim=EMBED_DIM, hidden=1024, channels=LATENT_CHANNELS, size=LATENT_SIZE)
DECODER_CONFIG = {"latent_channels": LATENT_CHANNELS, "latent_size": LATENT_SIZE, "image_size": world.SIZE,
                  "embed_dim": EMBED_DIM, "steps": 12, "guidance_scale": 3.0, "solver": "dpmsolver++",
                  "strength": 0.3}


def build_unet(config: dict = UNET_CONFIG):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**config)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float):
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)


KINDS = {"image": 25, "caption": 15, "partial": 10, "word": 15, "caption_arith": 5, "analogy": 15, "mid": 15}


def _analogy(rng: random.Random):
    """A + B - C with C = B carrying A's value of one attribute: the target is A with B's value (all train)."""
    while True:
        a, b = world.sample_scene(rng, split="train"), world.sample_scene(rng, split="train")
        k = rng.choice(world.ATTRIBUTES)
        try:
            c, target = b.with_(**{k: getattr(a, k)}), a.with_(**{k: getattr(b, k)})
        except ValueError:  # colour == background
            continue
        if not (c.held_out or target.held_out):
            return (a, b, c), target


def _mid(rng: random.Random):
    """Two training scenes sharing some attributes, a blend weight t, and the one nearer t as the target."""
    x = world.sample_scene(rng, split="train")
    y = x
    for k in rng.sample(world.ATTRIBUTES, rng.randint(1, 3)):
        try:
            y = world.variant(rng, y, k, split="train")
        except ValueError:
            continue
    t = rng.uniform(0.3, 0.7)
    return (x, y), t, (x if rng.random() > t else y)


@torch.no_grad()
def conditions(clip, tokenizer, rng: random.Random, batch: int, noise: float, drop: float):
    """(B, D) conditions and the B training scenes each should decode to."""
    kinds = rng.choices(list(KINDS), weights=list(KINDS.values()), k=batch)
    recipes, targets = [], []  # a recipe: (scenes and strings, weights)
    for kind in kinds:
        if kind in ("image", "caption", "partial"):
            s = world.sample_scene(rng, split="train")
            term = s if kind == "image" else world.caption(s) if kind == "caption" else world.random_partial(rng, s, 0.3)[0]
            recipes.append(([term], [1.0])), targets.append(s)
        elif kind in ("word", "caption_arith"):
            x, x2, k = _pair(rng)
            old, new = ((world.phrase(k, getattr(x, k)), world.phrase(k, getattr(x2, k))) if kind == "word"
                        else (world.caption(x), world.caption(x2)))
            st = rng.uniform(0.8, 1.7) if kind == "word" else 1.0
            recipes.append(([x, old, new], [1.0, -st, st])), targets.append(x2)
        elif kind == "analogy":
            terms, target = _analogy(rng)
            recipes.append((list(terms), [1.0, 1.0, -1.0])), targets.append(target)
        else:
            (x, y), t, target = _mid(rng)
            recipes.append(([x, y], [1 - t, t])), targets.append(target)
    scenes = list({id(s): s for terms, _ in recipes for s in terms if isinstance(s, world.Scene)}.values())
    where = {id(s): i for i, s in enumerate(scenes)}
    img = F.normalize(clip.encode_image(world.to_tensor([world.render(s) for s in scenes])), dim=-1)
    strings = sorted({t for terms, _ in recipes for t in terms if isinstance(t, str)})
    txt = dict(zip(strings, F.normalize(clip.encode_text(tokenizer(strings)), dim=-1)))
    rows = [sum(w * (img[where[id(t)]] if isinstance(t, world.Scene) else txt[t]) for t, w in zip(terms, ws))
            for terms, ws in recipes]
    cond = F.normalize(torch.stack(rows), dim=-1)
    cond = F.normalize(cond + torch.rand(batch, 1) * noise * torch.randn_like(cond), dim=-1)
    return cond * (torch.rand(batch, 1) >= drop).float(), targets


@torch.no_grad()
def encode_latents(vae, scenes) -> torch.Tensor:
    x = world.to_tensor([world.render(s) for s in scenes])
    return vae.encode(x).latent_dist.mean * vae.config.scaling_factor  # (B, 16, 8, 8)


def save_decoder(unet, hint, vae, folder: str | Path, extra: dict | None = None):
    """Write unet/, hint/, scheduler/, decoder.json (and vae/, unless `vae` is None: it already lives there)."""
    from diffusers import DPMSolverMultistepScheduler

    folder = Path(folder)
    unet.save_pretrained(str(folder / "unet"))
    hint.save_pretrained(str(folder / "hint"))
    if vae is not None:
        vae.save_pretrained(str(folder / "vae"))
    DPMSolverMultistepScheduler(**SCHEDULER_CONFIG, algorithm_type="dpmsolver++", solver_order=2).save_pretrained(
        str(folder / "scheduler"))
    config = {**DECODER_CONFIG, "embed_dim": hint.config.embed_dim, **(extra or {})}
    (folder / "decoder.json").write_text(json.dumps(config, indent=2))


@torch.no_grad()
def evaluate(unet, hint, vae, clip, tokenizer, n: int = 32, seed: int = 777) -> dict:
    """Held-out scenes decoded from image and caption embeddings: share read back with all six right."""
    scenes = world.sample_scenes(n, seed, split="held-out")
    img = F.normalize(clip.encode_image(world.to_tensor([world.render(s) for s in scenes])), dim=-1)
    txt = F.normalize(clip.encode_text(tokenizer([world.caption(s) for s in scenes])), dim=-1)
    out = {}
    for name, cond in (("img", img), ("txt", txt)):
        z = sample_unclip(unet, cond, steps=12, guidance_scale=3.0, seed=0, config=DECODER_CONFIG,
                          scheduler_config=SCHEDULER_CONFIG, hint=hint, strength=DECODER_CONFIG["strength"])
        ims = world.to_images(vae.decode(z / vae.config.scaling_factor).sample)
        out[f"{name}_all"] = sum(world.read_attributes(im).matches(s) for im, s in zip(ims, scenes)) / n
    return out


@torch.no_grad()
def condition_dataset(clip, tokenizer, rng: random.Random, rows: int, noise: float, drop: float, target,
                      desc: str, chunk: int = 512):
    """`rows` training conditions (the UNet's own mixture) and `target(scenes)` of the scenes they mean."""
    from tqdm.auto import tqdm

    conds, targets = [], []
    for i in tqdm(range(0, rows, chunk), desc=desc, leave=False):
        cond, scenes = conditions(clip, tokenizer, rng, min(chunk, rows - i), noise, drop)
        conds.append(cond), targets.append(target(scenes))
    return torch.cat(conds), torch.cat(targets)


def fit(module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn, steps: int, batch: int, lr: float,
        seed: int, desc: str, log=None):
    """Fit `module` on cached (input, target) rows: AdamW, cosine rate, random batches drawn from `seed`."""
    import math

    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    bar = Progress(steps, 0, desc, log)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        i = torch.randint(0, len(inputs), (batch,), generator=gen)
        loss = loss_fn(module(inputs[i]), targets[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(step + 1, loss=loss.item())
    bar.close()
    return module.eval()


def _clip(clip_dir):
    import open_clip

    return open_clip.create_model(f"local-dir:{clip_dir}").eval(), open_clip.get_tokenizer(f"local-dir:{clip_dir}")


def train_hint(clip_dir: str | Path, vae_dir: str | Path, out: str | Path, rows: int = 40960, steps: int = 4000,
               batch: int = 256, lr: float = 1e-3, seed: int = 0, cond_noise: float = 0.02, drop: float = 0.1,
               config: dict = HINT_CONFIG, log: str | Path | None = None):
    """Fit the EmbeddingHint alone (MSE to the target latents) and save it in `out`/hint.

    Trained beside the UNet, the hint stayed weak (held-out scenes decoded straight from it: all six
    attributes right about 0.5); fitted alone, with a wider MLP, larger batches and a higher rate, it
    reaches about 0.9 in minutes, and the UNet then only sharpens its layout (`strength` < 1). A hint already
    in `out` is kept (the UNet was trained on it): delete `out`/hint to fit a new one.
    """
    from diffusers import AutoencoderKL

    if (Path(out) / "hint" / "config.json").is_file():
        print(f"{out}/hint exists: kept")
        return EmbeddingHint.from_pretrained(str(Path(out) / "hint"))
    seed_everything(seed)
    clip, tokenizer = _clip(clip_dir)
    vae = AutoencoderKL.from_pretrained(str(vae_dir)).eval()
    cond, z = condition_dataset(clip, tokenizer, random.Random(seed), rows, cond_noise, drop,
                                lambda scenes: encode_latents(vae, scenes), "hint data")
    hint = fit(EmbeddingHint(**config), cond, z, F.mse_loss, steps, batch, lr, seed, "hint", log)
    hint.save_pretrained(str(Path(out) / "hint"))
    return hint


def train_prior(clip_dir: str | Path, out: str | Path, rows: int = 40960, steps: int = 3000, batch: int = 256,
                lr: float = 1e-3, seed: int = 0, cond_noise: float = 0.02, log: str | Path | None = None):
    """Fit the EmbeddingPrior (cosine to the image embedding of each condition's target) and save it in
    `out`/prior. The conditions are the decoder's own training mixture, training scenes only."""
    from ..decoders.mini import EmbeddingPrior

    seed_everything(seed)
    clip, tokenizer = _clip(clip_dir)

    def image_embeddings(scenes):
        return F.normalize(clip.encode_image(world.to_tensor([world.render(s) for s in scenes])), dim=-1)

    cond, target = condition_dataset(clip, tokenizer, random.Random(seed), rows, cond_noise, 0.0, image_embeddings,
                                     "prior data")
    prior = fit(EmbeddingPrior(embed_dim=cond.shape[1]), cond, target, lambda p, t: (1 - (p * t).sum(-1)).mean(),
                steps, batch, lr, seed, "prior", log)
    prior.save_pretrained(str(Path(out) / "prior"))
    return prior


class Decoder(torch.nn.Module):
    """The trained pair, one module so that checkpoints, EMA and the optimizer see both."""

    def __init__(self, unet, hint):
        super().__init__()
        self.unet, self.hint = unet, hint


def train_decoder(clip_dir: str | Path, vae_dir: str | Path, out: str | Path, steps: int = 12000, batch: int = 64,
                  lr: float = 5e-4, seed: int = 0, cond_noise: float = 0.02, drop: float = 0.1,
                  hint_weight: float = 1.0, ema_decay: float = 0.999, work: str | Path | None = None,
                  log: str | Path | None = None, eval_every: int = 1000, config: dict = UNET_CONFIG,
                  hint_config: dict = HINT_CONFIG, stop_at: int | None = None, freeze_hint: bool = False,
                  max_t: int | None = None):
    """Train the latent unCLIP decoder against a trained CLIP and VAE; save unet/, hint/, scheduler/ in `out`.

    `freeze_hint`: keep the hint in `out`/hint as it is (fitted by `train_hint`) and train the UNet only;
    `max_t`: draw training timesteps below it only (the part of the schedule that `strength` < 1 runs).
    """
    import open_clip
    from diffusers import AutoencoderKL, DDPMScheduler

    out = Path(out)
    work = Path(work or out.parent / "_work" / "decoder")
    seed_everything(seed)
    rng = random.Random(seed)
    clip = open_clip.create_model(f"local-dir:{clip_dir}").eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{clip_dir}")
    vae = AutoencoderKL.from_pretrained(str(vae_dir)).eval()
    hint = EmbeddingHint.from_pretrained(str(out / "hint")) if freeze_hint else EmbeddingHint(**hint_config)
    model = Decoder(build_unet(config), hint.requires_grad_(not freeze_hint))
    ema = copy.deepcopy(model).requires_grad_(False)
    sched = DDPMScheduler(**SCHEDULER_CONFIG)
    alphas = sched.alphas_cumprod
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    both = torch.nn.ModuleDict({"model": model, "ema": ema})
    ckpt = Checkpoint(work)
    start = ckpt.resume(both, opt, rng)
    if start == 0 and warm_start(model.unet, out / "unet" / "diffusion_pytorch_model.safetensors") \
            and (freeze_hint or warm_start(model.hint, out / "hint" / "diffusion_pytorch_model.safetensors")):
        ema.load_state_dict(model.state_dict())  # the bundle holds the EMA weights: both continue from them
        start = int(json.loads((out / "decoder.json").read_text()).get("trained_steps", 0))
    # the VAE already in out/vae (fine-tuned separately, encoder frozen) is never overwritten with a stale copy
    keep_vae = None if Path(vae_dir).resolve() == (out / "vae").resolve() else vae
    bar = Progress(steps, start, "decoder", log)
    for step in range(start, steps):
        model.train()
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup=200)
        cond, scenes = conditions(clip, tokenizer, rng, batch, cond_noise, drop)
        x0 = encode_latents(vae, scenes)
        noise = torch.randn_like(x0)
        t = torch.randint(0, max_t or sched.config.num_train_timesteps, (batch,))
        target = sched.get_velocity(x0, noise, t)
        hint_map = model.hint(cond).detach() if freeze_hint else model.hint(cond)
        pred = model.unet(unet_input(sched.add_noise(x0, noise, t), hint_map), t, **unet_condition(cond)).sample
        snr = alphas[t] / (1 - alphas[t])
        weight = snr.clamp(max=5.0) / (snr + 1)  # min-SNR-5 for v-prediction
        diffusion = (weight * ((pred - target) ** 2).mean(dim=(1, 2, 3))).mean()
        hint_loss = F.mse_loss(hint_map, x0)
        loss = diffusion + (0.0 if freeze_hint else hint_weight) * hint_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, min(ema_decay, (1 + step) / (10 + step)))
        bar.update(step + 1, loss=loss.item(), diffusion=diffusion.item(), hint=hint_loss.item())
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            ema.eval()
            bar.write(json.dumps({"step": step + 1, **evaluate(ema.unet, ema.hint, vae, clip, tokenizer)}))
            save_decoder(ema.unet, ema.hint, keep_vae, out, {"trained_steps": step + 1, "batch": batch})
        if ckpt.step_done(both, opt, rng, step + 1, steps, stop_at, every=250):
            bar.close()
            return None
    bar.close()
    return ema
