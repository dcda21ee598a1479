"""Draw the README's pictures from the shipped shapes-mini bundle (the 64-px world).

    python docs/make_pictures.py                        # docs/blend.png, path.png, plane.png and canvas.png
    python docs/make_pictures.py --only blend,path      # some of them; --out DIR writes them elsewhere

canvas.png is a screenshot of the app's Canvas: it starts `python app.py` on a free port of 127.0.0.1 and drives
it in headless Chromium (Playwright on the system's /usr/bin/chromium, or BLEND_CHROMIUM; nothing is downloaded).
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import blend
from blend import world
from blend.viz import grid, strip

HERE = Path(__file__).parent
ROOT = HERE.parent
PRESET = os.environ.get("BLEND_PRESET", "shapes-mini")
PICTURES = ("blend", "path", "plane", "canvas")


def banner(img: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (img.width, img.height + 22), "white")
    out.paste(img, (0, 0))
    ImageDraw.Draw(out).text((6, img.height + 5), text, fill=(20, 20, 20))
    return out


def blend_picture(b, out: Path):
    """x - T("red") + T("green"): the input, the blend drawn by the draft (the default) and redrawn by the UNet
    from 3 seeds (strength 0.3: variations), and its sentence."""
    x = world.Scene("red", "white", "circle", "large", jx=1.0, jy=-1.0)
    e = b.encode_images([world.render(x)])
    m = blend.mix(torch.cat([e, b.encode_texts(["red", "green"])]), [1, -1, 1])
    outs = [b.decode_images(m, seed=0, size=128)[0]] + [b.decode_images(m, seed=s, size=128, strength=0.3)[0]
                                                         for s in range(3)]
    sentence = b.decode_texts(m)[0]
    labels = ["x", "draft (default)"] + [f"seed {s}, strength 0.3" for s in range(3)]
    pic = grid([world.render(x, 128)] + outs, cols=5, labels=labels)
    banner(pic, f'x - T("red") + T("green")  ->  "{sentence}"').save(out / "blend.png")


def path_picture(b, out: Path):
    """A slerp between two pictures that differ in every attribute, one start noise for every frame."""
    a = world.Scene("yellow", "blue", "triangle", "small", "top left", "even")
    z = world.Scene("white", "purple", "square", "large", "bottom right", "top")
    ea = b.encode_images([world.render(a), world.render(z)])
    path = blend.interpolate(ea[0], ea[1], 8)
    texts = b.decode_texts(path)
    pic = strip(b.decode_images(path, seed=0, size=128), labels=[f"t={i / 7:.2f}" for i in range(8)])
    banner(pic, f'slerp, one start noise: "{texts[0]}"  ->  "{texts[-1]}"').save(out / "path.png")


def plane_picture(b, out: Path):
    """A 5 x 5 plane through three text anchors; the corner opposite a is b + c - a (a large blue star)."""
    anchors = b.encode_texts(["a small red circle on a black background", "a small blue circle on a black background",
                              "a large red star on a black background"])
    g = blend.plane(anchors[0], anchors[1], anchors[2], 5).reshape(25, -1)
    banner(grid(b.decode_images(g, seed=0, size=96), cols=5),
           "a: small red circle | b: small blue circle | c: large red star (all on black)").save(out / "plane.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drag_strength(page, to: float, moves: int = 12):
    """A pointer drag on the strength knob from 0 to `to` (-3..3), leaving the button pressed."""
    box = page.locator("#bc-track").bounding_box()
    y, x0 = box["y"] + box["height"] / 2, box["x"] + box["width"] / 2
    x1 = box["x"] + (to + 3) / 6 * box["width"]
    page.mouse.move(x0, y)
    page.mouse.down()
    page.wait_for_selector(".bc-tile.preview")
    for i in range(1, moves + 1):
        page.mouse.move(x0 + (x1 - x0) * i / moves, y)
        page.wait_for_timeout(60)


def _add_words(page, words: str):
    n = page.locator(".bc-tile:not(.preview)").count()
    page.locator("#bc-words").fill(words)
    page.locator("#bc-add-words").click()
    page.wait_for_function(f"document.querySelectorAll('.bc-tile:not(.preview)').length == {n + 1}")
    return page.locator(".bc-tile:not(.preview)").nth(n)


def canvas_picture(out: Path, timeout_s: float = 300):
    """The Canvas: a tile from words, a child dragged along "large - small", and a blend of two tiles."""
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("BLEND_CHROMIUM", "/usr/bin/chromium")
    if not os.path.exists(chromium):
        raise SystemExit(f"canvas.png needs Chromium at {chromium} (Debian's `chromium`, or set BLEND_CHROMIUM)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "BLEND_HOME": home, "GRADIO_ANALYTICS_ENABLED": "False",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        app = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--preset", PRESET, "--host", "127.0.0.1",
                                "--port", str(port)], cwd=ROOT, env=env)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if app.poll() is not None:
                    raise SystemExit(f"the app exited with code {app.returncode}")
                try:
                    with urllib.request.urlopen(url, timeout=2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"the app did not serve {url} within {timeout_s:.0f} s") from None
                    time.sleep(0.5)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, headless=True,
                                            args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(timeout_s * 1000)
                page.goto(url)
                page.wait_for_selector("#canvas-root[data-ready='1']")
                first = _add_words(page, "a small red star on the left on a blue background")
                page.locator("#bc-pos").fill("large")
                page.locator("#bc-neg").fill("small")
                _drag_strength(page, 1.5)
                page.mouse.up()
                page.wait_for_function("document.querySelectorAll('.bc-tile:not(.preview)').length == 2")
                other = _add_words(page, "a large green square on a white background")
                src, dst = first.bounding_box(), other.bounding_box()  # drop the first tile on the other: a blend
                page.mouse.move(src["x"] + 80, src["y"] + 60)
                page.mouse.down()
                for i in range(1, 11):
                    page.mouse.move(src["x"] + 80 + (dst["x"] - src["x"]) * i / 10,
                                    src["y"] + 60 + (dst["y"] - src["y"]) * i / 10)
                page.mouse.up()
                page.wait_for_function("document.querySelectorAll('.bc-tile:not(.preview)').length == 4")
                view = page.locator("#bc-view").bounding_box()  # pan up (drag the background): the blend is below
                x, y = view["x"] + view["width"] - 40, view["y"] + view["height"] - 40
                page.mouse.move(x, y)
                page.mouse.down()
                for i in range(1, 5):
                    page.mouse.move(x, y - 40 * i)
                page.mouse.up()
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / "canvas.png"))
                browser.close()
        finally:
            app.terminate()
            try:
                app.wait(10)
            except subprocess.TimeoutExpired:
                app.kill()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(PICTURES), help=f"comma list of {', '.join(PICTURES)}")
    p.add_argument("--out", type=Path, default=HERE, help="folder to write into (default docs/)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = set(only) - set(PICTURES)
    if unknown:
        p.error(f"unknown pictures {sorted(unknown)}; known: {', '.join(PICTURES)}")
    torch.set_num_threads(2)
    draw = {"blend": blend_picture, "path": path_picture, "plane": plane_picture}
    if set(only) & set(draw):
        b = blend.load(PRESET, device="cpu")
        for name in only:
            if name in draw:
                draw[name](b, args.out)
    if "canvas" in only:
        canvas_picture(args.out)
    print("wrote " + ", ".join(str(args.out / f"{n}.png") for n in only))


if __name__ == "__main__":
    main()
