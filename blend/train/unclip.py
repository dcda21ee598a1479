"""Training the shapes-mini image decoder: a `LayeredDraft` (embedding -> picture), then a
`UNet2DConditionModel` on 8x8x16 VAE latents that redraws the draft for seeded variations (`strength` > 0).

The draft is fitted alone on cached conditions (`train_draft`); the UNet then trains with the frozen draft's
latents beside its noisy latents (`train_decoder`). Before the draft, an MLP regressing the latents directly
(`EmbeddingHint`) drew held-out scenes from image embeddings with all six attributes right 0.86 of the time and
captions 0.69, and longer fits raised only the training split; the draft's layers compose (see its docstring).

Conditions are what users will feed it, never a held-out scene (targets and every term are training scenes):
image embeddings E(x), captions T(cap x) and partial descriptions (each with the one scene it means,
`world.meant_scene`, as the target: a text true of many scenes would otherwise be fitted to their blurred
average), word arithmetic normalize(E(x) + s (T(new) - T(old))) with s in [0.8, 1.7] (directions at a
strength), caption arithmetic, image analogies A + B - C, and slerps of two scenes that share some
attributes (the nearer end as the target; near the middle, the first of the two by attributes, so that
slerp(x, y) and slerp(y, x) mean the same). A little noise on every condition (unCLIP's noise
augmentation), 10 % dropped for classifier-free guidance. The UNet: v-prediction, cosine schedule, min-SNR-5
weights, EMA.
"""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import world
from ..decoders.mini import DraftLatents, EmbeddingPrior, LayeredDraft, sample_unclip, unet_condition, unet_input
from ..ops import slerp
from .clip import _pair, warm_start
from .common import Checkpoint, Progress, cosine_lr, encode_renders, save_half, seed_everything

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
DRAFT_CONFIG = dict(embed_dim=EMBED_DIM, hidden=1024, mask_size=32, shade_size=8, image_size=world.SIZE, split_mask=True)
DECODER_CONFIG = {"latent_channels": LATENT_CHANNELS, "latent_size": LATENT_SIZE, "image_size": world.SIZE,
                  "embed_dim": EMBED_DIM, "steps": 12, "guidance_scale": 3.0, "solver": "dpmsolver++",
                  "strength": 0.0}


def build_unet(config: dict = UNET_CONFIG):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**config)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float):
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)


KINDS = {"image": 15, "caption": 10, "partial": 15, "word": 30, "caption_arith": 5, "analogy": 10, "mid": 15}


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


def _middle(x, y):
    """What the exact middle of x and y means: each attribute they differ in takes the value first in
    `world.VALUES` (a rule on that attribute alone, and the same for (x, y) and (y, x)); None where that
    makes no valid training scene."""
    first = min(x, y, key=lambda s: s.attributes)
    values = {k: min(getattr(x, k), getattr(y, k), key=world.VALUES[k].index) for k in world.ATTRIBUTES}
    f = first.f if values["size"] == first.size else (y if first is x else x).f
    try:
        s = world.Scene(**values, f=f, jx=first.jx, jy=first.jy)
    except ValueError:  # colour == background
        return None
    return None if s.held_out else s


def _mid(rng: random.Random):
    """Two training scenes sharing some attributes, a slerp weight t (0.5 in 40 % of rows) and its target:
    the nearer end, or within 0.08 of the middle `_middle(x, y)`."""
    while True:
        x = world.sample_scene(rng, split="train")
        y = x
        for k in rng.sample(world.ATTRIBUTES, rng.randint(1, 3)):
            try:
                y = world.variant(rng, y, k, split="train")
            except ValueError:
                continue
        t = 0.5 if rng.random() < 0.4 else rng.uniform(0.3, 0.7)
        if abs(t - 0.5) >= 0.08:
            return (x, y), t, (x if t < 0.5 else y)
        middle = _middle(x, y)
        if middle is not None:
            return (x, y), t, middle


@torch.no_grad()
def conditions(clip, tokenizer, rng: random.Random, batch: int, noise: float, drop: float, kinds: dict = KINDS):
    """(B, D) conditions and the B training scenes each should decode to; `kinds`: the mixture's weights."""
    kinds = rng.choices(list(kinds), weights=list(kinds.values()), k=batch)
    recipes, targets = [], []  # a recipe: (scenes and strings, weights)
    for kind in kinds:
        if kind in ("image", "caption", "partial"):
            s = world.sample_scene(rng, split="train")
            if kind == "image":
                recipes.append(([s], [1.0])), targets.append(s)
            elif kind == "caption":
                recipes.append(([world.caption(s)], [1.0])), targets.append(
                    world.meant_scene(dict(zip(world.ATTRIBUTES, s.attributes))))
            else:
                text, named = world.random_partial(rng, s, 0.3)
                recipes.append(([text], [1.0])), targets.append(world.meant_scene(named))
        elif kind in ("word", "caption_arith"):
            x, x2, k = _pair(rng)
            old, new = ((world.phrase(k, getattr(x, k)), world.phrase(k, getattr(x2, k))) if kind == "word"
                        else (world.caption(x), world.caption(x2)))
            st = rng.uniform(0.8, 2.0) if kind == "word" else 1.0
            recipes.append(([x, old, new], [1.0, -st, st])), targets.append(x2)
        elif kind == "analogy":
            terms, target = _analogy(rng)
            recipes.append((list(terms), [1.0, 1.0, -1.0])), targets.append(target)
        else:
            (x, y), t, target = _mid(rng)
            recipes.append(([x, y], t)), targets.append(target)  # a slerp, as users blend two images
    scenes = list({id(s): s for terms, _ in recipes for s in terms if isinstance(s, world.Scene)}.values())
    where = {id(s): i for i, s in enumerate(scenes)}
    img = encode_renders(clip, scenes)
    strings = sorted({t for terms, _ in recipes for t in terms if isinstance(t, str)})
    txt = dict(zip(strings, F.normalize(clip.encode_text(tokenizer(strings)), dim=-1)))
    def emb(t):
        return img[where[id(t)]] if isinstance(t, world.Scene) else txt[t]

    rows = [slerp(emb(terms[0]), emb(terms[1]), ws) if isinstance(ws, float)
            else sum(w * emb(t) for t, w in zip(terms, ws)) for terms, ws in recipes]
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
    config = {**DECODER_CONFIG, "embed_dim": unet.config.projection_class_embeddings_input_dim, **(extra or {})}
    (folder / "decoder.json").write_text(json.dumps(config, indent=2))


@torch.no_grad()
def evaluate(unet, draft, vae, clip, tokenizer, n: int = 32, seed: int = 777, strength: float = 0.3) -> dict:
    """Held-out scenes from image and caption embeddings, drawn by the draft alone and redrawn by the UNet at
    `strength`: the share read back with all six attributes right."""
    scenes = world.sample_scenes(n, seed, split="held-out")
    img = encode_renders(clip, scenes)
    txt = F.normalize(clip.encode_text(tokenizer([world.caption(s) for s in scenes])), dim=-1)
    out = {}

    def share(x):
        return sum(world.read_attributes(im).matches(s) for im, s in zip(world.to_images(x), scenes)) / n

    for name, cond in (("img", img), ("txt", txt)):
        out[f"{name}_draft"] = share(draft.draw(cond))
        if unet is not None:
            z = sample_unclip(unet, cond, steps=12, guidance_scale=3.0, seed=0, config=DECODER_CONFIG,
                              scheduler_config=SCHEDULER_CONFIG, hint=DraftLatents(draft, vae), strength=strength)
            out[f"{name}_unet"] = share(vae.decode(z / vae.config.scaling_factor).sample)
    return out


@torch.no_grad()
def condition_dataset(clip, tokenizer, rng: random.Random, rows: int, noise: float, drop: float, target,
                      desc: str, chunk: int = 512, kinds: dict = KINDS):
    """`rows` training conditions (the mixture `kinds`) and `target(scenes)` of the scenes they mean."""
    from tqdm.auto import tqdm

    conds, targets = [], []
    for i in tqdm(range(0, rows, chunk), desc=desc, leave=False):
        cond, scenes = conditions(clip, tokenizer, rng, min(chunk, rows - i), noise, drop, kinds)
        conds.append(cond), targets.append(target(scenes))
    return torch.cat(conds), torch.cat(targets)


def fit(module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn, steps: int, batch: int, lr: float,
        seed: int, desc: str, log=None, warmup: int = 200, save=None, save_every: int = 3000):
    """Fit `module` on cached (input, target) rows: AdamW, warm-up then cosine rate, random batches drawn
    from `seed`; `save(module)` every `save_every` steps and at the end."""
    import math

    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    bar = Progress(steps, 0, desc, log)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        i = torch.randint(0, len(inputs), (batch,), generator=gen)
        loss = loss_fn(module(inputs[i]), targets[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(step + 1, loss=loss.item())
        if save is not None and ((step + 1) % save_every == 0 or step + 1 == steps):
            save(module)
    bar.close()
    return module.eval()


def _clip(clip_dir):
    import open_clip

    return open_clip.create_model(f"local-dir:{clip_dir}").eval(), open_clip.get_tokenizer(f"local-dir:{clip_dir}")


def render_targets(scenes) -> torch.Tensor:
    """(B, 4, S, S) uint8: each scene's render and, as channel 3, its outline mask (`vae.outline_mask`, 0 or 1)."""
    from .vae import outline_mask

    x = world.to_tensor([world.render(s) for s in scenes])
    return torch.cat([((x + 1) * 127.5).round(), outline_mask(x).float()], dim=1).to(torch.uint8)


def draft_loss(edge: float):
    """L1 + L2 against the render, outline pixels weighing 1 + `edge` (small stars are what blurs first)."""
    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, w = target[:, :3].float() / 127.5 - 1, 1 + edge * target[:, 3:].float()
        return (w * (pred - x) ** 2).mean() + (w * (pred - x).abs()).mean()
    return loss


@torch.no_grad()
def project(prior, cond: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Rows through an `EmbeddingPrior` in chunks; all-zero rows (dropped conditions) stay zero."""
    out = torch.cat([prior(cond[i:i + chunk]) for i in range(0, len(cond), chunk)])
    return out * (cond.abs().sum(-1, keepdim=True) > 0)


@torch.no_grad()
def caption_codes(clip, tokenizer, chunk: int = 1024) -> tuple[torch.Tensor, dict[str, list[int]]]:
    """A linear code model of the text space, fitted by least squares on every **training** caption's embedding:
    T(caption) ~ codes[0] + sum over attributes of codes[row of its value] (reference coding: each attribute's
    first value is in the bias row 0). Returns codes (1 + 31, D) and, per attribute, its rows."""
    combos = world.all_combinations("train")
    rows, k = {}, 1
    for a in world.ATTRIBUTES:
        rows[a] = list(range(k, k + len(world.VALUES[a]) - 1))
        k += len(world.VALUES[a]) - 1
    x = torch.zeros(len(combos), k, dtype=torch.float64)
    x[:, 0] = 1
    for n, combo in enumerate(combos):
        for a, value in zip(world.ATTRIBUTES, combo):
            i = world.VALUES[a].index(value)
            if i:
                x[n, rows[a][i - 1]] = 1
    texts = [world.caption(world.Scene(*c)) for c in combos]
    t = torch.cat([F.normalize(clip.encode_text(tokenizer(texts[i:i + chunk])), dim=-1) for i in range(0, len(texts), chunk)])
    return torch.linalg.lstsq(x, t.double()).solution.float(), rows


def train_draft(clip_dir: str | Path, out: str | Path, rows: int = 163840, steps: int = 12000, batch: int = 256,
                lr: float = 1e-3, seed: int = 1, cond_noise: float = 0.02, drop: float = 0.1, edge: float = 4.0,
                config: dict = DRAFT_CONFIG, log: str | Path | None = None, warm: bool = False):
    """Fit the LayeredDraft on `rows` cached conditions (2.7 GB at the default) and save it in `out`/draft (fp16),
    every 3,000 steps and at the end. When `out`/prior holds an `EmbeddingPrior`, the draft learns to draw the
    prior's outputs (what the decoder feeds it). `warm`: start from the draft already in `out` (a fine-tune).
    About 4 min of data and 18 min of fitting on 2 cores."""
    seed_everything(seed)
    clip, tokenizer = _clip(clip_dir)
    cond, target = condition_dataset(clip, tokenizer, random.Random(seed), rows, cond_noise, drop, render_targets,
                                     "draft data")
    draft = LayeredDraft(**{**config, "embed_dim": cond.shape[1]})
    if draft.config.split_mask:  # the mask cannot read which colour and background: no (colour, shape, bg) to recall
        codes, code_rows = caption_codes(clip, tokenizer)
        draft.blind_mask_to(codes, code_rows["color"] + code_rows["background"])
    del clip
    if (Path(out) / "prior").is_dir():
        cond = project(EmbeddingPrior.from_pretrained(str(Path(out) / "prior")).eval(), cond)
    if warm:
        warm_start(draft, Path(out) / "draft" / "diffusion_pytorch_model.safetensors")
    return fit(draft, cond, target, draft_loss(edge), steps, batch, lr, seed, "draft", log,
               save=lambda m: save_half(m, Path(out) / "draft"))


def train_decoder(clip_dir: str | Path, vae_dir: str | Path, out: str | Path, steps: int = 12000, batch: int = 64,
                  lr: float = 5e-4, seed: int = 0, cond_noise: float = 0.02, drop: float = 0.1,
                  ema_decay: float = 0.999, work: str | Path | None = None, log: str | Path | None = None,
                  eval_every: int = 1000, config: dict = UNET_CONFIG, stop_at: int | None = None,
                  max_t: int | None = 500):
    """Train the latent UNet against a trained CLIP, VAE and the frozen draft in `out`/draft; save unet/,
    scheduler/, decoder.json in `out`. `max_t`: training timesteps below it only (the part of the schedule
    that `strength` < 1 runs)."""
    from diffusers import AutoencoderKL, DDPMScheduler

    out = Path(out)
    work = Path(work or out.parent / "_work" / "decoder")
    seed_everything(seed)
    rng = random.Random(seed)
    clip, tokenizer = _clip(clip_dir)
    vae = AutoencoderKL.from_pretrained(str(vae_dir)).eval()
    draft = LayeredDraft.from_pretrained(str(out / "draft")).eval().requires_grad_(False)
    hint = DraftLatents(draft, vae)
    unet = build_unet(config)
    ema = copy.deepcopy(unet).requires_grad_(False)
    sched = DDPMScheduler(**SCHEDULER_CONFIG)
    alphas = sched.alphas_cumprod
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    both = torch.nn.ModuleDict({"model": unet, "ema": ema})
    ckpt = Checkpoint(work)
    start = ckpt.resume(both, opt, rng)
    if start == 0 and warm_start(unet, out / "unet" / "diffusion_pytorch_model.safetensors"):
        ema.load_state_dict(unet.state_dict())  # the bundle holds the EMA weights: both continue from them
        start = int(json.loads((out / "decoder.json").read_text()).get("trained_steps", 0))
    # the VAE already in out/vae (fine-tuned separately, encoder frozen) is never overwritten with a stale copy
    keep_vae = None if Path(vae_dir).resolve() == (out / "vae").resolve() else vae
    bar = Progress(steps, start, "decoder", log)
    for step in range(start, steps):
        unet.train()
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup=200)
        cond, scenes = conditions(clip, tokenizer, rng, batch, cond_noise, drop)
        with torch.no_grad():
            x0, hint_map = encode_latents(vae, scenes), hint(cond)
        noise = torch.randn_like(x0)
        t = torch.randint(0, max_t or sched.config.num_train_timesteps, (batch,))
        target = sched.get_velocity(x0, noise, t)
        pred = unet(unet_input(sched.add_noise(x0, noise, t), hint_map), t, **unet_condition(cond)).sample
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
            bar.write(json.dumps({"step": step + 1, **evaluate(ema, draft, vae, clip, tokenizer)}))
            save_decoder(ema, keep_vae, out, {"trained_steps": step + 1, "batch": batch})
        if ckpt.step_done(both, opt, rng, step + 1, steps, stop_at, every=250):
            bar.close()
            return None
    bar.close()
    return ema
