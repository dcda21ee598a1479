"""Every preset file is valid without downloading anything: schema, known types, and dimensions that agree."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from blend.blender import GAP_MAPS, IMAGE_DECODERS, TEXT_DECODERS, _import
from blend.decoders.common import OFFLOAD
from blend.presets import PRESETS_DIR, scan

FILES = sorted(PRESETS_DIR.glob("*.json"))
HUB_ID = re.compile(r"^(hf-hub:)?[\w.-]+/[\w.-]+$")


def encoder_dim(spec: dict, base: Path) -> int:
    """The embedding width the preset's open_clip model makes, read from its config (no weights)."""
    import open_clip

    model = spec["model"]
    if model.startswith("local-dir:"):
        cfg = json.loads((base / model[len("local-dir:"):] / "open_clip_config.json").read_text())
        return cfg["model_cfg"]["embed_dim"]
    assert model in open_clip.list_models(), f"unknown open_clip model {model}"
    tags = open_clip.list_pretrained_tags_by_model(model)
    assert spec.get("pretrained") in tags, f"{model} has no pretrained weights {spec.get('pretrained')!r}: {tags}"
    return open_clip.get_model_config(model)["embed_dim"]


def check_source(source: str, base: Path, must_exist: bool):
    if source.startswith("local-dir:"):
        path = Path(source[len("local-dir:"):])
        assert not path.is_absolute(), f"{source}: presets name files relative to themselves"
        if must_exist:
            assert (base / path).exists(), f"{source} does not exist"
    else:
        assert HUB_ID.match(source), f"{source!r} is neither local-dir: nor a hub id"


def test_preset_files_exist_and_are_listed():
    import blend

    names = {json.loads(p.read_text())["name"] for p in FILES}
    assert {"shapes-mini", "unclip-h", "unclip-l", "kandinsky-2.2"} <= names
    assert blend.list_presets() == sorted(names)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_preset_is_valid(path):
    raw = json.loads(path.read_text())
    spec = scan()[raw["name"]]
    base = path.parent
    assert path.stem == raw["name"], "a preset's file is named after it"
    assert isinstance(raw.get("description"), str) and raw["description"]
    assert raw["encoder"].get("type", "open_clip") == "open_clip"
    dim = encoder_dim(raw["encoder"], base)
    assert raw["encoder"].get("embed_dim", dim) == dim, "encoder.embed_dim disagrees with the model config"

    for kind, registry in (("image_decoder", IMAGE_DECODERS), ("text_decoder", TEXT_DECODERS)):
        dec = raw[kind]
        assert dec["type"] in registry, f"{kind} type {dec['type']!r} unknown"
        assert dec.get("embed_dim", dim) == dim, f"{kind} reads {dec.get('embed_dim')}-d, encoder makes {dim}-d"
        check_source(dec["source"], base, must_exist=False)  # bundles and banks may be built after install
        cls = _import(registry[dec["type"]])
        if hasattr(cls, "DEFAULTS"):
            unknown = set(dec.get("options", {})) - set(cls.DEFAULTS)
            assert not unknown, f"{kind} options {unknown} are not options of {cls.__name__}"
    img = raw["image_decoder"]
    if not img["source"].startswith("local-dir:"):
        assert "embed_dim" in img, "a hub decoder states the width it reads, so presets can be checked offline"
        norm = img.get("embed_norm", "auto")
        assert norm == "auto" or (isinstance(norm, (int, float)) and norm > 0)
        assert img.get("offload") in OFFLOAD
    for key in ("stats", "prior"):
        if key in img:
            check_source(img[key], base, must_exist=False)

    gap = raw.get("gap", {"type": "none"})
    assert gap["type"] in GAP_MAPS
    if gap["type"] in ("mean-shift", "linear"):
        assert gap["source"].startswith("local-dir:") and gap["source"].endswith(".safetensors")
    if gap["type"] == "prior":
        check_source(gap["source"], base, must_exist=False)
    if gap["type"] == "none" and not img["source"].startswith("local-dir:"):
        pytest.fail("a real image decoder reads image embeddings only: texts need a gap map")
    assert spec["_dir"] == str(base.resolve())


def test_real_presets_name_the_models_of_the_issue():
    presets = scan()
    expect = {
        "unclip-h": ("ViT-H-14", "laion2b_s32b_b79k", 1024, "stable-unclip", "stabilityai/stable-diffusion-2-1-unclip"),
        "unclip-l": ("ViT-L-14", "openai", 768, "stable-unclip", "stabilityai/stable-diffusion-2-1-unclip-small"),
        "kandinsky-2.2": ("ViT-bigG-14", "laion2b_s39b_b160k", 1280, "kandinsky-2.2",
                          "kandinsky-community/kandinsky-2-2-decoder"),
    }
    for name, (model, tag, dim, dec_type, source) in expect.items():
        p = presets[name]
        assert (p["encoder"]["model"], p["encoder"]["pretrained"], p["encoder"]["embed_dim"]) == (model, tag, dim)
        assert (p["image_decoder"]["type"], p["image_decoder"]["source"]) == (dec_type, source)
    assert presets["kandinsky-2.2"]["gap"]["type"] == "prior"
    assert presets["kandinsky-2.2"]["gap"]["source"] == "kandinsky-community/kandinsky-2-2-prior"
    assert presets["unclip-h"]["gap"]["type"] == "mean-shift"  # no public ViT-H prior: measured by `blend calibrate`
    karlo = presets["unclip-l"]["gap"]  # the prior diffusers' StableUnCLIPPipeline runs for unclip-small
    assert (karlo["type"], karlo["prior"], karlo["source"]) == ("prior", "karlo", "kakaobrain/karlo-v1-alpha")
    for name in expect:  # a sentence comes back on first use: the shipped caption list is embedded once
        captions = presets[name]["text_decoder"]["captions"]
        assert (PRESETS_DIR / captions[len("local-dir:"):]).is_file()
