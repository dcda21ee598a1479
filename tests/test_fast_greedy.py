"""The hand-written GPT-2 greedy loop (`gpt2_greedy`) gives HF's tokens (`hf_greedy`), in batches and row by row."""
from __future__ import annotations

import random

import pytest
import torch

from blend import ops, world
from blend.decode_text import PrefixInverter, gpt2_greedy, hf_greedy, plain_gpt2

torch.set_num_threads(1)  # a sentence's ops are tiny: a second thread only adds a wait at each kernel


def cut(ids: torch.Tensor, eos: int) -> list[list[int]]:
    """(N, T) ids -> each row up to and including its first EOS (a batch pads finished rows with EOS)."""
    return [row[:row.index(eos) + 1] if eos in row else row for row in ids.tolist()]


def assert_same_tokens(lm, inputs: torch.Tensor, steps: int, eos: int, batch: int):
    """`gpt2_greedy` == `hf_greedy` on every batch of `inputs` (N, P, W), and on every row decoded alone."""
    rows = []
    for i in range(0, inputs.shape[0], batch):
        ref = hf_greedy(lm, inputs[i:i + batch], steps, eos)
        assert torch.equal(gpt2_greedy(lm, inputs[i:i + batch], steps, eos), ref)
        rows += cut(ref, eos)
    alone = [cut(gpt2_greedy(lm, x[None], steps, eos), eos)[0] for x in inputs]
    assert alone == rows


def shipped_embeddings(mini) -> torch.Tensor:
    """340 unit embeddings: captions, partial descriptions, images, and image-text blends (lerp and slerp)."""
    rng = random.Random(7)
    scenes = world.sample_scenes(100, seed=41)
    captions = mini.encode_texts([world.caption(s) for s in scenes])
    partials = mini.encode_texts([world.random_partial(rng, s)[0] for s in world.sample_scenes(100, seed=42)])
    images = mini.encode_images([world.render(s) for s in scenes[:80]])
    weights = [rng.uniform(0.2, 0.8) for _ in range(60)]
    blends = torch.stack([ops.mix([images[i], captions[(7 * i + 3) % 100]], [w, 1 - w], ("lerp", "slerp")[i % 2])
                          for i, w in enumerate(weights)])
    return torch.cat([captions, partials, images, blends])


def test_same_tokens_as_hf_on_the_shipped_inverter(mini):
    inv = mini.text_decoder
    if not isinstance(inv, PrefixInverter):
        pytest.skip("the preset's text decoder is not a prefix inverter")
    assert plain_gpt2(inv.lm)
    emb = shipped_embeddings(mini)
    assert emb.shape[0] >= 300
    with torch.no_grad():
        inputs = inv._start(emb)  # (N, K + 1, W)
    assert_same_tokens(inv.lm, inputs, inv.config["max_tokens"], inv.tokenizer.eos_token_id, batch=64)


def test_same_logits_and_tokens_as_hf_on_a_tiny_random_gpt2(monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)  # sizes unlike the shipped inverter's; weights large enough that rows end at varied steps
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=48, n_embd=48, n_layer=2, n_head=3, n_inner=80,
                                    initializer_range=0.2, bos_token_id=0, eos_token_id=1)).eval()
    assert plain_gpt2(lm)
    inputs = torch.randn(24, 3, 48, generator=torch.Generator().manual_seed(0))
    eos = int(hf_greedy(lm, inputs[:1], 1, -1)[0, 0])  # row 0's first token
    assert_same_tokens(lm, inputs, 40, eos, batch=8)

    logits, linear = [], torch.nn.functional.linear

    def spy(x, weight, bias=None):  # both loops compute the logits with F.linear on lm_head's weight
        out = linear(x, weight, bias)
        if weight is lm.lm_head.weight:
            logits.append(out[:, -1])
        return out

    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    hf_greedy(lm, inputs, 40, eos)
    hf = logits.copy()
    logits.clear()
    gpt2_greedy(lm, inputs, 40, eos)
    assert len(logits) == len(hf) and all(torch.equal(a, b) for a, b in zip(logits, hf))  # bit for bit


@pytest.mark.parametrize("change", [{"attn_implementation": "eager"}, {"add_cross_attention": True},
                                    {"reorder_and_upcast_attn": True}, {"scale_attn_by_inverse_layer_idx": True},
                                    {"scale_attn_weights": False}])
def test_other_gpt2_configurations_keep_hfs_loop(change):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = dict(vocab_size=40, n_positions=40, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=1)
    assert plain_gpt2(GPT2LMHeadModel(GPT2Config(**cfg)).eval())
    assert not plain_gpt2(GPT2LMHeadModel(GPT2Config(**cfg)).train())
    assert not plain_gpt2(GPT2LMHeadModel(GPT2Config(**cfg, **change)).eval())
