"""Text decoders behind one call: (N, D) unit embeddings -> list of sentences.

`PrefixInverter`: a `transformers` GPT-2 reading the embedding through a learned prefix (ClipCap,
Mokady et al. 2021), trained with noise on text embeddings (CapDec, Nukrai et al. 2022) so it reads
image embeddings too. Optionally it reranks beam candidates by re-embedding them with the CLIP text
encoder (`Reranker`, in the spirit of vec2text, Morris et al. 2023) and first projects the embedding onto
a caption bank (DeCap, Li et al. 2023).
`Retrieval`: no training; the nearest caption of a bank embedded once by `blend index`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn


class PrefixMap(nn.Module):
    """(N, D) embedding -> (N, K, W) prefix vectors for the language model."""

    def __init__(self, embed_dim: int, width: int, prefix_len: int):
        super().__init__()
        self.prefix_len, self.width = prefix_len, width
        self.net = nn.Sequential(nn.Linear(embed_dim, width * prefix_len), nn.Tanh(),
                                 nn.Linear(width * prefix_len, width * prefix_len))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.net(emb).view(emb.shape[0], self.prefix_len, self.width)


class PrefixInverter(nn.Module):
    """A prefix map and a GPT-2; `folder` holds gpt2/ (save_pretrained), prefix.safetensors, inverter.json, tokenizer."""

    def __init__(self, lm, prefix: PrefixMap, tokenizer, config: dict):
        super().__init__()
        self.lm, self.prefix, self.tokenizer, self.config = lm, prefix, tokenizer, config
        self.reranker: Reranker | None = None  # set from the preset's `rerank` options
        self.bank: CaptionBank | None = None  # set from the preset's `project` options (DeCap)
        self.project_temperature = 0.01

    @classmethod
    def build(cls, tokenizer, embed_dim: int, width: int = 128, layers: int = 3, heads: int = 4,
              prefix_len: int = 4, max_tokens: int = 24, **extra) -> "PrefixInverter":
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=prefix_len + max_tokens + 2, n_embd=width,
                         n_layer=layers, n_head=heads, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        config = {"embed_dim": embed_dim, "width": width, "prefix_len": prefix_len, "max_tokens": max_tokens, **extra}
        return cls(GPT2LMHeadModel(cfg), PrefixMap(embed_dim, width, prefix_len), tokenizer, config)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> "PrefixInverter":
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, GPT2LMHeadModel

        folder = Path(folder)
        config = json.loads((folder / "inverter.json").read_text())
        tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        lm = GPT2LMHeadModel.from_pretrained(str(folder / "gpt2"))
        prefix = PrefixMap(config["embed_dim"], config["width"], config["prefix_len"])
        prefix.load_state_dict(load_file(str(folder / "prefix.safetensors")))
        return cls(lm, prefix, tokenizer, config).to(device).eval()

    @classmethod
    def from_spec(cls, spec: dict, base_dir, device: torch.device, dtype: torch.dtype,
                  encoder=None) -> "PrefixInverter":
        """Spec keys: `source`; optional `rerank` {candidates, fluency, encoder} and `project` {bank, temperature}.

        Reranking re-embeds candidates with `encoder` (the blender's own, so no second copy of CLIP is
        loaded) unless `rerank.encoder` names another.
        """
        from .encode import Encoder
        from .sources import resolve_source

        inv = cls.from_pretrained(resolve_source(spec["source"], base_dir), device=device)
        if spec.get("rerank"):
            opts = dict(spec["rerank"]) if isinstance(spec["rerank"], dict) else {}
            enc_spec = opts.pop("encoder", None)
            if enc_spec is None and encoder is None:
                enc_spec = inv.config.get("encoder")
            if enc_spec is None and encoder is None:
                raise ValueError("rerank needs the CLIP text encoder: give rerank.encoder in the preset "
                                 "(the inverter's inverter.json does not name one)")
            inv.reranker = Reranker(Encoder.from_spec(enc_spec, base_dir, device, dtype) if enc_spec else encoder,
                                    **opts)
        if spec.get("project"):
            inv.bank = CaptionBank.load(resolve_bank(spec["project"]["bank"], base_dir))
            inv.project_temperature = float(spec["project"].get("temperature", 0.01))
        return inv

    def save_pretrained(self, folder: str | Path):
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.lm.save_pretrained(str(folder / "gpt2"))
        self.tokenizer.save_pretrained(str(folder / "tokenizer"))
        save_file({k: v.contiguous() for k, v in self.prefix.state_dict().items()}, str(folder / "prefix.safetensors"))
        (folder / "inverter.json").write_text(json.dumps(self.config, indent=2))

    def loss(self, emb: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Teacher-forced cross-entropy of `texts` given embeddings (N, D)."""
        tok = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                             max_length=self.config["max_tokens"])
        ids, mask = tok.input_ids.to(emb.device), tok.attention_mask.to(emb.device)  # (N, T): [BOS] ... [EOS]
        prefix = self.prefix(emb)  # (N, K, W)
        tokens = self.lm.transformer.wte(ids)
        inputs = torch.cat([prefix, tokens], 1)
        attn = torch.cat([torch.ones(prefix.shape[:2], dtype=mask.dtype, device=mask.device), mask], 1)
        logits = self.lm(inputs_embeds=inputs, attention_mask=attn).logits  # (N, K + T, V)
        k = prefix.shape[1]
        pred = logits[:, k:-1]  # position of token i predicts token i + 1
        target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        return nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def generate(self, emb: torch.Tensor, num_beams: int = 1) -> list[str]:
        """emb (N, D) -> N sentences: greedy, the best of `num_beams` beams, or the reranked best candidate."""
        if self.bank is not None:
            emb = project_to_bank(emb, self.bank.embeddings.to(emb.device), self.project_temperature)
        if self.reranker is not None:
            return self.reranker(self, emb)
        if num_beams > 1:
            return [c[0] for c in self.candidates(emb, num_beams)[0]]
        return self.greedy(emb)

    @torch.no_grad()
    def candidates(self, emb: torch.Tensor, k: int) -> tuple[list[list[str]], torch.Tensor]:
        """Beam search: emb (N, D) -> k sentences per row, best first, and their (N, k) mean token log-probs."""
        n = emb.shape[0]
        inputs = self._start(emb)  # (N, K + 1, W)
        out = self.lm.generate(inputs_embeds=inputs, attention_mask=torch.ones(inputs.shape[:2], dtype=torch.long,
                                                                               device=inputs.device),
                               num_beams=k, num_return_sequences=k, do_sample=False, length_penalty=1.0,
                               max_new_tokens=self.config["max_tokens"], eos_token_id=self.tokenizer.eos_token_id,
                               pad_token_id=self.tokenizer.pad_token_id, output_scores=True,
                               return_dict_in_generate=True)
        texts = [t.strip() for t in self.tokenizer.batch_decode(out.sequences, skip_special_tokens=True)]
        return [texts[i * k:(i + 1) * k] for i in range(n)], out.sequences_scores.float().view(n, k).cpu()

    def _start(self, emb: torch.Tensor) -> torch.Tensor:
        bos = torch.full((emb.shape[0], 1), self.tokenizer.bos_token_id, device=emb.device)
        return torch.cat([self.prefix(emb.to(self.lm.dtype)), self.lm.transformer.wte(bos)], 1)

    @torch.no_grad()
    def greedy(self, emb: torch.Tensor) -> list[str]:
        """Greedy decoding with a KV cache. emb (N, D) -> N sentences."""
        eos = self.tokenizer.eos_token_id
        decode = gpt2_greedy if plain_gpt2(self.lm) else hf_greedy
        ids = decode(self.lm, self._start(emb), self.config["max_tokens"], eos).tolist()
        texts = []
        for row in ids:
            row = row[: row.index(eos)] if eos in row else row
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts


# ---------------------------------------------------------------------------------------- greedy decoding
# Both take (lm, inputs (N, P, W) embeddings to start from, steps, eos) and return (N, T) token ids, T <= steps,
# stopping once every row has produced EOS; a finished row is padded with EOS.

@torch.no_grad()
def hf_greedy(lm, inputs: torch.Tensor, steps: int, eos: int) -> torch.Tensor:
    """Greedy ids from any `transformers` causal LM, one `lm(...)` call per token with HF's KV cache."""
    out, past = [], None
    done = torch.zeros(inputs.shape[0], dtype=torch.bool, device=inputs.device)
    for _ in range(steps):
        res = lm(inputs_embeds=inputs, past_key_values=past, use_cache=True)
        past = res.past_key_values
        nxt = res.logits[:, -1].argmax(-1).masked_fill(done, eos)  # (N,)
        out.append(nxt)
        done |= nxt == eos
        if done.all():
            break
        inputs = lm.transformer.wte(nxt[:, None])
    return torch.stack(out, 1)


def plain_gpt2(lm) -> bool:
    """Whether `gpt2_greedy` computes exactly what `lm`'s own forward does, else `hf_greedy` is used: a
    GPT2LMHeadModel in eval (no dropout), SDPA attention scaled by 1/sqrt(head_dim), no cross-attention."""
    from transformers import GPT2LMHeadModel

    c = lm.config
    return (isinstance(lm, GPT2LMHeadModel) and not lm.training and c._attn_implementation == "sdpa"
            and c.scale_attn_weights and not c.scale_attn_by_inverse_layer_idx and not c.reorder_and_upcast_attn
            and not c.add_cross_attention)


@torch.no_grad()
def gpt2_greedy(lm, inputs: torch.Tensor, steps: int, eos: int) -> torch.Tensor:
    """Greedy ids from a plain GPT2LMHeadModel (see `plain_gpt2`): the same tokens as `hf_greedy`, written out.

    For a model as small as the shapes-mini inverter, most of a token's time in HF's generic forward goes to
    per-call work (cache objects, masks, output classes, decorators, module calls), not to the matmuls; this loop
    runs the same kernels on the model's own weights, in the same order, with keys and values preallocated.
    """
    t = lm.transformer
    n, p, w = inputs.shape
    heads = lm.config.n_head
    hs = w // heads
    kv = inputs.new_empty(len(t.h), 2, n, heads, p + steps - 1, hs)  # (L, key/value, N, nh, T, hs)
    x = inputs + t.wpe.weight[:p]  # (N, P, W)
    out, end = [], 0
    done = torch.zeros(n, dtype=torch.bool, device=inputs.device)
    for _ in range(steps):
        q_len = x.shape[1]
        start, end = end, end + q_len
        for block, cache in zip(t.h, kv):
            attn, mlp = block.attn, block.mlp
            qkv = _conv1d(attn.c_attn, _norm(block.ln_1, x)).view(n, q_len, 3, heads, hs).permute(2, 0, 3, 1, 4)
            cache[:, :, :, start:end] = qkv[1:]  # (2, N, nh, Q, hs)
            a = nn.functional.scaled_dot_product_attention(qkv[0], cache[0, :, :, :end], cache[1, :, :, :end],
                                                           scale=hs ** -0.5, is_causal=q_len > 1)  # (N, nh, Q, hs)
            x = x + _conv1d(attn.c_proj, a.transpose(1, 2).reshape(n, q_len, w))
            x = x + _conv1d(mlp.c_proj, mlp.act(_conv1d(mlp.c_fc, _norm(block.ln_2, x))))
        logits = nn.functional.linear(_norm(t.ln_f, x), lm.lm_head.weight)  # (N, Q, V)
        nxt = logits[:, -1].argmax(-1).masked_fill(done, eos)  # (N,)
        out.append(nxt)
        done |= nxt == eos
        if done.all():
            break
        x = t.wte(nxt[:, None]) + t.wpe.weight[end]  # (N, 1, W)
    return torch.stack(out, 1)


def _conv1d(m, x: torch.Tensor) -> torch.Tensor:
    """GPT-2's Conv1D (a linear layer whose weight is (in, out)), as its own forward computes it."""
    return torch.addmm(m.bias, x.view(-1, x.shape[-1]), m.weight).view(*x.shape[:-1], -1)


def _norm(m: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return nn.functional.layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)


# ---------------------------------------------------------------------------------------- rerank, bank, retrieval

@torch.no_grad()
def embed_texts(encoder, texts: list[str], batch: int = 256) -> torch.Tensor:
    """Any strings -> (N, D) unit CLIP text embeddings; too-long texts are cut at the context length, not refused."""
    out = []
    for i in range(0, len(texts), batch):
        tokens = encoder.tokenizer(texts[i:i + batch]).to(encoder.device)
        out.append(nn.functional.normalize(encoder.model.encode_text(tokens).float(), dim=-1).cpu())
    return torch.cat(out)


class Reranker:
    """Choose among beam candidates by re-embedding them: cos(CLIP_text(candidate), target) + fluency * mean log-prob.

    The inverter proposes; the CLIP text encoder, the very model whose space we invert, disposes (the check
    vec2text iterates on, Morris et al. 2023, done once). `fluency` keeps a fluent sentence ahead of a
    garbled one that happens to embed close: CLIP text embeddings barely see word order, so with fluency 0
    "a blue square on a purple background" and its role-swapped twin tie (benchmarks/rerank.py: fluency 0
    loses 4-33 points of exact match on shapes-mini, 0.3 gains 2 points on noisy embeddings, ties elsewhere).
    """

    def __init__(self, encoder, candidates: int = 8, fluency: float = 0.3):
        if int(candidates) != candidates or candidates < 1:
            raise ValueError(f"rerank candidates must be a whole number >= 1, got {candidates!r}")
        self.encoder, self.k, self.fluency = encoder, int(candidates), float(fluency)

    def scores(self, texts: list[list[str]], logprobs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N, k) scores of each row's candidates against its target embedding (N, D)."""
        n, k = logprobs.shape
        flat = [t for row in texts for t in row]
        cos = (embed_texts(self.encoder, [t or " " for t in flat]).view(n, k, -1)
               * nn.functional.normalize(target.float().cpu(), dim=-1)[:, None]).sum(-1)
        empty = torch.tensor([[not t for t in row] for row in texts])
        return (cos + self.fluency * logprobs).masked_fill(empty, float("-inf"))

    def __call__(self, inverter: "PrefixInverter", emb: torch.Tensor) -> list[str]:
        texts, logprobs = inverter.candidates(emb, self.k)
        best = self.scores(texts, logprobs, emb).argmax(-1).tolist()
        return [row[j] for row, j in zip(texts, best)]


def project_to_bank(emb: torch.Tensor, bank: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """DeCap's projection (Li et al. 2023): softmax(emb . bank / T)-weighted mean of the bank, normalized.

    emb (N, D), bank (M, D) unit -> (N, D) unit: a point inside the text distribution the decoder was trained on.
    """
    w = torch.softmax(emb.float() @ bank.float().T / temperature, dim=-1)  # (N, M)
    return nn.functional.normalize(w @ bank.float(), dim=-1).to(emb.dtype)


class CaptionBank:
    """Captions and their unit CLIP text embeddings, in one safetensors file (embeddings fp16, captions UTF-8)."""

    def __init__(self, captions: list[str], embeddings: torch.Tensor, encoder: dict | None = None):
        self.captions, self.embeddings, self.encoder = captions, embeddings.float(), encoder

    @classmethod
    def build(cls, encoder, captions: list[str], batch: int = 256, progress: bool = False) -> "CaptionBank":
        captions = read_captions(captions)
        chunks = range(0, len(captions), batch)
        if progress:
            from tqdm.auto import tqdm
            chunks = tqdm(chunks, desc="index", unit="batch")
        emb = torch.cat([embed_texts(encoder, captions[i:i + batch]) for i in chunks])
        return cls(captions, emb, {"model": encoder.name})

    def save(self, path: str | Path):
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = torch.frombuffer(bytearray("\n".join(self.captions).encode("utf-8")), dtype=torch.uint8)
        save_file({"embeddings": self.embeddings.half().contiguous(), "captions": text.clone()}, str(path),
                  metadata={"encoder": json.dumps(self.encoder), "count": str(len(self.captions))})

    @classmethod
    def load(cls, path: str | Path) -> "CaptionBank":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            emb, text = f.get_tensor("embeddings"), f.get_tensor("captions")
        captions = bytes(text.tolist()).decode("utf-8").split("\n")
        if len(captions) != emb.shape[0]:
            raise ValueError(f"caption bank {path} is damaged: {len(captions)} captions, {emb.shape[0]} embeddings")
        return cls(captions, emb, json.loads(meta.get("encoder", "null")))


def read_captions(captions) -> list[str]:
    """A list of captions, or a path to a text file with one caption a line; blank lines are skipped."""
    if isinstance(captions, (str, Path)):
        path = Path(captions)
        if not path.is_file():
            raise ValueError(f"captions: no file at {path}")
        captions = path.read_text(encoding="utf-8").splitlines()
    captions = [" ".join(c.split()) for c in captions]
    captions = [c for c in captions if c]
    if not captions:
        raise ValueError("captions is empty: give at least one non-blank caption")
    return captions


def resolve_bank(source: str, base_dir) -> Path:
    from .sources import optional_file

    path = optional_file(source, base_dir)
    if path is None:
        raise ValueError(f"caption bank {source!r} does not exist yet: build it with "
                         f"`blend index CAPTIONS.txt --preset PRESET --out <that path>`")
    return path


def cache_dir() -> Path:
    """Where blend writes what it builds on first use when the preset's folder is read-only."""
    import os

    return Path(os.environ.get("BLEND_HOME", Path.home() / ".config" / "blend")) / "cache"


def first_use_bank(spec: dict, base_dir, encoder) -> "CaptionBank":
    """The preset's caption bank: its file, a cached build, or (first use) embedded now from `captions`, once.

    The build shows a progress bar and is written where the preset names it, or to `cache_dir()` when that
    folder is read-only, so the next load reads it back.
    """
    from .sources import local_file_target, optional_file

    found = optional_file(spec["source"], base_dir)
    target = local_file_target(spec["source"], base_dir)
    cached = cache_dir() / target.name if target is not None else None
    if found is None and cached is not None and cached.is_file():
        found = cached
    if found is not None:
        return CaptionBank.load(found)
    captions = spec.get("captions")
    if not captions or encoder is None or target is None:
        return CaptionBank.load(resolve_bank(spec["source"], base_dir))  # raises, naming `blend index`
    src = optional_file(captions, base_dir)
    if src is None:
        raise ValueError(f"text_decoder.captions {captions!r} does not exist: the caption list ships in models/captions/")
    import sys

    print(f"building the caption bank for retrieval once ({src.name}); it is cached at {target}", file=sys.stderr)
    bank = CaptionBank.build(encoder, src, progress=True)
    try:
        bank.save(target)
    except OSError:
        bank.save(cached)
    return bank


class Retrieval:
    """A text decoder that needs no training: the bank caption nearest each embedding (cosine).

    With `project` (DeCap), the embedding is first replaced by its softmax-weighted projection onto the bank,
    which votes among near neighbours instead of trusting the single nearest one.
    """

    def __init__(self, bank: CaptionBank, project: bool = False, temperature: float = 0.01, device="cpu"):
        self.bank, self.project, self.temperature = bank, project, float(temperature)
        self.embed_dim = int(bank.embeddings.shape[1])
        self._emb = bank.embeddings.to(device)

    @classmethod
    def from_spec(cls, spec: dict, base_dir, device: torch.device, dtype: torch.dtype, encoder=None) -> "Retrieval":
        """Spec keys: `source` (the bank file); `captions` (a caption list to build it from on first use);
        `options` {project, temperature}."""
        opts = spec.get("options", {})
        return cls(first_use_bank(spec, base_dir, encoder), bool(opts.get("project", False)),
                   opts.get("temperature", 0.01), device)

    @torch.no_grad()
    def generate(self, emb: torch.Tensor, chunk: int = 65536) -> list[str]:
        """emb (N, D) -> the N nearest captions."""
        emb = nn.functional.normalize(emb.float().to(self._emb.device), dim=-1)
        if self.project:
            emb = project_to_bank(emb, self._emb, self.temperature)
        best_val = torch.full((emb.shape[0],), float("-inf"), device=emb.device)
        best_idx = torch.zeros(emb.shape[0], dtype=torch.long, device=emb.device)
        for i in range(0, self._emb.shape[0], chunk):  # (N, chunk) at a time: banks can hold millions
            val, idx = (emb @ self._emb[i:i + chunk].T).max(-1)
            better = val > best_val
            best_val, best_idx = torch.where(better, val, best_val), torch.where(better, idx + i, best_idx)
        return [self.bank.captions[i] for i in best_idx.tolist()]
