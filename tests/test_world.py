"""The v2 shapes world (issue 7): the fixed spec, the held-out rule, and an exact attribute reader."""
import random

import numpy as np
import pytest

from blend import world


def test_held_out_rule_counts_and_formula():
    held = world.triples("held-out")
    assert len(world.triples()) == 224 and len(held) == 28
    for c, s, b in held:
        assert (world.COLORS.index(c) + 3 * world.SHAPES.index(s) + 5 * world.COLORS.index(b)) % 8 == 0
    assert len(world.all_combinations("train")) + len(world.all_combinations("held-out")) == 30240


def test_training_generators_never_yield_a_held_out_scene():
    from blend.train.clip import pair_batch

    rng = random.Random(0)
    assert not any(s.held_out for s in world.sample_scenes(3000, 1, split="train"))
    scenes, _ = pair_batch(rng, 200)  # the CLIP trainer's pairs: x, x' and the parallel pair
    assert not any(s.held_out for s in scenes)


def test_decoder_mixture_never_yields_a_held_out_scene():
    from blend.train.unclip import _analogy, _mid, _middle, _pair

    rng = random.Random(3)
    for _ in range(300):
        x, x2, _k = _pair(rng)
        (a, b, c), target = _analogy(rng)
        (p, q), t, mid = _mid(rng)
        named = world.random_partial(rng, world.sample_scene(rng, split="train"))[1]
        scenes = (x, x2, a, b, c, target, p, q, mid, world.meant_scene(named))
        assert not any(s.held_out for s in scenes)
        if abs(t - 0.5) >= 0.08:
            assert mid == (p if t < 0.5 else q)
        else:  # the middle: a value of one end per attribute, the same whichever end comes first
            assert all(getattr(mid, k) in (getattr(p, k), getattr(q, k)) for k in world.ATTRIBUTES)
            assert _middle(q, p).attributes == mid.attributes


def test_meant_scene_is_the_one_scene_a_description_means():
    rng = random.Random(4)
    for _ in range(300):
        named = world.random_partial(rng, world.sample_scene(rng))[1]
        s = world.meant_scene(named, split="all")
        assert all(getattr(s, k) == v for k, v in named.items())
        assert (s.f, s.jx, s.jy) == (None, 0.0, 0.0)  # mid radius, centred: no nuisance left to average over
        for k, v in world.DEFAULTS.items():
            assert k in named or getattr(s, k) == v
        assert world.meant_scene(named, split="all") == s  # one target per text
    assert not world.meant_scene({"color": "red"}).held_out  # defaults avoid held-out triples in "train"
    held = world.triples("held-out")[0]
    assert world.meant_scene(dict(zip(("color", "shape", "background"), held)), split="all").held_out
    with pytest.raises(ValueError, match="named"):
        world.meant_scene(dict(zip(("color", "shape", "background"), held)))  # no training scene means it
    with pytest.raises(ValueError, match="named"):
        world.meant_scene({"colour": "red"})


def test_caption_spec():
    s = world.Scene("red", "blue", "star", "large", "top left", "right")
    assert world.caption(s) == "a large red star in the top left on a blue background, lit from the right"
    assert world.caption(s.with_(color="orange", background="green")).startswith("a large orange")
    assert world.partial_caption(color="orange", shape="star") == "an orange star"
    assert world.partial_caption(background="orange") == "on an orange background"
    assert world.partial_caption(shape="star", position="left") == "a star on the left"
    assert world.partial_caption(lighting="top") == "lit from above"
    assert world.partial_caption(size="large") == "large"
    with pytest.raises(ValueError):
        world.partial_caption()


def test_parse_description_inverts_every_partial_description():
    import itertools

    for subset in itertools.product(*[[None, *world.VALUES[k]] for k in world.ATTRIBUTES]):
        named = {k: v for k, v in zip(world.ATTRIBUTES, subset) if v is not None}
        if not named or named.get("color", 0) == named.get("background", 1):
            continue
        for bare in (False, True):
            assert world.parse_description(world.partial_caption(**named, bare=bare)) == named
    for text in ("", "red red", "a red", "an red star", "a star lit from above", ", lit from above", "a smiling face",
                 "a red star on a red background", None, 3):
        assert world.parse_description(text) is None, text


def test_render_follows_the_spec():
    s = world.Scene("white", "black", "square", "medium", "centre", "left", f=0.16, jx=0.0, jy=0.0)
    arr = np.asarray(world.render(s), dtype=float)
    assert arr.shape == (64, 64, 3)
    assert arr[0, 0, 0] == 20 and round(arr[0, 63, 0]) == round(20 * 0.55)  # bright left edge, 0.55 at the right
    assert arr[32, 32, 0] == round(240 * (1 - 0.45 * 32 / 63))
    with pytest.raises(ValueError):
        world.Scene("red", "red", "circle", "small")
    with pytest.raises(ValueError):
        world.Scene("red", "blue", "circle", "small", f=0.2)


@pytest.mark.parametrize("split", ["train", "held-out"])
def test_reader_is_exact_on_true_renders(split):
    scenes = world.sample_scenes(600, seed=11 if split == "train" else 12, split=split)
    wrong = [(s, world.read_attributes(world.render(s))) for s in scenes]
    wrong = [(s, r) for s, r in wrong if r.attributes != s.attributes]
    assert not wrong, wrong[:3]


def test_reader_reads_upscaled_renders_and_flat_backgrounds():
    rng = random.Random(3)
    for _ in range(50):
        s = world.sample_scene(rng)
        big = world.render(s, 256)
        assert world.read_attributes(big).attributes == s.attributes
        assert world.background_std(world.render(s)) < 1.0


def test_reader_sees_grain():
    s = world.Scene("green", "white", "circle", "large")
    arr = np.asarray(world.render(s), dtype=float) + np.random.default_rng(0).normal(0, 6, (64, 64, 3))
    from PIL import Image

    noisy = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    assert world.background_std(noisy) > 3
