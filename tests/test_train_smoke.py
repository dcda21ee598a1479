"""Training runs end to end on tiny configs, its loss falls, and a resumed run equals an uninterrupted one."""
import json

import torch
from safetensors.torch import load_file

import blend
from blend.train.clip import JOINT_CONFIG, train_clip
from blend.train.clip_image import train_image_tower
from blend.train.inverter import train_shapes_inverter
from blend.train.prior import PRIOR_CONFIG, train_prior
from blend.train.unclip import DRAFT_CONFIG, UNET_CONFIG, train_decoder, train_draft
from blend.train.vae import train_vae


def _log(path):
    return [json.loads(l) for l in path.read_text().splitlines() if '"loss"' in l]


TEXT = {**JOINT_CONFIG["text_cfg"], "layers": 1, "width": 32, "heads": 2}
TINY_JOINT = {"embed_dim": 16, "text_cfg": TEXT,
              "vision_cfg": {**JOINT_CONFIG["vision_cfg"], "layers": 1, "width": 32, "head_width": 16}}
TINY_CLIP = {"embed_dim": 16, "text_cfg": TEXT,  # the shipped layout: a ModifiedResNet beside the same text tower
             "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8}}
TINY_UNET = {**UNET_CONFIG, "block_out_channels": (16, 32, 32), "norm_num_groups": 8, "cross_attention_dim": 32,
             "attention_head_dim": 2, "encoder_hid_dim": 16, "projection_class_embeddings_input_dim": 16}
TINY_DRAFT = {**DRAFT_CONFIG, "embed_dim": 16, "hidden": 32}
TINY_PRIOR = {**PRIOR_CONFIG, "hidden": 32}


def test_clip_resume_is_exact(tmp_path):
    kw = dict(groups=4, partial=4, config=TINY_JOINT, eval_every=10**9)
    train_clip(tmp_path / "b", steps=6, work=tmp_path / "wb", **kw)
    assert train_clip(tmp_path / "c", steps=6, work=tmp_path / "wc", stop_at=3, **kw) is None  # interrupted
    assert not (tmp_path / "c").exists()
    assert json.loads((tmp_path / "wc" / "state.json").read_text())["step"] == 3
    train_clip(tmp_path / "c", steps=6, work=tmp_path / "wc", **kw)
    b = load_file(str(tmp_path / "b" / "open_clip_model.safetensors"))
    c = load_file(str(tmp_path / "c" / "open_clip_model.safetensors"))
    assert all(torch.equal(b[k], c[k]) for k in b)


def test_image_tower_learns_on_the_locked_text_tower(tmp_path):
    train_clip(tmp_path / "clip", steps=2, groups=4, partial=4, config=TINY_JOINT, work=tmp_path / "w1",
               eval_every=10**9)
    text_before = {k: v for k, v in load_file(str(tmp_path / "clip" / "open_clip_model.safetensors")).items()
                   if not k.startswith("visual.")}
    train_image_tower(tmp_path / "clip", steps=40, batch=32, lr=3e-3, config=TINY_CLIP, work=tmp_path / "w2",
                      log=tmp_path / "img.jsonl", eval_every=10**9)
    after = load_file(str(tmp_path / "clip" / "open_clip_model.safetensors"))
    assert all(torch.equal(after[k], v) for k, v in text_before.items())  # the text tower is locked
    assert any(k.startswith("visual.layer1") for k in after)  # the ResNet replaced the ViT
    losses = [r["loss"] for r in _log(tmp_path / "img.jsonl")]
    assert losses[-1] < 0.9 * losses[0], losses


def test_bundle_trains_on_tiny_models_and_loads(tmp_path):
    train_clip(tmp_path / "clip", steps=2, groups=4, partial=4, config=TINY_JOINT, work=tmp_path / "w1",
               eval_every=10**9)
    train_image_tower(tmp_path / "clip", steps=2, batch=8, config=TINY_CLIP, work=tmp_path / "w2", eval_every=10**9)
    train_vae(tmp_path / "decoder" / "vae", steps=2, batch=4, work=tmp_path / "w3", eval_every=10**9)
    train_prior(tmp_path / "clip", tmp_path / "decoder", rows=16, steps=2, batch=8, config=TINY_PRIOR)
    train_draft(tmp_path / "clip", tmp_path / "decoder", rows=16, steps=2, batch=8, config=TINY_DRAFT)
    train_decoder(tmp_path / "clip", tmp_path / "decoder" / "vae", tmp_path / "decoder", steps=2, batch=4,
                  work=tmp_path / "w4", config=TINY_UNET, eval_every=10**9)
    train_shapes_inverter(tmp_path / "clip", tmp_path / "inverter", steps=2, batch=8, work=tmp_path / "w5")
    (tmp_path / "preset.json").write_text(json.dumps({
        "name": "tiny", "encoder": {"type": "open_clip", "model": "local-dir:clip"},
        "image_decoder": {"type": "mini-latent-unclip", "source": "local-dir:decoder"},
        "text_decoder": {"type": "prefix-inverter", "source": "local-dir:inverter"}}))
    b = blend.load(str(tmp_path), device="cpu")
    assert b.embed_dim == 16
    m = b.encode_texts(["a red star on the left"])
    imgs = b.decode_images(m, seed=0, steps=2)  # the draft alone (the default strength 0)
    assert len(imgs) == 1 and imgs[0].mode == "RGB" and imgs[0].size[0] >= 64
    assert b.image_decoder.prior is not None  # the prior stage's output is part of the decoder
    assert b.decode_images(m, seed=0, steps=2, prior=False)[0].size == imgs[0].size
    b.image_decoder.config["strength"] = 0.5  # the UNet redraws the draft's latents
    assert b.decode_images(m, seed=0, steps=2)[0].size == imgs[0].size
    assert isinstance(b.decode_texts(m)[0], str)
