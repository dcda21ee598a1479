"""Recipes and their history: JSON round trips, checks at the edge, and re-running a recipe reproduces it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import blend
from blend.examples import ExampleIndex, example_path, list_examples, list_recipes
from blend.recipe import DATA_URI, History, Recipe, Term, image_to_data_uri, make_term, run_recipe
from blend import world
from blend.world import Scene, is_held_out, read_attributes, render

from app_support import PRESET, ROOT, is_real_shapes_mini, require_models

EX = "red-circle-on-blue.png"
FAST = 2  # sampler steps where a test checks plumbing, not pictures


@pytest.fixture(scope="module")
def blender(mini):  # conftest's session-wide model, on BLEND_TEST_PRESET
    require_models()
    return mini


def same_images(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def close_images(a, b, tol: float = 2.0) -> bool:
    """Equal up to float rounding (mean absolute difference in 0..255 levels)."""
    return len(a) == len(b) and all(
        np.abs(np.asarray(x, float) - np.asarray(y, float)).mean() < tol for x, y in zip(a, b))


def mix_recipe(**kw) -> Recipe:
    return Recipe("mix", [Term("image", EX), Term("text", "a square", 0.5)], **{"steps": FAST, **kw})


# ---------------------------------------------------------------------------------------------- no model needed
def test_recipe_round_trips_through_json():
    img = render(Scene("green", "white", "triangle", "small"), 64)
    r = Recipe("directions", [Term("image", image_to_data_uri(img)), Term("text", "red", -0.5, muted=True)],
               directions=[{"name": "larger", "strength": 1.5}], seed=7, n_seeds=3,
               sweep={"name": "larger", "strengths": [-1, 0, 1]}, preset="shapes-mini", note="n")
    back = Recipe.from_json(r.to_json())
    assert back == r.check()
    assert json.loads(back.to_json()) == json.loads(r.to_json())
    assert np.array_equal(np.asarray(back.terms[0].load_image()), np.asarray(img))  # the PNG is lossless


@pytest.mark.parametrize("change, words", [
    ({"operation": "blur"}, "operation"),
    ({"terms": []}, "terms is empty"),
    ({"n_seeds": 9}, "n_seeds"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"method": "cubic"}, "method"),
    ({"colour": "red"}, "unknown keys"),
    ({"terms": [{"kind": "sound", "value": "x"}]}, "kind"),
    ({"terms": [{"kind": "text", "value": "  "}]}, "empty text term"),
    ({"terms": [{"kind": "text", "value": "red", "weight": float("nan")}]}, "weight"),
    ({"operation": "path", "terms": [{"kind": "text", "value": "red"}]}, "exactly 2 terms"),
    ({"operation": "plane", "terms": [{"kind": "text", "value": "red"}] * 2, "k": 3}, "exactly 3 terms"),
    ({"directions": [{"name": "larger", "strength": "lots"}]}, "strength"),
    ({"version": 99}, "version"),
])
def test_bad_recipes_are_refused_with_the_field_named(change, words):
    d = {**mix_recipe().to_dict(), **change}
    with pytest.raises(ValueError, match=words):
        Recipe.from_dict(d)


def test_example_names_cannot_reach_outside_examples():
    for name in ("../pyproject.toml", "/etc/passwd", "..", ".hidden.png", "sub/red.png"):
        with pytest.raises(ValueError, match="bare file name"):
            example_path(name)
    with pytest.raises(ValueError, match="no example called"):
        Term("image", "purple-cow.png").load_image()
    with pytest.raises(ValueError, match="base64"):
        Term("image", DATA_URI + "not base64!").load_image()


def test_make_term_from_form_values():
    assert make_term("image", example=EX) == Term("image", EX)
    big = Image.new("RGB", (2000, 1000), (200, 10, 10))
    t = make_term("image", image=big, weight=-0.5, muted=True)
    assert t.value.startswith(DATA_URI) and t.weight == -0.5 and t.muted
    assert t.load_image().size == (512, 256)  # stored no larger than 512 px, and encoded as stored
    assert make_term("text", text="  a square ") == Term("text", "a square")
    with pytest.raises(ValueError, match="term 2 is an image term without an image"):
        make_term("image", where="term 2")
    with pytest.raises(ValueError, match="without text"):
        make_term("text", text=" ")


def test_history_tree_knows_parents_and_round_trips():
    h = History()
    root = h.add(mix_recipe())
    a = h.branch(root.id, seed=1)
    b = h.branch(root.id, method="slerp")
    c = h.add(Recipe("plane", [Term("text", t) for t in ("red", "blue", "green")]), parent=a.id)
    assert [r.id for r in h.children(root.id)] == [a.id, b.id]
    assert h.get(a.id).parent == root.id and h.get(a.id).seed == 1 and h.get(b.id).method == "slerp"
    assert [r.id for r in h.lineage(c.id)] == [root.id, a.id, c.id]
    assert [(d, r.id) for d, r in h.tree()] == [(0, root.id), (1, a.id), (2, c.id), (1, b.id)]
    assert f"{c.id}  plane" in h.render(current=c.id) and "◀ current" in h.render(current=c.id)
    back = History.from_json(h.to_json())
    assert back.to_dict() == h.to_dict()
    assert back.merge(h.to_json()) == []  # nodes already there are not added twice
    # a single recipe whose parent is unknown here becomes a root
    lone = h.get(c.id).to_dict()
    lone["id"] = "feedbeef"
    fresh = History()
    assert fresh.merge(json.dumps(lone)) == ["feedbeef"] and fresh.get("feedbeef").parent is None
    with pytest.raises(ValueError, match="no history node"):
        h.add(mix_recipe(), parent="nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        History.from_json("{")


def test_shipped_examples_are_reproducible_and_their_recipes_load(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_examples", ROOT / "examples" / "make_examples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(tmp_path)
    assert list_examples(tmp_path) == list_examples() and len(list_examples()) >= 12
    seen = {a: set() for a in world.ATTRIBUTES}
    for name in list_examples():
        assert (tmp_path / name).read_bytes() == example_path(name).read_bytes(), f"{name} differs from the script"
        img = Image.open(example_path(name))
        assert img.size == (world.SIZE, world.SIZE)  # the world's own pixels; the app scales them up sharp
        reading = read_attributes(img)
        assert mod.example_name(Scene(*reading.attributes)) == name, f"{name} shows {reading.attributes}"
        assert not is_held_out(reading.color, reading.shape, reading.background), name
        for a, v in zip(world.ATTRIBUTES, reading.attributes):
            seen[a].add(v)
    assert all(seen[a] == set(world.VALUES[a]) for a in world.ATTRIBUTES), seen  # every value of every attribute
    assert {json.loads((ROOT / "examples" / n).read_text())["operation"] for n in list_recipes()} >= {"mix", "path", "plane"}
    for name in list_recipes():
        assert (tmp_path / name).read_text() == (ROOT / "examples" / name).read_text()
        recipe = Recipe.from_json((ROOT / "examples" / name).read_text())
        for t in recipe.terms:
            if t.kind == "text":  # v2 phrases: only the world's words
                assert set(t.value.replace(",", " ").split()) <= set(world.VOCAB_WORDS), (name, t.value)


def test_the_held_out_example_recipe_makes_a_held_out_scene():
    """mix-circle-to-star.json: picture - 'a circle' + 'a star' names a (colour, shape, background) kept out of training."""
    recipe = Recipe.from_json((ROOT / "examples" / "mix-circle-to-star.json").read_text())
    image, plus, minus = recipe.terms
    x = read_attributes(Image.open(example_path(image.value)))
    assert (plus.value, plus.weight, minus.value, minus.weight) == ("a star", 1.0, "a circle", -1.0)
    assert x.shape == "circle" and not is_held_out(x.color, "circle", x.background)
    assert is_held_out(x.color, "star", x.background)


# ---------------------------------------------------------------------------------------------- on the preset
def test_rerunning_a_recipe_from_json_gives_identical_results(blender):
    first = run_recipe(blender, mix_recipe(seed=3, n_seeds=2))
    again = run_recipe(blender, Recipe.from_json(first.recipe.to_json()))
    assert first.recipe.preset == blender.name
    assert len(first.images) == 2 and first.captions == ["seed 3", "seed 4"]
    assert same_images(first.images, again.images) and first.texts == again.texts
    assert torch.equal(first.points, again.points)
    path = Recipe.from_json((ROOT / "examples" / "path-circle-to-triangle.json").read_text()).copy(n=4, steps=FAST)
    p1, p2 = run_recipe(blender, path), run_recipe(blender, Recipe.from_json(path.to_json()))
    assert len(p1.images) == len(p1.texts) == 4 and same_images(p1.images, p2.images)


def test_zero_weight_and_muted_terms_drop_out_but_stay_in_the_recipe(blender):
    base = run_recipe(blender, Recipe("mix", [Term("image", EX), Term("text", "a square")], steps=FAST))
    extra = [Term("image", EX), Term("text", "a square"), Term("text", "a triangle", 0.0),
             Term("text", "a circle", 1.0, muted=True)]
    r = run_recipe(blender, Recipe("mix", extra, steps=FAST))
    assert torch.allclose(r.points, base.points, atol=1e-6)
    assert len(r.recipe.terms) == 4 and r.recipe.terms[3].muted
    with pytest.raises(ValueError, match="muted or has weight 0"):
        run_recipe(blender, Recipe("mix", [Term("text", "red", 0.0), Term("text", "blue", muted=True)]))


def test_mix_matches_the_public_api_and_finds_the_nearest_example(blender):
    index = ExampleIndex(blender)
    r = run_recipe(blender, Recipe("mix", [Term("image", EX), Term("text", "a square", -0.5)], steps=FAST), index=index)
    expected = blend.mix(torch.cat([blender.encode_images([example_path(EX)]), blender.encode_texts(["a square"])]),
                         [1.0, -0.5])
    assert torch.allclose(r.points[0], expected, atol=1e-6)
    alone = run_recipe(blender, Recipe("mix", [Term("image", EX)], steps=FAST), index=index)
    assert alone.nearest[0][0] == EX and alone.nearest[0][1] > 0.999


def test_path_and_plane_run_from_one_start_noise(blender):
    a = blender.encode_images([example_path(EX)])[0]
    b = blender.encode_texts(["a small green triangle on a white background"])[0]
    path = run_recipe(blender, Recipe("path", [Term("image", EX), Term("text", "a small green triangle on a white "
                                                                             "background")], n=5, steps=FAST))
    assert path.points.shape == (5, blender.embed_dim)
    assert torch.allclose(path.points[0], a, atol=1e-5) and torch.allclose(path.points[-1], b, atol=1e-5)
    assert path.captions[0] == "t=0.00" and path.captions[-1] == "t=1.00"
    # the frames are the decoder's pictures of each point from the recipe's seed, decoded together
    assert same_images(path.images[:4], blender.decode_images(path.points[:4], seed=path.recipe.seed, steps=FAST))
    plane = run_recipe(blender, Recipe("plane", [Term("image", EX), Term("text", "a yellow circle"),
                                                 Term("text", "a red square")], k=3, steps=FAST))
    assert len(plane.images) == len(plane.texts) == 9
    assert torch.allclose(plane.points[0], a, atol=1e-5)
    assert torch.allclose(plane.points[2], blender.encode_texts(["a yellow circle"])[0], atol=1e-5)


def test_a_directions_recipe_carries_its_definitions(blender, tmp_path):
    from blend.directions import DirectionLibrary

    lib = DirectionLibrary.for_preset(blender, home=tmp_path)
    lib.add({"name": "mine", "pairs": [["a large circle", "a small circle"]]})
    r = run_recipe(blender, Recipe("directions", [Term("image", EX)], directions=[{"name": "mine", "strength": 1.0}], steps=FAST),
                   library=lib)
    assert r.recipe.directions[0]["definition"]["pairs"] == [["a large circle", "a small circle"]]
    lib.delete("mine")  # the recipe no longer needs the library
    again = run_recipe(blender, Recipe.from_json(r.recipe.to_json()))
    assert torch.equal(r.points, again.points) and same_images(r.images, again.images)
    sweep = run_recipe(blender, Recipe("directions", [Term("image", EX)], sweep={"name": "larger", "strengths": [-1, 0, 1]}, steps=FAST),
                       library=lib)
    assert len(sweep.images) == 3 and sweep.captions[1] == "larger +0.00"
    assert torch.allclose(sweep.points[1], blender.encode_images([example_path(EX)])[0], atol=1e-5)


def test_a_recipe_from_another_preset_runs_with_a_warning(blender):
    r = run_recipe(blender, mix_recipe(preset="some-other-preset"))
    assert r.warnings and "some-other-preset" in r.warnings[0] and r.recipe.preset == blender.name


def test_unknown_words_name_the_term_and_the_word(blender):
    with pytest.raises(ValueError, match=r"term 2 \('a zebra'\).*zebra"):
        run_recipe(blender, Recipe("mix", [Term("image", EX), Term("text", "a zebra")]))


def test_meaning_survives_the_round_trip(blender):
    """On the trained shapes-mini: a lone example decodes back to a picture of it, and to its caption."""
    if not is_real_shapes_mini():
        pytest.skip(f"meaning checks read the trained shapes-mini; BLEND_TEST_PRESET is {PRESET!r}")
    names = [EX, "small-red-square-on-white-top-left.png", "medium-blue-triangle-on-green-lit-from-left.png",
             "orange-star-on-black.png"]
    pictures = sentences = 0
    for name in names:
        truth = read_attributes(Image.open(example_path(name)))
        r = run_recipe(blender, Recipe("mix", [Term("image", name)], n_seeds=2))
        pictures += sum(read_attributes(img).attributes == truth.attributes for img in r.images)
        sentences += world.parse_caption(r.texts[0]) == truth.attributes
    assert pictures >= 2 * len(names) - 1 and sentences >= len(names) - 1, (pictures, sentences)


# ---------------------------------------------------------------------------------------------- structure
def test_blend_modules_import_without_cycles():
    """Module-level imports between blend's own files form no cycle (recipe -> run/history would be one)."""
    import ast

    pkg = ROOT / "blend"
    graph = {}
    for f in pkg.glob("*.py"):
        deps = set()
        for node in ast.parse(f.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module} if node.module else {a.name for a in node.names}
        graph[f.stem] = {d.split(".")[0] for d in deps if (pkg / f"{d.split('.')[0]}.py").exists()}

    def reach(start):
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph.get(m, ())
        return seen

    cycles = [m for m in graph if m in reach(m)]
    assert not cycles, {m: graph[m] for m in cycles}
    assert "recipe" not in graph["directions"] and "run" in graph["canvas"]


def test_history_is_a_tree_of_any_depth_and_bounded():
    from blend.history import History

    h = History(max_nodes=3000)
    node = h.add(mix_recipe())
    for _ in range(2500):  # deeper than Python's recursion limit
        node = h.branch(node.id, seed=node.seed + 1)
    tree = h.tree()
    assert len(tree) == 2501 and tree[-1][0] == 2500 and tree[-1][1].id == node.id
    small = History(max_nodes=2)
    small.add(mix_recipe())
    small.add(mix_recipe())
    with pytest.raises(ValueError, match="at most 2 nodes"):
        small.add(mix_recipe())


def test_recipe_terms_nest_and_are_checked():
    inner = mix_recipe()
    outer = Recipe("mix", [Term("recipe", inner.to_json(indent=None), 0.5), Term("text", "a square", 0.5)])
    assert Recipe.from_json(outer.to_json()) == outer.check()
    with pytest.raises(ValueError, match="only a mix or directions recipe"):
        Recipe("mix", [Term("recipe", Recipe("path", [Term("text", "red"), Term("text", "blue")]).to_json())]).check()
    with pytest.raises(ValueError, match="not valid JSON"):
        Recipe("mix", [Term("recipe", "{oops")]).check()


def test_canvas_sweep_matches_its_committed_child(blender):
    """A drag previews from one batch; the child it commits at one of those strengths is that very picture."""
    from blend.canvas import blend_recipe, child_recipe, strength_sweep, word_direction

    tile = Recipe("mix", [Term("text", "a small red circle on a blue background")])
    d = word_direction("large", "small")
    sweep = strength_sweep(blender, tile, d, [-1.0, 0.0, 1.5])
    child = run_recipe(blender, child_recipe(tile, d, 1.5))
    assert close_images(child.images, sweep.images[2:])  # batch of 3 vs batch of 1: float rounding only
    assert child.texts[0] == sweep.texts[2]
    if is_real_shapes_mini():
        assert "large" in sweep.texts[2] and "small" in sweep.texts[0]  # the size moved, as the words say
    # strength 0 is the tile itself; a blend at weight 0 is the dragged tile's point
    base = run_recipe(blender, tile)
    assert close_images(base.images, sweep.images[1:2])
    mixed = run_recipe(blender, blend_recipe(tile, child.recipe, 0.0))
    assert torch.allclose(mixed.points, base.points, atol=1e-5)
    with pytest.raises(ValueError, match="strength"):
        child_recipe(tile, d, 7)


def test_agreement_flags_a_picture_that_is_not_its_sentence(blender):
    from blend.agreement import check_agreement

    scene = Scene("red", "blue", "circle", "small", "left")
    cap = world.caption(scene)  # a whole caption: the sentence a picture of the scene reads as
    point = blender.encode_texts([cap])
    good = render(scene)
    wrong = render(Scene("green", "white", "square", "large", "bottom right", "top"))
    ok, bad = check_agreement(blender, point, [good, wrong], [cap], which=[0, 0])
    assert ok.ok and not ok.warning and ok.cosine > bad.cosine
    assert not bad.ok and "disagree" in bad.warning and bad.reading != cap


def test_agreement_reads_a_partial_sentence_by_what_it_names(blender):
    """"a red circle" agrees with a picture of any red circle and disagrees with a blue one."""
    from blend.agreement import check_agreement

    point = blender.encode_texts(["a red circle"])
    red = render(Scene("red", "white", "circle", "large", "top right", "left"))
    blue = render(Scene("blue", "white", "circle", "large", "top right", "left"))
    ok, bad = check_agreement(blender, point, [red, blue], ["a red circle"], which=[0, 0])
    assert world.parse_caption(ok.reading) is not None  # the picture reads as a whole caption ...
    assert "the picture reads as" not in ok.warning  # ... that says what the partial sentence says
    assert "the picture reads as" in bad.warning and "blue" in bad.reading


def test_history_keeps_results_hangs_them_where_they_came_from_and_names_downloads(blender):
    from blend.history import History, download_name

    h = History(max_stored=2)
    first = run_recipe(blender, mix_recipe())
    node = h.add(first.recipe, result=first)
    kept = h.outcome(node.id)  # shown again without running the recipe
    assert same_images(kept.images, first.images) and kept.texts == first.texts
    assert kept.agreement == [a.to_dict() for a in first.agreement]
    # a result hangs under the node it came from: same operation and a shared input; else it is a new root
    edited = mix_recipe(seed=3)
    assert h.origin(edited, node.id) == node.id
    other = Recipe("mix", [Term("text", "a circle")])
    assert h.origin(other, node.id) is None
    path = Recipe("path", [Term("image", EX), Term("text", "a square")])
    assert h.origin(path, node.id) is None  # a path made after a mix did not come from it
    assert h.origin(edited, None) is None and h.origin(edited, "nope") is None
    # bounded: the oldest kept pictures go first; the node itself stays
    later = [h.add(mix_recipe(seed=s), result=first) for s in (1, 2)]
    assert h.outcome(node.id) is None and node.id in h and all(h.outcome(n.id) for n in later)
    # readable download names: the operation, the words without articles, the seed
    assert download_name(Recipe("mix", [Term("text", "a red star")], seed=0)) == "blend-mix-red-star-seed0.png"
    name = download_name(Recipe("path", [Term("image", EX), Term("text", "a square")], seed=4), "gif")
    assert name == f"blend-path-{EX.rsplit('.', 1)[0]}-square-seed4.gif".replace("-on-", "-")


def test_every_picture_of_every_workspace_can_be_a_tile(blender):
    """Path frames, plane cells, seeds and strip frames each become a point recipe that remakes that picture."""
    from blend import world
    from blend.canvas import frame_recipes, marks, result_tiles
    from blend.run import recipe_point

    caps = [world.caption(s) for s in world.sample_scenes(3, 11)]
    results = [
        run_recipe(blender, Recipe("path", [Term("text", caps[0]), Term("text", caps[1])], n=3, steps=FAST)),
        run_recipe(blender, Recipe("path", [Term("text", caps[0]), Term("text", caps[1])], n=3, method="lerp",
                                   steps=FAST)),
        run_recipe(blender, Recipe("plane", [Term("text", c) for c in caps], k=2, steps=FAST)),
        run_recipe(blender, Recipe("mix", [Term("text", caps[0])], n_seeds=2, steps=FAST)),
        run_recipe(blender, Recipe("directions", [Term("text", caps[0])], steps=FAST, sweep={
            "name": "w", "strengths": [-1.0, 1.0]}, directions=[{"name": "w", "strength": 0.0, "definition": {
                "name": "w", "pairs": [[caps[1], caps[0]]]}}])),
    ]
    for result in results:
        frames = frame_recipes(result)
        assert len(frames) == len(result.images)
        for i, rec in enumerate(frames):
            row = result.points[i if len(result.points) == len(frames) else 0]
            assert torch.allclose(recipe_point(blender, rec), row, atol=1e-5), (result.recipe.operation, i)
    # a frame decoded alone is the frame of the strip (same seed, same noise)
    alone = run_recipe(blender, frame_recipes(results[0])[1])
    assert close_images(alone.images, results[0].images[1:2]) and alone.texts[0] == results[0].texts[1]
    assert alone.recipe.operation == "mix" and [d["kind"] for d in alone.recipe.to_dict()["terms"]] == ["text", "text"]
    # ends and corners are marked; tiles carry lineage inside a path
    assert marks(results[0].recipe, 3) == ["start", "", "end"]
    assert marks(results[2].recipe, 4) == ["a", "b", "c", "b + c − a"]
    tiles = result_tiles(results[0])
    assert [t["link"] for t in tiles] == [None, 0, 1] and tiles[1]["arrow"] == "t=0.50"
    assert tiles[2]["mark"] == "end" and tiles[2]["text"] == results[0].texts[2]
    assert tiles[0]["image"].startswith(DATA_URI) and tiles[0]["agreement"]["cosine"] is not None


def test_sentences_and_agreement_in_one_pass_equal_the_two_calls(blender):
    """Decoding the points' sentences and the pictures' readings in one batch changes no sentence and no check,
    over 24 points (captions, partial descriptions, word arithmetic) with their decoded pictures."""
    from blend import ops
    from blend.agreement import check_agreement, sentences_and_agreement

    scenes = world.sample_scenes(8, seed=21)
    caps = blender.encode_texts([world.caption(s) for s in scenes])
    parts = blender.encode_texts([f"a {s.color} {s.shape}" for s in scenes])
    arith = ops.normalize(caps - blender.encode_texts(["circle"]) + blender.encode_texts(["star"]))
    points = torch.cat([caps, parts, arith])
    images = blender.decode_images(points, seed=list(range(len(points))))
    which = list(range(len(points)))
    sentences, checks = sentences_and_agreement(blender, points, images, which)
    alone = blender.decode_texts(points)
    assert sentences == alone
    assert [c.to_dict() for c in checks] == [c.to_dict() for c in check_agreement(blender, points, images, alone, which)]
    assert sum(c.ok for c in checks) >= 12  # and the check still passes the pictures that show their point
