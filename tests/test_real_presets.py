"""Real-model wrappers driven end to end through blend.load(folder) with tiny random-weight pipelines of the real
classes (StableUnCLIPImg2ImgPipeline, KandinskyV22Pipeline + KandinskyV22PriorPipeline), 2 steps, offline."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import blend
from blend.decoders.common import norm_from_moments, probe_images
from blend.decoders.kandinsky import Kandinsky22
from blend.decoders.stable_unclip import StableUnCLIP

import tiny

torch.set_num_threads(1)


def px(img) -> np.ndarray:
    return np.asarray(img, dtype=np.float32)


def differ(a, b) -> float:
    """Mean absolute pixel difference (0..255) between two PIL images."""
    return float(np.abs(px(a) - px(b)).mean())


@pytest.fixture(scope="module")
def unclip(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unclip")
    return tiny.save_bundle(tmp / "bundle", tiny.UNCLIP_PRESET, tiny.unclip_pipeline(tmp)), tmp


@pytest.fixture(scope="module")
def kandinsky(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kandinsky")
    prior = tiny.kandinsky_prior_pipeline(tmp)
    return tiny.save_bundle(tmp / "bundle", tiny.KANDINSKY_PRESET, tiny.kandinsky_pipeline(), prior), prior


@pytest.fixture(scope="module")
def ub(unclip):
    return blend.load(str(unclip[0]), device="cpu")


@pytest.fixture(scope="module")
def kb(kandinsky):
    return blend.load(f"local-dir:{kandinsky[0]}", device="cpu")


# ---------------------------------------------------------------------------------------- Stable unCLIP

def test_unclip_mix_decodes_deterministically_at_preset_size(ub):
    m = blend.mix(ub.encode_images(tiny.probe_images(2)), [1, 1])
    a, b = ub.decode_images(m, seed=3)[0], ub.decode_images(m, seed=3)[0]
    assert a.size == (64, 64)
    assert differ(a, b) == 0
    assert differ(a, ub.decode_images(m, seed=4)[0]) > 1  # the seed is what changes the picture
    assert ub.decode_images(m, seed=3, height=32, width=48)[0].size == (48, 32)


def test_unclip_rows_share_the_start_noise(ub):
    e = ub.encode_images(tiny.probe_images(2))
    alone = ub.decode_images(e[0], seed=1)[0]
    batched = ub.decode_images(e, seed=1)
    assert differ(alone, batched[0]) < 1.0  # same noise: only the (tiny) noise_level-0 embedding noise differs
    assert differ(batched[0], batched[1]) > 1  # different meanings, different pictures


def test_unclip_noise_level_changes_the_output(ub):
    e = ub.encode_images(tiny.probe_images(1))
    assert differ(ub.decode_images(e, seed=0)[0], ub.decode_images(e, seed=0, noise_level=600)[0]) > 1


def test_unclip_restores_the_scale_from_the_normalizer_statistics(ub, monkeypatch):
    dec = ub.image_decoder
    stats = dec.pipe.image_normalizer
    assert dec.embed_norm_source == "image_normalizer statistics"
    assert dec.embed_norm == pytest.approx(norm_from_moments(stats.mean, stats.std))
    seen = {}
    real_call = type(dec.pipe).__call__

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(type(dec.pipe), "__call__", spy)
    e = ub.encode_images(tiny.probe_images(2))
    ub.decode_images(e, seed=0, noise_level=7)
    assert torch.allclose(seen["image_embeds"].norm(dim=-1), torch.full((2,), dec.embed_norm), rtol=1e-4)
    assert seen["noise_level"] == 7 and seen["num_inference_steps"] == 2


def test_unclip_identity_normalizer_falls_back_to_probe_measurement(tmp_path):
    pipe = tiny.unclip_pipeline(tmp_path, normalizer="identity")
    dec = StableUnCLIP.from_pipeline(pipe, tiny.UNCLIP_PRESET["image_decoder"], tmp_path, torch.device("cpu"))
    assert dec.embed_norm_source.startswith("probe images")
    with torch.no_grad():
        pixels = pipe.feature_extractor(images=probe_images(), return_tensors="pt").pixel_values
        expected = pipe.image_encoder(pixels).image_embeds.norm(dim=-1).mean()
    assert dec.embed_norm == pytest.approx(float(expected), rel=1e-4)
    fixed = StableUnCLIP.from_pipeline(pipe, {**tiny.UNCLIP_PRESET["image_decoder"], "embed_norm": 12.5}, tmp_path,
                                       torch.device("cpu"))
    assert (fixed.embed_norm, fixed.embed_norm_source) == (12.5, "preset")


def test_unclip_uses_sdpa_attention(ub):
    names = {type(p).__name__ for p in ub.image_decoder.pipe.unet.attn_processors.values()}
    assert names == {"AttnProcessor2_0"}


def test_unclip_options_are_checked_by_name(ub):
    e = ub.encode_images(tiny.probe_images(1))
    for kwargs, name in (({"noise_level": 1000}, "noise_level"), ({"noise_level": -1}, "noise_level"),
                         ({"height": 30}, "height"), ({"guidance_scale": "big"}, "guidance_scale"),
                         ({"steps": 0}, "steps")):
        with pytest.raises(ValueError, match=name):
            ub.decode_images(e, **kwargs)


def test_bundle_round_trip_gives_the_same_images(unclip, ub):
    """The in-memory pipeline, wrapped as the preset says, and the bundle saved and loaded by local-dir: agree."""
    folder, tmp = unclip
    direct = StableUnCLIP.from_pipeline(tiny.unclip_pipeline(tmp), tiny.UNCLIP_PRESET["image_decoder"], folder,
                                        torch.device("cpu"))
    e = ub.encode_images(tiny.probe_images(2))
    for a, b in zip(direct(e, seed=5, steps=2), ub.decode_images(e, seed=5)):
        assert differ(a, b) == 0


def test_texts_need_a_measured_gap_then_cross_it(unclip, tmp_path):
    from blend.calibrate import calibrate

    folder = tmp_path / "bundle"
    shutil.copytree(unclip[0], folder)
    b = blend.load(str(folder), device="cpu")
    with pytest.raises(ValueError, match="blend calibrate"):
        b.encode_texts(["a red circle"])  # never silently feed raw text embeddings to an image-only decoder
    images = tiny.probe_images(6)
    captions = ["a red circle", "a blue square", "a green triangle", "a white circle", "a black square", "a dot"]
    written = calibrate(b, images, captions, paired=True)
    assert written == folder / "stats.safetensors"

    b = blend.load(str(folder), device="cpu")
    raw, mapped = b.encode_texts(captions, raw=True), b.encode_texts(captions)
    centre = b.encode_images(images).mean(0)
    assert (mapped @ centre).mean() > (raw @ centre).mean()  # the shift moves texts toward where images are
    assert b.image_decoder.embed_norm_source == "measured (stats file)"
    img = b.encode_images(images)
    from blend.calibrate import raw_image_embeddings

    measured = raw_image_embeddings(b.encoder, images).norm(dim=-1).mean()
    assert b.image_decoder.embed_norm == pytest.approx(float(measured), rel=1e-4)
    m = blend.mix(torch.cat([img[:1], mapped[:1]]), [1, 1])
    assert b.decode_images(m, seed=0)[0].size == (64, 64)

    preset = json.loads((folder / "preset.json").read_text())
    preset["gap"] = {"type": "linear", "source": "local-dir:stats.safetensors"}
    (folder / "preset.json").write_text(json.dumps(preset))
    lin = blend.load(str(folder), device="cpu")
    fitted = lin.encode_texts(captions)
    assert ((fitted * img).sum(-1)).mean() > ((raw * img).sum(-1)).mean()  # pairs come closer under the fit


# ---------------------------------------------------------------------------------------- Kandinsky 2.2

def test_kandinsky_mix_decodes_deterministically(kb):
    m = blend.mix(kb.encode_images(tiny.probe_images(2)), [1, 1])
    a, b = kb.decode_images(m, seed=2)[0], kb.decode_images(m, seed=2)[0]
    assert a.size == (64, 64) and differ(a, b) == 0
    assert differ(a, kb.decode_images(m, seed=9)[0]) > 1


def test_kandinsky_negative_embeddings_change_the_output(kb, kandinsky):
    dec = kb.image_decoder
    prior = kandinsky[1]
    # the default negative is the library's: the prior's embedding of a blank input
    assert torch.allclose(dec.negative_image_embeds, prior.get_zero_embed(1)[0].float(), atol=1e-5)
    e = kb.encode_images(tiny.probe_images(2))
    base = kb.decode_images(e[0], seed=0)[0]
    assert differ(base, kb.decode_images(e[0], seed=0, negative_image_embeds="zeros")[0]) > 1
    assert differ(base, kb.decode_images(e[0], seed=0, negative_image_embeds=e[1])[0]) > 1
    with pytest.raises(ValueError, match="negative_image_embeds"):
        kb.decode_images(e[0], negative_image_embeds=torch.ones(3, 5))
    with pytest.raises(ValueError, match="height"):
        kb.decode_images(e[0], height=50)


def test_kandinsky_scale_comes_from_the_prior_statistics(kb, kandinsky):
    p = kandinsky[1].prior
    assert kb.image_decoder.embed_norm_source == "prior clip_mean/clip_std statistics"
    assert kb.image_decoder.embed_norm == pytest.approx(norm_from_moments(p.clip_mean, p.clip_std), rel=1e-5)


def test_kandinsky_texts_go_through_the_seeded_prior(kb, kandinsky):
    prior = kandinsky[1]
    t = kb.encode_texts(["a red cat", "a blue dog"])
    assert torch.allclose(t.norm(dim=-1), torch.ones(2))
    assert torch.allclose(kb.encode_texts(["a red cat"])[0], t[0], atol=1e-5)  # batch does not change a text's point
    g = torch.Generator("cpu").manual_seed(0)
    direct = prior("a red cat", negative_prompt="", generator=g, num_inference_steps=2, guidance_scale=4.0).image_embeds
    assert torch.allclose(t[0], torch.nn.functional.normalize(direct.float(), dim=-1)[0], atol=1e-5)
    raw = kb.encode_texts(["a red cat"], raw=True)
    assert not torch.allclose(raw, t[:1], atol=1e-3)  # the prior moved it: no raw text embedding reaches the decoder
    with pytest.raises(ValueError, match="encode_texts"):
        kb.gap.to_image(torch.nn.functional.normalize(torch.randn(1, tiny.DIM), dim=-1))
    m = blend.mix(torch.cat([kb.encode_images(tiny.probe_images(1)), t[:1]]), [1, 1])
    assert kb.decode_images(m, seed=0)[0].size == (64, 64)


def test_kandinsky_loads_on_cpu_with_offload_requested(kandinsky, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback of offload")
    folder = tmp_path / "bundle"
    shutil.copytree(kandinsky[0], folder)
    preset = json.loads((folder / "preset.json").read_text())
    preset["image_decoder"]["offload"] = "model"
    (folder / "preset.json").write_text(json.dumps(preset))
    b = blend.load(str(folder), device="auto")
    assert b.device.type == "cpu" and b.dtype == torch.float32
    with pytest.warns(UserWarning, match="offload"):
        dec = b.image_decoder
    assert isinstance(dec, Kandinsky22)
    assert b.decode_images(b.encode_images(tiny.probe_images(1)), seed=0)[0].size == (64, 64)


def test_decoder_of_another_width_is_refused(unclip, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(unclip[0], folder)
    preset = json.loads((folder / "preset.json").read_text())
    cfg = json.loads((folder / "clip" / "open_clip_config.json").read_text())
    cfg["model_cfg"]["embed_dim"] = 16
    (folder / "clip" / "open_clip_config.json").write_text(json.dumps(cfg))
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    model = CLIP(**{**tiny.OPEN_CLIP_CONFIG, "embed_dim": 16})  # a 16-d encoder before the 32-d decoder
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "clip" / "open_clip_model.safetensors"))
    (folder / "preset.json").write_text(json.dumps(preset))
    b = blend.load(str(folder), device="cpu")
    with pytest.raises(ValueError, match="32-d embeddings, the encoder makes 16-d"):
        b.decode_images(torch.nn.functional.normalize(torch.randn(1, 16), dim=-1))


def test_calibrate_command_writes_the_stats_the_preset_names(unclip, tmp_path):
    from blend.cli import main

    folder = tmp_path / "bundle"
    shutil.copytree(unclip[0], folder)
    (tmp_path / "images").mkdir()
    for i, im in enumerate(tiny.probe_images(4)):
        im.save(tmp_path / "images" / f"{i}.png")
    (tmp_path / "captions.txt").write_text("a red circle\na blue square\n")
    args = ["calibrate", str(folder), "--captions", str(tmp_path / "captions.txt"), "--device", "cpu"]
    assert main(args + ["--images", str(tmp_path / "nowhere")]) == 2  # a ValueError naming `images`
    assert main(args + ["--images", str(tmp_path / "images")]) == 0
    assert (folder / "stats.safetensors").is_file()
    assert main(args + ["--images", str(tmp_path / "images"), "--paired"]) == 2  # 4 images, 2 captions
    b = blend.load(str(folder), device="cpu")
    assert b.encode_texts(["a red circle"]).shape == (1, tiny.DIM)
