"""Images as text and back: PNG data URIs, example names, and pictures scaled for display.

Recipes, directions and the app all name images the same way: an example's bare file name, or an
embedded `data:image/png;base64,...`. This module resolves both, so none of them imports the other.
"""
from __future__ import annotations

import base64
import io

from PIL import Image

from .encode import load_image
from .examples import example_path

DATA_URI = "data:image/png;base64,"
MAX_IMAGE_SIDE = 512  # uploaded images are stored at most this large, and encoded as stored


def image_to_data_uri(image, max_side: int = MAX_IMAGE_SIDE) -> str:
    """A PIL image (or anything `load_image` reads) -> `data:image/png;base64,...`, shrunk to at most max_side."""
    img = load_image(image)
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    return DATA_URI + base64.b64encode(png_bytes(img)).decode("ascii")


def data_uri_to_image(uri: str, name: str = "image") -> Image.Image:
    """`data:image/...;base64,...` -> PIL RGB (checked like every image: see `checks.image`)."""
    if not isinstance(uri, str) or not uri.startswith("data:image/"):
        raise ValueError(f"{name}: embedded images must start with 'data:image/...;base64,'")
    return load_image(uri, name)


def image_value(value: str, examples_dir=None, name: str = "image") -> Image.Image:
    """An image named in a recipe: an embedded data URI, or an example's bare file name."""
    if value.startswith("data:"):
        return data_uri_to_image(value, name)
    return load_image(example_path(value, examples_dir), name)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def upscale(image: Image.Image, side: int) -> Image.Image:
    """The whole image, scaled to fit a side x side box by a whole factor, nearest neighbour: sharp pixels."""
    factor = max(1, side // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST) if factor > 1 else image
