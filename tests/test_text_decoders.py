"""Retrieval over a caption bank, DeCap projection, and reranking inverter candidates, on the shipped shapes-mini CLIP."""
from __future__ import annotations

import json

import pytest
import torch

import blend
from blend import world
from blend.decode_text import CaptionBank, PrefixInverter, Reranker, Retrieval, embed_texts, project_to_bank
from blend.encode import Encoder
from blend.presets import MODELS_DIR

torch.set_num_threads(1)
CLIP_DIR = MODELS_DIR / "shapes-mini" / "clip"
INVERTER_DIR = MODELS_DIR / "shapes-mini" / "inverter"
CAPTIONS = [world.caption(world.Scene(*c)) for c in world.all_combinations()]


@pytest.fixture(scope="module")
def enc():
    return Encoder.from_spec({"model": f"local-dir:{CLIP_DIR}"}, ".", torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def inverter():
    if not (INVERTER_DIR / "inverter.json").is_file():
        pytest.skip("the shapes-mini inverter is not trained yet")
    return PrefixInverter.from_pretrained(INVERTER_DIR)


def test_retrieval_names_what_each_image_shows(enc):
    scenes = world.sample_scenes(60, seed=31)
    dec = Retrieval(CaptionBank.build(enc, CAPTIONS))
    out = dec.generate(enc.encode_images([world.render(s) for s in scenes]))
    assert sum(o == world.caption(s) for o, s in zip(out, scenes)) / len(scenes) >= 0.9


def test_caption_bank_round_trips_through_safetensors(enc, tmp_path):
    captions = ["a red circle", "café au lait", "日本の猫", "a  blue   square "]
    bank = CaptionBank(captions, embed_texts(enc, captions), {"model": "x"})
    bank.save(tmp_path / "bank.safetensors")
    back = CaptionBank.load(tmp_path / "bank.safetensors")
    assert back.captions == captions and back.encoder == {"model": "x"}
    assert torch.allclose(back.embeddings, bank.embeddings, atol=2e-3)  # stored in fp16


def test_index_command_then_retrieval_through_a_preset(enc, tmp_path):
    from blend.cli import main

    preset = {"name": "tiny-retrieval", "encoder": {"type": "open_clip", "model": f"local-dir:{CLIP_DIR}"},
              "image_decoder": {"type": "mini-latent-unclip", "source": "local-dir:unused"},
              "text_decoder": {"type": "retrieval", "source": "local-dir:bank.safetensors"}}
    (tmp_path / "preset.json").write_text(json.dumps(preset))
    b = blend.load(str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="blend index"):
        b.decode_texts(b.encode_texts(["a red circle"]))
    (tmp_path / "captions.txt").write_text("\n".join(CAPTIONS + ["", "   "]))
    assert main(["index", str(tmp_path / "captions.txt"), "--preset", str(tmp_path), "--device", "cpu"]) == 0
    b = blend.load(str(tmp_path), device="cpu")
    scenes = world.sample_scenes(5, seed=2)
    assert b.decode_texts(b.encode_texts([world.caption(s) for s in scenes])) == [world.caption(s) for s in scenes]
    assert len(CaptionBank.load(tmp_path / "bank.safetensors").captions) == len(CAPTIONS)  # blank lines skipped


def test_decap_projection_lies_in_the_bank(enc):
    bank = embed_texts(enc, CAPTIONS[:20])
    q = torch.nn.functional.normalize(torch.randn(3, bank.shape[1], generator=torch.Generator().manual_seed(0)), dim=-1)
    # T -> 0: the nearest caption (random queries sit ~1e-5 from a tie among captions that differ in one attribute)
    sharp = project_to_bank(q, bank, temperature=1e-6)
    assert torch.allclose(sharp, bank[(q @ bank.T).argmax(-1)], atol=1e-4)
    flat = project_to_bank(q, bank, temperature=1e3)
    assert torch.allclose(flat, torch.nn.functional.normalize(bank.mean(0), dim=-1).expand(3, -1), atol=1e-3)
    assert torch.allclose(project_to_bank(q, bank, 0.05).norm(dim=-1), torch.ones(3))


def test_beam_candidates_come_best_first(inverter, enc):
    emb = enc.encode_texts([world.caption(s) for s in world.sample_scenes(4, seed=5)])
    texts, logprobs = inverter.candidates(emb, 5)
    assert [len(t) for t in texts] == [5] * 4
    assert torch.all(logprobs[:, :-1] >= logprobs[:, 1:] - 1e-6)


def test_rerank_picks_the_candidate_clip_scores_highest(inverter, enc):
    scenes = world.sample_scenes(12, seed=8)
    img = enc.encode_images([world.render(s) for s in scenes])
    g = torch.Generator().manual_seed(0)
    noisy = torch.nn.functional.normalize(img + 0.08 * torch.randn(img.shape, generator=g), dim=-1)
    texts, logprobs = inverter.candidates(noisy, 6)
    for fluency in (0.0, 0.5):
        inverter.reranker = Reranker(enc, 6, fluency)
        try:
            chosen = inverter.generate(noisy)
        finally:
            inverter.reranker = None
        for row, lp, q, pick in zip(texts, logprobs, noisy, chosen):
            score = embed_texts(enc, [t or " " for t in row]) @ q + fluency * lp  # independent recomputation
            assert pick in row
            # the best score, up to batch rounding: candidates CLIP reads alike (they differ in a comma, which
            # CLIP's tokenizer drops and the inverter's keeps) tie, and either may be picked
            assert float(score[row.index(pick)]) >= float(score.max()) - 1e-5, (pick, row)


def test_rerank_from_a_preset_spec(inverter, enc):
    spec = {"source": f"local-dir:{INVERTER_DIR}", "rerank": {"candidates": 4,
                                                                "encoder": {"model": f"local-dir:{CLIP_DIR}"}}}
    inv = PrefixInverter.from_spec(spec, ".", torch.device("cpu"), torch.float32)
    assert inv.reranker.k == 4 and inv.reranker.fluency == pytest.approx(0.3)
    scenes = world.sample_scenes(6, seed=11)
    assert inv.generate(enc.encode_texts([world.caption(s) for s in scenes])) == [world.caption(s) for s in scenes]
    with pytest.raises(ValueError, match="rerank needs"):
        PrefixInverter.from_spec({"source": f"local-dir:{INVERTER_DIR}", "rerank": {"candidates": 4}}, ".",
                                 torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="candidates"):
        Reranker(enc, 0)


def test_rerank_reuses_the_blenders_own_encoder(tmp_path):
    """No second CLIP is loaded for reranking when the preset names none: the blender hands over its own."""
    from pathlib import Path

    from blend.presets import get_preset

    spec = {k: v for k, v in get_preset("shapes-mini").items() if not k.startswith("_")}
    base = Path(get_preset("shapes-mini")["_dir"])
    for part in ("encoder", "image_decoder", "text_decoder"):
        key = "model" if part == "encoder" else "source"
        spec[part] = {**spec[part], key: "local-dir:" + str((base / spec[part][key].split(":", 1)[1]).resolve())}
    spec["text_decoder"]["rerank"] = {"candidates": 4}
    (tmp_path / "preset.json").write_text(json.dumps(spec))
    b = blend.load(str(tmp_path), device="cpu")
    assert b.text_decoder.reranker.encoder is b.encoder
    assert b.decode_texts(b.encode_texts(["a small red circle on a blue background"])) == [
        "a small red circle on a blue background"]
