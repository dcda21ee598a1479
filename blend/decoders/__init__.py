"""Image decoders behind one call, one file each: `decoder(emb (N, D) unit, seed=..., steps=...) -> N PIL images`.

A preset's `image_decoder.type` picks the class; each has `from_spec(spec, base_dir, device, dtype)`.
Modules are imported on first use, so loading shapes-mini never imports a real pipeline.
"""
from __future__ import annotations

IMAGE_DECODERS = {
    "mini-latent-unclip": "blend.decoders.mini:MiniLatentUnCLIP",
    "stable-unclip": "blend.decoders.stable_unclip:StableUnCLIP",
    "kandinsky-2.2": "blend.decoders.kandinsky:Kandinsky22",
}

