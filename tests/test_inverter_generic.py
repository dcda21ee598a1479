"""`blend train inverter`: a prefix inverter for any open_clip model, on a tiny open_clip and tiny GPT-2, offline."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from blend import world
from blend.decode_text import PrefixInverter, embed_texts, read_captions
from blend.encode import Encoder
from blend.train.inverter import parse_encoder, train_corpus_inverter

import tiny

torch.set_num_threads(1)
SMALL = {"width": 32, "layers": 1, "heads": 2}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inv")
    clip = tiny.tiny_open_clip(tmp / "clip")
    scenes = world.sample_scenes(24, seed=3)
    corpus = tmp / "captions.txt"
    corpus.write_text("\n".join(world.caption(s) for s in scenes) + "\n\n")
    return tmp, clip, corpus


def corpus_loss(model: PrefixInverter, clip, corpus) -> float:
    captions = read_captions(corpus)
    enc = Encoder.from_spec({"model": f"local-dir:{clip}"}, ".", torch.device("cpu"), torch.float32)
    model.eval()
    with torch.no_grad():
        return model.loss(embed_texts(enc, captions), captions).item()


def train(setup, out, **kw):
    tmp, clip, corpus = setup
    args = dict(steps=40, batch=16, lm="none", prefix_len=2, max_tokens=16, device="cpu", model_kwargs=SMALL,
                noise=0.1, seed=0)
    args.update(kw)
    return train_corpus_inverter(f"local-dir:{clip}", corpus, out, **args)


def test_loss_falls_and_the_bundle_reloads(setup):
    tmp, clip, corpus = setup
    untrained = train(setup, tmp / "untrained", steps=1, lr=1e-12)  # same seed, same build: the starting point
    model = train(setup, tmp / "trained", lr=3e-3)
    before, after = corpus_loss(untrained, clip, corpus), corpus_loss(model, clip, corpus)
    assert after < 0.6 * before, (before, after)
    cfg = json.loads((tmp / "trained" / "inverter.json").read_text())
    assert cfg["encoder"]["model"] == f"local-dir:{clip.resolve()}" and cfg["lm"] == "config"
    again = PrefixInverter.from_pretrained(tmp / "trained")
    emb = torch.nn.functional.normalize(torch.randn(2, tiny.DIM), dim=-1)
    assert again.generate(emb) == model.generate(emb)


def test_resuming_gives_the_same_weights_as_one_run(setup):
    tmp = setup[0]
    whole = train(setup, tmp / "whole", steps=12, save_every=100)
    assert train(setup, tmp / "sliced", steps=12, save_every=100, stop_at=5) is None
    assert not (tmp / "sliced" / "inverter.json").exists()
    resumed = train(setup, tmp / "sliced", steps=12, save_every=100)
    for (k, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_gpt2_weights_from_a_folder_are_used(setup):
    tmp = setup[0]
    lm_dir = tiny.tiny_gpt2(tmp / "gpt2-tiny")
    model = train(setup, tmp / "on-gpt2", steps=6, lm=str(lm_dir), model_kwargs=None)
    assert model.config["lm"] == str(lm_dir) and model.config["width"] == 32
    eos = model.tokenizer.eos_token_id
    ids = model.tokenizer("a red circle").input_ids
    assert ids[0] == eos and ids[-1] == eos  # framed as <bos> text <eos> (GPT-2 uses one token for both)
    back = PrefixInverter.from_pretrained(tmp / "on-gpt2")
    assert back.tokenizer("a red circle").input_ids == ids
    texts = back.generate(torch.nn.functional.normalize(torch.randn(2, tiny.DIM), dim=-1))
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_missing_gpt2_weights_fall_back_to_a_config(setup):
    tmp = setup[0]
    with pytest.warns(UserWarning, match="could not be loaded"):
        model = train(setup, tmp / "fallback", steps=2, lm=str(tmp / "no-such-gpt2"))
    assert model.config["lm"] == "config"


def test_cli_trains_an_inverter(setup):
    from blend.cli import main

    tmp, clip, corpus = setup
    out = tmp / "cli-inverter"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["train", "inverter", "--encoder", f"local-dir:{clip}", "--corpus", str(corpus), "--out", str(out),
                     "--lm", "none", "--steps", "3", "--batch", "4", "--device", "cpu", "--prefix-len", "2",
                     "--max-tokens", "16"])
    assert code == 0 and (out / "prefix.safetensors").is_file()
    assert main(["train", "inverter", "--corpus", str(corpus), "--out", str(out)]) == 2  # --encoder missing


def test_encoder_names_are_checked():
    assert parse_encoder("ViT-L-14/openai") == {"type": "open_clip", "model": "ViT-L-14", "pretrained": "openai"}
    assert parse_encoder("hf-hub:org/name")["model"] == "hf-hub:org/name"
    assert parse_encoder("shapes-mini")["model"].startswith("local-dir:/")
    with pytest.raises(ValueError, match="--encoder"):
        parse_encoder("ViT-Q-99/openai")
    with pytest.raises(ValueError, match="no pretrained weights"):
        parse_encoder("ViT-L-14/not-a-tag")
