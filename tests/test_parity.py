"""Parity with upstream: for the same embedding, seed and steps, blend's wrappers give the pixels diffusers' own
pipelines give (tiny random components of the real classes, 2 steps, max difference <= 1e-3 on [0, 1]).

blend's seed convention, which the upstream calls below follow by hand: the start latents are drawn from `seed`
on the CPU (one draw, shared by every row of a batch), and `generator=seed` drives the rest (embedding noise).
Where blend deliberately differs from upstream (unit embeddings rescaled to `embed_norm`, normalised weights,
slerp), the last tests show by how much.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import blend
from blend.decoders.kandinsky import Kandinsky22
from blend.decoders.stable_unclip import StableUnCLIP
from blend.gap import PriorGap
from blend.ops import normalize

import tiny

CPU = torch.device("cpu")
TOL = 1e-3
SIZE = {"height": 32, "width": 32}
torch.set_num_threads(1)  # tiny models: one thread is fastest, and leaves the other core alone


def seeded(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def start_latents(channels: int, side: int, seed: int) -> torch.Tensor:
    """blend's start noise for one row: (1, C, side, side) from `seed` on the CPU."""
    return torch.randn((1, channels, side, side), generator=seeded(seed))


def unclip_latents(pipe, seed: int) -> torch.Tensor:
    return start_latents(4, SIZE["height"] // pipe.vae_scale_factor, seed)


def kandinsky_side(pipe) -> int:
    from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import downscale_height_and_width

    return downscale_height_and_width(SIZE['height'], SIZE['width'], pipe.movq_scale_factor)[0]


def unit(n: int, seed: int = 0) -> torch.Tensor:
    return normalize(torch.randn(n, tiny.DIM, generator=seeded(seed)))


@pytest.fixture(scope="module")
def unclip(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity-unclip")
    pipe = tiny.unclip_pipeline(tmp)
    spec = {"embed_norm": "auto", "options": {"steps": 2, **SIZE}}
    return pipe, StableUnCLIP.from_pipeline(pipe, spec, tmp, CPU)


@pytest.fixture(scope="module")
def kandinsky(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity-kandinsky")
    prior = tiny.kandinsky_prior_pipeline(tmp)
    prior.save_pretrained(str(tmp / "prior"))
    pipe = tiny.kandinsky_pipeline()
    spec = {"prior": "local-dir:prior", "embed_norm": "auto", "options": {"steps": 2, **SIZE}}
    return pipe, prior, Kandinsky22.from_pipeline(pipe, spec, tmp, CPU), tmp


# ---------------------------------------------------------------------------------------- decoders

@pytest.mark.parametrize("noise_level", [0, 200])
def test_stable_unclip_gives_the_upstream_pixels(unclip, noise_level):
    pipe, dec = unclip
    emb = unit(1, seed=1)
    ours = dec(emb, seed=3, noise_level=noise_level, output_type="np")
    theirs = pipe(image_embeds=emb * dec.embed_norm, prompt="", num_inference_steps=2, guidance_scale=10.0,
                  noise_level=noise_level, latents=unclip_latents(pipe, 3), generator=seeded(3), output_type="np",
                  **SIZE).images
    assert np.abs(ours - theirs).max() <= TOL
    assert np.abs(ours - dec(emb, seed=4, noise_level=noise_level, output_type="np")).max() > 0.01  # not vacuous


def test_kandinsky_gives_the_upstream_pixels(kandinsky):
    pipe, prior, dec, _ = kandinsky
    emb = unit(1, seed=2)
    ours = dec(emb, seed=5, output_type="np")
    # the upstream default negative: the prior's embedding of a blank image (negative_prompt=None)
    theirs = pipe(image_embeds=emb * dec.embed_norm, negative_image_embeds=prior.get_zero_embed(1),
                  num_inference_steps=2, guidance_scale=4.0, latents=start_latents(4, kandinsky_side(pipe), 5),
                  generator=seeded(5),
                  output_type="np", **SIZE).images
    assert np.abs(ours - theirs).max() <= TOL
    assert np.abs(ours - dec(unit(1, seed=9), seed=5, output_type="np")).max() > 0.01


# ---------------------------------------------------------------------------------------- priors (text terms)

def test_kandinsky_prior_text_path_matches_the_prior_pipeline(kandinsky):
    _, prior, _, tmp = kandinsky
    gap = PriorGap.from_spec({"source": "local-dir:prior", "options": {"steps": 2, "seed": 0}}, tmp,
                             type("B", (), {"device": CPU, "dtype": torch.float32})())
    ours = gap.embed_texts(["a red cat", "a blue dog"])
    for i, text in enumerate(["a red cat", "a blue dog"]):  # the plain upstream call, negative_prompt=None
        theirs = prior(text, generator=seeded(0), num_inference_steps=2, guidance_scale=4.0).image_embeds
        assert torch.allclose(ours[i], normalize(theirs.float())[0], atol=TOL)


def test_karlo_prior_text_path_matches_stable_unclip_pipeline(tmp_path, monkeypatch):
    """unclip-l's text terms: the Karlo prior exactly as diffusers' StableUnCLIPPipeline runs it."""
    parts = tiny.karlo_components(tmp_path)
    source, text_encoder = tiny.save_karlo(tmp_path, parts)
    gap = PriorGap.from_spec({"prior": "karlo", "source": f"local-dir:{source}",
                              "text_encoder": f"local-dir:{text_encoder}",
                              "options": {"steps": 2, "seed": 0}}, tmp_path,
                             type("B", (), {"device": CPU, "dtype": torch.float32})())
    ours = gap.embed_texts(["a red cat", "a blue dog"])
    pipe = tiny.stable_unclip_text_pipeline(tmp_path)
    seen = []
    real = type(pipe).noise_image_embeddings

    def spy(self, image_embeds, *args, **kwargs):
        seen.append(image_embeds.detach().clone())
        return real(self, image_embeds, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "noise_image_embeddings", spy)
    for text in ("a red cat", "a blue dog"):
        pipe(text, generator=seeded(0), prior_num_inference_steps=2, prior_guidance_scale=4.0, num_inference_steps=1,
             output_type="np", **SIZE)
    theirs = normalize(torch.cat(seen).float())
    assert torch.allclose(ours, theirs, atol=TOL)
    assert (ours[0] @ ours[1]) < 0.999  # two texts, two points


# ---------------------------------------------------------------------------------------- deliberate differences

def test_blend_restores_the_scale_a_unit_embedding_lacks(unclip):
    """blend works on the unit sphere and hands the decoder emb * embed_norm (README: Getting what each decoder was
    trained on). Fed the bare unit vector, the upstream pipeline draws another picture."""
    pipe, dec = unclip
    emb = unit(1, seed=1)
    ours = dec(emb, seed=3, output_type="np")
    bare = pipe(image_embeds=emb, prompt="", num_inference_steps=2, guidance_scale=10.0, noise_level=0,
                latents=unclip_latents(pipe, 3), generator=seeded(3), output_type="np", **SIZE).images
    assert dec.embed_norm > 1.5
    assert np.abs(ours - bare).max() > 0.01


def test_mix_normalises_weights_where_kandinsky_interpolate_sums_them(kandinsky):
    """KandinskyV22PriorPipeline.interpolate returns sum(w_i * raw_i): its norm follows the weights and shrinks as
    terms disagree. blend.mix works on unit vectors and returns a unit vector (then rescaled to embed_norm), so
    `[1, 1]` and `[0.5, 0.5]` mean the same blend, and every result reaches the decoder at its trained scale."""
    _, prior, dec, _ = kandinsky
    images = tiny.probe_images(2, size=32)
    with torch.no_grad():
        pixels = prior.image_processor(images, return_tensors="pt").pixel_values
        raw = prior.image_encoder(pixels).image_embeds.float()  # (2, D), what interpolate sums
    half = prior.interpolate(images, [0.5, 0.5], num_inference_steps=2).image_embeds.float()[0]
    full = prior.interpolate(images, [1.0, 1.0], num_inference_steps=2).image_embeds.float()[0]
    assert torch.allclose(half, 0.5 * raw.sum(0), atol=1e-4)  # upstream: a plain weighted sum
    assert full.norm() == pytest.approx(2 * half.norm(), rel=1e-4)  # its scale follows the weights
    ours_half, ours_full = blend.mix(raw, [0.5, 0.5]), blend.mix(raw, [1.0, 1.0])
    assert torch.allclose(ours_half, ours_full, atol=1e-6)  # blend: only the proportions matter
    assert float(ours_half.norm()) == pytest.approx(1.0, abs=1e-5)
    assert torch.nn.functional.cosine_similarity(ours_half, half, dim=0) > 0.99  # same direction, other scale


def test_slerp_keeps_the_angle_linear_where_lerp_does_not():
    """blend.slerp walks the great circle at constant speed (Shoemake 1985); the normalised linear blend that
    upstream interpolation amounts to bunches its points toward the middle."""
    a, b = unit(2, seed=4)
    theta = torch.arccos((a @ b).clamp(-1, 1))
    for t in (0.1, 0.25):
        s = blend.slerp(a, b, t)
        angle = torch.arccos((s @ a).clamp(-1, 1))
        lerp_angle = torch.arccos((normalize((1 - t) * a + t * b) @ a).clamp(-1, 1))
        assert float(angle) == pytest.approx(t * float(theta), rel=1e-4)
        assert abs(float(lerp_angle) - t * float(theta)) > 1e-3
