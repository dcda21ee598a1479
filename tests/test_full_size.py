"""Opt-in (BLEND_RUN_FULL_SIZE=1): each real preset at full size, random weights, on CPU.

Every component is built from its published config (tests/configs/*.json, each citing its source) and the whole
chain runs through blend's own objects: encode an image and a text (through the preset's gap map) -> mix ->
decode an image (reduced resolution, 1 step) and a sentence. It proves the dimensions and conventions (unCLIP's
image embedding plus noise-level embedding, the 768/1024/1280-d spaces, the priors' outputs), not the quality.
Run one preset per process so the peak memory it prints is that preset's:
    BLEND_RUN_FULL_SIZE=1 nice python -m pytest tests/test_full_size.py -k unclip-h -s
"""
from __future__ import annotations

import gc
import os
import resource
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

pytestmark = [pytest.mark.full_size,
              pytest.mark.skipif(os.environ.get("BLEND_RUN_FULL_SIZE") != "1",
                                 reason="set BLEND_RUN_FULL_SIZE=1 to build the real presets at full size (minutes)")]

DIMS = {"unclip-l": 768, "unclip-h": 1024, "kandinsky-2.2": 1280}
DTYPE = torch.bfloat16  # bigG in fp32 alone is 10 GB; bf16 keeps the whole chain within a 24 GB machine


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@pytest.mark.parametrize("preset", list(DIMS))
def test_full_size_chain(preset, tmp_path):
    import random_models as rm

    import blend
    from blend.blender import Blender
    from blend.decode_text import CaptionBank, Retrieval, read_captions
    from blend.decoders.kandinsky import Kandinsky22
    from blend.decoders.stable_unclip import StableUnCLIP
    from blend.gap import PriorGap
    from blend.presets import PRESETS_DIR, get_preset

    start = time.monotonic()
    spec = get_preset(preset)
    b = Blender.__new__(Blender)  # the real Blender, its parts built here instead of downloaded
    b.preset, b.name, b.device, b.dtype = spec, preset, torch.device("cpu"), DTYPE
    b.encoder = rm.encoder(preset, DTYPE)
    b.embed_dim = b.encoder.embed_dim
    assert b.embed_dim == DIMS[preset] == spec["encoder"]["embed_dim"]

    captions = read_captions(PRESETS_DIR / "../captions/general.txt")[::200]  # 20 of the shipped captions
    b._text_decoder = Retrieval(CaptionBank.build(b.encoder, captions))
    from blend import world

    image = world.render(world.sample_scenes(1, seed=0)[0], 224)
    e = b.encode_images([image])

    gap = spec["gap"]
    if gap["type"] == "prior":
        b.gap = PriorGap("unused", {**PriorGap.DEFAULTS, "steps": 2}, b.device, DTYPE, kind=gap.get("prior",
                         "kandinsky-2.2"), text_encoder="unused")
        b.gap._pipe = rm.prior(preset, DTYPE, tmp_path)
        t = b.encode_texts(["a photo of a red apple on a table"])
        b.gap._pipe = None
    else:  # unclip-h: the measured mean shift; a random one of the right width stands in for `blend calibrate`
        from blend.gap import MeanShift

        b.gap = MeanShift(0.1 * torch.randn(b.embed_dim, generator=torch.Generator().manual_seed(0)))
        t = b.encode_texts(["a photo of a red apple on a table"])
    assert t.shape == e.shape == (1, DIMS[preset]) and torch.isfinite(t).all()
    m = blend.mix(torch.cat([e, t]), [1, 1])
    sentence = b.decode_texts(m)[0]
    b.encoder.model = None  # free the encoder before the decoder is built
    gc.collect()

    pipe = rm.image_pipeline(preset, DTYPE, tmp_path)
    dec_spec = {**spec["image_decoder"], "embed_norm": 20.0, "stats": None}
    if preset == "kandinsky-2.2":
        dec_spec["options"] = {**dec_spec["options"], "negative_image_embeds": "zeros"}
        b._image_decoder = Kandinsky22.from_pipeline(pipe, dec_spec, tmp_path, b.device, DTYPE)
        side = 64
    else:
        b._image_decoder = StableUnCLIP.from_pipeline(pipe, dec_spec, tmp_path, b.device)
        side = 64
    assert b.image_decoder.embed_dim == DIMS[preset]
    images = b.decode_images(m, seed=0, steps=1, height=side, width=side)
    took = time.monotonic() - start
    print(f"\n{preset}: full size, random weights, {DTYPE}: {took:.0f} s, peak RSS {peak_gb():.1f} GB; "
          f"sentence {sentence!r}")
    assert images[0].size == (side, side)
    assert sentence in captions
