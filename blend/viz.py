"""Pictures of results: strips, grids and GIFs of decoded images, optionally captioned."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw


def grid(images: list[Image.Image], cols: int, labels: list[str] | None = None, pad: int = 4,
         label_height: int = 0, background=(255, 255, 255)) -> Image.Image:
    """Images in rows of `cols`, same size, with an optional one-line label under each."""
    if not images:
        raise ValueError("no images to arrange")
    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    lh = label_height or (14 if labels else 0)
    canvas = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + lh + pad) + pad), background)
    draw = ImageDraw.Draw(canvas)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        x, y = pad + c * (w + pad), pad + r * (h + lh + pad)
        canvas.paste(im.convert("RGB").resize((w, h)), (x, y))
        if labels:
            draw.text((x + 2, y + h + 1), _fit(draw, labels[i], w - 4), fill=(30, 30, 30))
    return canvas


def strip(images: list[Image.Image], labels: list[str] | None = None) -> Image.Image:
    return grid(images, cols=len(images), labels=labels)


def save_gif(images: list[Image.Image], path: str | Path, duration_ms: int = 250, bounce: bool = True) -> Path:
    frames = [im.convert("RGB") for im in images]
    if bounce and len(frames) > 2:
        frames = frames + frames[-2:0:-1]
    path = Path(path)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    if draw.textlength(text) <= width:
        return text
    while text and draw.textlength(text + "…") > width:
        text = text[:-1]
    return text + "…"
