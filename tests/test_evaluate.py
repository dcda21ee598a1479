"""The fidelity evaluation itself (no trained model): its scene builders honour the held-out rule, its
caption parser inverts `caption`, and it scores an ideal attribute-algebra model 1.0 and a blind one below
every floor. The floors on the shipped bundle are measured by benchmarks/fidelity.py and asserted by
tests/test_shapes_mini.py.
"""
import re

import pytest
import torch

from blend import evaluate, world

SEED = 99  # not the benchmark's 2024


# ---------------------------------------------------------------- the evaluation itself (no model)


def test_parse_caption_is_the_exact_inverse_of_caption():
    combos = world.all_combinations()
    assert len(combos) == 30240
    assert all(world.parse_caption(world.caption(world.Scene(*c))) == c for c in combos)


@pytest.mark.parametrize("text", [
    "", "a red star", "large", "on a red background", "a small red star in the centre on a blue background",
    "an small red star in the centre on a blue background, evenly lit",  # wrong article
    "a small red star in the centre on an blue background, evenly lit",
    "a small red star in the centre on a red background, evenly lit",  # colour == background
    "a small red star in the center on a blue background, evenly lit",  # not the world's spelling
    "a small red star in the centre on a blue background, evenly lit and more",
    "a small pink star in the centre on a blue background, evenly lit",
])
def test_parse_caption_refuses_what_caption_never_writes(text):
    assert world.parse_caption(text) is None


@pytest.mark.parametrize("key", sorted(evaluate.FIGURES))
def test_held_out_rule_is_honoured_by_the_scene_builders(key):
    """Held-out cases aim at held-out scenes; training cases touch no held-out scene at all."""
    held, train = evaluate.cases(key, "held-out", 200, SEED), evaluate.cases(key, "train", 200, SEED)
    assert all(c.target.held_out for c in held)
    assert not any(s.held_out for c in train for s in c.scenes)
    for c in train:  # nor does any of their words name a held-out (colour, shape, background)
        for named in (_words(t) for t in c.terms if isinstance(t, str)):
            assert not ({"color", "shape", "background"} <= set(named)
                        and world.is_held_out(named["color"], named["shape"], named["background"]))
    if key == "partial_to_image":  # a held-out partial description names the held-out triple
        assert all({"color", "shape", "background"} <= set(c.check) for c in held)
    if key.startswith(("caption_arithmetic", "word_arithmetic")):
        k = key.rsplit("_", 1)[1]
        for c in held + train:
            x = c.terms[0]
            assert [a for a in world.ATTRIBUTES if getattr(x, a) != getattr(c.target, a)] == [k]


def test_cases_are_reproducible_and_differ_by_seed():
    a, b = evaluate.cases("analogy", "held-out", 20, SEED), evaluate.cases("analogy", "held-out", 20, SEED)
    assert a == b and a != evaluate.cases("analogy", "held-out", 20, 2024)


def _words(text: str) -> dict:
    """The attributes a description names (for the ideal model below)."""
    out = {}
    for k, phrases in (("lighting", world.LIGHTING_PHRASES), ("position", world.POSITION_PHRASES)):
        for v, p in sorted(phrases.items(), key=lambda kv: -len(kv[1])):
            if p in text:
                out[k], text = v, text.replace(p, " ")
                break
    m = re.search(r"on an? (\w+) background", text)
    if m:
        out["background"], text = m.group(1), text.replace(m.group(0), " ")
    for w in text.replace(",", " ").split():
        out.update({k: w for k in ("size", "color", "shape") if w in world.VALUES[k]})
    return out


class AttributeAlgebra:
    """An ideal model: an embedding is one block of one-hot values per attribute, decoding is argmax per block.

    Every blend the figures make is exact in this space, so the evaluation must score it 1.0; with
    `constant=True` it decodes every point to one scene, and must fail every floor.
    """

    embed_dim = sum(len(v) for v in world.VALUES.values())

    def __init__(self, constant: bool = False):
        self.constant = constant

    def _embed(self, attrs: dict) -> torch.Tensor:
        return torch.cat([torch.tensor([float(attrs.get(k) == v) for v in vals]) for k, vals in world.VALUES.items()])

    def encode_images(self, images):
        return torch.stack([self._embed(dict(zip(world.ATTRIBUTES, world.read_attributes(im).attributes)))
                            for im in images])

    def encode_texts(self, texts, raw=False):
        return torch.stack([self._embed(_words(t)) for t in texts])

    def _scene(self, e: torch.Tensor) -> world.Scene:
        if self.constant:
            return world.Scene("red", "blue", "circle", "small")
        attrs, i = {}, 0
        for k, vals in world.VALUES.items():
            order = e[i:i + len(vals)].argsort(descending=True).tolist()
            attrs[k] = next(vals[j] for j in order if k != "background" or vals[j] != attrs["color"])
            i += len(vals)
        return world.Scene(**attrs)

    def decode_images(self, emb, seed=0, steps=None, size=world.SIZE):
        return [world.render(self._scene(e), size) for e in emb]

    def decode_texts(self, emb):
        return [world.caption(self._scene(e)) for e in emb]


def test_the_evaluation_scores_an_ideal_model_1_and_a_blind_one_below_every_floor():
    good = evaluate.fidelity(AttributeAlgebra(), n=12, seed=SEED, progress=False)
    assert all(v == 1.0 for shares in good["figures"].values() for v in shares.values()), good["figures"]
    assert evaluate.below_floor(good) == []
    assert good["background_std"]["held-out"] < 1 and good["background_std_renders"]["train"] < 1
    bad = evaluate.fidelity(AttributeAlgebra(constant=True), n=12, seed=SEED, progress=False)
    assert len(evaluate.below_floor(bad)) == 2 * len(evaluate.FIGURES), bad["figures"]
