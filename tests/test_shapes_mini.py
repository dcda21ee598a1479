"""The shipped shapes-mini bundle, end to end: meaning is checked by reading attributes back."""
import io

import numpy as np
import pytest
import torch

import blend
from blend import world

FLOORS = {"image_to_image": 0.90, "text_to_image": 0.85, "text_to_text": 0.95, "image_to_text": 0.85,
          "arithmetic": 0.80}


@pytest.mark.parametrize("figure", sorted(FLOORS))
def test_fidelity_floor(figures, figure):
    assert figures[figure] >= FLOORS[figure], figures


def read(img):
    return world.read_attributes(img).attributes


def test_encodings_are_unit_float32(mini):
    e = mini.encode_images([world.render(world.Scene("red", "blue", "circle", "small"))])
    t = mini.encode_texts(["a red circle", "large"])
    assert e.dtype == t.dtype == torch.float32 and e.shape == (1, mini.embed_dim) and t.shape == (2, mini.embed_dim)
    assert torch.allclose(torch.cat([e, t]).norm(dim=-1), torch.ones(3), atol=1e-5)


def test_images_from_path_bytes_array_and_pil_agree(mini, tmp_path):
    img = world.render(world.Scene("green", "black", "triangle", "large"), 128)
    path = tmp_path / "x.png"
    img.save(path)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    embs = mini.encode_images([img, path, str(path), buf.getvalue(), np.asarray(img)])
    assert torch.allclose(embs, embs[:1].expand_as(embs), atol=1e-6)


def test_decoding_is_seeded_and_rows_share_the_start_noise(mini):
    m = mini.encode_texts(["a large yellow square on a purple background"])[0]
    a = mini.decode_images(torch.stack([m, m]), seed=5, size=32)
    b = mini.decode_images(m, seed=5, size=32)
    assert np.array_equal(np.asarray(a[0]), np.asarray(a[1]))  # same noise for every row
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))  # same recipe and seed, same output
    assert read(a[0]) == ("yellow", "purple", "square", "large")


def test_word_arithmetic_changes_the_colour_and_keeps_the_rest(mini):
    """x - T(its colour) + T(another colour) on 40 fresh scenes: the benchmark measures 0.88 on 300."""
    import random

    rng = random.Random(31)
    scenes = [world.sample_scene(rng) for _ in range(40)]
    e = mini.encode_images([world.render(s) for s in scenes])
    words = dict(zip(world.COLORS, mini.encode_texts(list(world.COLORS))))
    targets, rows = [], []
    for i, s in enumerate(scenes):
        new = rng.choice([c for c in world.COLORS if c not in (s.color, s.background)])
        targets.append(s.with_(color=new))
        rows.append(blend.mix(torch.stack([e[i], words[s.color], words[new]]), [1, -1, 1]))
    reads = [read(im) for im in mini.decode_images(torch.stack(rows), seed=0, size=32)]
    assert sum(r == t.attributes for r, t in zip(reads, targets)) >= 0.75 * len(scenes)
    assert sum(r[0] == t.color for r, t in zip(reads, targets)) >= 0.9 * len(scenes)  # the colour itself moves


def test_direction_large_minus_small(mini):
    x = world.Scene("blue", "yellow", "circle", "small")
    d = blend.direction(mini.encode_texts(["large"]), mini.encode_texts(["small"]))
    base = mini.encode_images([world.render(x)])[0]
    imgs = mini.decode_images(torch.stack([blend.apply_directions(base, [d], [s]) for s in (0.0, 1.5)]), size=32)
    assert [read(im) for im in imgs] == [("blue", "yellow", "circle", "small"), ("blue", "yellow", "circle", "large")]


def test_path_starts_and_ends_at_its_anchors(mini):
    a = world.Scene("red", "black", "circle", "small")
    b = world.Scene("white", "blue", "square", "large")
    e = mini.encode_images([world.render(a), world.render(b)])
    path = blend.interpolate(e[0], e[1], 5)
    imgs = mini.decode_images(path, seed=1, size=32)
    texts = mini.decode_texts(path)
    assert read(imgs[0]) == a.attributes and read(imgs[-1]) == b.attributes
    assert texts[0] == world.caption(a) and texts[-1] == world.caption(b)


def test_text_roundtrip_of_partial_descriptions(mini):
    texts = ["red", "a large circle", "on a blue background", "an orange square"]
    assert mini.decode_texts(mini.encode_texts(texts)) == texts


@pytest.mark.parametrize("call, message", [
    (lambda b: b.encode_texts([""]), "texts\\[0\\] is empty"),
    (lambda b: b.encode_texts(["red", "   "]), "texts\\[1\\] is empty"),
    (lambda b: b.encode_texts(["red " * 40]), "too long"),
    (lambda b: b.encode_texts(["a smiling face"]), "does not know: smiling, face"),
    (lambda b: b.encode_texts([]), "empty"),
    (lambda b: b.encode_images([b"\x89PNG\r\n\x1a\n garbage"]), "images\\[0\\]: cannot read image"),
    (lambda b: b.encode_images(["/no/such/file.png"]), "no image file"),
    (lambda b: b.encode_images([42]), "expected a PIL image"),
    (lambda b: b.decode_images(torch.randn(2, 1024)), "another model's space"),
    (lambda b: b.decode_images(torch.full((64,), float("nan"))), "NaN"),
    (lambda b: b.decode_images(torch.zeros(64)), "all-zero"),
    (lambda b: b.decode_images(torch.randn(64), seed=-1), "seed"),
    (lambda b: b.decode_images(torch.randn(64), steps=0), "steps"),
    (lambda b: b.decode_texts(torch.randn(3, 5)), "another model's space"),
])
def test_bad_input_gets_a_clear_error_and_the_model_keeps_working(mini, call, message):
    with pytest.raises(ValueError, match=message):
        call(mini)
    assert mini.decode_texts(mini.encode_texts(["a red circle"])) == ["a red circle"]


def test_huge_images_are_refused_before_decoding(mini, tmp_path):
    from PIL import Image

    path = tmp_path / "huge.png"
    Image.new("L", (8000, 6000)).save(path, optimize=False)  # 48 MP, a few KB on disk
    with pytest.raises(ValueError, match="too large"):
        mini.encode_images([path])


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'nope'.*shapes-mini"):
        blend.load("nope")


def test_the_clip_is_an_open_clip_model_registered_by_name(mini):
    import open_clip

    from blend.encode import register_model_configs
    from blend.presets import get_preset, resolve_source

    register_model_configs()
    assert "shapes-mini" in open_clip.list_models()
    folder = resolve_source(get_preset("shapes-mini")["encoder"]["model"], get_preset("shapes-mini")["_dir"])
    model = open_clip.create_model("shapes-mini", pretrained=f"{folder}/open_clip_model.safetensors").eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")  # the word tokenizer ships beside the weights
    with torch.no_grad():
        t = torch.nn.functional.normalize(model.encode_text(tokenizer(["a red circle"])), dim=-1)
    assert torch.allclose(t, mini.encode_texts(["a red circle"], raw=True), atol=1e-5)
