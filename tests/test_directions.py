"""The direction library: shipped defaults that compute, user directions that persist, meaning that moves."""
from __future__ import annotations

import json

import pytest
import torch

import blend
from blend.directions import (DIRECTIONS_DIR, Direction, DirectionLibrary, default_directions, direction_vector,
                              parse_pairs)
from blend.presets import get_preset

# shipped direction -> (attribute, from, to) it moves in the shapes world
MOVES = {"larger": ("size", "small", "large"), "circle -> square": ("shape", "circle", "square"),
         "circle -> star": ("shape", "circle", "star"),
         "blue -> red": ("color", "blue", "red"), "left -> right": ("position", "left", "right"),
         "top -> bottom": ("position", "top", "bottom"), "lit from above": ("lighting", "even", "top"),
         "dark background": ("background", "white", "black")}


@pytest.fixture(scope="module")
def blender(mini):  # conftest's session-wide model; directions need only its encoder
    return mini


def test_every_shipped_shapes_direction_computes(blender):
    lib = DirectionLibrary.for_preset(blender, home=None)
    assert set(MOVES) | {"square (from pictures)"} <= set(lib.names())
    for name in lib.names():
        v = lib.vector(blender, name)
        assert v.shape == (blender.embed_dim,) and v.norm() > 0.05, name


def test_shipped_shapes_directions_speak_the_world_vocabulary():
    from blend import world

    data = json.loads((DIRECTIONS_DIR / "shapes.json").read_text())
    assert data["about"].endswith(" ".join(dict.fromkeys(world.VOCAB_WORDS)) + ".")
    for d in data["directions"]:
        for text in (t for pair in d.get("pairs", []) for t in pair):
            assert set(text.replace(",", " ").split()) <= set(world.VOCAB_WORDS), (d["name"], text)
        for name in d.get("positive", []) + d.get("negative", []):
            assert (DIRECTIONS_DIR.parents[1] / "examples" / name).is_file(), name


def test_general_directions_are_well_formed():
    ds = default_directions({"name": "some-real-preset"})
    assert len(ds) >= 4 and all(d.pairs and d.source == "default" for d in ds)
    assert json.loads((DIRECTIONS_DIR / "general.json").read_text())["directions"]


def test_defaults_come_from_the_preset_name_then_world_then_general():
    spec = get_preset("shapes-mini")
    assert default_directions(spec)[0].name == "larger"  # shapes-mini's world is "shapes"
    inline = default_directions({"name": "x", "directions": [{"name": "up", "pairs": [["a", "b"]]}]})
    assert [d.name for d in inline] == ["up"]


def scenes_with(attribute: str, values: tuple, n: int = 6, seed: int = 0):
    """n training scenes with `attribute` = values[0] that stay valid and in training with any of `values`."""
    import random

    from blend import world

    rng, out = random.Random(seed), []
    while len(out) < n:
        s = world.sample_scene(rng, split="train")
        other = {"color": s.background, "background": s.color}.get(attribute)
        if other in values:
            continue
        s = s.with_(**{attribute: values[0]})
        if not any(s.with_(**{attribute: v}).held_out for v in values):
            out.append(s)
    return out


def test_larger_moves_a_small_shape_towards_a_large_one(blender):
    lib = DirectionLibrary.for_preset(blender, home=None)
    small, large = blender.encode_texts(["a small red circle on a blue background",
                                         "a large red circle on a blue background"])
    moved = blend.apply_directions(small, [lib.vector(blender, "larger")], [1.0])
    assert float(moved @ large) > float(small @ large) + 0.05
    back = blend.apply_directions(large, [lib.vector(blender, "larger")], [-1.0])
    assert float(back @ small) > float(large @ small) + 0.05


@pytest.mark.parametrize("name", sorted(MOVES))
def test_each_shipped_direction_moves_its_attribute_in_pictures_and_captions(blender, name):
    """Over 6 scenes, pictures and captions alike: pushed along the direction (strength 1), a scene's embedding
    nears the same scene with the attribute changed, and of the attribute's other values the target is now the
    nearest (for size, which is ordered, any value on the way: medium counts from small to large)."""
    from blend import world

    attribute, a, b = MOVES[name]
    v = DirectionLibrary.for_preset(blender, home=None).vector(blender, name)
    order = world.VALUES[attribute]
    allowed = set(order[order.index(a) + 1:order.index(b) + 1]) if attribute == "size" else {b}
    ok = 0
    scenes = scenes_with(attribute, (a, b))
    for s in scenes:
        values = [w for w in order if attribute not in ("color", "background") or w not in (s.color, s.background)
                  or w == getattr(s, attribute)]
        variants = [s.with_(**{attribute: w}) for w in values]
        for encode, of in ((blender.encode_images, world.render), (blender.encode_texts, world.caption)):
            e = encode([of(x) for x in variants])  # (V, D): the scene with each value
            moved = blend.apply_directions(e[values.index(a)], [v], [1.0])
            sims = e @ moved  # (V,)
            nearer = float(sims[values.index(b)]) > float(e[values.index(a)] @ e[values.index(b)])
            sims[values.index(a)] = -2  # where it came from is not a candidate
            ok += nearer and values[int(sims.argmax())] in allowed
    assert ok >= 2 * len(scenes) - 2, f"{name}: {ok} of {2 * len(scenes)}"


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
