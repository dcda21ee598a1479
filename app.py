"""blend app: mix, slide, travel and map meaning in OpenCLIP space. UI only: the logic lives in `blend/`.

    python app.py                                  # shapes-mini on http://127.0.0.1:7860, no network
    python app.py --preset NAME_OR_FOLDER --host 0.0.0.0 --port 8080 [--share]
"""
from __future__ import annotations

import argparse
import functools
import html
import json
import logging
import os
import uuid
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the app runs offline
from blend import tempfiles  # noqa: E402
os.environ.setdefault("GRADIO_TEMP_DIR", str(tempfiles.gradio_cache()))  # uploads too are swept by age

import gradio as gr  # noqa: E402
import torch  # noqa: E402

import blend  # noqa: E402
from blend.directions import DirectionLibrary, parse_pairs  # noqa: E402
from blend.encode import load_image  # noqa: E402
from blend.examples import ExampleIndex, example_path, list_examples, list_recipes  # noqa: E402
from blend import canvas, checks  # noqa: E402
from blend.history import History  # noqa: E402
from blend.images import DATA_URI, image_to_data_uri  # noqa: E402
from blend.recipe import LIMITS, Recipe, Term, make_term  # noqa: E402
from blend.run import encode_terms, run_recipe  # noqa: E402
from blend.viz import save_gif  # noqa: E402

log = logging.getLogger("blend.app")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The blend app: mix, directions, path, plane, history.")
    p.add_argument("--preset", default=os.environ.get("BLEND_PRESET", "shapes-mini"),
                   help="preset name (see `blend presets`) or a folder with preset.json")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="open a public gradio.live link (needs network)")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


EXAMPLES = list_examples()
UI = Path(__file__).resolve().parent / "ui"  # the canvas's JavaScript and CSS


def pick(name: str) -> str | None:
    """A default example for a form, if it ships with this checkout."""
    return name if name in EXAMPLES else (EXAMPLES[0] if EXAMPLES else None)


N_TERMS = LIMITS["terms"]
MAX_ROWS = int(os.environ.get("BLEND_MAX_ROWS", 16))  # rows one /decode call takes, as in the REST API
MODEL = {"concurrency_id": "model", "concurrency_limit": 1}  # one model: heavy events take turns
PLUMBING = {"api_visibility": "undocumented", "queue": False}  # UI-only events: named, not in the docs


def user_errors(fn):
    """ValueError -> gr.Error with its message; anything else -> gr.Error, logged. The server keeps serving."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as e:
            raise gr.Error(str(e)) from e
        except Exception as e:  # noqa: BLE001 - a bug must not take the server down
            log.exception("event %s failed", fn.__name__)
            raise gr.Error(f"Internal error ({type(e).__name__}: {e}). The app is still running: "
                           f"try other inputs, and report this if it repeats.") from e

    return wrapper


def warn_all(result) -> None:
    for w in result.warnings:
        gr.Warning(w)


# ---------------------------------------------------------------------------------------------- term inputs
class TermBox:
    """One input in a form: image (example or upload) or text, with a weight and mute where the form mixes."""

    def __init__(self, key: str, label: str, kind: str = "image", weighted: bool = True, visible: bool = True,
                 example: str | None = None, text: str = ""):
        self.key, self.label, self.weighted = key, label, weighted
        self.api = key.replace("-", "_")
        image = load_image(example_path(example)) if example else None
        with gr.Group(visible=visible, elem_id=f"{key}") as self.group:
            with gr.Row(equal_height=True):
                self.kind = gr.Radio(["image", "text"], value=kind, label=label, elem_id=f"{key}-kind", scale=1,
                                     min_width=120)
                self.example = gr.Dropdown(EXAMPLES, value=example, label="example", visible=kind == "image",
                                           elem_id=f"{key}-example", scale=2, min_width=160)
                self.image = gr.Image(value=image, type="pil", label="or upload an image", height=150,
                                      sources=["upload", "clipboard"], visible=kind == "image",
                                      elem_id=f"{key}-image", scale=2, min_width=140)
                self.text = gr.Textbox(value=text, label="text", visible=kind == "text", elem_id=f"{key}-text",
                                       placeholder="a few words, e.g. a large square", scale=4, min_width=160)
                if weighted:
                    self.weight = gr.Slider(-2, 2, value=1.0, step=0.05, label="weight", elem_id=f"{key}-weight",
                                            scale=2, min_width=160)
                    self.muted = gr.Checkbox(False, label="mute", elem_id=f"{key}-mute", scale=0, min_width=70)

    @property
    def inputs(self) -> list:
        return [self.kind, self.example, self.image, self.text] + ([self.weight, self.muted] if self.weighted else [])

    def wire(self) -> None:
        self.kind.change(lambda k: (gr.Dropdown(visible=k == "image"), gr.Image(visible=k == "image"),
                                    gr.Textbox(visible=k == "text")),
                         self.kind, [self.example, self.image, self.text], api_name=f"{self.api}_kind", **PLUMBING)
        self.example.input(user_errors(lambda name: load_image(example_path(name)) if name else None),
                           self.example, self.image, api_name=f"{self.api}_example", **PLUMBING)
        # a person's own picture replaces the example: the recipe then embeds the picture itself
        self.image.upload(lambda: None, None, self.example, api_name=f"{self.api}_upload", **PLUMBING)
        self.image.clear(lambda: None, None, self.example, api_name=f"{self.api}_clear", **PLUMBING)

    def term(self, data: dict, required: bool) -> Term | None:
        """The Term these widgets hold; None for an empty box unless it is required."""
        kind, example, image, text = (data[c] for c in (self.kind, self.example, self.image, self.text))
        weight, muted = (data[self.weight], data[self.muted]) if self.weighted else (1.0, False)
        empty = (kind == "image" and not example and image is None) or (kind == "text" and not (text or "").strip())
        if empty and not required:
            return None
        return make_term(kind, example=example, image=image, text=text, weight=weight, muted=muted, where=self.label)

    def fill(self, term: Term | None) -> dict:
        """Widget values showing `term` (None: an empty image box)."""
        kind = term.kind if term else "image"
        is_image = term is not None and kind == "image"
        out = {self.kind: kind,
               self.example: gr.Dropdown(value=term.value if is_image and not term.value.startswith(DATA_URI)
                                         else None, visible=kind == "image"),
               self.image: gr.Image(value=term.load_image() if is_image else None, visible=kind == "image"),
               self.text: gr.Textbox(value=term.value if term and kind == "text" else "", visible=kind == "text")}
        if self.weighted:
            out.update({self.weight: term.weight if term else 1.0, self.muted: term.muted if term else False})
        return out


# ---------------------------------------------------------------------------------------------- history helpers
def tree_html(history: History, current: str | None) -> str:
    return f"<div class='blend-tree'>{html.escape(history.render(current))}</div>"


def node_choices(history: History) -> list[tuple[str, str]]:
    return [(f"{'· ' * depth}{r.id}  {r.summary}"[:140], r.id) for depth, r in history.tree()]


def gallery_value(result) -> list[tuple]:
    return result.labelled()


def sentences_text(result) -> str:
    if len(result.texts) == 1:
        return result.texts[0]
    return "\n".join(f"{c}: {t}" for c, t in zip(result.captions, result.texts))


def nearest_value(result) -> list[tuple]:
    return [(load_image(example_path(n)), f"{n} · cos {s:.2f}") for n, s in result.nearest]


def rundir_file(name: str, text: str) -> str:
    path = tempfiles.process_dir() / f"{uuid.uuid4().hex[:6]}-{name}"  # removed on shutdown and by age
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------------------------- the canvas
def vocabulary(blender) -> list[str]:
    """The words a preset knows, read from its tokenizer, where its vocabulary is closed (else [])."""
    vocab = getattr(blender.encoder, "vocab", None)
    return sorted(w for w in vocab if w.isalpha()) if vocab else []


def vocab_html(blender, target: str) -> str:
    words = vocabulary(blender)
    if not words:
        return ""
    chips = "".join(f"<span>{html.escape(w)}</span>" for w in words)
    return f"<div class='bc-vocab' data-for='{target}' title='words this model knows: click to add'>{chips}</div>"


def tile_dict(result, label: str) -> dict:
    """A canvas tile from a one-point result: PNG (the browser scales it up, nearest neighbour), sentence, check."""
    recipe = result.recipe.copy(id=None, parent=None, created=None)
    return {"recipe": recipe.to_dict(), "image": image_to_data_uri(result.images[0], max_side=4096),
            "text": result.texts[0], "label": label, "agreement": result.agreement[0].to_dict()}


def canvas_workspace(blender, library: DirectionLibrary) -> gr.HTML:
    """The first tab: tiles on a plane; drag a strength, drop a tile on a tile; JavaScript in ui/canvas.js."""

    def guarded(fn):
        """One JSON object in (gr.HTML's server functions take one argument), a dict or {error} out.
        Not functools.wraps: gradio reads the signature to count the arguments, and there is one."""
        def wrapper(request):
            try:
                if not isinstance(request, dict):
                    raise ValueError("expected one object of named arguments")
                return fn(**request)
            except (ValueError, TypeError, json.JSONDecodeError) as e:
                return {"error": str(e)}
            except Exception as e:  # noqa: BLE001 - the canvas shows it; the server keeps serving
                log.exception("canvas %s failed", fn.__name__)
                return {"error": f"internal error ({type(e).__name__}); the app is still running"}
        wrapper.__name__ = fn.__name__
        return wrapper

    def resolve(d: dict) -> dict:
        if not isinstance(d, dict):
            raise ValueError("direction: pick one from the library or type two words")
        if d.get("name"):
            return library.get(d["name"]).to_dict()
        return canvas.word_direction(d.get("pos", ""), d.get("neg", ""))

    @guarded
    def canvas_tile(kind: str, value: str) -> dict:
        if kind not in ("image", "text"):
            raise ValueError("kind must be image or text")
        if kind == "image" and isinstance(value, str) and value.startswith("data:"):
            if not value.startswith(DATA_URI):  # a JPEG or anything else: read it, store it as PNG
                import base64
                from blend.encode import load_image
                try:
                    raw = base64.b64decode(value.split(",", 1)[1], validate=True)
                except Exception as e:  # noqa: BLE001
                    raise ValueError(f"the file is not an image ({e})") from e
                value = image_to_data_uri(load_image(raw, "upload"))
            else:
                value = image_to_data_uri(Term("image", value).load_image())  # refuses a corrupt PNG here
        r = run_recipe(blender, Recipe("mix", [Term(kind, value)]), library=library)
        label = "words" if kind == "text" else ("image" if value.startswith("data:") else value)
        return tile_dict(r, label)

    @guarded
    def canvas_sweep(recipe: dict, direction: dict) -> dict:
        sw = canvas.strength_sweep(blender, Recipe.from_dict(recipe), resolve(direction), library=library)
        return {"strengths": sw.strengths, "texts": sw.texts,
                "images": [image_to_data_uri(im, max_side=4096) for im in sw.images],
                "agreement": [a.to_dict() for a in sw.agreement]}

    @guarded
    def canvas_child(recipe: dict, direction: dict, strength: float) -> dict:
        d = resolve(direction)
        child = canvas.child_recipe(Recipe.from_dict(recipe), d, strength)
        return tile_dict(run_recipe(blender, child, library=library), f"{d['name']} {strength:+.2f}")

    @guarded
    def canvas_blend(a: dict, b: dict, weight: float) -> dict:
        r = canvas.blend_recipe(Recipe.from_dict(a), Recipe.from_dict(b), weight)
        return tile_dict(run_recipe(blender, r, library=library), f"blend {weight:.2f}")

    names = library.names()
    options = "".join(f"<option>{html.escape(n)}</option>" for n in names)
    examples = "".join(f"<option>{html.escape(n)}</option>" for n in EXAMPLES)
    markup = f"""<div id="canvas-root">
  <div class="bc-bar"><input type="text" id="bc-words" placeholder="type words, e.g. a small red circle" size="34">
    <button id="bc-add-words">+ words</button>
    <label>+ image <input type="file" id="bc-file" accept="image/*"></label>
    <select id="bc-example"><option value="">+ example…</option>{examples}</select></div>
  {vocab_html(blender, "bc-words")}
  <div class="bc-bar"><b>move</b> <span id="bc-selected">(select a tile)</span> <b>along</b>
    <select id="bc-dir">{options}</select> <span>or words</span>
    <input type="text" id="bc-pos" placeholder="towards" size="10"> − <input type="text" id="bc-neg" placeholder="away from" size="10"></div>
  <div class="bc-bar bc-strength"><b>strength</b> <div class="bc-track" id="bc-track"><div class="bc-knob" id="bc-knob"></div></div>
    <span id="bc-strength">+0.00</span> <span id="bc-status"></span>
    <small>drag the knob: previews follow; release to keep a child tile</small>
    <small>previews shown: <span id="bc-previews">0</span></small></div>
  <div class="bc-bar"><label>blend weight (drop a tile on a tile) <input type="range" id="bc-weight" min="0" max="1" step="0.05" value="0.5"></label>
    <button id="bc-use">recipe of selected</button><button id="bc-undo" disabled>undo delete</button>
    <button id="bc-save">save canvas (.json)</button><label>load canvas <input type="file" id="bc-load" accept=".json,application/json"></label>
    <button id="bc-clear">clear</button> <span id="bc-count"></span></div>
  <div class="bc-error" id="bc-error" role="alert"></div>
  <div class="bc-view" id="bc-view"><div class="bc-world" id="bc-world"></div></div>
  <details id="bc-recipe-box"><summary>recipe</summary><pre class="bc-recipe" id="bc-recipe"></pre></details>
</div>"""
    return gr.HTML(markup, elem_id="canvas", js_on_load=(UI / "canvas.js").read_text(),
                   css_template=(UI / "canvas.css").read_text(), preset=blender.name,
                   server_functions=[canvas_tile, canvas_sweep, canvas_child, canvas_blend])


# ---------------------------------------------------------------------------------------------- the UI
CSS = """
.blend-tree {font-family: ui-monospace, monospace; white-space: pre; font-size: 0.85em; overflow-x: auto;}
#mix-gallery img, #dir-gallery img, #dir-strip-gallery img, #path-gallery img, #plane-gallery img,
#history-gallery img {image-rendering: pixelated; object-fit: contain !important;}
#plane-gallery .grid-wrap {max-height: none !important;}  /* the whole plane at once, not a scroll box */
#plane-gallery .grid-container {max-width: 880px; margin: 0 auto;}
"""
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "monospace"])  # no web fonts: works offline

def build_demo(blender, library: DirectionLibrary | None = None, index: ExampleIndex | None = None) -> gr.Blocks:
    """The whole app for an already-loaded Blender (mount it with `gr.mount_gradio_app(app, build_demo(b))`)."""
    BLENDER = blender
    LIBRARY = library if library is not None else DirectionLibrary.for_preset(blender)
    INDEX = index if index is not None else ExampleIndex(blender)
    with gr.Blocks(title="blend: mix meaning", delete_cache=tempfiles.gradio_delete_cache()) as demo:
        history_state = gr.State(History())
        current_state = gr.State(None)  # the node new results grow from
        gr.Markdown(f"## blend · mix images and words in the space of meaning\nPreset **{BLENDER.name}** "
                    f"({BLENDER.embed_dim}-d). Every result is kept in **History** with the recipe that made it.")

        with gr.Tabs() as tabs:
            with gr.Tab("Canvas", id="canvas"):
                canvas_workspace(BLENDER, LIBRARY)
            # ------------------------------------------------------------------ Mix
            with gr.Tab("Mix", id="mix"):
                gr.Markdown("Put images and words on the table and weigh them: weight 0 or *mute* drops a term, "
                            "negative weights subtract (use lerp).")
                mix_boxes = [TermBox(f"mix-term-{i + 1}", f"term {i + 1}", kind="image" if i == 0 else "text",
                                     visible=i < 2, example=pick("red-circle-on-blue.png") if i == 0 else None)
                             for i in range(N_TERMS)]
                mix_count = gr.State(2)
                with gr.Row():
                    add_term_btn = gr.Button("+ term", elem_id="mix-add", size="sm")
                    remove_term_btn = gr.Button("− term", elem_id="mix-remove", size="sm")
                    mix_method = gr.Radio(["lerp", "slerp"], value="lerp", label="method", elem_id="mix-method")
                    mix_seed = gr.Number(0, precision=0, minimum=0, label="seed", elem_id="mix-seed")
                    mix_n_seeds = gr.Slider(1, 4, value=1, step=1, label="images (seeds)", elem_id="mix-n-seeds")
                mix_btn = gr.Button("Mix", variant="primary", elem_id="mix-run")
                with gr.Row():
                    mix_gallery = gr.Gallery(label="decoded images", columns=4, height=300, elem_id="mix-gallery")
                    with gr.Column():
                        mix_sentence = gr.Textbox(label="decoded sentence", interactive=False, elem_id="mix-sentence")
                        mix_nearest = gr.Gallery(label="nearest examples", columns=4, height=170, elem_id="mix-nearest")
                with gr.Accordion("recipe", open=False):
                    mix_recipe = gr.Code(language="json", label="recipe", elem_id="mix-recipe")

            # ------------------------------------------------------------------ Directions
            with gr.Tab("Directions", id="directions"):
                with gr.Row():
                    with gr.Column(scale=3):
                        gr.Markdown("Apply named attribute directions to a base, each with its own strength.")
                        dir_base = TermBox("dir-base", "base", kind="image", weighted=False,
                                           example=pick("red-circle-on-blue.png"))
                        dir_slots = []
                        for i in range(3):
                            with gr.Row():
                                dd = gr.Dropdown(LIBRARY.names(), value=LIBRARY.names()[0] if i == 0 and LIBRARY.names()
                                                 else None, label=f"direction {i + 1}", elem_id=f"dir-slot-{i + 1}")
                                sl = gr.Slider(-3, 3, value=1.0 if i == 0 else 0.0, step=0.05, label="strength",
                                               elem_id=f"dir-strength-{i + 1}")
                            dir_slots.append((dd, sl))
                        with gr.Row():
                            dir_seed = gr.Number(0, precision=0, minimum=0, label="seed")
                            dir_n_seeds = gr.Slider(1, 4, value=1, step=1, label="images (seeds)")
                        dir_btn = gr.Button("Apply", variant="primary", elem_id="dir-run")
                        with gr.Row():
                            dir_gallery = gr.Gallery(label="decoded images", columns=4, height=240, elem_id="dir-gallery")
                            with gr.Column():
                                dir_sentence = gr.Textbox(label="decoded sentence", interactive=False)
                                dir_nearest = gr.Gallery(label="nearest examples", columns=4, height=150)
                        gr.Markdown("**A strip across strengths** of one direction (the others stay as set above).")
                        with gr.Row():
                            sweep_dir = gr.Dropdown(LIBRARY.names(), value=LIBRARY.names()[0] if LIBRARY.names() else None,
                                                    label="direction to sweep")
                            sweep_max = gr.Slider(0.25, 3, value=2.0, step=0.25, label="from −s to +s")
                            sweep_n = gr.Slider(3, 9, value=5, step=1, label="steps")
                        sweep_btn = gr.Button("Strip", elem_id="dir-strip")
                        sweep_gallery = gr.Gallery(label="strip", columns=9, height=220, elem_id="dir-strip-gallery")
                    with gr.Column(scale=2):
                        gr.Markdown("**Library.** Shipped directions are read-only; yours are saved to "
                                    f"`{LIBRARY.user_path}`.")
                        lib_dd = gr.Dropdown(LIBRARY.names(), value=None, label="directions", elem_id="lib-list")
                        lib_info = gr.Markdown()
                        lib_name = gr.Textbox(label="name", elem_id="lib-name")
                        lib_desc = gr.Textbox(label="description")
                        lib_mode = gr.Radio(["text pairs", "example sets"], value="text pairs", label="defined by")
                        lib_pairs = gr.Textbox(lines=4, label="pairs: one 'positive | negative' per line",
                                               placeholder="a large circle | a small circle", elem_id="lib-pairs")
                        lib_pos = gr.Dropdown(EXAMPLES, multiselect=True, label="positive examples", visible=False)
                        lib_neg = gr.Dropdown(EXAMPLES, multiselect=True, label="negative examples", visible=False)
                        lib_save_btn = gr.Button("Save as mine", elem_id="lib-save")
                        with gr.Row():
                            lib_new_name = gr.Textbox(label="new name", scale=3, elem_id="lib-new-name")
                            lib_rename_btn = gr.Button("Rename", scale=1, elem_id="lib-rename")
                        lib_delete_btn = gr.Button("Delete", variant="stop", interactive=False, elem_id="lib-delete")

            # ------------------------------------------------------------------ Path
            with gr.Tab("Path", id="path"):
                gr.Markdown("Walk from one idea to another. Every frame starts from the same noise, so only meaning changes.")
                path_a = TermBox("path-start", "start", kind="image", weighted=False, example=pick("red-circle-on-blue.png"))
                path_b = TermBox("path-end", "end", kind="text", weighted=False)
                with gr.Row():
                    path_n = gr.Slider(2, 16, value=8, step=1, label="frames", elem_id="path-n")
                    path_method = gr.Radio(["slerp", "lerp"], value="slerp", label="method")
                    path_seed = gr.Number(0, precision=0, minimum=0, label="seed")
                path_btn = gr.Button("Travel", variant="primary", elem_id="path-run")
                path_gallery = gr.Gallery(label="the way", columns=8, height=220, elem_id="path-gallery")
                with gr.Row():
                    path_sentences = gr.Textbox(label="sentences along the way", lines=8, interactive=False,
                                                elem_id="path-sentences")
                    path_anim = gr.Image(label="animation", type="filepath", interactive=False, height=256,
                                         elem_id="path-anim")
                    path_gif = gr.File(label="download GIF", elem_id="path-gif")

            # ------------------------------------------------------------------ Plane
            with gr.Tab("Plane", id="plane"):
                gr.Markdown("Three anchors span a plane: **a** top left, **b** top right, **c** bottom left; the "
                            "bottom right is b + c − a. Captions are the decoded sentences.")
                plane_boxes = [TermBox(f"plane-{n}", n, kind=k, weighted=False, example=e)
                               for n, k, e in (("a", "image", pick("red-circle-on-blue.png")),
                                               ("b", "image", pick("yellow-circle-on-purple.png")),
                                               ("c", "text", None))]
                with gr.Row():
                    plane_k = gr.Slider(2, 6, value=3, step=1, label="grid k × k", elem_id="plane-k")
                    plane_seed = gr.Number(0, precision=0, minimum=0, label="seed")
                plane_btn = gr.Button("Map", variant="primary", elem_id="plane-run")
                plane_gallery = gr.Gallery(label="the plane", columns=3, height="auto", object_fit="contain",
                                           elem_id="plane-gallery")
                plane_table = gr.Markdown(elem_id="plane-table")

            # ------------------------------------------------------------------ History
            with gr.Tab("History", id="history"):
                gr.Markdown("Every result with its recipe, as a tree: a result made after reopening a node is its "
                            "child. Reopen a node to run it again and load it into its workspace; edit its recipe "
                            "and run it as a branch; download or load recipes and whole histories as JSON.")
                tree = gr.HTML(tree_html(History(), None), elem_id="history-tree")
                with gr.Row():
                    node_dd = gr.Dropdown([], label="node", elem_id="history-node", scale=3)
                    reopen_btn = gr.Button("Reopen", variant="primary", scale=1, elem_id="history-reopen")
                with gr.Row():
                    hist_gallery = gr.Gallery(label="result", columns=6, height=300, elem_id="history-gallery", scale=3)
                    hist_sentences = gr.Textbox(label="sentences", lines=8, interactive=False, scale=2,
                                                elem_id="history-sentences")
                with gr.Accordion("recipe: edit it, then run it as a branch", open=True):
                    node_json = gr.Code(language="json", label="recipe", interactive=True, elem_id="history-recipe")
                    with gr.Row():
                        branch_btn = gr.Button("Run edited recipe as a branch", elem_id="history-branch")
                        dl_node_btn = gr.Button("Download recipe", elem_id="history-download-node")
                        dl_all_btn = gr.Button("Download whole history", elem_id="history-download-all")
                    download = gr.File(label="download", interactive=False, height=90, elem_id="history-download")
                with gr.Row():
                    upload = gr.File(label="load a recipe or a history (.json)", file_types=[".json"], type="filepath",
                                     height=120, elem_id="history-upload")
                    with gr.Column():
                        example_dd = gr.Dropdown(list_recipes(), value=None, label="example recipes",
                                                 elem_id="history-example")
                        example_btn = gr.Button("Load example", elem_id="history-load-example")

        # ================================================================================ events
        history_outputs = [history_state, current_state, tree, node_dd]

        def history_update(history: History, current: str | None) -> dict:
            return {history_state: history, current_state: current, tree: tree_html(history, current),
                    node_dd: gr.Dropdown(choices=node_choices(history), value=current)}

        def record(result, history: History, current: str | None) -> dict:
            """Add a result's recipe under the current node; it becomes the current node."""
            node = history.add(result.recipe, parent=current if current in history else None)
            warn_all(result)
            return history_update(history, node.id)

        def run(recipe: Recipe, progress) -> "blend.recipe.Result":
            return run_recipe(BLENDER, recipe, library=LIBRARY, index=INDEX, progress=lambda f, m: progress(f, desc=m))

        for box in mix_boxes + [dir_base, path_a, path_b] + plane_boxes:
            box.wire()

        # ------------------------------------------------------------------ Mix events
        def show_terms(n: int):
            return [n] + [gr.Group(visible=i < n) for i in range(N_TERMS)]

        mix_groups = [b.group for b in mix_boxes]
        add_term_btn.click(lambda n: show_terms(min(n + 1, N_TERMS)), mix_count, [mix_count] + mix_groups,
                           api_name="mix_add_term", **PLUMBING)
        remove_term_btn.click(lambda n: show_terms(max(n - 1, 1)), mix_count, [mix_count] + mix_groups,
                              api_name="mix_remove_term", **PLUMBING)

        @user_errors
        def mix_event(data: dict, progress=gr.Progress()):
            n = data[mix_count]
            terms = [t for b in mix_boxes[:n] if (t := b.term(data, required=False)) is not None]
            if not terms:
                raise ValueError("nothing to mix: give at least one term an image or some words")
            recipe = Recipe("mix", terms, method=data[mix_method], seed=data[mix_seed], n_seeds=int(data[mix_n_seeds]))
            result = run(recipe, progress)
            return {mix_gallery: gallery_value(result), mix_sentence: result.texts[0],
                    mix_nearest: nearest_value(result), mix_recipe: result.recipe.to_json(),
                    **record(result, data[history_state], data[current_state])}

        mix_inputs = {x for b in mix_boxes for x in b.inputs} | {mix_count, mix_method, mix_seed, mix_n_seeds,
                                                                 history_state, current_state}
        mix_btn.click(mix_event, mix_inputs, [mix_gallery, mix_sentence, mix_nearest, mix_recipe] + history_outputs,
                      api_name="ui_mix", **MODEL)

        # ------------------------------------------------------------------ Directions events
        def direction_recipe(data: dict, sweep: dict | None = None) -> Recipe:
            dirs = [{"name": data[dd], "strength": float(data[sl])} for dd, sl in dir_slots if data[dd]]
            return Recipe("directions", [dir_base.term(data, required=True)], directions=dirs, seed=data[dir_seed],
                          n_seeds=int(data[dir_n_seeds]), sweep=sweep)

        @user_errors
        def directions_event(data: dict, progress=gr.Progress()):
            recipe = direction_recipe(data)
            if not recipe.directions:
                raise ValueError("pick at least one direction from the library")
            result = run(recipe, progress)
            return {dir_gallery: gallery_value(result), dir_sentence: result.texts[0], dir_nearest: nearest_value(result),
                    **record(result, data[history_state], data[current_state])}

        @user_errors
        def sweep_event(data: dict, progress=gr.Progress()):
            if not data[sweep_dir]:
                raise ValueError("pick the direction to sweep")
            s, n = float(data[sweep_max]), int(data[sweep_n])
            strengths = [round(-s + 2 * s * i / (n - 1), 4) for i in range(n)]
            result = run(direction_recipe(data, {"name": data[sweep_dir], "strengths": strengths}), progress)
            return {sweep_gallery: gallery_value(result), **record(result, data[history_state], data[current_state])}

        dir_inputs = set(dir_base.inputs) | {x for pair in dir_slots for x in pair} | {
            dir_seed, dir_n_seeds, history_state, current_state}
        dir_btn.click(directions_event, dir_inputs, [dir_gallery, dir_sentence, dir_nearest] + history_outputs,
                      api_name="ui_apply_directions", **MODEL)
        sweep_btn.click(sweep_event, dir_inputs | {sweep_dir, sweep_max, sweep_n}, [sweep_gallery] + history_outputs,
                        api_name="ui_direction_strip", **MODEL)

        def library_choices(selected: str | None = None, slots=(), sweep=None, renamed: dict | None = None) -> list:
            """New choices everywhere; a slot holding a renamed direction follows it, a deleted one empties."""
            names, renamed = LIBRARY.names(), renamed or {}

            def follow(v):
                v = renamed.get(v, v)
                return v if v in names else None

            keep = [gr.Dropdown(choices=names, value=follow(v)) for v in slots] or [
                gr.Dropdown(choices=names) for _ in dir_slots]
            sweep_dd = gr.Dropdown(choices=names, value=follow(sweep)) if slots else gr.Dropdown(choices=names)
            return [gr.Dropdown(choices=names, value=selected), sweep_dd, *keep]

        lib_outputs = [lib_dd, sweep_dir] + [dd for dd, _ in dir_slots]

        @user_errors
        def show_direction(name: str | None):
            if not name:
                return "", "", "", "text pairs", "", [], [], gr.Textbox(value="")
            d = LIBRARY.get(name)
            info = f"*{d.source}* · {html.escape(d.description or '')}"
            mode = "text pairs" if d.pairs else "example sets"
            pairs = "\n".join(f"{p} | {n}" for p, n in d.pairs)
            return info, d.name, d.description, mode, pairs, d.positive, d.negative, gr.Textbox(value=d.name)

        lib_dd.change(show_direction, lib_dd, [lib_info, lib_name, lib_desc, lib_mode, lib_pairs, lib_pos, lib_neg,
                                                lib_new_name], api_name="direction_show", **PLUMBING)
        lib_mode.change(lambda m: (gr.Textbox(visible=m == "text pairs"), gr.Dropdown(visible=m == "example sets"),
                                   gr.Dropdown(visible=m == "example sets")),
                        lib_mode, [lib_pairs, lib_pos, lib_neg], api_name="direction_mode", **PLUMBING)

        @user_errors
        def save_direction(name, desc, mode, pairs, pos, neg):
            d = {"name": name, "description": desc or ""}
            if mode == "text pairs":
                d["pairs"] = parse_pairs(pairs)
                if not d["pairs"]:
                    raise ValueError("write at least one pair, as 'positive words | negative words'")
            else:
                d["positive"], d["negative"] = list(pos or []), list(neg or [])
            saved = LIBRARY.add(d, blender=BLENDER, replace=True)
            gr.Info(f"saved direction {saved.name!r}")
            return library_choices(saved.name)

        @user_errors
        def rename_direction(old, new, sweep, *slots):
            d = LIBRARY.rename(old or "", new or "")
            gr.Info(f"renamed {old!r} to {d.name!r}")
            return library_choices(d.name, slots, sweep, {old: d.name})

        @user_errors
        def delete_direction(name, sweep, *slots):
            if name is None:  # the person said no when asked
                return [gr.update() for _ in lib_outputs]
            LIBRARY.delete(name or "")
            gr.Info(f"deleted direction {name!r}")
            return library_choices(None, slots, sweep)

        lib_save_btn.click(save_direction, [lib_name, lib_desc, lib_mode, lib_pairs, lib_pos, lib_neg], lib_outputs,
                           api_name="direction_save", **MODEL)
        slot_dds = [dd for dd, _ in dir_slots]
        lib_rename_btn.click(rename_direction, [lib_dd, lib_new_name, sweep_dir] + slot_dds, lib_outputs,
                             api_name="direction_rename", **MODEL)
        lib_delete_btn.click(delete_direction, [lib_dd, sweep_dir] + slot_dds, lib_outputs, api_name="direction_delete",
                             js="(name, ...rest) => confirm(`Delete the direction ${name}?`) ? [name, ...rest] : "
                                "[null, ...rest]", **MODEL)
        # shipped directions cannot be deleted: the button is only offered for one's own
        lib_dd.change(lambda n: gr.Button(interactive=bool(n) and n not in LIBRARY.defaults), lib_dd, lib_delete_btn,
                      api_name="direction_deletable", **PLUMBING)

        # ------------------------------------------------------------------ Path events
        @user_errors
        def path_event(data: dict, progress=gr.Progress()):
            recipe = Recipe("path", [path_a.term(data, True), path_b.term(data, True)], method=data[path_method],
                            n=int(data[path_n]), seed=data[path_seed])
            result = run(recipe, progress)
            updates = record(result, data[history_state], data[current_state])
            gif = str(save_gif(result.images, tempfiles.process_dir() / f"path-{updates[current_state]}.gif"))
            return {path_gallery: gr.Gallery(value=gallery_value(result), columns=min(recipe.n, 8)),
                    path_sentences: sentences_text(result), path_anim: gif, path_gif: gif, **updates}

        path_inputs = set(path_a.inputs + path_b.inputs) | {path_n, path_method, path_seed, history_state, current_state}
        path_btn.click(path_event, path_inputs, [path_gallery, path_sentences, path_anim, path_gif] + history_outputs,
                       api_name="ui_path", **MODEL)

        # ------------------------------------------------------------------ Plane events
        def plane_markdown(result) -> str:
            k = result.recipe.k
            rows = [result.texts[i * k:(i + 1) * k] for i in range(k)]
            head = "| | " + " | ".join(f"col {j}" for j in range(k)) + " |\n" + "|---" * (k + 1) + "|\n"
            return head + "\n".join(f"| **row {i}** | " + " | ".join(html.escape(t) for t in r) + " |"
                                    for i, r in enumerate(rows))

        @user_errors
        def plane_event(data: dict, progress=gr.Progress()):
            recipe = Recipe("plane", [b.term(data, True) for b in plane_boxes], k=int(data[plane_k]), seed=data[plane_seed])
            result = run(recipe, progress)
            return {plane_gallery: gr.Gallery(value=gallery_value(result), columns=recipe.k),
                    plane_table: plane_markdown(result), **record(result, data[history_state], data[current_state])}

        plane_inputs = {x for b in plane_boxes for x in b.inputs} | {plane_k, plane_seed, history_state, current_state}
        plane_btn.click(plane_event, plane_inputs, [plane_gallery, plane_table] + history_outputs,
                        api_name="ui_plane", **MODEL)

        # ------------------------------------------------------------------ History events
        def workspace_fill(recipe: Recipe) -> dict:
            """Put a recipe back into the widgets of its workspace, so changing it there makes a branch."""
            op, terms = recipe.operation, recipe.terms
            if op == "mix":
                out = {mix_count: len(terms), mix_method: recipe.method, mix_seed: recipe.seed,
                       mix_n_seeds: recipe.n_seeds}
                for i, b in enumerate(mix_boxes):
                    out.update(b.fill(terms[i] if i < len(terms) else None))
                    out[b.group] = gr.Group(visible=i < len(terms))
                return out
            if op == "directions":
                out = {**dir_base.fill(terms[0]), dir_seed: recipe.seed, dir_n_seeds: recipe.n_seeds}
                for i, (dd, sl) in enumerate(dir_slots):
                    d = recipe.directions[i] if i < len(recipe.directions) else None
                    out[dd] = gr.Dropdown(value=d["name"] if d and d["name"] in LIBRARY.names() else None)
                    out[sl] = d["strength"] if d else 0.0
                return out
            if op == "path":
                return {**path_a.fill(terms[0]), **path_b.fill(terms[1]), path_n: recipe.n, path_method: recipe.method,
                        path_seed: recipe.seed}
            return {**{k: v for b, t in zip(plane_boxes, terms) for k, v in b.fill(t).items()},
                    plane_k: recipe.k, plane_seed: recipe.seed}

        workspace_outputs = ([mix_count, mix_method, mix_seed, mix_n_seeds] + [x for b in mix_boxes for x in b.inputs]
                             + mix_groups + dir_base.inputs + [dir_seed, dir_n_seeds]
                             + [x for pair in dir_slots for x in pair] + path_a.inputs + path_b.inputs
                             + [path_n, path_method, path_seed] + [x for b in plane_boxes for x in b.inputs]
                             + [plane_k, plane_seed])

        @user_errors
        def select_node(node_id, history: History):
            return history.get(node_id).to_json() if node_id else ""

        node_dd.input(select_node, [node_dd, history_state], node_json, api_name="history_select", **PLUMBING)
        node_dd.change(select_node, [node_dd, history_state], node_json, api_name="history_show", **PLUMBING)

        @user_errors
        def reopen(node_id, history: History, progress=gr.Progress()):
            if not node_id:
                raise ValueError("pick a node to reopen")
            recipe = history.get(node_id)
            result = run(recipe, progress)
            warn_all(result)
            gr.Info(f"reopened {node_id}: new results now grow from it (inputs loaded into the "
                    f"{recipe.operation.capitalize()} tab)")
            return {hist_gallery: gallery_value(result), hist_sentences: sentences_text(result),
                    node_json: recipe.to_json(), **history_update(history, node_id), **workspace_fill(recipe)}

        reopen_outputs = [hist_gallery, hist_sentences, node_json] + history_outputs + workspace_outputs
        reopen_btn.click(reopen, [node_dd, history_state], reopen_outputs, api_name="history_reopen", **MODEL)

        @user_errors
        def branch(node_id, text, history: History, current, progress=gr.Progress()):
            recipe = Recipe.from_json(text or "")
            parent = node_id if node_id in history else None
            result = run(recipe, progress)
            node = history.add(result.recipe, parent=parent)
            warn_all(result)
            return {hist_gallery: gallery_value(result), hist_sentences: sentences_text(result),
                    **history_update(history, node.id)}

        branch_btn.click(branch, [node_dd, node_json, history_state, current_state],
                         [hist_gallery, hist_sentences] + history_outputs, api_name="history_branch", **MODEL)

        @user_errors
        def download_node(node_id, history: History):
            if not node_id:
                raise ValueError("pick a node to download")
            return rundir_file(f"recipe-{node_id}.json", history.get(node_id).to_json())

        @user_errors
        def download_all(history: History):
            if not len(history):
                raise ValueError("the history is empty: make a result first")
            return rundir_file("blend-history.json", history.to_json())

        dl_node_btn.click(download_node, [node_dd, history_state], download, api_name="history_download_node")
        dl_all_btn.click(download_all, history_state, download, api_name="history_download")

        @user_errors
        def load_json(path, history: History, current):
            if not path:
                return history_update(history, current)
            size = os.path.getsize(path)
            if size > 20 * 2**20:
                raise ValueError("that file is larger than 20 MB: it is not a blend recipe")
            added = history.merge(Path(path).read_bytes())
            gr.Info(f"loaded {len(added)} node(s)" if added else "every node in that file is already here")
            return history_update(history, added[-1] if added else current)

        upload.upload(load_json, [upload, history_state, current_state], history_outputs, api_name="history_upload")

        @user_errors
        def load_example(name, history: History, current):
            if not name:
                raise ValueError("pick an example recipe")
            added = history.merge(example_path(name).read_text())
            return history_update(history, added[-1] if added else current)

        example_btn.click(load_example, [example_dd, history_state, current_state], history_outputs,
                          api_name="history_load_example").success(
            reopen, [node_dd, history_state], reopen_outputs, api_name="history_reopen_example", **MODEL)

        # ------------------------------------------------------------------ API-only endpoints (gradio_client)
        @user_errors
        def mix(terms: list[dict], method: str = "lerp", seed: int = 0, n_seeds: int = 1,
                directions: list[dict] | None = None) -> dict:
            """Mix terms [{kind: image|text, value: example name | PNG data URI | text, weight, muted}].

            Returns {texts, images (PNG data URIs), nearest, embeddings, recipe}.
            """
            recipe = Recipe.from_dict({"operation": "mix", "terms": terms, "method": method, "seed": seed,
                                       "n_seeds": n_seeds, "directions": directions or []})
            return run_recipe(BLENDER, recipe, library=LIBRARY, index=INDEX).to_dict()

        @user_errors
        def decode(embedding: list[float] | list[list[float]], seed: int | list[int] = 0,
                   steps: int | None = None) -> dict:
            """Decode embeddings of this preset's space, one row or a list of rows (a seed, or one per row).

            Returns {images (PNG data URIs), texts}: one per row; for one flat row also {image, text}.
            """
            emb = checks.embeddings(embedding, "embedding", dim=BLENDER.embed_dim, max_rows=MAX_ROWS)  # (N, D)
            images = BLENDER.decode_images(emb, seed=seed, steps=steps)
            out = {"images": [image_to_data_uri(im, max_side=4096) for im in images],
                   "texts": BLENDER.decode_texts(emb)}
            if embedding and not isinstance(embedding[0], (list, tuple)):  # one flat row: the single answer too
                out.update(image=out["images"][0], text=out["texts"][0])
            return out

        @user_errors
        def encode(kind: str, value: str) -> list[float]:
            """Embed one term (kind image: example name or PNG data URI; kind text: words) -> its unit embedding."""
            term = Term.from_dict({"kind": kind, "value": value})
            return [round(x, 6) for x in encode_terms(BLENDER, [term])[0].tolist()]

        @user_errors
        def run_recipe_api(recipe: dict) -> dict:
            """Run any recipe (mix, directions, path, plane) -> {texts, images, captions, nearest, embeddings, recipe}."""
            return run_recipe(BLENDER, recipe, library=LIBRARY, index=INDEX).to_dict()

        def info() -> dict:
            """The preset, its dimension, the example images and recipes, and the direction library."""
            return {"preset": BLENDER.name, "embed_dim": BLENDER.embed_dim, "examples": EXAMPLES,
                    "recipes": list_recipes(), "directions": LIBRARY.names()}

        gr.api(mix, api_name="mix", **MODEL)
        gr.api(decode, api_name="decode", **MODEL)
        gr.api(encode, api_name="encode", **MODEL)
        gr.api(run_recipe_api, api_name="run_recipe", **MODEL)
        gr.api(info, api_name="info")
    return demo


def main(argv=None) -> None:
    """`python app.py`: the UI and the REST API (/v1, /healthz, /metrics) in one process; --share: UI only."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    blender = blend.load(args.preset, device=args.device)
    demo = build_demo(blender).queue(default_concurrency_limit=1)
    if args.share:  # a public Gradio link: Gradio's own server, no REST API beside it
        tempfiles.Janitor().start()
        demo.launch(server_name=args.host, server_port=args.port, share=True, theme=THEME, css=CSS, ssr_mode=False,
                    show_error=True, max_file_size="50mb", footer_links=["api", "gradio", "settings"])
        return
    import uvicorn

    from blend.serve import ServeConfig, create_app
    from blend.serve.run import warn_if_open

    cfg = ServeConfig.from_env()
    warn_if_open(args.host, cfg)
    app = create_app(blender, demo, cfg, ui_options={"theme": THEME, "css": CSS, "ssr_mode": False,
                                                     "show_error": True, "max_file_size": "50mb",
                                                     "footer_links": ["api", "gradio", "settings"]})
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
