"""The app as people and programs use it: `python app.py` on a free port, driven by gradio_client and by
headless Chromium (Playwright on the system's /usr/bin/chromium; no browser is ever downloaded).
Screenshots go to artifacts/.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from app_support import ARTIFACTS, ROOT, AppServer, require_models

CHROMIUM = os.environ.get("BLEND_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 90_000  # per wait in the browser: generous for a loaded 2-core machine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_models()
    app = AppServer(tmp_path_factory.mktemp("blend-home"))
    yield app
    app.stop()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


def png(data_uri: str) -> Image.Image:
    assert data_uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1]))).convert("RGB")


# ---------------------------------------------------------------------------------------------- API
def test_importing_the_app_loads_no_model():
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['x']; import app, blend.blender as b; "
            "assert callable(app.build_demo) and not hasattr(app, 'BLENDER'); "
            "assert 'blend.decode_image' not in sys.modules and 'open_clip' not in sys.modules, 'a model was loaded'")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_build_demo_takes_a_loaded_blender(mini):
    import gradio as gr

    import app

    demo = app.build_demo(mini)
    assert isinstance(demo, gr.Blocks)
    words = app.vocabulary(mini)  # read from the tokenizer: every caption word is there, specials are not
    from blend import world
    assert set(world.VOCAB_WORDS) <= set(words)  # every word of the world, so every caption can be clicked
    assert set(world.caption(world.sample_scenes(1, 3)[0]).replace(",", " ").split()) <= set(words)
    assert not any(w.startswith("[") for w in words)


def test_api_mix_then_decode(client):
    terms = [{"kind": "image", "value": "red-circle-on-blue.png"}, {"kind": "text", "value": "a square", "weight": 0.5}]
    out = client.predict(terms=terms, method="lerp", seed=0, n_seeds=2, api_name="/mix")
    assert len(out["images"]) == 2 and png(out["images"][0]).size[0] >= 64  # the world's 64 px, or larger
    assert isinstance(out["texts"][0], str) and out["texts"][0].strip()
    assert out["recipe"]["terms"][1]["weight"] == 0.5 and out["nearest"][0]["name"].endswith(".png")
    dec = client.predict(embedding=out["embeddings"][0], seed=0, api_name="/decode")
    assert dec["text"] == out["texts"][0]
    # the same point from the same seed is the same picture (up to the 6 decimals the JSON carries)
    diff = np.abs(np.asarray(png(dec["image"]), float) - np.asarray(png(out["images"][0]), float)).mean()
    assert diff < 2.0


def test_api_decode_gives_one_image_and_sentence_per_row(client):
    """Two rows in, two images and two sentences out, each the one its row gives alone with its seed."""
    from blend import world

    captions = [world.caption(s) for s in world.sample_scenes(2, seed=11)]
    rows = [client.predict(kind="text", value=c, api_name="/encode") for c in captions]
    both = client.predict(embedding=rows, seed=[3, 4], api_name="/decode")
    assert both["texts"] == captions and len(both["images"]) == 2 and "image" not in both
    for row, seed, got in zip(rows, [3, 4], both["images"]):
        alone = client.predict(embedding=row, seed=seed, api_name="/decode")
        assert alone["images"] == [alone["image"]] and alone["texts"] == [alone["text"]]
        diff = np.abs(np.asarray(png(got), float) - np.asarray(png(alone["image"]), float)).max()
        assert diff <= 2.0
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="seed has 3 seeds for 2 rows"):
        client.predict(embedding=rows, seed=[1, 2, 3], api_name="/decode")


def test_api_runs_the_shipped_recipes(client):
    info = client.predict(api_name="/info")
    assert info["preset"] and "red-circle-on-blue.png" in info["examples"] and "larger" in info["directions"]
    recipe = json.loads((ROOT / "examples" / "plane-colour-shape.json").read_text())
    out = client.predict(recipe={**recipe, "k": 2, "steps": 2}, api_name="/run_recipe")
    assert len(out["images"]) == len(out["texts"]) == 4 and out["captions"][3] == "(1,1)"


@pytest.mark.parametrize("terms, words", [
    ([{"kind": "text", "value": "a zebra"}], "zebra"),
    ([{"kind": "image", "value": "../pyproject.toml"}], "bare file name"),
    ([{"kind": "image", "value": "data:image/png;base64,AAAA"}], "cannot read image"),
    ([{"kind": "text", "value": "red", "weight": 0}], "weight 0"),
    ([], "terms is empty"),
])
def test_api_errors_say_what_to_fix_and_the_server_keeps_serving(client, terms, words):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=words):
        client.predict(terms=terms, api_name="/mix")
    assert client.predict(kind="text", value="a red circle", api_name="/encode")  # still serving


def test_history_tree_and_result_views_without_a_browser():
    """The markup the History tab and the result views are made of: a nested tree with thumbnails and
    one-click downloads named for the recipe; a plane as its k x k grid with corners marked and sentences."""
    from blend.history import History, Outcome
    from blend.recipe import Recipe, Term

    import app

    pics = [Image.new("RGB", (8, 8), c) for c in ("red", "blue", "green", "white")]
    plane = Recipe("plane", [Term("text", "a red star"), Term("text", "b"), Term("text", "c")], k=2)
    outcome = Outcome(pics, ["one", "two", "three", "four"], ["(0,0)", "(0,1)", "(1,0)", "(1,1)"],
                      [{"ok": True, "cosine": 0.9}, {"ok": False, "cosine": 0.2, "warning": "Picture and sentence "
                                                     "disagree"}, {"ok": True, "cosine": 0.9}, {"ok": True, "cosine": 0.9}])
    view = app.figures_html(outcome, plane)
    assert "repeat(2, minmax(0, 1fr))" in view and view.count("<figure") == 4
    assert re.findall(r"class='bl-mark'>([^<]+)<", view) == ["a", "b", "c", "b + c − a"]
    assert all(f"class='bl-sentence'>{t}<" in view for t in outcome.texts)  # whole sentences, under each picture
    assert view.count("data-role='warning'") == 1 and "download='blend-plane-red-star-b-c-seed0.png'" in view

    h = History()
    root = h.add(plane, result=outcome)
    child = h.add(plane.copy(seed=1), parent=root.id)  # not kept: no thumbnail, no download
    other = h.add(Recipe("mix", [Term("text", "a red star")]), result=outcome)
    tree = app.tree_html(h, child.id)
    assert tree.count("<ul>") == tree.count("</ul>") == 2 and tree.count("<li>") == tree.count("</li>") == 3
    nested = tree[tree.index(f"data-node='{root.id}'"):tree.index(f"data-node='{other.id}'")]
    assert f"data-node='{child.id}'" in nested and "<ul>" in nested  # the child sits inside its parent's item
    assert tree.count("class='bh-dl'") == 2 and "download='blend-mix-red-star-seed0.png'" in tree
    assert "bh-current' data-node='" + child.id in tree


# ---------------------------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser_context(server, tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        why = f"no Chromium at {CHROMIUM}: install Debian's `chromium` (`.ci/run` does) or set BLEND_CHROMIUM"
        if os.environ.get("BLEND_REQUIRE_BROWSER"):  # .ci/run: the browser tests must run
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)  # decoding on a busy 2-core machine takes seconds, not 5 s
    ARTIFACTS.mkdir(exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data-dir
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        ctx.set_default_timeout(TIMEOUT_MS)
        yield ctx
        ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context, server):
    page = browser_context.new_page()
    page.goto(server.url)
    page.wait_for_selector("#canvas-root[data-ready='1']")
    yield page
    page.close()


def textarea(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea")


def caption(seed: int) -> str:
    """A sentence of the preset's world (whatever world it is), so tests name no world's words."""
    from blend import world

    return world.caption(world.sample_scenes(1, seed)[0])


@pytest.mark.browser
def test_browser_mix(page, tmp_path):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Mix").click()
    # a corrupt file named .png is refused when it is uploaded, beside that term, in words
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a picture")
    page.locator("#mix-term-1-image input[type=file]").set_input_files(str(bad))
    expect(page.locator("#mix-term-1-error")).to_contain_text("broken.png: cannot read image")
    assert "Traceback" not in page.locator("#mix-term-1-error").inner_text()
    expect(page.locator("#mix-term-1-image img")).to_have_count(0)
    # a person's own picture in term 1: accepted, the message goes
    page.locator("#mix-term-1-image input[type=file]").set_input_files(str(ROOT / "examples" / "yellow-circle-on-purple.png"))
    expect(page.locator("#mix-term-1-image img")).to_be_visible()
    expect(page.locator("#mix-term-1-error")).to_have_text("")
    textarea(page, "mix-term-2-text").fill("a zebra")
    page.locator("#mix-run").click()
    # a word the model does not know: the error is beside term 2 and says which word
    expect(page.locator("#mix-term-2-error")).to_contain_text("does not know: zebra")
    # the preset's vocabulary beside the box: click words to write them
    textarea(page, "mix-term-2-text").fill("")
    for w in ("a", "square"):
        page.locator("#mix-term-2 .bl-vocab span", has_text=re.compile(f"^{w}$")).click()
    expect(textarea(page, "mix-term-2-text")).to_have_value("a square")
    page.locator("#mix-add").click()
    expect(textarea(page, "mix-term-3-text")).to_be_visible()
    textarea(page, "mix-term-3-text").fill("a circle")
    page.locator("#mix-term-3-weight input[type=range]").fill("-0.5")
    expect(page.locator("#mix-term-3-weight input[type=number]")).to_have_value("-0.5")
    page.locator("#mix-run").click()

    expect(page.locator("#mix-gallery img").first).to_be_visible()
    expect(textarea(page, "mix-sentence")).not_to_have_value("")
    expect(page.locator("#mix-term-2-error")).to_have_text("")  # fixed: the message is gone
    expect(page.locator("#mix-nearest img").first).to_be_visible()
    sentence = textarea(page, "mix-sentence").input_value()
    expect(page.locator("#mix-gallery figcaption")).to_contain_text(sentence)  # the whole sentence, under it
    assert page.locator("#mix-gallery img").first.get_attribute("src").startswith("data:image/png;base64,")

    # a bad word in a later run: the error stays beside term 3, and the last good result stays on screen
    textarea(page, "mix-term-3-text").fill("a zebra")
    page.locator("#mix-run").click()
    expect(page.locator("#mix-term-3-error")).to_contain_text("does not know: zebra")
    page.wait_for_timeout(4000)  # not a toast: still there seconds later
    expect(page.locator("#mix-term-3-error")).to_contain_text("does not know: zebra")
    expect(page.locator("#mix-gallery img").first).to_be_visible()
    expect(textarea(page, "mix-sentence")).to_have_value(sentence)
    page.screenshot(path=str(ARTIFACTS / "browser-mix.png"), full_page=True)

    # the result landed on the canvas as a tile with its sentence
    page.get_by_role("tab", name="Canvas").click()
    landed = page.locator(".bc-tile:not(.preview)", has_text=sentence)
    expect(landed.first).to_be_visible()
    expect(landed.first.locator(".label")).to_have_text("mix seed 0")

    # the History tab holds the recipe: the uploaded picture, both words and the weight that was moved
    page.get_by_role("tab", name="History").click()
    expect(page.locator("#history-tree")).to_contain_text("mix: uploaded image×1 + 'a square'×1 + 'a circle'×-0.5")
    page.screenshot(path=str(ARTIFACTS / "browser-mix-history.png"), full_page=True)


@pytest.mark.browser
def test_browser_path(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Path").click()
    textarea(page, "path-end-text").fill("a small green triangle on a white background")
    textarea(page, "path-end-text").press("Tab")  # let the value reach gradio before the run reads it
    page.wait_for_timeout(500)
    page.locator("#path-n input[type=range]").fill("4")
    expect(page.locator("#path-n input[type=number]")).to_have_value("4")
    page.locator("#path-run").click()

    expect(page.locator("#path-gallery img")).to_have_count(4)
    expect(textarea(page, "path-sentences")).to_have_value(re.compile(r"t=0\.00: .+\n(.*\n){2}t=1\.00: .+"))
    # every frame has its whole sentence under it, and the two ends are marked
    lines = textarea(page, "path-sentences").input_value().splitlines()
    captions = page.locator("#path-gallery figcaption")
    for i, line in enumerate(lines):
        expect(captions.nth(i)).to_contain_text(line.split(": ", 1)[1])
    expect(page.locator("#path-gallery .bl-mark")).to_have_text(["start", "end"])
    expect(captions.nth(0).locator(".bl-mark")).to_have_text("start")
    expect(page.locator("#path-gif a[href*='.gif']").first).to_be_attached()
    expect(page.locator("#path-anim img")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "browser-path.png"), full_page=True)


def choose(page, elem_id: str, option: str):
    """Pick an option in a gradio dropdown as a person does: open it, click the option."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


@pytest.mark.browser
def test_browser_directions_plane_and_history(page):
    from playwright.sync_api import expect

    # Directions: apply the shipped "larger" to the default base, save a direction of one's own, strip across strengths
    page.get_by_role("tab", name="Directions").click()
    page.locator("#dir-run").click()
    expect(page.locator("#dir-gallery img").first).to_be_visible()
    page.locator("#lib-name input, #lib-name textarea").first.fill("bluer")
    textarea(page, "lib-pairs").fill("a blue circle | a red circle")
    page.locator("#lib-save").click()
    expect(page.get_by_text("saved direction 'bluer'").first).to_be_visible()
    choose(page, "dir-slot-2", "bluer")
    page.locator("#dir-strip").click()
    expect(page.locator("#dir-strip-gallery img")).to_have_count(5)
    page.screenshot(path=str(ARTIFACTS / "browser-directions.png"), full_page=True)

    # Plane: three anchors, a 2 x 2 grid: corners marked, each with its whole sentence, two by two
    page.get_by_role("tab", name="Plane").click()
    textarea(page, "plane-c-text").fill("a large red square on a blue background")
    page.locator("#plane-k input[type=range]").fill("2")
    expect(page.locator("#plane-k input[type=number]")).to_have_value("2")  # the slider took it before the click
    page.locator("#plane-run").click()
    expect(page.locator("#plane-gallery img")).to_have_count(4)
    expect(page.locator("#plane-gallery .bl-mark")).to_have_text(["a", "b", "c", "b + c − a"])
    expect(page.locator("#plane-table")).to_contain_text("row 1")
    boxes = [page.locator("#plane-gallery figure").nth(i).bounding_box() for i in range(4)]
    assert boxes[0]["y"] == boxes[1]["y"] < boxes[2]["y"] == boxes[3]["y"], boxes  # a 2 x 2 grid, not a strip
    page.screenshot(path=str(ARTIFACTS / "browser-plane.png"), full_page=True)

    # History: a real tree. The strip hangs under the Apply it came from (same base); the plane is a root of its own
    page.get_by_role("tab", name="History").click()
    tree = page.locator("#history-tree")
    roots = tree.locator(".bh-tree > ul > li > .bh-node")
    expect(roots).to_have_count(2)
    expect(roots.nth(0)).to_contain_text("directions: red-circle-on-blue.png×1 + larger×+1 · seed 0")
    expect(roots.nth(1)).to_contain_text("plane: red-circle-on-blue.png, yellow-circle-on-purple.png")
    apply_id = roots.nth(0).get_attribute("data-node")
    under = tree.locator(f"li:has(> [data-node='{apply_id}']) > ul .bh-node")
    expect(under).to_have_count(1)
    expect(under).to_contain_text("sweep larger")
    expect(tree.locator(".bh-node img")).to_have_count(3)  # a thumbnail for every kept result
    # a click shows a kept result at once (nothing is run): the plane as its grid with its sentences
    roots.nth(1).locator(".bh-sum").click()
    expect(page.locator("#history-gallery figure")).to_have_count(4)
    expect(page.locator("#history-gallery .bl-mark")).to_have_text(["a", "b", "c", "b + c − a"])
    expect(textarea(page, "history-sentences")).to_have_value(re.compile(r"\(1,1\): \w"))
    # one click downloads the plane as one PNG with a readable name
    with page.expect_download() as dl:
        roots.nth(1).locator("a.bh-dl").click()
    name = dl.value.suggested_filename
    assert re.fullmatch(r"blend-plane-[a-z0-9-]+-seed0\.png", name) and "red" in name, name
    assert Image.open(dl.value.path()).size[0] > 0
    # Reopen the Apply: its result replaces what the Directions tab showed (the strip is cleared)
    roots.nth(0).locator(".bh-sum").click()
    expect(page.locator("#history-recipe .cm-content")).to_contain_text('"operation": "directions"')
    page.locator("#history-reopen").click()
    expect(page.locator("#history-note")).to_contain_text(f"Reopened {apply_id}")
    page.get_by_role("tab", name="Directions").click()
    expect(page.locator("#dir-strip-gallery img")).to_have_count(0)
    expect(page.locator("#dir-gallery img")).to_have_count(1)
    page.get_by_role("tab", name="History").click()

    # load a shipped recipe: it is added and reopened, and its inputs land in the Path tab
    choose(page, "history-example", "path-circle-to-triangle.json")
    page.locator("#history-load-example").click()
    expect(page.locator("#history-gallery img")).to_have_count(8)
    expect(textarea(page, "history-sentences")).to_have_value(re.compile(r"t=0\.00: .*t=1\.00: ", re.S))
    loaded = tree.locator(".bh-current").get_attribute("data-node")
    # edit the recipe (4 frames instead of 8) and run it as a branch: a child of the loaded node
    editor = page.locator("#history-recipe .cm-content")
    recipe = json.loads(editor.inner_text())
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(json.dumps({**recipe, "n": 4, "steps": 2}, indent=1))
    page.locator("#history-branch").click()
    expect(page.locator("#history-gallery img")).to_have_count(4)
    expect(tree.locator(f"li:has(> [data-node='{loaded}']) > ul .bh-node")).to_contain_text("(4 slerp)")
    # a recipe file from disk joins the tree as a new root
    page.locator("#history-upload input[type=file]").set_input_files(str(ROOT / "examples" / "mix-circle-to-square.json"))
    expect(tree.locator(".bh-current")).to_contain_text("mix: red-circle-on-blue.png×1 + 'a square'×1 + 'a circle'×-1 · seed 0")
    page.locator("#history-download-all").click()
    expect(page.locator("#history-download a[href*='.json']").first).to_be_attached()
    page.screenshot(path=str(ARTIFACTS / "browser-history.png"), full_page=True)
    page.get_by_role("tab", name="Path").click()
    expect(textarea(page, "path-end-text")).to_have_value("a small green triangle on a white background")


# ---------------------------------------------------------------------------------------------- the canvas
def add_words(page, words: str):
    n = page.locator(".bc-tile:not(.preview)").count()
    page.locator("#bc-words").fill(words)
    page.locator("#bc-add-words").click()
    page.wait_for_function(f"document.querySelectorAll('.bc-tile:not(.preview)').length == {n + 1}")
    return page.locator(".bc-tile:not(.preview)").nth(n)


def drag_strength(page, to: float, moves: int = 12):
    """A real pointer drag on the strength handle from the middle (0) to `to` (-3..3); returns the previews seen."""
    box = page.locator("#bc-track").bounding_box()
    y, x0 = box["y"] + box["height"] / 2, box["x"] + box["width"] / 2
    x1 = box["x"] + (to + 3) / 6 * box["width"]
    page.mouse.move(x0, y)
    page.mouse.down()
    page.wait_for_selector(".bc-tile.preview")
    seen = set()
    for i in range(1, moves + 1):
        page.mouse.move(x0 + (x1 - x0) * i / moves, y)
        page.wait_for_timeout(60)
        seen.add(page.locator(".bc-tile.preview .label").inner_text())
    return seen


@pytest.mark.browser
def test_browser_canvas_drag_blend_reload(page):
    from playwright.sync_api import expect

    page.evaluate("localStorage.clear()")
    page.reload()
    page.wait_for_selector("#canvas-root[data-ready='1']")
    expect(page.get_by_text("Use via API")).to_be_visible()  # the README points programs there
    # the vocabulary beside the words box: click words to write the sentence
    words = "a small red star on the left on a blue background"
    for w in words.split():
        page.locator(".bc-vocab span", has_text=re.compile(f"^{w}$")).click()
    expect(page.locator("#bc-words")).to_have_value(words)
    page.locator("#bc-add-words").click()
    first = page.locator(".bc-tile:not(.preview)").first
    expect(first.locator(".text")).to_have_text(words)

    # drag "large − small" with the pointer: the preview follows every move, release commits a child
    page.locator("#bc-pos").fill("large")
    page.locator("#bc-neg").fill("small")
    labels = drag_strength(page, 1.5)
    assert len(labels) >= 6, labels  # the preview changed with the pointer, without waiting for the server
    assert int(page.locator("#bc-previews").inner_text()) >= 12
    page.screenshot(path=str(ARTIFACTS / "browser-canvas-drag.png"))
    page.mouse.up()
    tiles = page.locator(".bc-tile:not(.preview)")
    expect(tiles).to_have_count(2)
    child = tiles.nth(1)
    expect(child.locator(".label")).to_have_text("large − small +1.50")
    expect(child.locator(".text")).to_contain_text("large")  # the shapes world: the size word moved
    expect(page.locator("text[data-arrow]")).to_have_text("large − small +1.50")  # the arrow says what moved

    # drop one tile on another: a blend, with arrows from both
    other = add_words(page, "a large green square on a white background")
    src, dst = first.bounding_box(), other.bounding_box()
    page.mouse.move(src["x"] + 80, src["y"] + 60)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(src["x"] + 80 + (dst["x"] - src["x"]) * i / 10, src["y"] + 60 + (dst["y"] - src["y"]) * i / 10)
    page.mouse.up()
    expect(tiles).to_have_count(4)
    expect(tiles.nth(3).locator(".label")).to_have_text("blend 0.50")
    expect(page.locator("text[data-arrow]")).to_have_count(3)
    # the weight handle on the blend moves its share: all the way to the tile it was dropped on gives that tile
    handle = tiles.nth(3).locator("input.bc-wh")
    handle.fill("1")
    expect(tiles.nth(3).locator(".label")).to_have_text("blend 1.00")
    expect(tiles.nth(3).locator(".text")).to_have_text(other.locator(".text").inner_text())
    expect(page.locator("text[data-arrow]", has_text="blend 100%")).to_have_count(1)
    handle = tiles.nth(3).locator("input.bc-wh")
    handle.fill("0.5")
    expect(tiles.nth(3).locator(".label")).to_have_text("blend 0.50")
    page.screenshot(path=str(ARTIFACTS / "browser-canvas-blend.png"))

    # delete and undo; then a reload restores every tile, sentence and arrow
    tiles.nth(2).locator("button[data-act=delete]").click()
    expect(tiles).to_have_count(3)
    page.locator("#bc-undo").click()
    expect(tiles).to_have_count(4)
    texts = tiles.locator(".text").all_inner_texts()
    page.reload()
    page.wait_for_selector("#canvas-root[data-ready='1']")
    expect(tiles).to_have_count(4)
    assert tiles.locator(".text").all_inner_texts() == texts
    expect(page.locator("text[data-arrow]")).to_have_count(3)
    # the recipe of a tile opens as JSON: the blend holds both tiles' recipes
    tiles.nth(3).locator("button[data-act=recipe]").click()
    recipe = json.loads(page.locator("#bc-recipe").inner_text())
    assert recipe["operation"] == "mix" and [t["kind"] for t in recipe["terms"]] == ["recipe", "recipe"]
    page.screenshot(path=str(ARTIFACTS / "browser-canvas.png"))


@pytest.mark.browser
def test_browser_canvas_agreement_warning_and_corrupt_upload(page, tmp_path):
    from playwright.sync_api import expect

    page.evaluate("localStorage.clear()")
    page.reload()
    page.wait_for_selector("#canvas-root[data-ready='1']")
    # a corrupt file named .png is refused beside the upload, with its name, and nothing internal
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a picture")
    page.locator("#bc-file").set_input_files(str(bad))
    expect(page.locator("#bc-error")).to_contain_text("broken.png")
    expect(page.locator("#bc-error")).to_contain_text("cannot read image")
    assert "Traceback" not in page.locator("#bc-error").inner_text()
    expect(page.locator(".bc-tile")).to_have_count(0)
    # a good upload is a tile whose picture and sentence agree
    page.locator("#bc-file").set_input_files(str(ROOT / "examples" / "red-circle-on-blue.png"))
    expect(page.locator(".bc-tile .ok")).to_contain_text("agrees · cos")
    # pushed far along red - blue (towards a red shape on a red background, a scene that cannot be), picture and
    # sentence part: the tile says so in words, with the cosine
    page.locator("#bc-pos").fill("red")
    page.locator("#bc-neg").fill("blue")
    drag_strength(page, 3.0, moves=4)
    page.mouse.up()
    warning = page.locator(".bc-tile:not(.preview) [data-role=warning]")
    expect(warning).to_contain_text("Picture and sentence disagree")
    expect(warning).to_contain_text(re.compile(r"cos -?\d\.\d\d"))
    page.screenshot(path=str(ARTIFACTS / "browser-canvas-agreement.png"))


@pytest.mark.browser
def test_browser_results_land_on_the_canvas_and_tiles_are_inputs(page):
    """A tile used as a Path's start: the path's frames land on the canvas, ends marked, lineage drawn."""
    from playwright.sync_api import expect

    page.evaluate("localStorage.clear()")
    page.reload()
    page.wait_for_selector("#canvas-root[data-ready='1']")
    start, end = caption(3), caption(8)
    add_words(page, start)
    page.locator("#bc-target").select_option("path-start")
    page.locator("#bc-use").click()  # the selected tile, as the Path's start: the Path tab opens
    expect(page.locator("#path-start-tile")).to_contain_text(start)
    textarea(page, "path-end-text").fill(end)
    textarea(page, "path-end-text").press("Tab")
    page.wait_for_timeout(500)
    page.locator("#path-n input[type=range]").fill("3")
    expect(page.locator("#path-n input[type=number]")).to_have_value("3")
    page.locator("#path-run").click()
    expect(page.locator("#path-gallery img")).to_have_count(3)
    frames = page.locator("#path-gallery .bl-sentence").all_inner_texts()

    page.get_by_role("tab", name="Canvas").click()
    tiles = page.locator(".bc-tile:not(.preview)")
    expect(tiles).to_have_count(4)
    assert tiles.locator(".text").all_inner_texts()[1:] == frames  # each frame a tile, with its sentence
    expect(page.locator(".bc-tile .mark")).to_have_text(["start", "end"])
    arrows = page.locator("text[data-arrow]").all_text_contents()
    assert "path ×1" in arrows and "t=0.50" in arrows and "t=1.00" in arrows, arrows  # from the tile used, frame to frame
    # the end frame, used in Mix: the mix's tile has an arrow from it
    tiles.nth(3).locator(".label").click()
    page.locator("#bc-target").select_option("mix")
    tiles.nth(3).locator("button[data-act=use]").click()
    expect(page.locator("#mix-term-2-tile")).to_contain_text(frames[-1])  # the first free term: term 2
    page.locator("#mix-run").click()
    expect(page.locator("#mix-gallery img").first).to_be_visible()
    page.get_by_role("tab", name="Canvas").click()
    expect(tiles).to_have_count(5)
    expect(page.locator(f"text[data-arrow='{tiles.nth(4).get_attribute('data-id')}']")).to_have_text("mix ×1")
    # a frame is a tile like any other: drag a strength on it (its recipe is one point)
    tiles.nth(2).locator(".label").click()
    page.locator("#bc-pos").fill(start.split()[1])
    page.locator("#bc-neg").fill(end.split()[1])
    drag_strength(page, 1.0, moves=3)
    page.mouse.up()
    expect(tiles).to_have_count(6)
    expect(page.locator("#bc-error")).to_have_text("")
    page.screenshot(path=str(ARTIFACTS / "browser-canvas-landed.png"))


@pytest.mark.browser
def test_browser_phone_layout(browser_context, server):
    from playwright.sync_api import expect

    page = browser_context.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(server.url)
    page.wait_for_selector("#canvas-root[data-ready='1']")
    page.evaluate("localStorage.clear()")
    add_words(page, caption(4))
    view = page.locator("#bc-view").bounding_box()
    assert view["x"] >= 0 and view["x"] + view["width"] <= 390 + 1  # the canvas fits the phone's width
    # a stable tab bar: every tab in one row, none in a "more" menu, the same order whichever is open
    names = ["Canvas", "Mix", "Directions", "Path", "Plane", "History"]
    for name in ["Plane", "Mix", "History", "Canvas"]:
        page.get_by_role("tab", name=name).click()
        expect(page.get_by_role("tab")).to_have_text(names)
        for n in names:
            expect(page.get_by_role("tab", name=n)).to_be_in_viewport()
        expect(page.get_by_label("More tabs")).to_be_hidden()
    # the run button is in reach without scrolling
    page.get_by_role("tab", name="Path").click()
    run = page.locator("#path-run").bounding_box()
    assert 0 <= run["y"] and run["y"] + run["height"] <= 844, run
    # strips wrap: a path's frames fill rows inside the screen instead of running off its edge
    page.locator("#path-n input[type=range]").fill("4")
    textarea(page, "path-end-text").fill(caption(5))
    textarea(page, "path-end-text").press("Tab")
    page.wait_for_timeout(500)
    page.locator("#path-run").click()
    expect(page.locator("#path-gallery figure")).to_have_count(4)
    boxes = [page.locator("#path-gallery figure").nth(i).bounding_box() for i in range(4)]
    assert all(b["x"] >= 0 and b["x"] + b["width"] <= 390 + 1 for b in boxes), boxes
    assert len({round(b["y"]) for b in boxes}) >= 2, boxes  # more than one row
    api = page.get_by_text("Use via API")
    api.scroll_into_view_if_needed()
    expect(api).to_be_visible()  # the README points programs there, at every width
    page.screenshot(path=str(ARTIFACTS / "browser-phone.png"), full_page=True)
    page.close()


@pytest.mark.browser
def test_browser_rename_while_a_slot_uses_the_direction(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Directions").click()
    page.locator("#lib-name input, #lib-name textarea").first.fill("redder")
    textarea(page, "lib-pairs").fill("a red circle | a blue circle")
    page.locator("#lib-save").click()
    expect(page.get_by_text("saved direction 'redder'").first).to_be_visible()
    expect(page.locator("#lib-delete")).to_be_enabled()  # one's own direction can be deleted ...
    choose(page, "dir-slot-2", "redder")
    page.locator("#lib-new-name input, #lib-new-name textarea").first.fill("reddest")
    page.locator("#lib-rename").click()
    expect(page.locator("#dir-slot-2 input")).to_have_value("reddest")  # the slot follows the rename
    page.locator("#dir-run").click()
    expect(page.locator("#dir-gallery img").first).to_be_visible()
    expect(page.get_by_text("not in the list of choices")).to_have_count(0)
    choose(page, "lib-list", "larger")
    expect(page.locator("#lib-delete")).to_be_disabled()  # ... a shipped one cannot
    page.screenshot(path=str(ARTIFACTS / "browser-directions-rename.png"), full_page=True)


def test_temp_files_go_by_age_and_on_shutdown(tmp_path, monkeypatch):
    """`python app.py` keeps its temp files under BLEND_TMP_DIR: an upload goes once older than
    BLEND_TEMP_MAX_AGE_S, a killed run's folder goes at start, and its own files go when it stops."""
    import subprocess
    import sys
    import time

    from gradio_client import Client, handle_file

    require_models()
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)  # `import app` in this process set it: the app picks its own
    root = tmp_path / "tmp"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = root / f"run-{dead.pid}-k1" / "path-1.gif"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"GIF89a")
    (tmp_path / "home").mkdir()
    srv = AppServer(tmp_path / "home", env={"BLEND_TMP_DIR": str(root), "BLEND_TEMP_MAX_AGE_S": "4"})
    try:
        assert not orphan.parent.exists()
        client = Client(srv.url, verbose=False)
        recipe = tmp_path / "recipe.json"
        recipe.write_text((ROOT / "examples" / "mix-circle-to-square.json").read_text())
        client.predict(handle_file(str(recipe)), api_name="/history_upload")
        uploads = [p for p in (root / "gradio").rglob("recipe.json")]
        assert uploads, "the upload did not land under BLEND_TMP_DIR"
        download = client.predict(api_name="/history_download")  # written to the app's own folder first
        assert download and list(root.glob(f"run-{srv.proc.pid}-*/*blend-history.json"))
        deadline = time.monotonic() + 60
        while any(p.exists() for p in uploads) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(p.exists() for p in uploads), "an upload outlived BLEND_TEMP_MAX_AGE_S"
    finally:
        srv.stop()
    assert not list(root.glob(f"run-{srv.proc.pid}-*")), "the app's own temp folder outlived it"
    assert not [p for p in root.rglob("*") if p.is_file()], "files were left behind at shutdown"
