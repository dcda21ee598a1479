"""Regression tests: every item under "Why" in issue 8 that the Python API answered wrongly."""
from __future__ import annotations

import io
import json
import multiprocessing as mp

import numpy as np
import pytest
import torch
from PIL import Image

import blend
from blend import checks, ops
from serve_support import bad_images, huge_header_png, odd_images, png


def unit(d=16, seed=0):
    return torch.nn.functional.normalize(torch.randn(d, generator=torch.Generator().manual_seed(seed)), dim=0)


@pytest.mark.parametrize("call, arg", [
    (lambda a: ops.slerp(a, -a, 0.5), "opposite"),
    (lambda a: ops.slerp(a, unit(seed=1), float("nan")), "t"),
    (lambda a: ops.mix(torch.stack([a, unit(seed=1)]), [1e20, 1e20]), "weights"),
    (lambda a: ops.mix(torch.stack([a, unit(seed=1)]), [float("nan"), 1]), "weights"),
    (lambda a: ops.apply_directions(a, [unit(8)], [1.0]), "directions"),
    (lambda a: ops.apply_directions(a, [unit(), unit(8)], [1.0, 1.0]), "directions"),
    (lambda a: ops.plane(a, unit(8), a, 3), "b is 8-d"),
    (lambda a: ops.interpolate(a, unit(8), 3), "b is 8-d"),
    (lambda a: ops.interpolate(a, unit(seed=1), 10**9), "n"),
    (lambda a: ops.mix(torch.full((2, 16), 1e20)), "embs"),
])
def test_ops_refuse_with_value_error_naming_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call(unit())


def test_huge_but_equal_weights_mix_like_ones():
    a, b = unit(seed=1), unit(seed=2)
    assert torch.allclose(ops.mix(torch.stack([a, b]), [1e5, 1e5]), ops.mix(torch.stack([a, b]), [1, 1]), atol=1e-6)


@pytest.mark.parametrize("seed", ["x", None, 2**64, -1, 1.5, True, [0, 1, 2]])
def test_decode_seed_types(mini, seed):
    with pytest.raises(ValueError, match="seed"):
        mini.decode_images(mini.encode_texts(["circle"]), seed=seed)


def test_decode_refuses_huge_values_and_unknown_options_and_wrong_dim(mini):
    with pytest.raises(ValueError, match="embeddings"):
        mini.decode_images([1e20] * mini.embed_dim)
    with pytest.raises(ValueError, match="noise_level"):
        mini.decode_images(mini.encode_texts(["circle"]), noise_level=3)
    with pytest.raises(ValueError, match="another model"):
        mini.decode_images(torch.ones(mini.embed_dim + 1))


@pytest.mark.parametrize("texts, arg", [(123, "texts"), (["🔴"], "texts\\[0\\]"), (["red\x00circle"], "texts\\[0\\]"),
                                        ([""], "empty"), (["circle " * 400], "too long"), ([None], "string")])
def test_encode_texts_refuses_bad_texts(mini, texts, arg):
    with pytest.raises(ValueError, match=arg):
        mini.encode_texts(texts)


def test_cli_mix_with_emoji_only_text_is_an_error(capsys):
    from blend.cli import main

    assert main(["mix", "--text", "🔴"]) == 2
    assert "no words" in capsys.readouterr().err


def test_cli_path_keeps_the_service_limit(capsys):
    from blend.cli import main

    assert main(["path", "circle", "square", "--n", "1000"]) == 2
    assert "--n" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(bad_images()))
def test_bad_image_files_raise_value_error(name):
    with pytest.raises(ValueError, match="image"):
        checks.image(bad_images()[name])


def test_size_is_checked_from_the_header_before_decoding(monkeypatch):
    loaded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loaded.append(1))
    with pytest.raises(ValueError, match="too large"):
        checks.image(huge_header_png(12000), max_pixels=1_000_000)
    assert not loaded


def test_sixteen_bit_png_is_scaled_not_clipped_to_white():
    grey = checks.image(odd_images()["16bit-png"])
    assert abs(int(np.asarray(grey)[0, 0, 0]) - 128) <= 1


def test_exif_rotation_is_applied_on_every_path(tmp_path):
    data = odd_images()["exif-rotated-jpeg"]
    (tmp_path / "r.jpg").write_bytes(data)
    from blend.encode import load_image
    from blend.recipe import data_uri_to_image
    from serve_support import uri

    sizes = {checks.image(data).size, load_image(tmp_path / "r.jpg").size, load_image(data).size,
             data_uri_to_image(uri(data, "image/jpeg")).size, checks.image(Image.open(io.BytesIO(data))).size}
    assert sizes == {(20, 40)}


def test_transparency_and_odd_modes_become_rgb_consistently():
    imgs = {k: checks.image(v) for k, v in odd_images().items()}
    assert all(im.mode == "RGB" for im in imgs.values())
    assert np.asarray(imgs["cmyk-jpeg"])[16, 16, 0] > 180  # red stays red
    assert tuple(np.asarray(imgs["palette-alpha-png"])[0, 0]) == (255, 255, 255)  # transparent -> white
    assert tuple(np.asarray(imgs["palette-alpha-png"])[0, 31]) == (220, 30, 30)


# ------------------------------------------------------------------------------------------- direction store
def test_corrupt_store_starts_with_a_warning_and_a_backup(tmp_path, caplog):
    from blend.directions import DirectionLibrary

    path = tmp_path / "d.json"
    path.write_text('{"directions": [{"name": "ok", "pairs": [["a", "b"]]}, {"name": 3}, ')  # truncated
    lib = DirectionLibrary([], path)
    assert lib.names() == [] and list(tmp_path.glob("d.json.corrupt-*"))
    path.write_text(json.dumps({"directions": [{"name": "ok", "pairs": [["a", "b"]]}, {"name": 3}, "odd"]}))
    lib = DirectionLibrary([], path)
    assert lib.names() == ["ok"]
    assert "invalid" in caplog.text


def _add_many(path, who, n):
    from blend.directions import DirectionLibrary

    for i in range(n):
        DirectionLibrary([], path).add({"name": f"{who}-{i}", "pairs": [["a", "b"]]})


def test_two_processes_sharing_a_store_lose_nothing(tmp_path):
    from blend.directions import DirectionLibrary

    path = tmp_path / "shared.json"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(path, w, 15)) for w in ("p", "q")]
    [p.start() for p in procs]
    [p.join(120) for p in procs]
    assert all(p.exitcode == 0 for p in procs)
    assert len(DirectionLibrary([], path).names()) == 30
    assert not list(tmp_path.glob("*.tmp"))


def test_orphan_temp_files_are_cleaned(tmp_path):
    from blend import store

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "d.json.x1.tmp").write_text("{")
    assert store.clean_orphans(tmp_path) == 1 and not list(tmp_path.rglob("*.tmp"))
