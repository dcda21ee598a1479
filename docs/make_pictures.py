"""Draw the README's pictures from the shipped shapes-mini bundle: python docs/make_pictures.py"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import blend
from blend import world
from blend.viz import grid, strip

HERE = Path(__file__).parent


def banner(img: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (img.width, img.height + 22), "white")
    out.paste(img, (0, 0))
    ImageDraw.Draw(out).text((6, img.height + 5), text, fill=(20, 20, 20))
    return out


def main():
    torch.set_num_threads(2)
    b = blend.load(os.environ.get("BLEND_PRESET", "shapes-mini"), device="cpu")
    x = world.Scene("red", "white", "circle", "large", 1, -1)
    e = b.encode_images([world.render(x)])
    m = blend.mix(torch.cat([e, b.encode_texts(["red", "green"])]), [1, -1, 1])
    outs = [b.decode_images(m, seed=s, size=128)[0] for s in range(4)]
    sentence = b.decode_texts(m)[0]
    pic = grid([world.render(x, 128)] + outs, cols=5,
               labels=["x", "seed 0", "seed 1", "seed 2", "seed 3"])
    banner(pic, f'x - T("red") + T("green")  ->  "{sentence}"').save(HERE / "blend.png")

    a, z = world.Scene("yellow", "blue", "triangle", "small"), world.Scene("white", "purple", "square", "large")
    ea = b.encode_images([world.render(a), world.render(z)])
    path = blend.interpolate(ea[0], ea[1], 8)
    texts = b.decode_texts(path)
    pic = strip(b.decode_images(path, seed=0, size=96), labels=[f"t={i / 7:.2f}" for i in range(8)])
    banner(pic, f'slerp, one start noise: "{texts[0]}"  ->  "{texts[-1]}"').save(HERE / "path.png")

    anchors = b.encode_texts(["a small red circle on a black background", "a small blue circle on a black background",
                              "a large red square on a black background"])
    g = blend.plane(anchors[0], anchors[1], anchors[2], 5).reshape(25, -1)
    banner(grid(b.decode_images(g, seed=0, size=72), cols=5),
           "a: red circle | b: blue circle | c: large red square").save(
        HERE / "plane.png")
    print("wrote docs/blend.png, docs/path.png, docs/plane.png")


if __name__ == "__main__":
    main()
