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
def test_api_mix_then_decode(client):
    terms = [{"kind": "image", "value": "red-circle-on-blue.png"}, {"kind": "text", "value": "a square", "weight": 0.5}]
    out = client.predict(terms=terms, method="lerp", seed=0, n_seeds=2, api_name="/mix")
    assert len(out["images"]) == 2 and png(out["images"][0]).size[0] >= 32
    assert isinstance(out["texts"][0], str) and out["texts"][0].strip()
    assert out["recipe"]["terms"][1]["weight"] == 0.5 and out["nearest"][0]["name"].endswith(".png")
    dec = client.predict(embedding=out["embeddings"][0], seed=0, api_name="/decode")
    assert dec["text"] == out["texts"][0]
    # the same point from the same seed is the same picture (up to the 6 decimals the JSON carries)
    diff = np.abs(np.asarray(png(dec["image"]), float) - np.asarray(png(out["images"][0]), float)).mean()
    assert diff < 2.0


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


# ---------------------------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser_context(server, tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's `chromium` (`.ci/run` does) or set BLEND_CHROMIUM")
    from playwright.sync_api import sync_playwright

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
    page.wait_for_selector("#mix-run")
    yield page
    page.close()


def textarea(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea")


@pytest.mark.browser
def test_browser_mix(page):
    from playwright.sync_api import expect

    # a person's own picture in term 1, words in term 2, a third term added with its weight pulled down
    page.locator("#mix-term-1-image input[type=file]").set_input_files(str(ROOT / "examples" / "yellow-circle-on-purple.png"))
    expect(page.locator("#mix-term-1-image img")).to_be_visible()
    textarea(page, "mix-term-2-text").fill("a zebra")
    page.locator("#mix-run").click()
    # a word the model does not know: the error says which, and the app goes on
    expect(page.get_by_text("does not know: zebra").first).to_be_visible()
    textarea(page, "mix-term-2-text").fill("a square")
    page.locator("#mix-add").click()
    expect(textarea(page, "mix-term-3-text")).to_be_visible()
    textarea(page, "mix-term-3-text").fill("a circle")
    page.locator("#mix-term-3-weight input[type=range]").fill("-0.5")
    expect(page.locator("#mix-term-3-weight input[type=number]")).to_have_value("-0.5")
    page.locator("#mix-run").click()

    expect(page.locator("#mix-gallery img").first).to_be_visible()
    expect(textarea(page, "mix-sentence")).not_to_have_value("")
    expect(page.locator("#mix-nearest img").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "browser-mix.png"), full_page=True)

    # the History tab holds the recipe: the uploaded picture, both words and the weight that was moved
    page.get_by_role("tab", name="History").click()
    expect(page.locator("#history-tree")).to_contain_text("mix: uploaded image×1 + 'a square'×1 + 'a circle'×-0.5")
    page.screenshot(path=str(ARTIFACTS / "browser-mix-history.png"), full_page=True)


@pytest.mark.browser
def test_browser_path(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Path").click()
    textarea(page, "path-end-text").fill("a small green triangle on a white background")
    page.locator("#path-n input[type=range]").fill("4")
    expect(page.locator("#path-n input[type=number]")).to_have_value("4")
    page.locator("#path-run").click()

    expect(page.locator("#path-gallery img")).to_have_count(4)
    expect(textarea(page, "path-sentences")).to_have_value(re.compile(r"t=0\.00: .+\n(.*\n){2}t=1\.00: .+"))
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

    # Plane: three anchors, a 2 x 2 grid with its sentences
    page.get_by_role("tab", name="Plane").click()
    textarea(page, "plane-c-text").fill("a large red square on a blue background")
    page.locator("#plane-k input[type=range]").fill("2")
    page.locator("#plane-run").click()
    expect(page.locator("#plane-gallery img")).to_have_count(4)
    expect(page.locator("#plane-table")).to_contain_text("row 1")
    page.screenshot(path=str(ARTIFACTS / "browser-plane.png"), full_page=True)

    # History: three results so far, each the child of the one before
    page.get_by_role("tab", name="History").click()
    tree = page.locator("#history-tree")
    expect(tree).to_contain_text("directions: red-circle-on-blue.png×1 + larger×+1 · seed 0")
    expect(tree).to_contain_text("└─ ")
    expect(tree).to_contain_text("plane: red-circle-on-blue.png, yellow-circle-on-purple.png")
    # load a shipped recipe: it is added and reopened, and its inputs land in the Path tab
    choose(page, "history-example", "path-circle-to-triangle.json")
    page.locator("#history-load-example").click()
    expect(page.locator("#history-gallery img")).to_have_count(8)
    expect(textarea(page, "history-sentences")).to_have_value(re.compile(r"t=0\.00: .*t=1\.00: ", re.S))
    # edit the recipe (4 frames instead of 8) and run it as a branch: a child of the loaded node
    editor = page.locator("#history-recipe .cm-content")
    recipe = json.loads(editor.inner_text())
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(json.dumps({**recipe, "n": 4, "steps": 2}, indent=1))
    page.locator("#history-branch").click()
    expect(page.locator("#history-gallery img")).to_have_count(4)
    expect(tree).to_contain_text(re.compile(r"path: red-circle-on-blue\.png → .*\(8 slerp\).*\n    └─ \w+  path: .*\(4 slerp\)"))
    # a recipe file from disk joins the tree as a new root
    page.locator("#history-upload input[type=file]").set_input_files(str(ROOT / "examples" / "mix-circle-to-square.json"))
    expect(tree).to_contain_text("mix: red-circle-on-blue.png×1 + 'a square'×1 + 'a circle'×-1 · seed 0  ◀ current")
    page.locator("#history-download-all").click()
    expect(page.locator("#history-download a[href*='.json']").first).to_be_attached()
    page.screenshot(path=str(ARTIFACTS / "browser-history.png"), full_page=True)
    page.get_by_role("tab", name="Path").click()
    expect(textarea(page, "path-end-text")).to_have_value("a small green triangle on a white background")
