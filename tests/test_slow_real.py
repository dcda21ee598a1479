"""Opt-in: download the real weights and run each real preset once (BLEND_RUN_SLOW=1; a GPU is advisable)."""
from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("BLEND_RUN_SLOW") != "1", reason="set BLEND_RUN_SLOW=1 to download "
                                                                                 "and run the real models")]


@pytest.mark.parametrize("name", ["unclip-l", "unclip-h", "kandinsky-2.2"])
def test_real_preset_runs(name, tmp_path):
    import torch

    import blend
    from blend import world
    from blend.calibrate import calibrate, index

    b = blend.load(name)
    scenes = world.sample_scenes(24, seed=0)
    images = [world.render(s, 224) for s in scenes]
    captions = [world.caption(s) for s in scenes]
    stats = tmp_path / "stats.safetensors"
    calibrate(b, images, captions, out=stats)  # a stats file beside the test, not the installed preset
    index(b, captions, out=tmp_path / "bank.safetensors", progress=False)
    img = b.encode_images(images[:1])
    if b.preset["gap"]["type"] == "mean-shift":
        from blend.gap import MeanShift
        from safetensors.torch import load_file

        b.gap = MeanShift(load_file(str(stats))["shift"])
    txt = b.encode_texts(["a photo of a red circle"])
    m = blend.mix(torch.cat([img, txt]), [1, 1])
    size = b.preset["image_decoder"]["options"]["height"]
    out = b.decode_images(m, seed=0, steps=4)
    assert out[0].size == (size, size)
    from blend.decode_text import CaptionBank, Retrieval

    bank = Retrieval(CaptionBank.load(tmp_path / "bank.safetensors"))
    assert bank.generate(b.gap.to_text(img))[0] in captions
