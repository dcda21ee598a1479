"""Images and clients for the service tests: odd files built in memory, a client on a fresh BLEND_HOME."""
from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image


def uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def huge_header_png(side: int = 12000) -> bytes:
    """A PNG whose header says side x side with a tiny compressed body: a decompression bomb."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * (side + 1) * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def odd_images() -> dict[str, bytes]:
    """Files in the modes the issue names; each must be answered (read, or refused with a 4xx)."""
    red = Image.new("RGB", (32, 32), (220, 30, 30))
    out = {
        "rgb-png": png(red),
        "cmyk-jpeg": encoded(red.convert("CMYK"), "JPEG"),
        "16bit-png": png(Image.fromarray(np.full((32, 32), 32768, np.uint16))),
        "la-png": png(red.convert("LA")),
        "palette-alpha-png": png(_palette_with_hole(), transparency=0),
        "rgba-png": png(red.convert("RGBA")),
        "grey-png": png(red.convert("L")),
        "webp": encoded(red, "WEBP"),
        "bmp": encoded(red, "BMP"),
        "tiny-1x1": png(Image.new("RGB", (1, 1))),
    }
    frames = [Image.new("P", (32, 32), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    out["animated-gif"] = buf.getvalue()
    wide = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    out["exif-rotated-jpeg"] = encoded(wide, "JPEG", exif=exif.tobytes())
    return out


def _palette_with_hole() -> Image.Image:
    """Palette image: index 0 (transparent) on the left half, index 1 (red) on the right."""
    p = Image.new("P", (32, 32), 0)
    p.putpalette([0, 0, 0, 220, 30, 30] + [0, 0, 0] * 254)
    p.paste(1, (16, 0, 32, 32))
    return p


def bad_images() -> dict[str, bytes]:
    good = png(Image.new("RGB", (32, 32), (1, 2, 3)))
    return {"zero-byte": b"", "not-an-image": b"hello world", "truncated-png": good[: len(good) // 2],
            "corrupt-png": good[:40] + b"\x00" * 50 + good[90:], "bomb-png": huge_header_png(),
            "bomb-50k": huge_header_png(50000), "random-bytes": bytes(range(256)) * 4}
