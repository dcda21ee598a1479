"""Training the shapes-mini CLIP (the 64-px world) for meaning arithmetic that holds on unseen combinations.

An ordinary open_clip `CLIP` (registered config `shapes-mini`). Besides the usual contrastive loss, the
batch is built of *pairs* of scenes that differ in one attribute, two pairs per group sharing the same
change (say square -> star), and the loss asks the operations users make to land on the right image:

- word arithmetic: normalize(E(x) + s (T("a star") - T("a square"))) retrieves x' (s drawn in [0.8, 1.6],
  so a direction's strength may overshoot), plus a cosine pull at s = 1 so the blend sits *on* E(x');
- caption arithmetic: normalize(E(x) - T(cap x) + T(cap x')) retrieves x';
- image analogies: normalize(E(y) + E(x') - E(x)) retrieves y', where y -> y' is the group's other pair;
- partial descriptions ("a red star", "on the left", "large") retrieve every image they are true of.

Every scene comes from the training split (`world.is_held_out` is never true), so figures on held-out
combinations measure generalisation, not recall.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import world
from .common import Checkpoint, Progress, cosine_lr, encode_renders, seed_everything

CLIP_CONFIG = json.loads((Path(__file__).parents[1] / "model_configs" / "shapes-mini.json").read_text())
# the joint stage trains the text tower beside a small ViT; `clip_image.py` then replaces that image tower
JOINT_CONFIG = {**CLIP_CONFIG, "vision_cfg": {"image_size": 64, "layers": 3, "width": 128, "head_width": 32,
                                              "patch_size": 8, "mlp_ratio": 2.0}}
PREPROCESS_CONFIG = {"size": world.SIZE, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                     "interpolation": "bilinear", "resize_mode": "squash"}
LOSS_WEIGHTS = {"clip": 1.0, "partial": 0.5, "word": 1.0, "word_cos": 2.0, "caption": 0.5, "analogy": 0.5}


def build_clip(config: dict = CLIP_CONFIG):
    from open_clip.model import CLIP

    return CLIP(**config)


def save_clip(model, tokenizer, folder: str | Path, config: dict = CLIP_CONFIG, preprocess: dict = PREPROCESS_CONFIG):
    """Write an open_clip `local-dir:` bundle: open_clip_config.json, open_clip_model.safetensors, tokenizer."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    tokenizer.save_pretrained(str(folder))


def _pair(rng: random.Random, attribute: str | None = None, old: str | None = None, new: str | None = None):
    """A training scene x and x' = x with one attribute changed (both in the training split)."""
    while True:
        x = world.sample_scene(rng, split="train")
        k = attribute or rng.choice(world.ATTRIBUTES)
        if old is not None:
            try:
                x = world.variant(rng, x, k, value=old) if getattr(x, k) != old else x
            except ValueError:
                continue
            if x.held_out:
                continue
        try:
            x2 = world.variant(rng, x, k, split="train", value=new)
        except ValueError:
            continue
        return x, x2, k


def pair_batch(rng: random.Random, groups: int):
    """4 * groups scenes: per group, pairs (x, x') and (y, y') with the same one-attribute change."""
    scenes, groups_out = [], []
    for _ in range(groups):
        x, x2, k = _pair(rng)
        y, y2, _ = _pair(rng, k, getattr(x, k), getattr(x2, k))
        i = len(scenes)
        scenes += [x, x2, y, y2]
        groups_out.append((i, k))
    return scenes, groups_out


def same_scene(a: list, b: list) -> torch.Tensor:
    """(len(a), len(b)) bool: the two scenes agree on all six attributes."""
    ka = [s.attributes for s in a]
    kb = [s.attributes for s in b]
    return torch.tensor([[p == q for q in kb] for p in ka])


_TOKEN_CACHE: dict[str, torch.Tensor] = {}


def _tokens(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids, cached by text (the world has a few hundred thousand distinct descriptions at most)."""
    new = [t for t in texts if t not in _TOKEN_CACHE]
    if new:
        _TOKEN_CACHE.update(zip(new, tokenizer(new)))
    return torch.stack([_TOKEN_CACHE[t] for t in texts])


def _nce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    target = positives.float() / positives.float().sum(1, keepdim=True).clamp_min(1)
    return -(target * logits.log_softmax(-1)).sum(-1).mean()


def clip_losses(model, tokenizer, rng: random.Random, groups: int, partial: int, noise: float) -> dict:
    scenes, groups_idx = pair_batch(rng, groups)
    images = world.to_tensor([world.render(s) for s in scenes])
    if noise > 0:  # decoded images are never exact renders: teach the encoder to read slightly noisy ones
        images = images + torch.rand(len(scenes), 1, 1, 1) * noise * torch.randn_like(images)
    img = F.normalize(model.encode_image(images), dim=-1)  # (N, D)

    # texts: captions, the groups' single-attribute phrases (with or without article), partial descriptions
    captions = [world.caption(s) for s in scenes]
    bare = [rng.random() < 0.3 for _ in groups_idx]
    old_new = []
    for (i, k), b in zip(groups_idx, bare):
        old_new += [world.partial_caption(**{k: getattr(scenes[i], k)}, bare=b),
                    world.partial_caption(**{k: getattr(scenes[i + 1], k)}, bare=b)]
    partials, subsets = zip(*[world.random_partial(rng, rng.choice(scenes), bare_p=0.3) for _ in range(partial)])
    texts = captions + old_new + list(partials)
    unique = sorted(set(texts))
    emb = F.normalize(model.encode_text(_tokens(tokenizer, unique)), dim=-1)
    where = {t: j for j, t in enumerate(unique)}
    txt = emb[[where[t] for t in texts]]
    n, g = len(scenes), len(groups_idx)
    cap, phr, par = txt[:n], txt[n:n + 2 * g], txt[n + 2 * g:]
    scale = model.logit_scale.exp().clamp(max=100)
    same = same_scene(scenes, scenes)  # (N, N)

    out = {"clip": (_nce(scale * cap @ img.T, same) + _nce(scale * img @ cap.T, same)) / 2}
    true_of = torch.tensor([[all(getattr(s, k) == v for k, v in sub.items()) for s in scenes] for sub in subsets])
    out["partial"] = _nce(scale * par @ img.T, true_of)

    # the four one-attribute moves of each group, both directions: (source, target, old phrase, new phrase)
    src, dst, old_i, new_i, other = [], [], [], [], []
    for gi, (i, _) in enumerate(groups_idx):
        for a, b, o, w, y in ((i, i + 1, 0, 1, i + 2), (i + 1, i, 1, 0, i + 3), (i + 2, i + 3, 0, 1, i),
                              (i + 3, i + 2, 1, 0, i + 1)):
            src.append(a), dst.append(b), old_i.append(2 * gi + o), new_i.append(2 * gi + w), other.append(y)
    src_t, dst_t = torch.tensor(src), torch.tensor(dst)
    target = same[dst_t]  # (M, N): images equal to the target scene
    delta = phr[new_i] - phr[old_i]  # (M, D)
    s = torch.empty(len(src), 1).uniform_(0.8, 1.6)
    q = F.normalize(img[src_t] + s * delta, dim=-1)
    out["word"] = _nce(scale * q @ img.T, target)
    q1 = F.normalize(img[src_t] + delta, dim=-1)
    out["word_cos"] = (1 - (q1 * img[dst_t]).sum(-1)).mean()
    qc = F.normalize(img[src_t] - cap[src_t] + cap[dst_t], dim=-1)
    out["caption"] = _nce(scale * qc @ img.T, target)
    # analogy: the other pair of the group makes the same change; y + (x' - x) -> y'
    # other[m] is the source of the parallel move; its target is the pair-mate of other[m]
    mate = {i: i + 1 - 2 * ((i - gi) % 2) for gi, _ in groups_idx for i in range(gi, gi + 4)}
    oth_t = torch.tensor(other)
    oth_dst = torch.tensor([mate[o] for o in other])
    qa = F.normalize(img[oth_t] + img[dst_t] - img[src_t], dim=-1)
    out["analogy"] = _nce(scale * qa @ img.T, same[oth_dst])
    return out


# ---------------------------------------------------------------- watching it train (held-out scenes only)


@torch.no_grad()
def arithmetic_retrieval(model, tokenizer, n: int = 60, seed: int = 77, split: str = "held-out") -> dict:
    """Per attribute: share of E(x) - T(old phrase) + T(new phrase) nearest to E(x') among x' and x''s
    one-attribute neighbours (and x). A decoder-free proxy of word arithmetic; seconds to run."""
    rng = random.Random(seed)
    out = {}
    for k in world.ATTRIBUTES:
        hits = 0
        for _ in range(n):
            x, x2, _ = _pair(rng, k) if split == "train" else _held_out_pair(rng, k)
            cands = [x2, x] + [world.variant(rng, x2, a) for a in world.ATTRIBUTES for _ in range(2)]
            emb = encode_renders(model, [x] + cands)
            t = F.normalize(model.encode_text(tokenizer([world.phrase(k, getattr(x, k)),
                                                          world.phrase(k, getattr(x2, k))])), dim=-1)
            q = F.normalize(emb[0] - t[0] + t[1], dim=-1)
            sims = emb[1:] @ q
            same = [c.attributes == x2.attributes for c in cands]
            best = int(sims.argmax())
            hits += same[best]
        out[k] = hits / n
    return out


def _held_out_pair(rng: random.Random, k: str):
    """x (any split) -> x' held out, changing attribute k."""
    while True:
        x2 = world.sample_scene(rng, split="held-out")
        try:
            x = world.variant(rng, x2, k)
        except ValueError:
            continue
        if k == "size":
            x2 = world.variant(rng, x, k, value=x2.size)
        return x, x2, k


@torch.no_grad()
def near_miss_accuracy(model, tokenizer, n: int = 100, seed: int = 78, split: str = "held-out") -> dict:
    """Share of images whose own caption beats every one-attribute-off caption (held-out scenes)."""
    scenes = world.sample_scenes(n, seed, split=split)
    img = encode_renders(model, scenes)
    per = {k: 0 for k in world.ATTRIBUTES}
    allr = 0
    for s, e in zip(scenes, img):
        ok_all = True
        for k in world.ATTRIBUTES:
            vals = [v for v in world.VALUES[k] if v != getattr(s, k)]
            if k in ("color", "background"):
                vals = [v for v in vals if v != (s.background if k == "color" else s.color)]
            caps = [world.caption(s)] + [world.caption(s.with_(**{k: v})) for v in vals]
            t = F.normalize(model.encode_text(tokenizer(caps)), dim=-1)
            ok = int((t @ e).argmax()) == 0
            per[k] += ok / n
            ok_all &= ok
        allr += ok_all / n
    return {**per, "all": allr}


def train_clip(out: str | Path, steps: int = 3000, groups: int = 64, partial: int = 128, lr: float = 1e-3,
               seed: int = 0, noise: float = 0.1, work: str | Path | None = None, config: dict = JOINT_CONFIG,
               log: str | Path | None = None, stop_at: int | None = None, eval_every: int = 250,
               save_every: int = 250):
    """Train the shapes-mini CLIP and save it as an open_clip `local-dir:` bundle in `out`. Resumable from `work`."""
    from open_clip.tokenizer import HFTokenizer

    from ..tokenizer import save_word_tokenizer

    out = Path(out)
    if (out / "training.json").is_file() and "image_steps" in json.loads((out / "training.json").read_text()):
        print(f"{out}: the image tower was already replaced (stage clip-image), so the joint stage is over")
        return None
    work = Path(work or out.parent / "_work" / "clip")
    seed_everything(seed)
    rng = random.Random(seed)
    tok_dir = work / "tokenizer"
    save_word_tokenizer(tok_dir, world.VOCAB_WORDS, config["text_cfg"]["context_length"])
    tokenizer = HFTokenizer(str(tok_dir), context_length=config["text_cfg"]["context_length"])
    model = build_clip(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    ckpt = Checkpoint(work)
    start = ckpt.resume(model, opt, rng)
    if start == 0 and warm_start(model, out / "open_clip_model.safetensors"):
        start = _bundle_steps(out)
    bar = Progress(steps, start, "clip", log)
    for step in range(start, steps):
        model.train()
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup=min(100, steps // 10 + 1))
        parts = clip_losses(model, tokenizer, rng, groups, partial, noise)
        loss = sum(LOSS_WEIGHTS[k] * v for k, v in parts.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.update(step + 1, loss=loss.item(), **{k: v.item() for k, v in parts.items()},
                   scale=model.logit_scale.exp().item())
        if (step + 1) % eval_every == 0 or step + 1 == steps >= eval_every:  # a final eval unless evals are off
            model.eval()
            bar.write(json.dumps({"step": step + 1, "near_miss": _round(near_miss_accuracy(model, tokenizer, 60)),
                                  "word_arith": _round(arithmetic_retrieval(model, tokenizer, 30))}))
        if (step + 1) % save_every == 0 or step + 1 == steps:
            save_clip(model, tokenizer.tokenizer, out, config)
            (out / "training.json").write_text(json.dumps({"steps": step + 1, "groups": groups, "seed": seed}))
        if ckpt.step_done(model, opt, rng, step + 1, steps, stop_at, every=100):
            bar.close()
            return None
    bar.close()
    model.eval()
    return model


def warm_start(model, weights: Path) -> bool:
    """No work checkpoint (a new session): continue from the bundle's committed weights, if any."""
    from safetensors.torch import load_file

    if not Path(weights).is_file():
        return False
    model.load_state_dict(load_file(str(weights)))
    return True


def _bundle_steps(out: Path) -> int:
    meta = Path(out) / "training.json"
    return int(json.loads(meta.read_text()).get("steps", 0)) if meta.is_file() else 0


def _round(d: dict) -> dict:
    return {k: round(v, 3) for k, v in d.items()}
