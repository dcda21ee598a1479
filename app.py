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
import re
import uuid
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the app runs offline
from blend import tempfiles  # noqa: E402
os.environ.setdefault("GRADIO_TEMP_DIR", str(tempfiles.gradio_cache()))  # uploads too are swept by age

import gradio as gr  # noqa: E402

import blend  # noqa: E402
from blend.directions import DirectionLibrary, parse_pairs  # noqa: E402
from blend.encode import load_image  # noqa: E402
from blend.examples import ExampleIndex, example_path, list_examples, list_recipes  # noqa: E402
from blend import canvas, checks  # noqa: E402
from blend.history import History, Outcome, download_name  # noqa: E402
from blend.images import DATA_URI, image_to_data_uri  # noqa: E402
from blend.recipe import LIMITS, Recipe, Term, make_term  # noqa: E402
from blend.run import encode_terms, run_recipe  # noqa: E402
from blend.viz import grid, save_gif  # noqa: E402

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


# ---------------------------------------------------------------------------------------------- errors
class BoxError(ValueError):
    """A bad input that belongs to one term box: the message is shown beside that box."""

    def __init__(self, box: "TermBox", message: str):
        super().__init__(message)
        self.box = box


def error_html(message: str) -> str:
    return f"<div class='bl-error' role='alert'>⚠ {html.escape(message)}</div>" if message else ""


def beside(error_box, boxes=()):
    """Wrap an event that returns a dict of updates. Success clears the error boxes; a ValueError is shown,
    lasting, beside the term box that caused it (BoxError) or in `error_box`, and every other output keeps
    its last good value. A bug is logged and shown the same way; the server keeps serving."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            clear = {error_box: "", **{b.error: "" for b in boxes}}
            try:
                return {**clear, **fn(*args, **kwargs)}
            except BoxError as e:
                return {**clear, e.box.error: error_html(str(e))}
            except ValueError as e:
                return {**clear, error_box: error_html(str(e))}
            except Exception as e:  # noqa: BLE001 - a bug must not take the server down
                log.exception("event %s failed", fn.__name__)
                return {**clear, error_box: error_html(f"Internal error ({type(e).__name__}). The app is still "
                                                       f"running: try other inputs, and report this if it repeats.")}

        return wrapper

    return deco


# ---------------------------------------------------------------------------------------------- term inputs
class Unreadable:
    """An upload that is not an image: its file name and why, shown beside the upload."""

    def __init__(self, name: str, message: str):
        self.name, self.message = name, message


def checked_image(**kwargs) -> gr.Image:
    """A gr.Image whose uploads are read with blend's own checks when they arrive: a file that is not an
    image (a corrupt `.png`) comes back as `Unreadable`, so the app says so beside the upload, in words.
    (The instance's preprocess is replaced: a subclass would make Gradio write a .pyi stub beside app.py.)"""
    image = gr.Image(**kwargs)

    def preprocess(payload):
        if payload is None:
            return None
        name = Path(payload.orig_name or payload.path or "upload").name
        source = payload.url if payload.url and payload.url.startswith("data:") else payload.path
        try:
            return load_image(source, name)
        except ValueError as e:
            return Unreadable(name, str(e))

    image.preprocess = preprocess
    return image


def vocabulary(blender) -> list[str]:
    """The words a preset knows, read from its tokenizer, where its vocabulary is closed (else [])."""
    vocab = getattr(blender.encoder, "vocab", None)
    return sorted(w for w in vocab if w.isalpha()) if vocab else []


def vocab_markup(words: list[str], target: str, cls: str = "bc-vocab") -> str:
    """Clickable words for the box with id `target` (an input, or a Gradio textbox around one)."""
    if not words:
        return ""
    chips = "".join(f"<span data-word>{html.escape(w)}</span>" for w in words)
    return f"<div class='{cls}' data-for='{target}' title='words this model knows: click to add'>{chips}</div>"


VOCAB_JS = """element.addEventListener('click', (ev) => {
  const chip = ev.target.closest('[data-word]'); if (!chip) return;
  const host = document.getElementById(chip.parentElement.dataset.for); if (!host) return;
  const box = host.matches('input, textarea') ? host : host.querySelector('textarea, input');
  box.value = (box.value.trim() + ' ' + chip.textContent).trim();
  box.dispatchEvent(new Event('input', {bubbles: true})); box.focus();
});"""


def vocab_chips(words: list[str], target: str, visible=True) -> gr.HTML | None:
    """The preset's vocabulary beside a text box (nothing for an open vocabulary)."""
    if not words:
        return None
    return gr.HTML(vocab_markup(words, target, "bl-vocab"), js_on_load=VOCAB_JS, visible=visible,
                   elem_classes="bl-vocab-box", padding=False)


def tile_markup(tile: dict | None) -> str:
    """A canvas tile shown inside a form: its picture and sentence."""
    if not tile:
        return ""
    img = f"<img src='{tile['image']}' alt=''>" if str(tile.get("image", "")).startswith("data:image/") else ""
    return (f"<div class='bl-tile-in'>{img}<div><b>{html.escape(str(tile.get('label', 'tile')))}</b><br>"
            f"{html.escape(str(tile.get('text', '')))}</div></div>")


class TermBox:
    """One input in a form: an image (example or upload), words, or a canvas tile, with weight and mute
    where the form mixes. Errors about this term are shown in `self.error`, beside it."""

    def __init__(self, key: str, label: str, words: list[str], kind: str = "image", weighted: bool = True,
                 visible: bool = True, example: str | None = None, text: str = ""):
        self.key, self.label, self.weighted = key, label, weighted
        self.api = key.replace("-", "_")
        image = load_image(example_path(example)) if example else None
        with gr.Group(visible=visible, elem_id=f"{key}") as self.group:
            with gr.Row(equal_height=True):
                self.kind = gr.Radio(["image", "text", "tile"], value=kind, label=label, elem_id=f"{key}-kind",
                                     scale=1, min_width=120)
                self.example = gr.Dropdown(EXAMPLES, value=example, label="example", visible=kind == "image",
                                           elem_id=f"{key}-example", scale=2, min_width=160)
                self.image = checked_image(value=image, type="pil", label="or upload an image", height=150,
                                           sources=["upload", "clipboard"], visible=kind == "image", format="png",
                                           elem_id=f"{key}-image", scale=2, min_width=140, elem_classes="bl-sharp")
                self.text = gr.Textbox(value=text, label="text", visible=kind == "text", elem_id=f"{key}-text",
                                       placeholder="a few words, e.g. a large red star on the left", scale=4, min_width=160)
                self.tile_view = gr.HTML("<i>on the Canvas, pick a tile and “use in” this box</i>",
                                         visible=kind == "tile", elem_id=f"{key}-tile", min_width=160)
                if weighted:
                    self.weight = gr.Slider(-2, 2, value=1.0, step=0.05, label="weight", elem_id=f"{key}-weight",
                                            scale=2, min_width=160)
                    self.muted = gr.Checkbox(False, label="mute", elem_id=f"{key}-mute", scale=0, min_width=70)
            self.chips = vocab_chips(words, f"{key}-text", visible=kind == "text")
            self.error = gr.HTML("", elem_id=f"{key}-error", padding=False)
        self.tile = gr.State(None)  # the canvas tile this box holds: {id, recipe, image, text, label}

    @property
    def inputs(self) -> list:
        return [self.kind, self.example, self.image, self.text, self.tile] + (
            [self.weight, self.muted] if self.weighted else [])

    @property
    def views(self) -> list:
        """Everything `fill` may change."""
        return self.inputs + [self.tile_view, self.error] + ([self.chips] if self.chips else [])

    def _shown(self, kind: str) -> dict:
        out = {self.example: gr.Dropdown(visible=kind == "image"), self.image: gr.Image(visible=kind == "image"),
               self.text: gr.Textbox(visible=kind == "text"), self.tile_view: gr.HTML(visible=kind == "tile")}
        if self.chips:
            out[self.chips] = gr.HTML(visible=kind == "text")
        return out

    def wire(self) -> None:
        shown = [self.example, self.image, self.text, self.tile_view] + ([self.chips] if self.chips else [])
        self.kind.change(self._shown, self.kind, shown, api_name=f"{self.api}_kind", **PLUMBING)
        self.example.input(user_errors(lambda name: load_image(example_path(name)) if name else None),
                           self.example, self.image, api_name=f"{self.api}_example", **PLUMBING)

        def checked(image):
            """Read the upload now: a file that is not an image is refused here, with its name."""
            if isinstance(image, Unreadable):
                return None, gr.update(), error_html(image.message)
            return gr.update(), None, ""  # a person's own picture replaces the example

        self.image.upload(checked, self.image, [self.image, self.example, self.error], api_name=f"{self.api}_upload",
                          **PLUMBING)
        self.image.clear(lambda: None, None, self.example, api_name=f"{self.api}_clear", **PLUMBING)

    def term(self, data: dict, required: bool) -> Term | None:
        """The Term these widgets hold; None for an empty box unless it is required. Errors name this box."""
        kind, example, image, text, tile = (data[c] for c in (self.kind, self.example, self.image, self.text,
                                                              self.tile))
        weight, muted = (data[self.weight], data[self.muted]) if self.weighted else (1.0, False)
        empty = ((kind == "image" and not example and image is None) or (kind == "text" and not (text or "").strip())
                 or (kind == "tile" and not tile))
        if empty and not required:
            return None
        try:
            if isinstance(image, Unreadable) and kind == "image" and not example:
                raise ValueError(image.message)
            if kind == "tile":
                if not tile:
                    raise ValueError(f"{self.label} holds no canvas tile: on the Canvas, pick a tile and “use in” "
                                     f"this box")
                return make_term("recipe", text=json.dumps(tile["recipe"]), weight=weight, muted=muted,
                                 where=self.label)
            return make_term(kind, example=example, image=image, text=text, weight=weight, muted=muted,
                             where=self.label)
        except ValueError as e:
            raise BoxError(self, str(e)) from e

    def show_tile(self, tile: dict) -> dict:
        """Widget values holding a canvas tile."""
        return {self.kind: "tile", self.tile: tile, self.tile_view: gr.HTML(tile_markup(tile), visible=True),
                self.error: "", **{k: v for k, v in self._shown("tile").items() if k is not self.tile_view}}

    def fill(self, term: Term | None) -> dict:
        """Widget values showing `term` (None: an empty image box)."""
        kind = {"recipe": "tile"}.get(term.kind, term.kind) if term else "image"
        is_image = term is not None and kind == "image"
        out = {**self._shown(kind), self.kind: kind, self.error: "",
               self.example: gr.Dropdown(value=term.value if is_image and not term.value.startswith(DATA_URI)
                                         else None, visible=kind == "image"),
               self.image: gr.Image(value=term.load_image() if is_image else None, visible=kind == "image"),
               self.text: gr.Textbox(value=term.value if term and kind == "text" else "", visible=kind == "text"),
               self.tile: None}
        if kind == "tile":
            tile = {"id": None, "recipe": json.loads(term.value), "label": term.label, "text": "from the history"}
            out.update({self.tile: tile, self.tile_view: gr.HTML(tile_markup(tile), visible=True)})
        if self.weighted:
            out.update({self.weight: term.weight if term else 1.0, self.muted: term.muted if term else False})
        return out


class Terms:
    """The terms of one run, taken box by box, so that an error found later ("term 2 ...") is shown beside
    the box it came from."""

    def __init__(self, data: dict):
        self.data, self.used = data, []

    def take(self, box: TermBox, required: bool = True) -> Term | None:
        t = box.term(self.data, required)
        if t is not None:
            self.used.append((box, t))
        return t

    def blame(self, e: ValueError) -> ValueError:
        m = re.match(r"term (\d+)\b", str(e))
        i = int(m.group(1)) - 1 if m else -1
        return BoxError(self.used[i][0], str(e)) if 0 <= i < len(self.used) else e

    def sources(self) -> list[tuple[int, str, float]]:
        """(term index, canvas tile id, weight) of the terms that came from canvas tiles."""
        out = []
        for i, (box, t) in enumerate(self.used):
            tile = self.data[box.tile] if t.kind == "recipe" else None
            if tile and tile.get("id"):
                out.append((i, tile["id"], t.weight))
        return out


# ---------------------------------------------------------------------------------------------- results
def figures_html(outcome: Outcome, recipe: Recipe) -> str:
    """A result as whole pictures (PNG, scaled up sharp by the browser), each with its full sentence under it;
    a path's ends and a plane's corners marked; a plane as its k x k grid; one download link for all."""
    n = len(outcome.images)
    names = canvas.marks(recipe, n)
    plane = recipe.operation == "plane" and n == recipe.k * recipe.k
    figs = []
    for i, im in enumerate(outcome.images):
        a = outcome.agreement[i] if i < len(outcome.agreement) else None
        warn = (f"<div class='bl-warn' data-role='warning'>⚠ {html.escape(a['warning'])} (cos {a['cosine']:.2f})</div>"
                if a and not a.get("ok", True) else "")
        mark = f"<b class='bl-mark'>{html.escape(names[i])}</b> " if names[i] else ""
        cap = outcome.captions[i] if i < len(outcome.captions) else ""
        figs.append(f"<figure class='bl-fig{' bl-marked' if names[i] else ''}'>"
                    f"<img src='{image_to_data_uri(im, max_side=4096)}' alt='{html.escape(outcome.sentence(i))}'>"
                    f"<figcaption>{mark}<span class='bl-cap'>{html.escape(cap)}</span> "
                    f"<span class='bl-sentence'>{html.escape(outcome.sentence(i))}</span></figcaption>{warn}</figure>")
    cols = recipe.k if plane else min(n, 8)
    sheet = outcome.images[0] if n == 1 else grid(outcome.images, cols)
    name = download_name(recipe)
    link = (f"<a class='bl-download' download='{name}' href='{image_to_data_uri(sheet, max_side=8192)}'>"
            f"⬇ {html.escape(name)}</a>")
    layout = (f"class='bl-plane' style='grid-template-columns: repeat({recipe.k}, minmax(0, 1fr))'" if plane
              else "class='bl-strip'")
    return f"<div class='bl-result' data-op='{recipe.operation}'>{link}<div {layout}>{''.join(figs)}</div></div>"


def sentences_text(outcome: Outcome) -> str:
    if len(outcome.texts) == 1:
        return outcome.texts[0]
    return "\n".join(f"{c}: {t}" for c, t in zip(outcome.captions, outcome.texts))


def nearest_value(result) -> list[tuple]:
    return [(load_image(example_path(n)), f"{n} · cos {s:.2f}") for n, s in result.nearest]


def rundir_file(name: str, text: str) -> str:
    path = tempfiles.process_dir() / f"{uuid.uuid4().hex[:6]}-{name}"  # removed on shutdown and by age
    path.write_text(text)
    return str(path)


def landing(result, sources: list[tuple[int, str, float]]) -> str:
    """The message that puts a result's pictures on the canvas as tiles, with arrows from the tiles it used."""
    tiles = canvas.result_tiles(result)
    r, n = result.recipe, len(tiles)
    for t in tiles:
        t["from"] = []
    for term, tile_id, weight in sources:
        if r.operation == "path":
            at = [0] if term == 0 else [n - 1]
        elif r.operation == "plane":
            at = [[0, r.k - 1, r.k * (r.k - 1)][term]]
        else:
            at = range(n)
        for i in at:
            tiles[i]["from"].append([tile_id, f"{r.operation} ×{weight:g}"])
    cols = r.k if r.operation == "plane" else min(n, 8)
    return json.dumps({"nonce": uuid.uuid4().hex, "tiles": tiles, "cols": cols})


# ---------------------------------------------------------------------------------------------- history
TREE_JS = """element.addEventListener('click', (ev) => {
  if (ev.target.closest('a')) return;  // a download link downloads
  const row = ev.target.closest('[data-node]'); if (!row) return;
  window.dispatchEvent(new CustomEvent('blend-history-pick', {detail: row.dataset.node + '|' + Date.now()}));
});"""
BUS_JS = """window.addEventListener('%s', (ev) => { props.value = ev.detail; trigger('change'); });"""
INBOX_JS = """watch('value', () => { if (props.value) window.dispatchEvent(new CustomEvent('blend-canvas-inbox', {detail: props.value})); });"""


def tree_html(history: History, current: str | None) -> str:
    """The history as a nested list: each node a thumbnail, its summary and a one-click PNG download;
    a result hangs under the node it came from."""
    if not len(history):
        return "<div class='bh-tree'><i>no results yet: make one in any tab</i></div>"
    parts, prev = ["<div class='bh-tree'>"], -1
    for d, r in history.tree():  # depth-first; a node's depth is at most one more than the one before
        parts.append("<ul>" * (d - prev) if d > prev else "</li>" + "</ul></li>" * (prev - d))
        prev = d
        o = history.outcome(r.id)
        thumb = (f"<img src='{image_to_data_uri(o.images[0], max_side=96)}' alt=''>" if o
                 else "<span class='bh-none' title='not kept: Reopen runs it again'>·</span>")
        dl = ""
        if o:
            sheet = o.images[0] if len(o.images) == 1 else grid(o.images, r.k if r.operation == "plane"
                                                                else min(len(o.images), 8))
            name = download_name(r)
            dl = (f"<a class='bh-dl' download='{name}' href='{image_to_data_uri(sheet, max_side=8192)}' "
                  f"title='download {name}'>⬇ PNG</a>")
        cur = " bh-current" if r.id == current else ""
        parts.append(f"<li><div class='bh-node{cur}' data-node='{r.id}'>{thumb}<span class='bh-id'>{r.id}</span> "
                     f"<span class='bh-sum'>{html.escape(r.summary)}</span>{' ◀ current' if cur else ''} {dl}</div>")
    parts.append("</li>" + "</ul></li>" * prev + "</ul></div>")
    return "".join(parts)


def node_choices(history: History) -> list[tuple[str, str]]:
    return [(f"{'· ' * depth}{r.id}  {r.summary}"[:140], r.id) for depth, r in history.tree()]


class Session:
    """What the workspaces share: the models, one browser session's history, and the way to the canvas."""

    def __init__(self, blender, library: DirectionLibrary, index: ExampleIndex):
        self.blender, self.library, self.index = blender, library, index
        self.words = vocabulary(blender)
        self.history = gr.State(History())
        self.origins = gr.State({})  # workspace -> the node its inputs came from (its last result or a Reopen)
        self.inbox = gr.HTML("", visible="hidden", elem_id="canvas-inbox", js_on_load=INBOX_JS)
        self.outbox = gr.HTML("", visible="hidden", elem_id="canvas-outbox", js_on_load=BUS_JS % "blend-canvas-use")
        self.tree = gr.HTML(tree_html(History(), None), elem_id="history-tree", js_on_load=TREE_JS, render=False)
        self.node_dd = gr.Dropdown([], label="node", elem_id="history-node", scale=3, render=False)
        self.workspaces: dict[str, "Workspace"] = {}

    @property
    def outputs(self) -> list:
        return [self.history, self.origins, self.tree, self.node_dd, self.inbox]

    def run(self, recipe: Recipe, progress) -> "blend.run.Result":
        return run_recipe(self.blender, recipe, library=self.library, index=self.index,
                          progress=lambda f, m: progress(f, desc=m))

    def show_history(self, history: History, current: str | None) -> dict:
        return {self.history: history, self.tree: tree_html(history, current),
                self.node_dd: gr.Dropdown(choices=node_choices(history), value=current)}

    def record(self, workspace: str, result, history: History, origins: dict, sources=(), parent=False) -> dict:
        """Keep a result in the history under the node it came from, and land its pictures on the canvas."""
        warn_all(result)  # e.g. a recipe made with another preset
        if parent is False:
            parent = history.origin(result.recipe, origins.get(workspace))
        node = history.add(result.recipe, parent=parent, result=result)
        return {**self.show_history(history, node.id), self.origins: {**origins, workspace: node.id},
                self.inbox: landing(result, list(sources))}


class Workspace:
    """A tab's hooks for the History tab: put a recipe back into its inputs, show a kept result in its outputs."""

    def __init__(self, name: str, fill, show, outputs: list):
        self.name, self.fill, self.show, self.outputs = name, fill, show, outputs


# ---------------------------------------------------------------------------------------------- the canvas
def tile_dict(result, label: str) -> dict:
    """A canvas tile from a one-point result: PNG (the browser scales it up, nearest neighbour), sentence, check."""
    recipe = result.recipe.copy(id=None, parent=None, created=None)
    return {"recipe": recipe.to_dict(), "image": image_to_data_uri(result.images[0], max_side=4096),
            "text": result.texts[0], "label": label, "agreement": result.agreement[0].to_dict()}


def canvas_workspace(ctx: "Session") -> gr.HTML:
    """The first tab: tiles on a plane; drag a strength, drop a tile on a tile; JavaScript in ui/canvas.js."""
    blender, library = ctx.blender, ctx.library

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
    targets = "".join(f"<option value='{v}'>{t}</option>" for v, t in USE_TARGETS.items())
    markup = f"""<div id="canvas-root">
  <div class="bc-bar"><input type="text" id="bc-words" placeholder="type words, e.g. a large red star on the left" size="34">
    <button id="bc-add-words">+ words</button>
    <label>+ image <input type="file" id="bc-file" accept="image/*"></label>
    <select id="bc-example"><option value="">+ example…</option>{examples}</select></div>
  {vocab_markup(ctx.words, "bc-words")}
  <div class="bc-bar"><b>move</b> <span id="bc-selected">(select a tile)</span> <b>along</b>
    <select id="bc-dir">{options}</select> <span>or words</span>
    <input type="text" id="bc-pos" placeholder="towards" size="10"> − <input type="text" id="bc-neg" placeholder="away from" size="10"></div>
  <div class="bc-bar bc-strength"><b>strength</b> <div class="bc-track" id="bc-track"><div class="bc-knob" id="bc-knob"></div></div>
    <span id="bc-strength">+0.00</span> <span id="bc-status"></span>
    <small>drag the knob: previews follow; release to keep a child tile</small>
    <small>previews shown: <span id="bc-previews">0</span></small></div>
  <div class="bc-bar"><small>drop a tile on a tile to blend them; the blend's handle sets the share</small>
    <button id="bc-use">use selected tile in ▸</button><select id="bc-target">{targets}</select>
    <button id="bc-undo" disabled>undo delete</button>
    <button id="bc-save">save canvas (.json)</button><label>load canvas <input type="file" id="bc-load" accept=".json,application/json"></label>
    <button id="bc-clear">clear</button> <span id="bc-count"></span></div>
  <div class="bc-error" id="bc-error" role="alert"></div>
  <div class="bc-view" id="bc-view"><div class="bc-world" id="bc-world"></div></div>
  <details id="bc-recipe-box"><summary>recipe</summary><pre class="bc-recipe" id="bc-recipe"></pre></details>
</div>"""
    return gr.HTML(markup, elem_id="canvas", js_on_load=(UI / "canvas.js").read_text(),
                   css_template=(UI / "canvas.css").read_text(), preset=blender.name,
                   server_functions=[canvas_tile, canvas_sweep, canvas_child, canvas_blend])




# ---------------------------------------------------------------------------------------------- workspaces
USE_TARGETS = {"mix": "Mix (a free term)", "dir-base": "Directions: base", "path-start": "Path: start",
               "path-end": "Path: end", "plane-a": "Plane: a", "plane-b": "Plane: b", "plane-c": "Plane: c"}


def mix_workspace(ctx: Session) -> Workspace:
    """Up to N_TERMS images, words or tiles, each with a weight; lerp or slerp."""
    with gr.Tab("Mix", id="mix"):
        gr.Markdown("Put images and words on the table and weigh them: weight 0 or *mute* drops a term, "
                    "negative weights subtract (use lerp).")
        boxes = [TermBox(f"mix-term-{i + 1}", f"term {i + 1}", ctx.words, kind="image" if i == 0 else "text",
                         visible=i < 2, example=pick("red-circle-on-blue.png") if i == 0 else None)
                 for i in range(N_TERMS)]
        count = gr.State(2)
        with gr.Row():
            add_btn = gr.Button("+ term", elem_id="mix-add", size="sm")
            remove_btn = gr.Button("− term", elem_id="mix-remove", size="sm")
            method = gr.Radio(["lerp", "slerp"], value="lerp", label="method", elem_id="mix-method")
            seed = gr.Number(0, precision=0, minimum=0, label="seed", elem_id="mix-seed")
            n_seeds = gr.Slider(1, 4, value=1, step=1, label="images (seeds)", elem_id="mix-n-seeds")
        run_btn = gr.Button("Mix", variant="primary", elem_id="mix-run", elem_classes="bl-run")
        error = gr.HTML("", elem_id="mix-error", padding=False)
        with gr.Row():
            view = gr.HTML("", elem_id="mix-gallery", min_height=60)
            with gr.Column():
                sentence = gr.Textbox(label="decoded sentence", interactive=False, elem_id="mix-sentence")
                nearest = gr.Gallery(label="nearest examples", columns=4, height=170, elem_id="mix-nearest",
                                     format="png", elem_classes="bl-sharp")
        with gr.Accordion("recipe", open=False):
            recipe_code = gr.Code(language="json", label="recipe", elem_id="mix-recipe")

    for b in boxes:
        b.wire()
    groups = [b.group for b in boxes]

    def show_terms(n: int):
        return [n] + [gr.Group(visible=i < n) for i in range(N_TERMS)]

    add_btn.click(lambda n: show_terms(min(n + 1, N_TERMS)), count, [count] + groups, api_name="mix_add_term",
                  **PLUMBING)
    remove_btn.click(lambda n: show_terms(max(n - 1, 1)), count, [count] + groups, api_name="mix_remove_term",
                     **PLUMBING)

    def show(outcome: Outcome, recipe: Recipe, result=None) -> dict:
        return {view: figures_html(outcome, recipe), sentence: outcome.texts[0],
                nearest: nearest_value(result) if result is not None else None, recipe_code: recipe.to_json()}

    @beside(error, boxes)
    def mix_event(data: dict, progress=gr.Progress()):
        terms = Terms(data)
        found = [t for b in boxes[:data[count]] if (t := terms.take(b, required=False)) is not None]
        if not found:
            raise ValueError("nothing to mix: give at least one term an image, some words or a canvas tile")
        recipe = Recipe("mix", found, method=data[method], seed=data[seed], n_seeds=int(data[n_seeds]))
        try:
            result = ctx.run(recipe, progress)
        except ValueError as e:
            raise terms.blame(e) from e
        return {**show(Outcome.from_result(result), result.recipe, result),
                **ctx.record("mix", result, data[ctx.history], data[ctx.origins], terms.sources())}

    inputs = {x for b in boxes for x in b.inputs} | {count, method, seed, n_seeds, ctx.history, ctx.origins}
    outputs = [view, sentence, nearest, recipe_code, error] + [b.error for b in boxes] + ctx.outputs
    run_btn.click(mix_event, inputs, outputs, api_name="ui_mix", **MODEL)

    def fill(recipe: Recipe) -> dict:
        out = {count: len(recipe.terms), method: recipe.method, seed: recipe.seed, n_seeds: recipe.n_seeds}
        for i, b in enumerate(boxes):
            out.update(b.fill(recipe.terms[i] if i < len(recipe.terms) else None))
            out[b.group] = gr.Group(visible=i < len(recipe.terms))
        return out

    ws = Workspace("mix", fill, show, [count, method, seed, n_seeds, view, sentence, nearest, recipe_code, error]
                   + groups + [x for b in boxes for x in b.views])
    ws.boxes, ws.count = boxes, count
    return ws


def directions_workspace(ctx: Session) -> Workspace:
    """Named attribute directions applied to a base, a strip across one's strengths, and the library."""
    library, names = ctx.library, ctx.library.names()
    with gr.Tab("Directions", id="directions"):
        with gr.Row():
            with gr.Column(scale=3):
                gr.Markdown("Apply named attribute directions to a base, each with its own strength.")
                base = TermBox("dir-base", "base", ctx.words, kind="image", weighted=False,
                               example=pick("red-circle-on-blue.png"))
                slots = []
                for i in range(3):
                    with gr.Row():
                        dd = gr.Dropdown(names, value=names[0] if i == 0 and names else None,
                                         label=f"direction {i + 1}", elem_id=f"dir-slot-{i + 1}")
                        sl = gr.Slider(-3, 3, value=1.0 if i == 0 else 0.0, step=0.05, label="strength",
                                       elem_id=f"dir-strength-{i + 1}")
                    slots.append((dd, sl))
                with gr.Row():
                    seed = gr.Number(0, precision=0, minimum=0, label="seed")
                    n_seeds = gr.Slider(1, 4, value=1, step=1, label="images (seeds)")
                run_btn = gr.Button("Apply", variant="primary", elem_id="dir-run", elem_classes="bl-run")
                error = gr.HTML("", elem_id="dir-error", padding=False)
                with gr.Row():
                    view = gr.HTML("", elem_id="dir-gallery", min_height=60)
                    with gr.Column():
                        sentence = gr.Textbox(label="decoded sentence", interactive=False)
                        nearest = gr.Gallery(label="nearest examples", columns=4, height=150, format="png",
                                             elem_classes="bl-sharp")
                gr.Markdown("**A strip across strengths** of one direction (the others stay as set above).")
                with gr.Row():
                    sweep_dir = gr.Dropdown(names, value=names[0] if names else None, label="direction to sweep")
                    sweep_max = gr.Slider(0.25, 3, value=2.0, step=0.25, label="from −s to +s")
                    sweep_n = gr.Slider(3, 9, value=5, step=1, label="steps")
                sweep_btn = gr.Button("Strip", elem_id="dir-strip")
                strip_view = gr.HTML("", elem_id="dir-strip-gallery", min_height=60)
            with gr.Column(scale=2):
                gr.Markdown("**Library.** Shipped directions are read-only; yours are saved to "
                            f"`{library.user_path}`.")
                lib_dd = gr.Dropdown(names, value=None, label="directions", elem_id="lib-list")
                lib_info = gr.Markdown()
                lib_name = gr.Textbox(label="name", elem_id="lib-name")
                lib_desc = gr.Textbox(label="description")
                lib_mode = gr.Radio(["text pairs", "example sets"], value="text pairs", label="defined by")
                lib_pairs = gr.Textbox(lines=4, label="pairs: one 'positive | negative' per line",
                                       placeholder="a star on the right | a star on the left", elem_id="lib-pairs")
                vocab_chips(ctx.words, "lib-pairs")
                lib_pos = gr.Dropdown(EXAMPLES, multiselect=True, label="positive examples", visible=False)
                lib_neg = gr.Dropdown(EXAMPLES, multiselect=True, label="negative examples", visible=False)
                lib_save_btn = gr.Button("Save as mine", elem_id="lib-save")
                with gr.Row():
                    lib_new_name = gr.Textbox(label="new name", scale=3, elem_id="lib-new-name")
                    lib_rename_btn = gr.Button("Rename", scale=1, elem_id="lib-rename")
                lib_delete_btn = gr.Button("Delete", variant="stop", interactive=False, elem_id="lib-delete")
                lib_error = gr.HTML("", elem_id="lib-error", padding=False)

    base.wire()

    def recipe_of(data: dict, terms: Terms, sweep: dict | None = None) -> Recipe:
        dirs = [{"name": data[dd], "strength": float(data[sl])} for dd, sl in slots if data[dd]]
        return Recipe("directions", [terms.take(base)], directions=dirs, seed=data[seed],
                      n_seeds=int(data[n_seeds]), sweep=sweep)

    def show(outcome: Outcome, recipe: Recipe, result=None) -> dict:
        if recipe.sweep is not None:
            return {strip_view: figures_html(outcome, recipe), view: "", sentence: "", nearest: None}
        return {view: figures_html(outcome, recipe), sentence: outcome.texts[0], strip_view: "",
                nearest: nearest_value(result) if result is not None else None}

    def run(recipe: Recipe, terms: Terms, data: dict, progress) -> dict:
        try:
            result = ctx.run(recipe, progress)
        except ValueError as e:
            raise terms.blame(e) from e
        return {**show(Outcome.from_result(result), result.recipe, result),
                **ctx.record("directions", result, data[ctx.history], data[ctx.origins], terms.sources())}

    @beside(error, [base])
    def directions_event(data: dict, progress=gr.Progress()):
        terms = Terms(data)
        recipe = recipe_of(data, terms)
        if not recipe.directions:
            raise ValueError("pick at least one direction from the library")
        return run(recipe, terms, data, progress)

    @beside(error, [base])
    def sweep_event(data: dict, progress=gr.Progress()):
        if not data[sweep_dir]:
            raise ValueError("pick the direction to sweep")
        s, n = float(data[sweep_max]), int(data[sweep_n])
        strengths = [round(-s + 2 * s * i / (n - 1), 4) for i in range(n)]
        terms = Terms(data)
        return run(recipe_of(data, terms, {"name": data[sweep_dir], "strengths": strengths}), terms, data, progress)

    inputs = set(base.inputs) | {x for pair in slots for x in pair} | {seed, n_seeds, ctx.history, ctx.origins}
    outputs = [view, sentence, nearest, strip_view, error, base.error] + ctx.outputs
    run_btn.click(directions_event, inputs, outputs, api_name="ui_apply_directions", **MODEL)
    sweep_btn.click(sweep_event, inputs | {sweep_dir, sweep_max, sweep_n}, outputs, api_name="ui_direction_strip",
                    **MODEL)

    # ------------------------------------------------------------------ the library
    lib_outputs = [lib_dd, sweep_dir] + [dd for dd, _ in slots]

    def library_choices(selected: str | None = None, chosen=(), sweep=None, renamed: dict | None = None) -> dict:
        """New choices everywhere; a slot holding a renamed direction follows it, a deleted one empties."""
        names, renamed = library.names(), renamed or {}

        def follow(v):
            v = renamed.get(v, v)
            return v if v in names else None

        keep = [gr.Dropdown(choices=names, value=follow(v)) for v in chosen] or [
            gr.Dropdown(choices=names) for _ in slots]
        sweep_dd = gr.Dropdown(choices=names, value=follow(sweep)) if chosen else gr.Dropdown(choices=names)
        return dict(zip(lib_outputs, [gr.Dropdown(choices=names, value=selected), sweep_dd, *keep]))

    @user_errors
    def show_direction(name: str | None):
        if not name:
            return "", "", "", "text pairs", "", [], [], gr.Textbox(value="")
        d = library.get(name)
        info = f"*{d.source}* · {html.escape(d.description or '')}"
        mode = "text pairs" if d.pairs else "example sets"
        pairs = "\n".join(f"{p} | {n}" for p, n in d.pairs)
        return info, d.name, d.description, mode, pairs, d.positive, d.negative, gr.Textbox(value=d.name)

    lib_dd.change(show_direction, lib_dd, [lib_info, lib_name, lib_desc, lib_mode, lib_pairs, lib_pos, lib_neg,
                                            lib_new_name], api_name="direction_show", **PLUMBING)
    lib_mode.change(lambda m: (gr.Textbox(visible=m == "text pairs"), gr.Dropdown(visible=m == "example sets"),
                               gr.Dropdown(visible=m == "example sets")),
                    lib_mode, [lib_pairs, lib_pos, lib_neg], api_name="direction_mode", **PLUMBING)

    @beside(lib_error)
    def save_direction(name, desc, mode, pairs, pos, neg):
        d = {"name": name, "description": desc or ""}
        if mode == "text pairs":
            d["pairs"] = parse_pairs(pairs)
            if not d["pairs"]:
                raise ValueError("write at least one pair, as 'positive words | negative words'")
        else:
            d["positive"], d["negative"] = list(pos or []), list(neg or [])
        saved = library.add(d, blender=ctx.blender, replace=True)
        gr.Info(f"saved direction {saved.name!r}")
        return library_choices(saved.name)

    @beside(lib_error)
    def rename_direction(old, new, sweep, *chosen):
        d = library.rename(old or "", new or "")
        gr.Info(f"renamed {old!r} to {d.name!r}")
        return library_choices(d.name, chosen, sweep, {old: d.name})

    @beside(lib_error)
    def delete_direction(name, sweep, *chosen):
        if name is None:  # the person said no when asked
            return {}
        library.delete(name or "")
        gr.Info(f"deleted direction {name!r}")
        return library_choices(None, chosen, sweep)

    lib_save_btn.click(save_direction, [lib_name, lib_desc, lib_mode, lib_pairs, lib_pos, lib_neg],
                       lib_outputs + [lib_error], api_name="direction_save", **MODEL)
    slot_dds = [dd for dd, _ in slots]
    lib_rename_btn.click(rename_direction, [lib_dd, lib_new_name, sweep_dir] + slot_dds, lib_outputs + [lib_error],
                         api_name="direction_rename", **MODEL)
    lib_delete_btn.click(delete_direction, [lib_dd, sweep_dir] + slot_dds, lib_outputs + [lib_error],
                         api_name="direction_delete",
                         js="(name, ...rest) => confirm(`Delete the direction ${name}?`) ? [name, ...rest] : "
                            "[null, ...rest]", **MODEL)
    # shipped directions cannot be deleted: the button is only offered for one's own
    lib_dd.change(lambda n: gr.Button(interactive=bool(n) and n not in library.defaults), lib_dd, lib_delete_btn,
                  api_name="direction_deletable", **PLUMBING)

    def fill(recipe: Recipe) -> dict:
        out = {**base.fill(recipe.terms[0]), seed: recipe.seed, n_seeds: recipe.n_seeds}
        for i, (dd, sl) in enumerate(slots):
            d = recipe.directions[i] if i < len(recipe.directions) else None
            out[dd] = gr.Dropdown(value=d["name"] if d and d["name"] in library.names() else None)
            out[sl] = d["strength"] if d else 0.0
        return out

    ws = Workspace("directions", fill, show, base.views + [seed, n_seeds, view, sentence, nearest, strip_view, error]
                   + [x for pair in slots for x in pair])
    ws.boxes = [base]
    return ws


def path_workspace(ctx: Session) -> Workspace:
    """From a start to an end in n frames, every frame from the same noise."""
    with gr.Tab("Path", id="path"):
        gr.Markdown("Walk from one idea to another. Every frame starts from the same noise, so only meaning changes.")
        a = TermBox("path-start", "start", ctx.words, kind="image", weighted=False, example=pick("red-circle-on-blue.png"))
        b = TermBox("path-end", "end", ctx.words, kind="text", weighted=False)
        with gr.Row():
            n = gr.Slider(2, 16, value=8, step=1, label="frames", elem_id="path-n")
            method = gr.Radio(["slerp", "lerp"], value="slerp", label="method")
            seed = gr.Number(0, precision=0, minimum=0, label="seed")
        run_btn = gr.Button("Travel", variant="primary", elem_id="path-run", elem_classes="bl-run")
        error = gr.HTML("", elem_id="path-error", padding=False)
        view = gr.HTML("", elem_id="path-gallery", min_height=60)
        with gr.Row():
            sentences = gr.Textbox(label="sentences along the way", lines=8, interactive=False,
                                   elem_id="path-sentences")
            anim = gr.Image(label="animation", type="filepath", interactive=False, height=256, elem_id="path-anim")
            gif = gr.File(label="download GIF", elem_id="path-gif")
    a.wire()
    b.wire()

    def show(outcome: Outcome, recipe: Recipe, result=None) -> dict:
        folder = tempfiles.process_dir() / uuid.uuid4().hex[:8]  # a folder per GIF: the file keeps its readable name
        folder.mkdir(parents=True)
        path = str(save_gif(outcome.images, folder / download_name(recipe, "gif")))
        return {view: figures_html(outcome, recipe), sentences: sentences_text(outcome), anim: path, gif: path}

    @beside(error, [a, b])
    def path_event(data: dict, progress=gr.Progress()):
        terms = Terms(data)
        recipe = Recipe("path", [terms.take(a), terms.take(b)], method=data[method], n=int(data[n]), seed=data[seed])
        try:
            result = ctx.run(recipe, progress)
        except ValueError as e:
            raise terms.blame(e) from e
        return {**show(Outcome.from_result(result), result.recipe),
                **ctx.record("path", result, data[ctx.history], data[ctx.origins], terms.sources())}

    inputs = set(a.inputs + b.inputs) | {n, method, seed, ctx.history, ctx.origins}
    run_btn.click(path_event, inputs, [view, sentences, anim, gif, error, a.error, b.error] + ctx.outputs,
                  api_name="ui_path", **MODEL)

    def fill(recipe: Recipe) -> dict:
        return {**a.fill(recipe.terms[0]), **b.fill(recipe.terms[1]), n: recipe.n, method: recipe.method,
                seed: recipe.seed}

    ws = Workspace("path", fill, show, a.views + b.views + [n, method, seed, view, sentences, anim, gif, error])
    ws.boxes = [a, b]
    return ws


def plane_workspace(ctx: Session) -> Workspace:
    """Three anchors span a plane, shown as its k x k grid with the corners marked."""
    with gr.Tab("Plane", id="plane"):
        gr.Markdown("Three anchors span a plane: **a** top left, **b** top right, **c** bottom left; the "
                    "bottom right is b + c − a. Each picture has its decoded sentence under it.")
        boxes = [TermBox(f"plane-{name}", name, ctx.words, kind=k, weighted=False, example=e)
                 for name, k, e in (("a", "image", pick("red-circle-on-blue.png")),
                                    ("b", "image", pick("yellow-circle-on-purple.png")), ("c", "text", None))]
        with gr.Row():
            k = gr.Slider(2, 6, value=3, step=1, label="grid k × k", elem_id="plane-k")
            seed = gr.Number(0, precision=0, minimum=0, label="seed")
        run_btn = gr.Button("Map", variant="primary", elem_id="plane-run", elem_classes="bl-run")
        error = gr.HTML("", elem_id="plane-error", padding=False)
        view = gr.HTML("", elem_id="plane-gallery", min_height=60)
        table = gr.Markdown(elem_id="plane-table")
    for box in boxes:
        box.wire()

    def markdown(outcome: Outcome, recipe: Recipe) -> str:
        kk = recipe.k
        rows = [outcome.texts[i * kk:(i + 1) * kk] for i in range(kk)]
        head = "| | " + " | ".join(f"col {j}" for j in range(kk)) + " |\n" + "|---" * (kk + 1) + "|\n"
        return head + "\n".join(f"| **row {i}** | " + " | ".join(html.escape(t) for t in r) + " |"
                                for i, r in enumerate(rows))

    def show(outcome: Outcome, recipe: Recipe, result=None) -> dict:
        return {view: figures_html(outcome, recipe), table: markdown(outcome, recipe)}

    @beside(error, boxes)
    def plane_event(data: dict, progress=gr.Progress()):
        terms = Terms(data)
        recipe = Recipe("plane", [terms.take(b) for b in boxes], k=int(data[k]), seed=data[seed])
        try:
            result = ctx.run(recipe, progress)
        except ValueError as e:
            raise terms.blame(e) from e
        return {**show(Outcome.from_result(result), result.recipe),
                **ctx.record("plane", result, data[ctx.history], data[ctx.origins], terms.sources())}

    inputs = {x for b in boxes for x in b.inputs} | {k, seed, ctx.history, ctx.origins}
    run_btn.click(plane_event, inputs, [view, table, error] + [b.error for b in boxes] + ctx.outputs,
                  api_name="ui_plane", **MODEL)

    def fill(recipe: Recipe) -> dict:
        return {**{key: v for b, t in zip(boxes, recipe.terms) for key, v in b.fill(t).items()}, k: recipe.k,
                seed: recipe.seed}

    ws = Workspace("plane", fill, show, [x for b in boxes for x in b.views] + [k, seed, view, table, error])
    ws.boxes = boxes
    return ws


def history_workspace(ctx: Session, tabs: gr.Tabs) -> None:
    """Every result as a tree with thumbnails; kept results shown again without recomputing; Reopen, branch,
    download and load."""
    with gr.Tab("History", id="history"):
        gr.Markdown("Every result with its recipe, as a tree: a result hangs under the node it came from (the "
                    "one reopened, or the one before it in the same tab with an input in common). Click a node "
                    "to see it; **Reopen** loads it into its tab; edit its recipe and run it as a branch.")
        error = gr.HTML("", elem_id="history-error", padding=False)
        note = gr.Markdown(elem_id="history-note")
        pick_bus = gr.HTML("", visible="hidden", elem_id="history-pick", js_on_load=BUS_JS % "blend-history-pick")
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                ctx.tree.render()
            with gr.Column(scale=3, min_width=300):
                with gr.Row():
                    ctx.node_dd.render()
                    reopen_btn = gr.Button("Reopen", variant="primary", scale=1, elem_id="history-reopen")
                view = gr.HTML("", elem_id="history-gallery", min_height=60)
                sentences = gr.Textbox(label="sentences", lines=6, interactive=False, elem_id="history-sentences")
                with gr.Accordion("recipe: edit it, then run it as a branch", open=True):
                    node_json = gr.Code(language="json", label="recipe", interactive=True, elem_id="history-recipe")
                    with gr.Row():
                        branch_btn = gr.Button("Run edited recipe as a branch", elem_id="history-branch")
                        dl_node_btn = gr.Button("Download recipe", elem_id="history-download-node")
                        dl_all_btn = gr.Button("Download whole history", elem_id="history-download-all")
                    download = gr.File(label="download", interactive=False, height=90, elem_id="history-download")
                with gr.Row():
                    upload = gr.File(label="load a recipe or a history (.json)", file_types=[".json"],
                                     type="filepath", height=120, elem_id="history-upload")
                    with gr.Column():
                        example_dd = gr.Dropdown(list_recipes(), value=None, label="example recipes",
                                                 elem_id="history-example")
                        example_btn = gr.Button("Load example", elem_id="history-load-example")

    history, origins, node_dd = ctx.history, ctx.origins, ctx.node_dd
    spaces = ctx.workspaces
    ws_outputs = [x for ws in spaces.values() for x in ws.outputs]

    def shown(node_id: str, h: History) -> dict:
        """A node's kept result (or a note that it is not kept) and its recipe: nothing is run."""
        recipe, outcome = h.get(node_id), h.outcome(node_id)
        if outcome is None:
            return {view: "<p class='bl-note'>This result is not kept in this session (loaded from a file, or "
                          "older than the kept ones): <b>Reopen</b> runs it again.</p>",
                    sentences: "", node_json: recipe.to_json()}
        return {view: figures_html(outcome, recipe), sentences: sentences_text(outcome), node_json: recipe.to_json()}

    @beside(error)
    def select_node(node_id, h: History):
        return shown(node_id, h) if node_id else {}

    node_dd.input(select_node, [node_dd, history], [view, sentences, node_json, error], api_name="history_select",
                  **PLUMBING)

    @beside(error)
    def pick_node(message, h: History):
        node_id = (message or "").split("|")[0]
        if node_id not in h:
            return {}
        return {**shown(node_id, h), ctx.tree: tree_html(h, node_id), node_dd: gr.Dropdown(value=node_id)}

    pick_bus.change(pick_node, [pick_bus, history], [view, sentences, node_json, error, ctx.tree, node_dd],
                    api_name="history_pick", **PLUMBING)

    @beside(error)
    def reopen(node_id, h: History, where: dict, progress=gr.Progress()):
        if not node_id:
            raise ValueError("pick a node to reopen")
        recipe, outcome = h.get(node_id), h.outcome(node_id)
        if outcome is None:  # not kept: run it again, and keep it now
            h.keep(node_id, ctx.run(recipe, progress))
            outcome = h.outcome(node_id)
        ws = spaces[recipe.operation]
        return {**shown(node_id, h), **ctx.show_history(h, node_id), origins: {**where, ws.name: node_id},
                **ws.fill(recipe), **ws.show(outcome, recipe),
                note: f"Reopened **{node_id}**: its inputs and its result are in the **{ws.name.capitalize()}** "
                      f"tab; what you make there now grows from it."}

    reopen_outputs = [view, sentences, node_json, error, note, history, origins, ctx.tree, node_dd] + ws_outputs
    reopen_btn.click(reopen, [node_dd, history, origins], reopen_outputs, api_name="history_reopen", **MODEL)

    @beside(error)
    def branch(node_id, text, h: History, where: dict, progress=gr.Progress()):
        recipe = Recipe.from_json(text or "")
        result = ctx.run(recipe, progress)
        out = ctx.record(recipe.operation, result, h, where, parent=node_id if node_id in h else None)
        outcome = Outcome.from_result(result)
        return {view: figures_html(outcome, result.recipe), sentences: sentences_text(outcome), **out}

    branch_btn.click(branch, [node_dd, node_json, history, origins], [view, sentences, error] + ctx.outputs,
                     api_name="history_branch", **MODEL)

    @beside(error)
    def download_node(node_id, h: History):
        if not node_id:
            raise ValueError("pick a node to download")
        return {download: rundir_file(download_name(h.get(node_id), "json"), h.get(node_id).to_json())}

    @beside(error)
    def download_all(h: History):
        if not len(h):
            raise ValueError("the history is empty: make a result first")
        return {download: rundir_file("blend-history.json", h.to_json())}

    dl_node_btn.click(download_node, [node_dd, history], [download, error], api_name="history_download_node")
    dl_all_btn.click(download_all, history, [download, error], api_name="history_download")

    @beside(error)
    def load_json(path, h: History):
        if not path:
            return {}
        size = os.path.getsize(path)
        if size > 20 * 2**20:
            raise ValueError("that file is larger than 20 MB: it is not a blend recipe")
        added = h.merge(Path(path).read_bytes())
        return {**ctx.show_history(h, added[-1] if added else None),
                note: f"loaded {len(added)} node(s)" if added else "every node in that file is already here"}

    upload.upload(load_json, [upload, history], [history, ctx.tree, node_dd, error, note], api_name="history_upload")

    @beside(error)
    def load_example(name, h: History):
        if not name:
            raise ValueError("pick an example recipe")
        added = h.merge(example_path(name).read_text())
        return ctx.show_history(h, added[-1] if added else None)

    example_btn.click(load_example, [example_dd, history], [history, ctx.tree, node_dd, error],
                      api_name="history_load_example").success(
        reopen, [node_dd, history, origins], reopen_outputs, api_name="history_reopen_example", **MODEL)


def use_tile_events(ctx: Session, tabs: gr.Tabs) -> None:
    """A canvas tile's “use in”: the tile becomes a term of another workspace, and that tab opens."""
    spaces = ctx.workspaces
    mix = spaces["mix"]
    targets = {"dir-base": ("directions", spaces["directions"].boxes[0]),
               "path-start": ("path", spaces["path"].boxes[0]), "path-end": ("path", spaces["path"].boxes[1]),
               **{f"plane-{n}": ("plane", b) for n, b in zip("abc", spaces["plane"].boxes)}}
    mix_state = [x for b in mix.boxes for x in (b.kind, b.text, b.tile)]

    @beside(mix.boxes[0].error)
    def use_tile(message, count, *state):
        msg = json.loads(message or "{}")
        tile, target = msg.get("tile"), msg.get("target")
        if not isinstance(tile, dict) or not isinstance(tile.get("recipe"), dict):
            return {}
        canvas.point_recipe(tile["recipe"], "the tile")  # a tile is one point: checked before it is used
        tile = {k: tile.get(k) for k in ("id", "recipe", "image", "text", "label")}
        if target in targets:
            tab, box = targets[target]
            return {**box.show_tile(tile), tabs: gr.Tabs(selected=tab)}
        free = [i for i in range(count) if (state[3 * i] == "text" and not (state[3 * i + 1] or "").strip())
                or (state[3 * i] == "tile" and not state[3 * i + 2])]
        i = free[0] if free else min(count, N_TERMS - 1)
        n = max(count, i + 1)
        return {**mix.boxes[i].show_tile(tile), mix.count: n, tabs: gr.Tabs(selected="mix"),
                **{b.group: gr.Group(visible=j < n) for j, b in enumerate(mix.boxes)}}

    outs = [tabs, mix.count] + [b.group for b in mix.boxes] + list(
        {id(c): c for ws in spaces.values() for b in ws.boxes for c in b.views}.values())
    ctx.outbox.change(use_tile, [ctx.outbox, mix.count] + mix_state, outs, api_name="canvas_use_tile", **PLUMBING)


# ---------------------------------------------------------------------------------------------- the UI
CSS = (UI / "app.css").read_text()
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "monospace"])  # no web fonts: works offline


def build_demo(blender, library: DirectionLibrary | None = None, index: ExampleIndex | None = None) -> gr.Blocks:
    """The whole app for an already-loaded Blender (mount it with `gr.mount_gradio_app(app, build_demo(b))`)."""
    BLENDER = blender
    LIBRARY = library if library is not None else DirectionLibrary.for_preset(blender)
    INDEX = index if index is not None else ExampleIndex(blender)
    with gr.Blocks(title="blend: mix meaning", delete_cache=tempfiles.gradio_delete_cache()) as demo:
        ctx = Session(BLENDER, LIBRARY, INDEX)
        gr.Markdown(f"## blend · mix images and words in the space of meaning\nPreset **{BLENDER.name}** "
                    f"({BLENDER.embed_dim}-d). Every result lands on the **Canvas** and is kept in **History** "
                    f"with the recipe that made it.")
        with gr.Tabs(elem_id="blend-tabs") as tabs:
            with gr.Tab("Canvas", id="canvas"):
                canvas_workspace(ctx)
            for workspace in (mix_workspace, directions_workspace, path_workspace, plane_workspace):
                ws = workspace(ctx)
                ctx.workspaces[ws.name] = ws
            history_workspace(ctx, tabs)
        use_tile_events(ctx, tabs)

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

    from blend.serve import create_app
    from blend.serve.run import served_config, warn_if_open

    cfg = served_config(blender.device)
    warn_if_open(args.host, cfg)
    app = create_app(blender, demo, cfg, ui_options={"theme": THEME, "css": CSS, "ssr_mode": False,
                                                     "show_error": True, "max_file_size": "50mb",
                                                     "footer_links": ["api", "gradio", "settings"]})
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
