"""Serving limits and knobs, one dataclass; every field can be set from the environment as BLEND_<FIELD>."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass
class ServeConfig:
    max_body_bytes: int = 8 * 2**20  # a request body larger than this gets 413
    max_image_bytes: int = 4 * 2**20  # one embedded image, after base64 decoding
    max_image_pixels: int = 4_000_000  # checked from the image header, before decoding
    max_text_chars: int = 300
    max_terms: int = 6  # terms in a mix
    max_rows: int = 16  # embeddings in one /v1/decode or /v1/encode
    max_n: int = 32  # path frames
    max_k: int = 6  # plane grid side (k * k images)
    max_n_seeds: int = 4
    max_steps: int = 50
    max_pairs: int = 32  # text pairs (or example images per side) in one direction
    max_directions: int = 8  # directions applied in one request
    max_user_directions: int = 200  # saved directions per user
    max_queue: int = 256  # rows waiting for the model (all kinds); more gets 429 with Retry-After
    max_batch: int = 8  # rows of one kind the model takes together
    batch_wait_ms: float = 10.0  # how long the batcher waits to fill a batch (only while more rows may come)
    model_process: bool = False  # run the model in a child process (`blend serve` turns it on)
    model_threads: int = 0  # torch threads in that child (0: torch's default)
    request_timeout_s: float = 120.0  # per request; past it, 503 with Retry-After
    cache_items: int = 4096  # cached embeddings (texts, text lists, images by content hash)
    keys: str = ""  # API keys: "key" or "user:key", comma-separated (BLEND_API_KEYS)
    keys_file: str = ""  # a file with one "user:key" (or key) a line (BLEND_API_KEYS_FILE)
    temp_max_age_s: float = 3600.0  # temp files (GIFs, downloads, uploads) untouched this long are removed
    malloc_arenas: int = 2  # glibc malloc arenas for the server's threads (0: glibc's default, 8 per core)
    malloc_trim_s: float = 10.0  # hand freed native memory back to the system this often (0: never)

    @classmethod
    def from_env(cls, **overrides) -> "ServeConfig":
        """Defaults, then BLEND_<FIELD> environment variables, then `overrides`."""
        values = {}
        for f in fields(cls):
            env = os.environ.get("BLEND_" + f.name.upper())
            if env is not None:
                values[f.name] = {"int": int, "float": float, "bool": _flag}.get(f.type, str)(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _flag(text: str) -> bool:
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"a BLEND_ flag is one of 1/0, true/false, yes/no, on/off; got {text!r}")
