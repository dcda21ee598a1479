"""The direction library: shipped defaults that compute, user directions that persist, meaning that moves."""
from __future__ import annotations

import json

import pytest
import torch

import blend
from blend.directions import (DIRECTIONS_DIR, Direction, DirectionLibrary, default_directions, direction_vector,
                              parse_pairs)
from blend.presets import get_preset



@pytest.fixture(scope="module")
def blender(mini):  # conftest's session-wide model; directions need only its encoder
    return mini


def test_every_shipped_shapes_direction_computes(blender):
    lib = DirectionLibrary.for_preset(blender, home=None)
    assert {"larger", "circle -> square", "square (from pictures)"} <= set(lib.names())
    for name in lib.names():
        v = lib.vector(blender, name)
        assert v.shape == (blender.embed_dim,) and v.norm() > 0.05, name


def test_general_directions_are_well_formed():
    ds = default_directions({"name": "some-real-preset"})
    assert len(ds) >= 4 and all(d.pairs and d.source == "default" for d in ds)
    assert json.loads((DIRECTIONS_DIR / "general.json").read_text())["directions"]


def test_defaults_come_from_the_preset_name_then_world_then_general():
    spec = get_preset("shapes-mini")
    assert default_directions(spec)[0].name == "larger"  # shapes-mini's world is "shapes"
    inline = default_directions({"name": "x", "directions": [{"name": "up", "pairs": [["a", "b"]]}]})
    assert [d.name for d in inline] == ["up"]


def test_larger_moves_a_small_shape_towards_a_large_one(blender):
    lib = DirectionLibrary.for_preset(blender, home=None)
    small, large = blender.encode_texts(["a small red circle on a blue background",
                                         "a large red circle on a blue background"])
    moved = blend.apply_directions(small, [lib.vector(blender, "larger")], [1.0])
    assert float(moved @ large) > float(small @ large) + 0.05
    back = blend.apply_directions(large, [lib.vector(blender, "larger")], [-1.0])
    assert float(back @ small) > float(large @ small) + 0.05


def test_user_directions_add_rename_delete_and_persist(blender, tmp_path):
    lib = DirectionLibrary.for_preset(blender, home=tmp_path)
    path = tmp_path / "directions" / f"{blender.name}.json"
    lib.add({"name": "greener", "pairs": [["a green square", "a red square"]], "description": "d"}, blender=blender)
    lib.add({"name": "tri pics", "positive": ["green-triangle-on-white.png"], "negative": ["red-circle-on-blue.png"]},
            blender=blender)
    assert path.is_file() and DirectionLibrary.for_preset(blender, home=tmp_path).get("greener").description == "d"
    lib.rename("greener", "more green")
    again = DirectionLibrary.for_preset(blender, home=tmp_path)
    assert "more green" in again.names() and "greener" not in again.names()
    assert torch.allclose(again.vector(blender, "more green"),
                          direction_vector(blender, {"name": "x", "pairs": [["a green square", "a red square"]]}))
    again.delete("tri pics")
    assert DirectionLibrary.for_preset(blender, home=tmp_path).names()[-1] == "more green"
    assert json.loads(path.read_text())["directions"] == [
        {"name": "more green", "description": "d", "pairs": [["a green square", "a red square"]]}]


def test_library_refuses_what_it_should(blender, tmp_path):
    lib = DirectionLibrary.for_preset(blender, home=tmp_path)
    with pytest.raises(ValueError, match="shipped direction"):
        lib.rename("larger", "bigger")
    with pytest.raises(ValueError, match="shipped direction"):
        lib.delete("larger")
    with pytest.raises(ValueError, match="shipped direction: choose another name"):
        lib.add({"name": "larger", "pairs": [["a", "b"]]})
    lib.add({"name": "mine", "pairs": [["red", "blue"]]})
    with pytest.raises(ValueError, match="already have"):
        lib.add({"name": "mine", "pairs": [["red", "blue"]]})
    with pytest.raises(ValueError, match="zebra"):
        lib.add({"name": "zebra", "pairs": [["a zebra", "a horse"]]}, blender=blender)
    assert "zebra" not in lib.names()
    with pytest.raises(ValueError, match="no example called"):
        lib.add({"name": "pics", "positive": ["nope.png"], "negative": ["red-circle-on-blue.png"]}, blender=blender)
    with pytest.raises(ValueError, match="not both"):
        Direction.from_dict({"name": "x", "pairs": [["a", "b"]], "positive": ["red-circle-on-blue.png"]})
    with pytest.raises(ValueError, match="needs a name"):
        Direction.from_dict({"name": " ", "pairs": [["a", "b"]]})
    with pytest.raises(ValueError, match="no direction called"):
        lib.get("nothing")


def test_parse_pairs():
    assert parse_pairs("a large circle | a small circle\n\n red|blue ") == [["a large circle", "a small circle"],
                                                                             ["red", "blue"]]
    with pytest.raises(ValueError, match="line 2"):
        parse_pairs("a | b\nno bar here")
