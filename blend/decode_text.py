"""Text decoders behind one call: (N, D) unit embeddings -> list of sentences.

`PrefixInverter`: a `transformers` GPT-2 reading the embedding through a learned prefix (ClipCap,
Mokady et al. 2021), trained with noise on text embeddings (CapDec, Nukrai et al. 2022) so it reads
image embeddings too.
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
    def from_spec(cls, spec: dict, base_dir, device: torch.device, dtype: torch.dtype) -> "PrefixInverter":
        from .presets import resolve_source

        return cls.from_pretrained(resolve_source(spec["source"], base_dir), device=device)

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
        """Greedy decoding with a KV cache. emb (N, D) -> N sentences."""
        n, dev = emb.shape[0], emb.device
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        inputs = torch.cat([self.prefix(emb.to(self.lm.dtype)),
                            self.lm.transformer.wte(torch.full((n, 1), bos, device=dev))], 1)
        out, past = [], None
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        for _ in range(self.config["max_tokens"]):
            res = self.lm(inputs_embeds=inputs, past_key_values=past, use_cache=True)
            past = res.past_key_values
            nxt = res.logits[:, -1].argmax(-1)  # (N,)
            nxt = nxt.masked_fill(done, eos)
            out.append(nxt)
            done |= nxt == eos
            if done.all():
                break
            inputs = self.lm.transformer.wte(nxt[:, None])
        ids = torch.stack(out, 1).tolist()
        texts = []
        for row in ids:
            row = row[: row.index(eos)] if eos in row else row
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts
