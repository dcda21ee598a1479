"""Training a prefix text inverter on CLIP text embeddings with noise augmentation (CapDec).

`train_inverter` is one loop for any open_clip encoder: it embeds texts, adds Gaussian noise on the
sphere so the decoder learns a neighbourhood of each text rather than a point (which is where image
embeddings of the same meaning fall), and teaches a GPT-2 to say the text back. For shapes-mini the
corpus is generated from the world, and the embeddings of blends (the decoder's own training conditions)
may be mixed in, each said back as the caption of the scene it means (`train_shapes_inverter`).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .. import world
from .common import Checkpoint, Progress, cosine_lr, seed_everything


def noisy(emb: torch.Tensor, noise: float) -> torch.Tensor:
    """Unit embeddings plus isotropic noise of expected norm `noise`, back on the sphere."""
    return F.normalize(emb + noise / emb.shape[-1] ** 0.5 * torch.randn_like(emb), dim=-1)


def train_inverter(encode_text: Callable, sample_texts: Callable, embed_dim: int, tokenizer, out: str | Path,
                   steps: int = 1500, batch: int = 128, lr: float = 1e-3, seed: int = 0, noise: float = 0.3,
                   encode_paired_images: Callable | None = None, image_share: float = 0.0,
                   work: str | Path | None = None, log: str | Path | None = None, model_kwargs: dict | None = None,
                   stop_at: int | None = None, model=None, save_every: int = 250, warmup: int = 100,
                   device: str | torch.device = "cpu"):
    """Train and save a `PrefixInverter`.

    Args:
        encode_text: list[str] -> (N, D) unit text embeddings (frozen CLIP).
        sample_texts: (rng, n) -> (texts, payload); payload goes to `encode_paired_images`.
        noise: expected norm of the Gaussian noise added to each unit text embedding (CapDec).
        encode_paired_images: optional (payload, mask) -> (M, D) image embeddings for the masked rows.
        image_share: share of rows whose condition is the paired image embedding instead of the text's.
        model: a ready `PrefixInverter` (e.g. on a pretrained GPT-2); default: built from `model_kwargs`.
        save_every: steps between resumable checkpoints in `work`.
    """
    from ..decode_text import PrefixInverter

    out = Path(out)
    work = Path(work or out.parent / "_work" / "inverter")
    seed_everything(seed)
    rng = random.Random(seed)
    if model is None:
        model = PrefixInverter.build(tokenizer, embed_dim, **(model_kwargs or {}), noise=noise, image_share=image_share)
    else:
        model.config.update(noise=noise, image_share=image_share)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    ckpt = Checkpoint(work)
    start = ckpt.resume(model, opt, rng)
    bar = Progress(steps, start, "inverter", log)
    model.train()
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup=warmup)
        texts, payload = sample_texts(rng, batch)
        with torch.no_grad():
            emb = noisy(encode_text(texts).to(device), noise)
            if encode_paired_images is not None and image_share > 0:
                use = torch.tensor([rng.random() < image_share for _ in texts]) & payload["pairable"]
                if use.any():
                    emb[use] = noisy(encode_paired_images(payload, use).to(device), noise / 3)
        loss = model.loss(emb, texts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(step + 1, loss=loss.item())
        if ckpt.step_done(model, opt, rng, step + 1, steps, stop_at, every=save_every):
            bar.close()
            return None
    bar.close()
    model.eval()
    model.save_pretrained(out)
    return model


# ---------------------------------------------------------------------------------------- shapes-mini

def shapes_batch(rng: random.Random, n: int, partial_share: float = 0.25) -> tuple[list[str], list[bool]]:
    """Texts of training scenes (a canonical caption, or a partial description), and whether each is a caption."""
    texts, canonical = [], []
    for _ in range(n):
        s = world.sample_scene(rng, split="train")
        if rng.random() < partial_share:
            texts.append(world.random_partial(rng, s, bare_p=0.2)[0]), canonical.append(False)
        else:
            texts.append(world.caption(s)), canonical.append(True)
    return texts, canonical


def train_shapes_inverter(clip_dir: str | Path, out: str | Path, steps: int = 3000, blend_share: float = 0.5,
                          noise: float = 0.3, batch: int = 128, seed: int = 0, work=None, log=None,
                          stop_at: int | None = None):
    """The shapes-mini inverter: world captions and partial descriptions said back from their noisy text
    embeddings (CapDec), and, for `blend_share` of the caption rows, the caption of the scene a blend means
    from the blend's embedding (images, word and caption arithmetic, analogies, midpoints: the decoder's own
    training conditions, `unclip.conditions`). Training scenes only. Its tokenizer keeps the comma, so
    the sentences are captions as `world.caption` spells them."""
    import open_clip

    from ..tokenizer import build_word_tokenizer
    from .unclip import conditions

    clip = open_clip.create_model(f"local-dir:{clip_dir}").eval()
    clip_tok = open_clip.get_tokenizer(f"local-dir:{clip_dir}")
    tokenizer = build_word_tokenizer(world.VOCAB_WORDS, max_length=32, punctuation=",")
    dim = clip.text_projection.shape[1]

    def encode_text(texts):
        return F.normalize(clip.encode_text(clip_tok(texts)), dim=-1)

    def sample_texts(rng, n):
        texts, canonical = shapes_batch(rng, n)
        use = torch.tensor([c and rng.random() < blend_share for c in canonical])
        cond, targets = conditions(clip, clip_tok, rng, int(use.sum()), noise=0.0, drop=0.0)
        it = iter(zip(cond, targets))
        rows = []
        for i, u in enumerate(use.tolist()):
            if u:
                e, target = next(it)
                texts[i] = world.caption(target)
                rows.append(e)
        return texts, {"pairable": use, "cond": torch.stack(rows) if rows else torch.zeros(0, dim)}

    def encode_blends(payload, use):
        return payload["cond"]  # `use` is exactly the pairable rows (image_share = 1)

    return train_inverter(encode_text, sample_texts, dim, tokenizer, out, steps=steps, batch=batch, noise=noise,
                          seed=seed, encode_paired_images=encode_blends, image_share=1.0,
                          work=work, log=log, stop_at=stop_at)


# ---------------------------------------------------------------------------------------- any open_clip model

def parse_encoder(text: str) -> dict:
    """`MODEL/PRETRAINED` (e.g. ViT-L-14/openai), `hf-hub:ORG/NAME`, `local-dir:PATH` or a preset -> encoder spec."""
    import open_clip

    from ..presets import scan

    if text.startswith("local-dir:"):
        return {"type": "open_clip", "model": "local-dir:" + str(Path(text[len("local-dir:"):]).resolve())}
    if text.startswith("hf-hub:"):
        return {"type": "open_clip", "model": text}
    presets = scan()
    if text in presets:
        spec = dict(presets[text]["encoder"])
        if spec["model"].startswith("local-dir:"):
            path = Path(spec["model"][len("local-dir:"):])
            spec["model"] = "local-dir:" + str((Path(presets[text]["_dir"]) / path).resolve())
        return spec
    model, sep, tag = text.partition("/")
    if model not in open_clip.list_models():
        raise ValueError(f"--encoder {text!r}: unknown open_clip model {model!r}; write MODEL/PRETRAINED "
                         f"(e.g. ViT-L-14/openai), hf-hub:ORG/NAME, local-dir:PATH or a preset name")
    if sep and tag not in open_clip.list_pretrained_tags_by_model(model):
        raise ValueError(f"--encoder {text!r}: {model} has no pretrained weights {tag!r}; "
                         f"known: {open_clip.list_pretrained_tags_by_model(model)}")
    return {"type": "open_clip", "model": model, "pretrained": tag or None}


def corpus_words(captions: list[str], max_words: int = 30000) -> list[str]:
    """The commonest words of a corpus, normalized as the word tokenizer does (NFKC, lower case, no punctuation)."""
    import re
    import unicodedata
    from collections import Counter

    counts = Counter(w for c in captions
                     for w in re.sub(r"[^\w\s]", " ", unicodedata.normalize("NFKC", c).lower()).split())
    return [w for w, _ in counts.most_common(max_words)]


def prepare_lm_tokenizer(tok):
    """Make a GPT-2 style tokenizer frame every text as <bos> text <eos> and pad with <eos>, as the inverter expects."""
    from tokenizers import processors

    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.bos_token is None:
        tok.bos_token = tok.eos_token
    ids = tok("a").input_ids
    if ids[0] != tok.bos_token_id or ids[-1] != tok.eos_token_id:
        b, e = tok.bos_token, tok.eos_token
        tok._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{b} $A {e}", special_tokens=list({b: tok.bos_token_id, e: tok.eos_token_id}.items()))
    tok.padding_side = "right"
    return tok


def build_lm_inverter(lm: str, captions: list[str], embed_dim: int, prefix_len: int = 10, max_tokens: int = 40,
                      **config):
    """A `PrefixInverter` on GPT-2 weights from `lm` (hub id or folder) when they load, else a small GPT-2 from a
    config with a word-level tokenizer built from the corpus (`lm="none"` asks for that directly).

    Returns (inverter, description of the language model used).
    """
    import warnings

    from ..decode_text import PrefixInverter, PrefixMap
    from ..tokenizer import build_word_tokenizer

    if lm != "none":
        try:
            from transformers import AutoTokenizer, GPT2LMHeadModel

            tok = prepare_lm_tokenizer(AutoTokenizer.from_pretrained(lm))
            model = GPT2LMHeadModel.from_pretrained(lm)
        except (OSError, ValueError) as e:
            warnings.warn(f"--lm {lm!r} could not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                          "training a small GPT-2 from a config with a word tokenizer from the corpus instead",
                          stacklevel=2)
        else:
            width = model.config.n_embd
            cfg = {"embed_dim": embed_dim, "width": width, "prefix_len": prefix_len,
                   "max_tokens": min(max_tokens, model.config.n_positions - prefix_len - 2), "lm": lm, **config}
            return PrefixInverter(model, PrefixMap(embed_dim, width, prefix_len), tok, cfg), f"{lm} (pretrained)"
    tok = build_word_tokenizer(corpus_words(captions))
    kwargs = {"width": 256, "layers": 4, "heads": 4, **config}
    inv = PrefixInverter.build(tok, embed_dim, prefix_len=prefix_len, max_tokens=max_tokens, lm="config", **kwargs)
    params = sum(p.numel() for p in inv.lm.parameters()) / 1e6
    return inv, f"GPT-2 from a config ({params:.2f} M parameters, {len(tok)} words)"


@torch.no_grad()
def embed_corpus(encoder, captions: list[str], work: Path, batch: int = 256) -> torch.Tensor:
    """(M, D) unit text embeddings of the corpus, computed once and kept in `work` (a resumed run reuses them)."""
    import hashlib

    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from ..decode_text import embed_texts

    key = hashlib.sha256((encoder.name + "\0" + "\n".join(captions)).encode()).hexdigest()[:16]
    path = Path(work) / f"corpus-{key}.safetensors"
    if path.is_file():
        return load_file(str(path))["embeddings"].float()
    emb = torch.cat([embed_texts(encoder, captions[i:i + batch])
                     for i in tqdm(range(0, len(captions), batch), desc="embed corpus", unit="batch")])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": emb.half().contiguous()}, str(path))
    return emb.half().float()  # the precision a resumed run reads back, so both runs train on the same numbers


def train_corpus_inverter(encoder: str | dict, corpus, out: str | Path, steps: int = 5000, batch: int = 64,
                          lr: float | None = None, noise: float = 0.5, seed: int = 0, lm: str = "gpt2",
                          prefix_len: int = 10, max_tokens: int = 40, device: str = "auto",
                          work: str | Path | None = None, log: str | Path | None = None, save_every: int = 250,
                          stop_at: int | None = None, model_kwargs: dict | None = None):
    """`blend train inverter`: a prefix inverter for any open_clip model, trained on a caption corpus.

    Args:
        encoder: `MODEL/PRETRAINED`, `hf-hub:`, `local-dir:`, a preset name, or an encoder spec dict.
        corpus: a text file with one caption a line, or a list of captions.
        noise: CapDec noise, the expected norm added to each unit text embedding before it is decoded.
        lm: GPT-2 weights to start from (hub id or folder); "none" or unavailable -> a small GPT-2 from a config.
        lr: default 1e-4 on pretrained weights, 1e-3 from a config.
        stop_at: stop after this step with a checkpoint (a time slice); run again with the same args to resume.
    Returns:
        the trained `PrefixInverter`, saved in `out` with the encoder it reads recorded in inverter.json
        (None when `stop_at` ended the run early).
    """
    from ..blender import pick_device
    from ..decode_text import read_captions
    from ..encode import Encoder

    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    if isinstance(batch, bool) or int(batch) != batch or batch < 1:
        raise ValueError(f"batch must be a whole number >= 1, got {batch!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    spec = parse_encoder(encoder) if isinstance(encoder, str) else dict(encoder)
    captions = read_captions(corpus)
    out = Path(out)
    work = Path(work or out.parent / f".{out.name}-work")
    dev, dtype = pick_device(device)
    enc = Encoder.from_spec(spec, ".", dev, dtype)
    emb = embed_corpus(enc, captions, work)
    del enc  # only the embeddings are needed from here on
    index = {c: i for i, c in enumerate(captions)}
    seed_everything(seed)
    model, lm_desc = build_lm_inverter(lm, captions, emb.shape[1], prefix_len=prefix_len, max_tokens=max_tokens,
                                       encoder=spec, **(model_kwargs or {}))
    if lr is None:
        lr = 1e-3 if model.config.get("lm") == "config" else 1e-4
    print(f"inverter: {len(captions):,} captions, {emb.shape[1]}-d embeddings, language model {lm_desc}", flush=True)

    def sample_texts(rng, n):
        return [captions[rng.randrange(len(captions))] for _ in range(n)], None

    def encode_text(texts):
        return emb[torch.tensor([index[t] for t in texts])]

    return train_inverter(encode_text, sample_texts, emb.shape[1], model.tokenizer, out, steps=steps, batch=batch,
                          lr=lr, seed=seed, noise=noise, work=work, log=log, model=model, save_every=save_every,
                          warmup=min(100, max(1, steps // 10)), device=dev, stop_at=stop_at)
