"""Every input check in one place: whole numbers and seeds, finite numbers, weights, embeddings, texts, images.

Each check returns the value made canonical or raises `ValueError` naming the argument and the fix.
The library, the CLI and the REST API call these, so a limit is the same wherever an input enters.
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import numbers
import os
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_SEED = 2**31 - 1
MAX_PIXELS = 40_000_000  # images larger than this are refused from their header, before any pixel is decoded
MAX_BYTES = 50 * 2**20  # image files and embedded images
MAX_TEXT_CHARS = 1000
MAX_WEIGHT = 1e6  # |weight|: blends are scale-free, so larger values only risk overflow
MAX_VALUE = 1e6  # |value| of an embedding coordinate: unit embeddings have coordinates below 1
EPS = 1e-8
DATA_URI_PREFIX = "data:image/"


# ---------------------------------------------------------------------------------------------- numbers
def whole(value, name: str, lo: int, hi: int) -> int:
    """A whole number in [lo, hi]: ints, integral floats and numpy integers; not bools, strings or None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value) or int(value) != value or not lo <= value <= hi:
        raise ValueError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
    return int(value)


def seed(value, name: str = "seed") -> int:
    """A random seed: a whole number from 0 to 2**31 - 1."""
    return whole(value, name, 0, MAX_SEED)


def seeds(value, n: int, name: str = "seed") -> int | list[int]:
    """One seed for every row, or a list of n seeds, one per row."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} seeds for {n} rows: give one seed, or one per row")
        return [seed(s, f"{name}[{i}]") for i, s in enumerate(value)]
    return seed(value, name)


def flag(value, name: str) -> bool:
    """True or False (Python or numpy bools only: not 0, 1 or strings, which usually mean a mistake)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def number(value, name: str, lo: float | None = None, hi: float | None = None) -> float:
    """A finite real number, optionally within [lo, hi]."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be from {lo:g} to {hi:g}, got {value!r}")
    return value


def weights(values, k: int, name: str = "weights") -> torch.Tensor:
    """k finite weights, |w| <= MAX_WEIGHT, not all zero -> (k,) float32."""
    if values is None:
        return torch.full((k,), 1.0 / k)
    if isinstance(values, torch.Tensor):
        values = values.reshape(-1).tolist()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{name} must be a list of numbers, got {values!r}")
    w = [number(x, f"{name}[{i}]", -MAX_WEIGHT, MAX_WEIGHT) for i, x in enumerate(values)]
    if len(w) != k:
        raise ValueError(f"{name} has {len(w)} values but there are {k} embeddings: give one weight per term")
    if all(x == 0 for x in w):
        raise ValueError(f"{name} are all zero: at least one term needs a non-zero weight")
    return torch.tensor(w, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------- embeddings
def embeddings(value, name: str = "embeddings", dim: int | None = None, max_rows: int | None = None) -> torch.Tensor:
    """(N, D) or (D,), or a list of (D,) rows: finite, no zero row, |values| <= MAX_VALUE -> (N, D) float32.

    With `dim`, every row must have that many values (another model's embeddings are refused by name).
    """
    if isinstance(value, (list, tuple)) and value and all(isinstance(r, torch.Tensor) for r in value):
        shapes = {tuple(r.reshape(-1).shape) for r in value}
        if len(shapes) > 1:
            raise ValueError(f"{name}: rows have different dimensions {sorted(s[0] for s in shapes)}")
        value = torch.stack([r.reshape(-1) for r in value])
    if not isinstance(value, torch.Tensor):
        if isinstance(value, (str, bytes, dict)) or value is None:
            raise ValueError(f"{name} must be a list of numbers or a (N, D) tensor, got {type(value).__name__}")
        try:
            value = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"{name} must be a list of numbers or a list of equally long rows of numbers") from e
    if value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers")
    x = value.detach().to("cpu", torch.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        want = f"(N, {dim}) or ({dim},)" if dim else "(N, D) or (D,)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(value.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} are {x.shape[1]}-d but this model works in {dim}-d: they come from another "
                         f"model's space; encode them with this model")
    if max_rows is not None and x.shape[0] > max_rows:
        raise ValueError(f"{name} has {x.shape[0]} rows; at most {max_rows}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    if (x.abs() > MAX_VALUE).any():
        raise ValueError(f"{name} has values beyond ±{MAX_VALUE:g}: embeddings are directions, give unit-scale rows")
    if (x.norm(dim=-1) < EPS).any():
        raise ValueError(f"{name} contains an all-zero embedding, which has no direction")
    return x.float()


def same_dim(*named: tuple[str, torch.Tensor]) -> int:
    """All (…, D) tensors share D; returns D or names the ones that differ."""
    dims = {n: int(t.shape[-1]) for n, t in named}
    if len(set(dims.values())) > 1:
        raise ValueError("dimensions differ: " + ", ".join(f"{n} is {d}-d" for n, d in dims.items()))
    return next(iter(dims.values()))


# ---------------------------------------------------------------------------------------------- texts
def text(value, name: str = "text", max_chars: int = MAX_TEXT_CHARS) -> str:
    """One text: a string of at most max_chars, without control characters, with at least one letter or digit."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    value = unicodedata.normalize("NFC", value).strip()
    if not value:
        raise ValueError(f"{name} is empty: type a few words")
    if len(value) > max_chars:
        raise ValueError(f"{name} is too long: {len(value)} characters, at most {max_chars}")
    bad = [c for c in value if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") and c not in "\t\n"]
    if bad:
        raise ValueError(f"{name} contains control or unassigned characters ({ascii(bad[0])}): remove them")
    if not any(unicodedata.category(c)[0] in "LN" for c in value):
        raise ValueError(f"{name} has no words (only symbols or emoji): describe it in words")
    return " ".join(value.split())


def texts(values, name: str = "texts", max_items: int | None = None, max_chars: int = MAX_TEXT_CHARS) -> list[str]:
    """One string or a list of strings -> a non-empty list of checked texts."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{name} must be a string or a list of strings, got {type(values).__name__}")
    if not values:
        raise ValueError(f"{name} is empty: give at least one text")
    if max_items is not None and len(values) > max_items:
        raise ValueError(f"{name} has {len(values)} texts; at most {max_items}")
    return [text(v, f"{name}[{i}]", max_chars) for i, v in enumerate(values)]


def short_name(value, name: str = "name", max_chars: int = 60) -> str:
    """A user-chosen name (a direction's): one line, no path separators or control characters."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    value = value.strip()
    if len(value) > max_chars:
        raise ValueError(f"{name} is longer than {max_chars} characters")
    if any(unicodedata.category(c).startswith("C") for c in value) or any(c in value for c in "/\\") or ".." in value:
        raise ValueError(f"{name} may not contain control characters, slashes or '..', got {value!r}")
    return value


def options(given: dict, allowed, name: str = "options") -> dict:
    """Keyword options a decoder reads: unknown names are refused, listing the known ones."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {name} {unknown}; this decoder reads: {', '.join(sorted(allowed)) or '(none)'}")
    return dict(given)


# ---------------------------------------------------------------------------------------------- images
def data_uri(value: str, name: str = "image", max_bytes: int = MAX_BYTES) -> bytes:
    """`data:image/...;base64,...` (or bare base64) -> bytes; the size is checked before decoding."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a base64 string or a data:image/...;base64 URI")
    if value.startswith("data:"):
        head, sep, value = value.partition(",")
        if not sep or not head.startswith(DATA_URI_PREFIX) or not head.endswith(";base64"):
            raise ValueError(f"{name}: embedded images must look like data:image/png;base64,...")
    if len(value) > max_bytes * 4 // 3 + 4:
        raise ValueError(f"{name} is larger than {max_bytes // 2**20} MB")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"{name} is not valid base64 ({e})") from e


def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open lazily (reads only the header), check the size, then decode."""
    if not data:
        raise ValueError(f"{name} is empty (zero bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ValueError(f"{name} is too large to decode (at most {max_pixels:,} pixels)") from e
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise ValueError(f"{name}: cannot read image (not PNG, JPEG, WebP, GIF or another format PIL reads)") from e
        check_size(img, name, max_pixels)
        try:
            img.seek(0)  # animated images: the first frame
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ValueError(f"{name} is too large to decode (at most {max_pixels:,} pixels)") from e
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
            raise ValueError(f"{name}: cannot read image (corrupt or truncated)") from e
    return img


def check_size(img: Image.Image, name: str = "image", max_pixels: int = MAX_PIXELS) -> None:
    if img.width < 1 or img.height < 1:
        raise ValueError(f"{name} is empty (0 pixels)")
    if img.width * img.height > max_pixels:
        raise ValueError(f"{name}: {img.width}x{img.height} is too large (at most {max_pixels:,} pixels)")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB, the same way everywhere: EXIF orientation applied, 16-bit scaled (not clipped),
    transparency composited onto white, CMYK and palettes converted."""
    try:
        img = ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError):
        pass  # a broken EXIF block: keep the pixels as stored
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    return img.convert("RGB")


def image(item, name: str = "image", max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> Image.Image:
    """A PIL RGB image from a PIL image, a path, bytes, a data URI or an (H, W[, 3|4]) uint8 array."""
    if isinstance(item, Image.Image):
        check_size(item, name, max_pixels)
        img = item
    elif isinstance(item, np.ndarray):
        if item.ndim not in (2, 3) or item.dtype != np.uint8 or (item.ndim == 3 and item.shape[2] not in (3, 4)):
            raise ValueError(f"{name}: arrays must be (H, W), (H, W, 3) or (H, W, 4) uint8, got {item.shape} {item.dtype}")
        if item.shape[0] * item.shape[1] > max_pixels or 0 in item.shape:
            raise ValueError(f"{name}: array of shape {item.shape} is empty or too large (at most {max_pixels:,} pixels)")
        img = Image.fromarray(item)
    elif isinstance(item, str) and item.startswith("data:"):
        img = _open(data_uri(item, name, max_bytes), name, max_pixels)
    elif isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) > max_bytes:
            raise ValueError(f"{name} is larger than {max_bytes // 2**20} MB")
        img = _open(bytes(item), name, max_pixels)
    elif isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise ValueError(f"{name}: no image file at {path}")
        if path.stat().st_size > max_bytes:
            raise ValueError(f"{name}: {path.name} is larger than {max_bytes // 2**20} MB")
        img = _open(path.read_bytes(), name, max_pixels)
    else:
        raise ValueError(f"{name}: expected a PIL image, a path, bytes or an array, got {type(item).__name__}")
    try:
        return to_rgb(img)
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ValueError(f"{name} could not be converted to RGB") from e
